"""The way in: `/ui` sends a signed-in user to their role's first page and anyone else to the login (which
comes back here), and `/ui/static/...` serves the pages' own files (the style sheet and htmx; public, as
they hold no data)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from dicomweb.login import LOGIN
from dicomweb.ui.render import BASE, HEADERS, home, render
from imaging.access.http import PUBLIC, SESSION_COOKIE, Caller, principal_of
from imaging.access.principal import DEV, Principal
from imaging.errors import ArchiveError, NotFound
from imaging.web import client_address, get_archive

STATIC = Path(__file__).parent / "static"
SERVED = {"htmx.min.js": "text/javascript", "ui.css": "text/css"}
router = APIRouter(include_in_schema=False)


async def _signed_in(request: Request) -> Principal | None:
    if get_archive(request).settings.dev_mode:
        return DEV
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        return await principal_of(request, token)
    except ArchiveError:
        return None


@router.get(BASE, dependencies=[Depends(PUBLIC)])
async def start(request: Request) -> Response:
    principal = await _signed_in(request)
    if principal is None:
        return RedirectResponse(f"{LOGIN}?{urlencode({'next': BASE})}", status_code=303, headers=HEADERS)
    target = home(principal)
    if target is None:
        caller = Caller(get_archive(request), principal, "clinical", client_address(request))
        return render(request, caller, "no_pages.html")
    return RedirectResponse(target, status_code=303, headers=HEADERS)


@router.get(BASE + "/static/{name}", dependencies=[Depends(PUBLIC)])
def static(name: str) -> Response:
    media_type = SERVED.get(name)
    if media_type is None:
        raise NotFound("no such file")
    return FileResponse(
        STATIC / name, media_type=media_type, headers={"Cache-Control": "public, max-age=300"}
    )
