"""One KDF cost per hub (issue 13, item 4): ``prelogin`` cannot tell real handles from
unknown ones, because every account registers at the cost ``challenge`` announces."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat_client import ChatClient, KdfTooWeak
from chat_server.config import KDF_PROFILES, kdf_profile
from protocol import crypto
from protocol import frames as f
from tests.helpers.hubs import start_hub
from tests.helpers.rawclient import RawClient, rid

#: Cheap, but not the test default (1, 8192): a hub whose cost differs from the old
#: client default and from the protocol minimum.
_COST = {"kdf_opslimit": 2, "kdf_memlimit": 16384}


def _register(handle: str, opslimit: int, memlimit: int) -> f.Register:
    identity = crypto.Identity.generate()
    salt = crypto.new_salt()
    keys = crypto.derive_login_keys("pw", salt, opslimit, memlimit)
    return f.Register(
        id=rid(),
        handle=handle,
        salt=salt,
        opslimit=opslimit,
        memlimit=memlimit,
        auth_key=keys.auth_key,
        sign_pk=identity.sign_pk,
        box_pk=identity.box_pk,
        box_sig=crypto.sign_box_key(identity),
        wrapped_keys=crypto.wrap_identity(identity, keys.wrap_key),
    )


async def test_prelogin_for_real_and_unknown_handles_is_indistinguishable(
    tmp_path: Path,
) -> None:
    async with start_hub(tmp_path / "hub", **_COST) as hub:
        # Registered through the SDK with its defaults: it takes the announced cost.
        sdk = await ChatClient.register(
            hub.url, "realuser", "plum-orbit-canyon-47", home=tmp_path / "a"
        )
        await sdk.close()
        peer = await RawClient.connect(hub.url)
        challenge = await peer.request(f.Hello(id=rid()))
        assert isinstance(challenge, f.Challenge)
        assert (challenge.min_opslimit, challenge.min_memlimit) == (2, 16384)
        real = await peer.request(f.Prelogin(id=rid(), handle="realuser"))
        unknown = await peer.request(f.Prelogin(id=rid(), handle="nobodyhere"))
        assert isinstance(real, f.PreloginResult) and isinstance(unknown, f.PreloginResult)
        assert (real.opslimit, real.memlimit) == (unknown.opslimit, unknown.memlimit) == (2, 16384)
        assert len(real.salt) == len(unknown.salt) == 16
        assert real.salt != unknown.salt
        # The unknown handle's salt is stable (a fresh one each time would give it away).
        again = await peer.request(f.Prelogin(id=rid(), handle="nobodyhere"))
        assert isinstance(again, f.PreloginResult) and again.salt == unknown.salt
        await peer.close()


@pytest.mark.parametrize(("opslimit", "memlimit"), [(1, 16384), (3, 16384), (2, 32768)])
async def test_registration_at_another_cost_is_refused(
    tmp_path: Path, opslimit: int, memlimit: int
) -> None:
    """Stronger is refused too: an account at its own cost would stand out at prelogin."""
    async with start_hub(tmp_path, **_COST) as hub:
        peer = await RawClient.connect(hub.url)
        reply = await peer.request(_register("othercost", opslimit, memlimit))
        assert isinstance(reply, f.ErrorFrame) and reply.code == "invalid", reply
        pre = await peer.request(f.Prelogin(id=rid(), handle="othercost"))
        assert isinstance(pre, f.PreloginResult) and pre.opslimit == 2  # nothing was stored
        ok = await peer.request(_register("samecost", 2, 16384))
        assert isinstance(ok, f.Registered), ok
        await peer.close()


async def test_sdk_refuses_explicit_limits_that_are_not_the_hubs(tmp_path: Path) -> None:
    async with start_hub(tmp_path / "hub", **_COST) as hub:
        with pytest.raises(KdfTooWeak, match="below the server's"):
            await ChatClient.register(
                hub.url,
                "dave",
                "plum-orbit-canyon-47",
                home=tmp_path / "d",
                opslimit=1,
                memlimit=16384,
            )
        with pytest.raises(KdfTooWeak, match="not the server's"):
            await ChatClient.register(
                hub.url,
                "dave",
                "plum-orbit-canyon-47",
                home=tmp_path / "d",
                opslimit=3,
                memlimit=16384,
            )
        assert not (tmp_path / "d" / "account.json").exists()


def test_profiles() -> None:
    assert kdf_profile("standard") == {"kdf_opslimit": 3, "kdf_memlimit": 64 * 1024 * 1024}
    assert kdf_profile("test")["hash_memlimit"] == 8192
    assert KDF_PROFILES["interactive"] == (2, 64 * 1024 * 1024)
