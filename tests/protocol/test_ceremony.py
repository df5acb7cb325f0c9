"""protocol/ceremony.py: the pending and certs files round-trip and refuse anything else."""

from __future__ import annotations

import pytest

from protocol import crypto
from protocol.ceremony import (
    CounselorCerts,
    PendingCounselor,
    PendingCounselors,
    decode_certs,
    decode_pending,
    encode_document,
)
from protocol.errors import InvalidFrame

COUNSELOR = crypto.Identity.from_secret_bytes(bytes(range(64)))
ORG = crypto.ServerKey.from_seed(bytes(range(100, 132)))


def test_round_trips() -> None:
    pending = PendingCounselors(
        counselors=[
            PendingCounselor(
                account_id="acc_1",
                handle="carol",
                sign_pk=COUNSELOR.sign_pk,
                box_pk=COUNSELOR.box_pk,
                box_sig=crypto.sign_box_key(COUNSELOR),
                fingerprint=crypto.fingerprint_v2(COUNSELOR.sign_pk, COUNSELOR.box_pk),
            )
        ]
    )
    data = encode_document(pending)
    assert data.endswith(b"\n") and b'"format": "counsel-chat/pending-counselors"' in data
    assert decode_pending(data) == pending
    cert = crypto.sign_counselor_cert(
        ORG,
        account_id="acc_1",
        handle="carol",
        sign_pk=COUNSELOR.sign_pk,
        box_pk=COUNSELOR.box_pk,
        issued_at=1,
    )
    certs = CounselorCerts(certs=[cert])
    assert decode_certs(encode_document(certs)) == certs


def test_other_files_are_refused() -> None:
    certs = encode_document(CounselorCerts(certs=[]))
    pending = encode_document(PendingCounselors(counselors=[]))
    with pytest.raises(InvalidFrame, match="not a pending-counselors file"):
        decode_pending(certs)
    with pytest.raises(InvalidFrame, match="not a counselor-certs file"):
        decode_certs(pending)
    with pytest.raises(InvalidFrame, match="not a counselor-certs file"):
        decode_certs(b"not json")
