"""What every HTTP router shares, the DICOMweb edge's and the features' alike: the archive the application
serves, the public URLs this server is reached at (for RetrieveURL and other links in answers), and the
address of the client.

Forwarded (RFC 7239) and X-Forwarded-Host/-Proto/-For headers are believed only when the connection comes
from a reverse proxy listed in `Settings.trusted_proxies` (CIDRs): from anyone else they are ignored, so a
client cannot make RetrieveURLs (or share-link URLs, which carry their token) point at another host, nor
appear in the audit trail under another address.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request

from imaging.archive import Archive
from imaging.audit import AuditWriter
from imaging.partition import CLINICAL

_HOST = re.compile(r"^[A-Za-z0-9.\-_\[\]:]{1,255}$")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def get_archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


ArchiveDep = Annotated[Archive, Depends(get_archive)]


def audit_writer(request: Request) -> AuditWriter:
    """The application's queue for audit records of hot paths (imaging.audit.writer)."""
    writer: AuditWriter = request.app.state.audit
    return writer


@lru_cache(maxsize=16)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _is_trusted(address: str, cidrs: tuple[str, ...]) -> bool:
    if not cidrs:
        return False
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return any(ip in network for network in _networks(cidrs))


def from_trusted_proxy(request: Request) -> bool:
    """Whether the connection's peer is one of the configured reverse proxies."""
    peer = request.client.host if request.client else ""
    return _is_trusted(peer, tuple(get_archive(request).settings.trusted_proxies))


def _forwarded_elements(request: Request) -> list[dict[str, str]]:
    """RFC 7239 Forwarded as a list of elements (one per hop, client side first)."""
    elements = []
    for element in request.headers.get("forwarded", "").split(","):
        pairs: dict[str, str] = {}
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if name:
                pairs[name.lower()] = value.strip().strip('"')
        if pairs:
            elements.append(pairs)
    return elements


def _forwarded(request: Request) -> tuple[str | None, str | None]:
    """(proto, host) from a trusted proxy's Forwarded (first hop) or X-Forwarded-*; (None, None) else."""
    if not from_trusted_proxy(request):
        return None, None
    elements = _forwarded_elements(request)
    first = elements[0] if elements else {}
    proto = first.get("proto") or request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
    host = first.get("host") or request.headers.get("x-forwarded-host", "").split(",")[0].strip()
    return proto or None, host or None


def client_address(request: Request) -> str:
    """The client's address: the peer, or — behind trusted proxies — the nearest untrusted address they
    forwarded for (X-Forwarded-For / Forwarded for=, read from the proxy side)."""
    peer = request.client.host if request.client else ""
    cidrs = tuple(get_archive(request).settings.trusted_proxies)
    if not _is_trusted(peer, cidrs):
        return peer
    chain = [e["for"] for e in _forwarded_elements(request) if "for" in e]
    if not chain:
        chain = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",") if a.strip()]
    for hop in reversed(chain):
        address = _without_port(hop)
        if not _is_trusted(address, cidrs):
            return address[:64]
    return peer


def _without_port(node: str) -> str:
    """An address from a Forwarded node (`[2001:db8::1]:443`, `192.0.2.1:80`, `192.0.2.1`)."""
    if node.startswith("["):
        return node[1:].split("]", 1)[0]
    return node.rsplit(":", 1)[0] if node.count(":") == 1 else node


def public_root(request: Request) -> str:
    """Scheme://host[/prefix] this server is reached at: Settings.public_url, else a trusted proxy's
    Forwarded / X-Forwarded-* headers, else the request's own Host."""
    configured = get_archive(request).settings.public_url
    if configured:
        return configured.rstrip("/")
    proto, host = _forwarded(request)
    proto = proto if proto in ("http", "https") else request.url.scheme
    host = host or request.headers.get("host") or request.url.netloc
    if not _HOST.match(host):
        host = request.url.netloc
    return f"{proto}://{host}{request.scope.get('root_path', '').rstrip('/')}"


def service_root(request: Request, partition: str) -> str:
    """The DICOMweb service root of a partition."""
    base = public_root(request)
    if partition == CLINICAL:
        return f"{base}/dicomweb"
    return f"{base}/projects/{partition}/dicomweb"
