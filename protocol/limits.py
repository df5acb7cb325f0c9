"""Protocol limits. They are part of the wire contract (docs/PROTOCOL.md, "Limits")."""

from __future__ import annotations

__all__ = [
    "AUTH_TIMEOUT_S",
    "CLOSE_TIMEOUT_S",
    "MAX_CAPSULE_SUBSETS",
    "MAX_CIPHERTEXT_BYTES",
    "MAX_ESCROW_OFFICERS",
    "MAX_FRAME_BYTES",
    "MAX_ID_CHARS",
    "MAX_MALFORMED_IN_A_ROW",
    "MAX_MESSAGE_CHARS",
    "MAX_PADDED_BYTES",
    "MAX_PREFS_BYTES",
    "MAX_SERVER_FRAME_BYTES",
    "MAX_SESSIONS_PER_ACCOUNT",
    "MAX_SYNC_BATCH",
    "PADDING_BUCKETS",
    "RATE_BURST",
    "RATE_PAUSE_MAX_S",
    "RATE_PER_S",
    "SEND_QUEUE_BYTES",
    "SEND_QUEUE_FRAMES",
    "TOKEN_TTL_S",
]

#: Largest frame a client may send (bytes of the JSON text). Bigger: close 1009.
MAX_FRAME_BYTES = 64 * 1024
#: Largest frame the server sends (sync batches); clients must accept this much.
MAX_SERVER_FRAME_BYTES = 1024 * 1024
#: Largest ciphertext of one message. Base64 inflates by 4/3, so this fits a frame.
MAX_CIPHERTEXT_BYTES = 40 * 1024
#: Longest message body in characters (the client enforces it before encrypting).
MAX_MESSAGE_CHARS = 8000
#: Message plaintexts (signature || envelope) are padded to the smallest of these sizes
#: that holds them plus the pad marker (docs/PROTOCOL.md, "Padding"); the largest is the
#: most a message may hold once encoded, whatever MAX_MESSAGE_CHARS allows.
PADDING_BUCKETS = (256, 512, 1024, 2048, 4096, 8192, 16384)
MAX_PADDED_BYTES = PADDING_BUCKETS[-1]
#: Largest encrypted preferences blob (prefs.put). Base64 makes it 4/3 larger, so it
#: is what still fits a MAX_FRAME_BYTES frame.
MAX_PREFS_BYTES = 44 * 1024
#: Longest identifier (account, case, client_msg_id, request id).
MAX_ID_CHARS = 64
#: Most messages in one sync.result.
MAX_SYNC_BATCH = 500
#: Seconds a connection may stay unauthenticated.
AUTH_TIMEOUT_S = 20.0
#: Undecodable frames in a row before the connection is closed (1007).
MAX_MALFORMED_IN_A_ROW = 3
#: Live sessions per account; one more evicts the oldest with close 4009.
MAX_SESSIONS_PER_ACCOUNT = 8
#: Frames a session may send per second on average, and in a burst (token bucket).
RATE_PER_S = 50.0
RATE_BURST = 200
#: After refusing a frame for the rate limit, the hub reads nothing more from that
#: connection until its bucket holds a token again, but pauses at most this long: a
#: flood then costs one refusal per token interval, not one per frame sent.
RATE_PAUSE_MAX_S = 0.25
#: Frames queued to one session before it is closed as a slow consumer (4008).
SEND_QUEUE_FRAMES = 1024
#: Bytes queued to one session before it is closed as a slow consumer (4008): four of
#: the largest server frames, so a catch-up of several full sync batches still fits.
SEND_QUEUE_BYTES = 4 * MAX_SERVER_FRAME_BYTES
#: Seconds the hub waits for a closing handshake (and to flush a slow consumer's close
#: frame) before it drops the TCP connection; a decided close ends within twice this.
CLOSE_TIMEOUT_S = 2.0
#: Session tokens (reconnect without the passphrase) expire after this many seconds.
TOKEN_TTL_S = 12 * 3600
#: Escrow officers in one policy, and capsule subsets (C(n, k)) one capsule may hold:
#: C(8, 4) = 70 subsets of 67 + 4 * 48 bytes (base64: ~26 KB) fit a 64 KiB case.key frame.
MAX_ESCROW_OFFICERS = 8
MAX_CAPSULE_SUBSETS = 70
