"""protocol/opening.py: what only key holders run. Its functions are tested with their
counterparts (test_crypto.py, test_escrow.py, test_bundle.py); here, the boundary that
makes "the hub never decrypts" an import rule."""

from __future__ import annotations

from protocol import bundle_format, chain, crypto, escrow, opening


def test_nothing_that_opens_is_left_where_the_hub_may_import() -> None:
    # The hub imports crypto, escrow, chain and bundle_format; it may not import opening
    # (pyproject.toml), so none of them may offer what opening holds.
    for module in (crypto, escrow, chain, bundle_format):
        for name in opening.__all__:
            assert not hasattr(module, name), f"{module.__name__}.{name}"
