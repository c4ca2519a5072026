"""What every HTTP router shares, the DICOMweb edge's and the features' alike: the archive the application
serves, and the public URLs this server is reached at (for RetrieveURL and other links in answers)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Request

from imaging.archive import Archive
from imaging.partition import CLINICAL

_HOST = re.compile(r"^[A-Za-z0-9.\-_\[\]:]{1,255}$")


def get_archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


ArchiveDep = Annotated[Archive, Depends(get_archive)]


def _forwarded(request: Request) -> tuple[str | None, str | None]:
    """(proto, host) from RFC 7239 Forwarded (first hop) or X-Forwarded-*."""
    proto = host = None
    forwarded = request.headers.get("forwarded")
    if forwarded:
        first = forwarded.split(",")[0]
        for pair in first.split(";"):
            name, _, value = pair.strip().partition("=")
            value = value.strip().strip('"')
            if name.lower() == "proto":
                proto = value
            elif name.lower() == "host":
                host = value
    proto = proto or request.headers.get("x-forwarded-proto", "").split(",")[0].strip() or None
    host = host or request.headers.get("x-forwarded-host", "").split(",")[0].strip() or None
    return proto, host


def public_root(request: Request) -> str:
    """Scheme://host[/prefix] this server is reached at: Settings.public_url, else Forwarded/Host."""
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
