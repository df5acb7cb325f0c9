"""protocol/opening.py: what only key holders run. The round trips and most refusals are
tested with their counterparts (test_crypto.py, test_escrow.py); here: the module's
boundary, and the capsule refusals that need a hand-made capsule."""

from __future__ import annotations

import msgspec
import pytest
from nacl.public import PublicKey, SealedBox

from protocol import crypto, escrow, opening
from protocol.crypto import lp, u64
from protocol.escrow import ForeignMaterial, make_capsule
from tests.helpers.escrow_factory import make_policy, officers

CASE = "case_abc"
KEY = bytes(range(32))


def test_nothing_that_opens_is_left_in_crypto_or_escrow() -> None:
    # The hub may import crypto and escrow; it may not import opening (pyproject.toml).
    for name in opening.__all__:
        assert not hasattr(crypto, name) and not hasattr(escrow, name), name


def test_a_capsule_whose_key_length_field_lies_is_refused() -> None:
    people = officers(1)
    policy = make_policy(people, 1).policy
    good = make_capsule(policy, CASE, 1, KEY)
    # Same length as a real binding, but the length prefix of K says 33, not 32.
    inner = lp(b"chat.capsule.v1", CASE.encode(), u64(1)) + (33).to_bytes(4, "big") + KEY
    sealed = bytes(SealedBox(PublicKey(policy.officers[0].box_pk)).encrypt(inner))
    layer = msgspec.structs.replace(good.subsets[0], sealed=sealed)
    forged = msgspec.structs.replace(good, subsets=[layer])
    commitment = crypto.key_commitment(KEY, CASE, 1)
    keys = {0: people[0].box}
    assert opening.open_capsule(good, policy, keys, case_id=CASE, epoch=1, commitment=commitment)
    with pytest.raises(ForeignMaterial, match="binding is malformed"):
        opening.open_capsule(forged, policy, keys, case_id=CASE, epoch=1, commitment=commitment)
