"""scripts/localcluster: the HAProxy configuration renders to something HAProxy accepts,
and the test certificates verify the way clients check them."""

from __future__ import annotations

import contextlib
import ssl
import subprocess
from pathlib import Path

import pytest

from scripts.localcluster.haproxy import TEMPLATE, Backend, haproxy_binary, render_config
from scripts.localcluster.tls import make_local_pki
from tests.helpers.services import require_service


def _render(tmp_path: Path, backends: list[Backend]) -> str:
    return render_config(
        backends,
        bind="127.0.0.1:8443",
        cert_file=tmp_path / "bundle.pem",
        stats_bind="127.0.0.1:8404",
        maxconn=1000,
    )


@pytest.mark.parametrize("nodes", [1, 5])
def test_the_rendered_configuration_is_valid_haproxy(tmp_path: Path, nodes: int) -> None:
    binary = haproxy_binary()
    if binary is None:
        require_service("HAProxy", "no haproxy binary (scripts/setup-services installs it)")
    pki = make_local_pki(tmp_path / "tls")
    text = render_config(
        [Backend(f"node{i}", "127.0.0.1", 9000 + i) for i in range(nodes)],
        bind="127.0.0.1:8443",
        cert_file=pki.bundle_file,
        stats_bind="127.0.0.1:8404",
        maxconn=1000,
    )
    assert text.count("    server node") == nodes
    assert "@" not in "".join(line.split("#")[0] for line in text.splitlines())
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    result = subprocess.run(
        [binary, "-c", "-f", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


def test_rendering_refuses_what_would_break_the_configuration(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        _render(tmp_path, [])
    with pytest.raises(ValueError):
        _render(tmp_path, [Backend("a b", "127.0.0.1", 1)])
    with pytest.raises(ValueError):
        _render(tmp_path, [Backend("n", "127.0.0.1\n    server evil", 1)])
    with pytest.raises(ValueError, match="@EXTRA@"):
        extra = tmp_path / "template.cfg"
        extra.write_text(TEMPLATE.read_text() + "    option @EXTRA@\n")
        render_config(
            [Backend("n", "h", 1)], bind="b", cert_file=Path("c"), stats_bind="s", template=extra
        )


def test_the_certificate_is_trusted_through_the_ca_only(tmp_path: Path) -> None:
    pki = make_local_pki(tmp_path / "tls")
    assert (pki.key_file.stat().st_mode & 0o777) == 0o600
    assert (pki.bundle_file.stat().st_mode & 0o777) == 0o600
    bundle = pki.bundle_file.read_text()
    assert "BEGIN CERTIFICATE" in bundle and "PRIVATE KEY" in bundle

    context = ssl.create_default_context(cafile=str(pki.ca_file))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.cert_file, pki.key_file)
    for hostname in ("localhost", "127.0.0.1"):
        client_side, server_side = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = context.wrap_bio(client_side, server_side, server_hostname=hostname)
        srv_in, srv_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        srv = server.wrap_bio(srv_in, srv_out, server_side=True)
        for _ in range(10):  # a handshake in memory, no sockets
            for side in (client, srv):
                with contextlib.suppress(ssl.SSLWantReadError):
                    side.do_handshake()
            srv_in.write(server_side.read())
            client_side.write(srv_out.read())
        assert client.version() is not None and srv.version() is not None
    other = make_local_pki(tmp_path / "other")
    assert other.ca_file.read_bytes() != pki.ca_file.read_bytes()  # a new CA each time
