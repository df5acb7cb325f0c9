"""Everything that holds private keys: the client SDK and the terminal client.

    async with await ChatClient.open(None, home, passphrase) as client:
        async for event in client.events():
            ...

The server never sees a key or a plaintext; this package never imports the server.
"""

from __future__ import annotations

from .errors import (
    CaseNotReady,
    ClientClosed,
    ClientError,
    ConnectFailed,
    KdfDowngrade,
    KdfTooWeak,
    KeyChanged,
    KeyNotSigned,
    KeyStoreError,
    RequestInterrupted,
    SecurityRefusal,
    SessionEnded,
    UncertifiedCounselor,
    WeakPassphrase,
)
from .models import (
    CaseAssignedEvent,
    CaseClosedEvent,
    CaseInfo,
    ConnectionEvent,
    DirectoryEntry,
    DisputeEvent,
    Event,
    KeyPendingEvent,
    Message,
    MessageEvent,
    QueueEvent,
    ReceiptEvent,
    Safety,
    Sent,
    TypingEvent,
    WarningEvent,
)
from .sdk import DEFAULT_MEMLIMIT, DEFAULT_OPSLIMIT, ChatClient

__all__ = [
    "DEFAULT_MEMLIMIT",
    "DEFAULT_OPSLIMIT",
    "CaseAssignedEvent",
    "CaseClosedEvent",
    "CaseInfo",
    "CaseNotReady",
    "ChatClient",
    "ClientClosed",
    "ClientError",
    "ConnectFailed",
    "ConnectionEvent",
    "DirectoryEntry",
    "DisputeEvent",
    "Event",
    "KdfDowngrade",
    "KdfTooWeak",
    "KeyChanged",
    "KeyNotSigned",
    "KeyPendingEvent",
    "KeyStoreError",
    "Message",
    "MessageEvent",
    "QueueEvent",
    "ReceiptEvent",
    "RequestInterrupted",
    "Safety",
    "SecurityRefusal",
    "Sent",
    "SessionEnded",
    "TypingEvent",
    "UncertifiedCounselor",
    "WarningEvent",
    "WeakPassphrase",
]
