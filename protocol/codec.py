"""JSON codec for frames: bytes in, validated frame out, and back.

``decode_client`` is what the hub calls on every inbound text frame; ``decode_server``
is the client's mirror. Failures raise the typed errors of :mod:`protocol.errors`,
which the caller turns into an error frame or a close code in one place.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from . import PROTOCOL_VERSION
from .errors import FrameTooBig, InvalidFrame, MalformedFrame, UnknownType, UnsupportedVersion
from .frames import ClientFrame, ServerFrame
from .limits import MAX_FRAME_BYTES, MAX_ID_CHARS, MAX_SERVER_FRAME_BYTES

__all__ = ["decode_client", "decode_server", "encode", "request_id_of"]

_T = TypeVar("_T")

_encoder = msgspec.json.Encoder()
_client_decoder: msgspec.json.Decoder[ClientFrame] = msgspec.json.Decoder(ClientFrame)
_server_decoder: msgspec.json.Decoder[ServerFrame] = msgspec.json.Decoder(ServerFrame)


class _Envelope(msgspec.Struct):
    """Lenient view of any frame, used only to report errors precisely."""

    v: Any = None
    id: Any = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)

#: Everything a parser may raise on hostile input, besides msgspec's own errors: invalid
#: UTF-8 in a string (msgspec raises UnicodeDecodeError), a str with lone surrogates
#: (UnicodeEncodeError), and nesting deeper than the parser's recursion limit
#: (RecursionError, for ~1,000 levels in 2 KB). All of them mean "not a frame".
_UNDECODABLE = (msgspec.DecodeError, UnicodeError, RecursionError)

# The frames.Id constraint: an id echoed in an error frame must itself be a valid Id,
# or the peer could not decode the error that names it.
_ID_RE = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_ID_CHARS}}}")


def encode(frame: msgspec.Struct) -> bytes:
    """Serialize a frame to compact UTF-8 JSON."""
    return _encoder.encode(frame)


def decode_client(data: bytes | str) -> ClientFrame:
    """Parse and validate one frame from a client."""
    return _decode(data, _client_decoder, MAX_FRAME_BYTES)


def decode_server(data: bytes | str) -> ServerFrame:
    """Parse and validate one frame from the server."""
    return _decode(data, _server_decoder, MAX_SERVER_FRAME_BYTES)


def request_id_of(data: bytes | str) -> str | None:
    """Best-effort ``id`` of a frame that failed to decode, so the error can name it.

    Never raises: whatever the bytes are (invalid UTF-8, lone surrogates, nesting too
    deep for the parser), the answer is the id, or None when there is none to name.
    """
    try:
        rid = _envelope_decoder.decode(data).id
    except _UNDECODABLE:
        return None
    if isinstance(rid, str) and _ID_RE.fullmatch(rid):
        return rid
    return None


def _decode(data: bytes | str, decoder: msgspec.json.Decoder[_T], limit: int) -> _T:
    # The limit is in bytes of UTF-8; a str may hold up to 4 bytes per character.
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise FrameTooBig(f"frame exceeds {limit} bytes")
    try:
        frame = decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _classify(data, str(exc)) from None
    except _UNDECODABLE as exc:
        raise _malformed(exc) from None
    if frame.v != PROTOCOL_VERSION:  # type: ignore[attr-defined]
        raise UnsupportedVersion(f"protocol version must be {PROTOCOL_VERSION}")
    return frame


def _malformed(exc: Exception) -> MalformedFrame:
    """The error for bytes that are not a JSON document at all (details stay here)."""
    if isinstance(exc, UnicodeError):
        return MalformedFrame("frame is not valid UTF-8")
    if isinstance(exc, RecursionError):
        return MalformedFrame("frame is nested too deeply")
    return MalformedFrame("frame is not valid JSON")


def _classify(
    data: bytes | str, detail: str
) -> InvalidFrame | UnknownType | MalformedFrame | UnsupportedVersion:
    try:
        envelope = msgspec.json.decode(data)
    except _UNDECODABLE as exc:
        # The typed decoder stopped at a schema error before reaching what the untyped
        # one cannot parse (deep nesting in a field the schema would have refused).
        return _malformed(exc)
    if not isinstance(envelope, dict):
        return MalformedFrame("frame must be a JSON object")
    # A frame of another version may well have other fields or types: say so, not "invalid".
    version = envelope.get("v", PROTOCOL_VERSION)
    if type(version) is not int or version != PROTOCOL_VERSION:
        return UnsupportedVersion(f"protocol version must be {PROTOCOL_VERSION}")
    if "type" in envelope and detail.endswith("`$.type`"):
        return UnknownType("unknown frame type")
    # msgspec's messages name the offending path; they echo at most an enum value.
    return InvalidFrame(detail[:200])
