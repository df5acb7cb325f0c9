"""Which browser origins may use the hub, and which ``Host`` names it answers to.

The hub's web chat and its WebSocket are for pages the operator serves, at addresses the
operator chose. Comparing ``Origin`` with the request's own ``Host`` (what the hub did
first) lets DNS rebinding through: a page at ``http://evil.example:8765`` whose name
resolves to the hub sends ``Origin`` and ``Host`` that match each other. So both are
checked against a configured list instead (docs/DECISIONS.md, "Allowed origins and
Host names are configured"):

* the allowed origins are ``--allowed-origin`` (repeatable; ``CHAT_ALLOWED_ORIGINS``)
  when given, else the origins of the listen address the operator gave (a loopback or
  wildcard address also means ``localhost``, ``127.0.0.1`` and ``[::1]``; a wildcard also
  the machine's host name), with the bound port; the public URL (``--public-url``,
  ``CHAT_PUBLIC_URL``: what a proxy in front serves) is always added;
* the allowed hosts are the ``host[:port]`` of those origins (with and without a
  default port);
* a browser request (the web chat's files, ``/config.json``, and a WebSocket handshake
  with an ``Origin``) is refused with 403 unless its ``Host`` is allowed, and a WebSocket
  handshake unless its ``Origin`` is allowed too. Native clients (no ``Origin``) and the
  operators' probes (``/healthz``, ``/metrics``) are not browser requests: DNS rebinding
  is an attack through a browser, and they authenticate with keys or are not public.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["OriginPolicy", "normalize_origin"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def normalize_origin(value: str) -> str:
    """``scheme://host[:port]`` in lower case without a default port; ValueError when
    ``value`` is not an http(s) origin (a path, query or user part is refused)."""
    parts = urlsplit(value.strip())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http(s) origin: {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"an origin is scheme://host[:port] only: {value!r}")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def _listen_hosts(host: str) -> tuple[str, ...]:
    """The names a browser may use for the listen address ``host``."""
    try:
        address = ipaddress.ip_address(host) if host else None
    except ValueError:
        return _LOOPBACK_NAMES if host.lower() == "localhost" else (host.lower(),)
    if address is None or address.is_unspecified:  # every interface
        return (*_LOOPBACK_NAMES, socket.gethostname().lower())
    if address.is_loopback:
        return _LOOPBACK_NAMES
    return (f"[{address}]",) if address.version == 6 else (str(address),)


@dataclass(frozen=True)
class OriginPolicy:
    origins: frozenset[str]
    hosts: frozenset[str]

    @classmethod
    def build(
        cls,
        *,
        listen_host: str,
        port: int,
        allowed_origins: tuple[str, ...] | None,
        public_url: str | None,
    ) -> OriginPolicy:
        if allowed_origins is not None:
            origins = {normalize_origin(o) for o in allowed_origins}
        else:
            origins = {normalize_origin(f"http://{h}:{port}") for h in _listen_hosts(listen_host)}
        if public_url:
            origins.add(normalize_origin(public_url))
        hosts: set[str] = set()
        for origin in origins:
            scheme, netloc = origin.split("://", 1)
            hosts.add(netloc)
            if netloc.endswith("]") or ":" not in netloc:  # no port: the default one
                hosts.add(f"{netloc}:{_DEFAULT_PORTS[scheme]}")
        return cls(frozenset(origins), frozenset(hosts))

    def host_allowed(self, host: str | None) -> bool:
        return host is not None and host.strip().lower() in self.hosts

    def origin_allowed(self, origin: str) -> bool:
        try:
            return normalize_origin(origin) in self.origins
        except ValueError:
            return False  # "null" (a sandboxed frame, a file: page) or garbage
