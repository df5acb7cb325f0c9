"""The shared exit-code table: one number per meaning, and the --help epilog text."""

from __future__ import annotations

from protocol.exit_codes import ExitCode, epilog


def test_numbers_are_fixed() -> None:
    assert [(c.name, int(c)) for c in ExitCode] == [
        ("OK", 0),
        ("ERROR", 1),
        ("USAGE", 2),
        ("AUTH", 3),
        ("CONNECT", 4),
        ("SECURITY", 5),
        ("START_FAILED", 6),
        ("TAMPERED", 10),
        ("KEYS", 11),
        ("FOREIGN", 12),
        ("PASSPHRASE", 13),
    ]


def test_epilog_lists_what_a_tool_returns() -> None:
    assert epilog(ExitCode.OK, ExitCode.SECURITY) == "Exit codes: 0 ok, 5 security refusal."
    every = epilog(*ExitCode)
    assert all(f"{int(c)} " in every for c in ExitCode)
