"""Browser login for the built-in viewer and the archive's pages, with no token in any URL.

With an OpenID Provider configured for browser login (`oidc_client_id` + `oidc_client_secret`), the archive
is a confidential client using the authorization code flow with PKCE: `/login` sends the browser to the
provider, `/login/callback` exchanges the code (with the PKCE verifier and the client secret, server to
server), validates the ID token (nonce) and the access token (as every API request is), and keeps the
access token in an HttpOnly, SameSite=Lax session cookie. The viewer, served from the same origin, then
calls DICOMweb with that cookie: no token in its URL, its configuration, or its JavaScript.
This rather than OHIF's own `oidc` configuration (a public client holding tokens in the browser): the
client secret stays on the server, scripts cannot read the token, and the viewer needs no change.

Without one, `/login` is a form that takes an API token in its body (never the URL) and sets the same
cookie. Logins and their failures are audited (User Authentication, 110122 Login / 110123 Logout).
"""

from __future__ import annotations

import html
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from imaging import audit
from imaging.access.http import PUBLIC, SESSION_COOKIE, identity_provider, own_origin, principal_of
from imaging.access.principal import Principal
from imaging.errors import ArchiveError, InvalidRequest, NotAuthenticated, NotAuthorized, NotFound
from imaging.web import audit_writer, client_address, public_root

LOGIN = "/login"
CALLBACK = "/login/callback"
LOGOUT = "/logout"
DEFAULT_NEXT = "/viewer/"
SESSION_MAX_SECONDS = 12 * 3600

FORM = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Sign in — Imaging archive</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="/ui/static/ui.css"></head>
<body><header class="site"><span class="name">Imaging archive</span></header>
<main id="main" class="narrow"><h1>Sign in to the imaging archive</h1>{message}
<form method="post" action="{action}">
<input type="hidden" name="next" value="{next}">
<p><label for="token">API token</label>
<input type="password" id="token" name="token" autocomplete="off" size="48" required></p>
<p><button type="submit">Sign in</button></p></form>
<p>An administrator creates tokens with <code>imaging token create</code>.</p></main></body></html>"""


def safe_next(value: str | None) -> str:
    """A local path to return to after login (never another site: no scheme, no `//host`)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 2000:
        return DEFAULT_NEXT
    return value


def _set_session(request: Request, response: Response, token: str, expires: float | None) -> None:
    max_age = SESSION_MAX_SECONDS if expires is None else int(min(expires - time.time(), SESSION_MAX_SECONDS))
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max(max_age, 0),
        path="/",
        httponly=True,
        samesite="lax",
        secure=public_root(request).startswith("https://"),
    )


def _audit_login(request: Request, principal: Principal | None, outcome: audit.Outcome, what: str) -> None:
    audit_writer(request).submit(
        audit.AuditEvent.USER_AUTHENTICATION,
        user=principal.user if principal is not None else "unknown",
        action="E",
        outcome=outcome,
        event_type="110123" if what.startswith("logout") else "110122",
        access_point=client_address(request),
        detail=what,
    )


def _form(next_path: str, message: str = "", status: int = 200) -> HTMLResponse:
    note = f'<p class="message error" role="alert">{html.escape(message)}</p>' if message else ""
    return HTMLResponse(
        FORM.format(message=note, action=LOGIN, next=html.escape(next_path, quote=True)),
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


def router() -> APIRouter:
    r = APIRouter(tags=["Login"], include_in_schema=False)

    @r.get(LOGIN, dependencies=[Depends(PUBLIC)])
    def login(request: Request, next: str | None = None) -> Response:
        next_path = safe_next(next)
        provider = identity_provider(request)
        settings = request.app.state.archive.settings
        if provider is not None and settings.oidc_client_id and settings.oidc_client_secret:
            url = provider.login_url(public_root(request) + CALLBACK, next_path)
            return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
        return _form(next_path)

    @r.post(LOGIN, dependencies=[Depends(PUBLIC)])
    async def login_with_token(
        request: Request,
        token: Annotated[str, Form(max_length=20000)],
        next: Annotated[str, Form(max_length=2000)] = DEFAULT_NEXT,
    ) -> Response:
        next_path = safe_next(next)
        origin = request.headers.get("origin")
        if origin is not None and origin.rstrip("/") != own_origin(request):
            # Another site's page must not sign the browser in (login CSRF: into the attacker's account).
            raise NotAuthorized("sign in from this server's own login page")
        try:
            principal = await principal_of(request, token.strip())
        except ArchiveError as refused:
            _audit_login(request, None, audit.Outcome.MINOR_FAILURE, f"login form refused: {refused}")
            return _form(next_path, "This token is not valid.", status=401)
        _audit_login(request, principal, audit.Outcome.SUCCESS, "login with an API token")
        response = RedirectResponse(next_path, status_code=303)
        # The cookie lasts SESSION_MAX_SECONDS; the token's own expiry and revocation apply on every request.
        _set_session(request, response, token.strip(), None)
        return response

    @r.get(CALLBACK, dependencies=[Depends(PUBLIC)])
    async def callback(request: Request, state: str = "", code: str = "", error: str = "") -> Response:
        provider = identity_provider(request)
        if provider is None:
            raise NotFound("no OpenID Provider is configured")
        if error:
            _audit_login(
                request, None, audit.Outcome.MINOR_FAILURE, f"login refused by the provider: {error[:100]}"
            )
            raise NotAuthenticated("the OpenID Provider did not authenticate the user")
        if not code or not state:
            raise InvalidRequest("an authorization response needs code and state")
        try:
            access_token, principal, expires, next_path = await run_in_threadpool(
                provider.complete_login, state[:200], code[:2000], public_root(request) + CALLBACK
            )
        except NotAuthenticated as refused:
            _audit_login(request, None, audit.Outcome.MINOR_FAILURE, f"login refused: {refused}")
            raise
        _audit_login(request, principal, audit.Outcome.SUCCESS, "login through the OpenID Provider")
        response = RedirectResponse(safe_next(next_path), status_code=303)
        _set_session(request, response, access_token, expires)
        return response

    @r.post(LOGOUT, dependencies=[Depends(PUBLIC)])
    async def logout(request: Request) -> Response:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            try:
                principal: Principal | None = await principal_of(request, token)
            except ArchiveError:
                principal = None
            if principal is not None:
                _audit_login(request, principal, audit.Outcome.SUCCESS, "logout")
        response = RedirectResponse(LOGIN, status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return r
