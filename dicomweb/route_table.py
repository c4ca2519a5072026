"""The route × role contract: every HTTP route of the application, the permission it declares
(imaging.access.http.Require or PUBLIC) and which roles hold it, from the one table in
imaging.access.principal. `python -m dicomweb.route_table` prints the Markdown table the README carries;
tests/access/test_route_contract.py keeps the two in sync and checks the app answers accordingly.

FastAPI's own documentation routes (/docs, /redoc, /openapi.json) are public by design and listed as such.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

import imaging.app  # noqa: F401  (the composition root: every feature's routers)
from dicomweb.app import create_app
from imaging.access.http import Public, Require
from imaging.access.principal import PARTITION_SCOPED, ROLE_PERMISSIONS, Permission, Role
from imaging.archive import Archive
from imaging.config import load_settings

DOCUMENTATION = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PUBLIC_MARK = "public"


@dataclass(frozen=True)
class Entry:
    methods: tuple[str, ...]
    path: str
    permission: Permission | None  # None: public, or another kind of credential (below)
    declared: bool  # False: the route declares neither a permission nor PUBLIC nor its own credential
    # A credential other than the archive's (a dependency with a `credential` attribute), e.g. the federation
    # peer API's "peer-signed": no role, no share link passes it.
    credential: str = ""

    @property
    def share_link(self) -> bool:
        """Whether a share link opens this route (read-only DICOMweb under /shares/{token})."""
        return self.path.startswith("/shares/")


def _routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:  # an included router (FastAPI resolves these lazily)
            yield from _routes(original.routes, prefix + route.include_context.prefix)
        else:
            yield prefix + route.path, route


def _declared(route: APIRoute) -> tuple[bool, Permission | None, str]:
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        call = dependant.call
        if isinstance(call, Require):
            return True, call.permission, ""
        if isinstance(call, Public):
            return True, None, ""
        if isinstance(getattr(call, "credential", None), str):
            return True, None, str(call.credential)  # type: ignore[union-attr]
        stack.extend(dependant.dependencies)
    return False, None, ""


def entries(app: FastAPI) -> list[Entry]:
    found = []
    for path, route in _routes(list(app.routes)):
        methods = tuple(sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"}))
        credential = ""
        if isinstance(route, APIRoute):
            declared, permission, credential = _declared(route)
        else:
            declared, permission = path in DOCUMENTATION, None
        found.append(Entry(methods, path, permission, declared, credential))
    return sorted(set(found), key=lambda e: (e.path, e.methods))


CREDENTIALS = ("none", "ingest", "clinician", "researcher", "admin", "share link")
ROOTS = ("/dicomweb", "/projects/{project}/dicomweb", "/shares/{share_token}/dicomweb")


def allowed(entry: Entry, credential: str) -> bool:
    """Whether `credential` passes the route's access check: a role's token (a researcher's own project is
    the one the URL names), no credential at all, or a share link (in its URL)."""
    if entry.share_link:
        return credential == "share link"
    if entry.credential:
        return False  # only its own kind of credential passes (a signed peer site)
    if entry.permission is None:
        return True
    if credential in ("none", "share link"):
        return False
    role = Role(credential)
    if entry.permission not in ROLE_PERMISSIONS[role]:
        return False
    scoped = entry.permission in PARTITION_SCOPED and not _body_scoped(entry)
    if scoped and role is Role.CLINICIAN:
        return not _project_scoped(entry)
    if scoped and role is Role.RESEARCHER:
        return _project_scoped(entry)
    return True


def _project_scoped(entry: Entry) -> bool:
    """Routes whose URL names a research project (a `{project}` path parameter, as
    imaging.access.http.url_partition reads it): `/projects/{project}/...`, `/ui/projects/{project}/...`."""
    return "/{project}" in entry.path


def _body_scoped(entry: Entry) -> bool:
    """Routes whose partition comes from the body (checked by the route itself), not from the URL."""
    return entry.path.startswith("/api/share-links")


def _marks(entry: Entry) -> list[str]:
    return ["✓" if allowed(entry, c) else "—" for c in CREDENTIALS]


def markdown(app: FastAPI) -> str:
    """Two tables: the REST and page routes, then the DICOMweb resources under each service root."""
    found = entries(app)
    head = "| method | path | permission | " + " | ".join(CREDENTIALS) + " |"
    rule = "|---|---|---|" + "---|" * len(CREDENTIALS)
    lines = [head, rule]
    for e in found:
        if not e.path.startswith(ROOTS):
            permission = e.credential or (e.permission.value if e.permission is not None else PUBLIC_MARK)
            lines.append(
                f"| {' '.join(e.methods)} | `{e.path}` | {permission} | " + " | ".join(_marks(e)) + " |"
            )
    lines += [
        "",
        "DICOMweb resources (QIDO-RS, WADO-RS, STOW-RS, rendered, capabilities) under each root:",
        "",
    ]
    lines += ["| root | method | permission | " + " | ".join(CREDENTIALS) + " |", rule]
    seen: set[tuple[str, tuple[str, ...], str]] = set()
    for root in ROOTS:
        for e in found:
            if not e.path.startswith(root + "/"):
                continue
            permission = e.permission.value if e.permission is not None else PUBLIC_MARK
            key = (root, e.methods, permission)
            if key in seen:
                continue
            seen.add(key)
            lines.append(
                f"| `{root}` | {' '.join(e.methods)} | {permission} | " + " | ".join(_marks(e)) + " |"
            )
    return "\n".join(lines) + "\n"


def _app() -> FastAPI:
    archive = Archive.open(load_settings(data_dir=Path(tempfile.mkdtemp(prefix="routes-")) / "data"))
    return create_app(archive)


if __name__ == "__main__":
    sys.stdout.write(markdown(_app()))
