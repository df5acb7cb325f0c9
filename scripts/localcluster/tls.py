"""A self-signed CA and a server certificate it signs, for tests and local clusters.

Made with the ``openssl`` command line (Debian's ``openssl`` package, installed by
``scripts/setup-services``), so no Python crypto package is added for test-only
certificates. Keys are P-256, certificates valid for a few days, with the subject
alternative names Python's ``ssl`` checks (``localhost`` and ``127.0.0.1`` by default).

    pki = make_local_pki(tmp_path / "tls")
    pki.ca_file       # give to clients (--ca-file, ssl.create_default_context(cafile=...))
    pki.bundle_file   # certificate + key in one PEM: HAProxy's ``bind ... ssl crt FILE``
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["LocalPKI", "make_local_pki"]


@dataclasses.dataclass(frozen=True)
class LocalPKI:
    ca_file: Path
    cert_file: Path
    key_file: Path
    bundle_file: Path


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise FileNotFoundError("openssl not found (scripts/setup-services installs it)")
    result = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()[-800:]}")


def make_local_pki(
    directory: Path,
    *,
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    days: int = 7,
) -> LocalPKI:
    """Write ``ca.pem``, ``server.pem``, ``server.key`` and ``server-bundle.pem`` into
    ``directory`` (created, mode 0700) and return their paths. Reuses nothing: every
    call makes a new CA, so a certificate from an earlier run is never trusted."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl(
        "req", "-x509", *ec,
        "-keyout", "ca.key", "-out", "ca.pem", "-days", str(days),
        "-subj", "/CN=counsel-chat test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", *ec, "-keyout", "server.key", "-out", "server.csr",
        "-subj", f"/CN={dns_names[0] if dns_names else ip_addresses[0]}",
        cwd=directory,
    )  # fmt: skip
    names = [f"DNS:{name}" for name in dns_names] + [f"IP:{ip}" for ip in ip_addresses]
    (directory / "server.ext").write_text(
        f"subjectAltName={','.join(names)}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", str(days),
        "-extfile", "server.ext",
        cwd=directory,
    )  # fmt: skip
    bundle = directory / "server-bundle.pem"
    fd = os.open(bundle, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write((directory / "server.pem").read_text())
        out.write((directory / "server.key").read_text())
    for name in ("ca.key", "server.key"):
        (directory / name).chmod(0o600)
    return LocalPKI(
        ca_file=directory / "ca.pem",
        cert_file=directory / "server.pem",
        key_file=directory / "server.key",
        bundle_file=bundle,
    )
