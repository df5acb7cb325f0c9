"""Sans-I/O core of the counseling chat: frames, codec, errors, crypto envelope.

Nothing in this package touches a socket, a database or an event loop; the hub,
the storage layer and the client are adapters around it.
"""

PROTOCOL_VERSION = 2

__all__ = ["PROTOCOL_VERSION"]
