"""Domain errors on the web pages (called by the application's one error handler, dicomweb.app, for paths
under /ui): the same HTTP status as the API gives, as HTML a person can read.

* a browser page asked for without a valid session goes to the login, which comes back here afterwards;
* an htmx request without one is told to go there too (`HX-Redirect`), instead of swapping in an error;
* anything else — refused, not found, invalid — is a short page, or for htmx the message alone, swapped
  into the part of the page that asked (the pages let htmx swap 4xx answers).

A client that does not ask for HTML (an API client, the route contract test) gets the API's JSON.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from dicomweb.login import LOGIN, safe_next
from dicomweb.ui.render import BASE, HEADERS, environment, is_htmx


def wants_html(request: Request) -> bool:
    return is_htmx(request) or "text/html" in request.headers.get("accept", "")


def login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if is_htmx(request):  # a fragment's URL is no page to return to: the page that asked for it is
        target = request.headers.get("hx-current-url", "") or BASE
        target = "/" + target.split("://", 1)[-1].split("/", 1)[-1] if "://" in target else target
    return f"{LOGIN}?{urlencode({'next': safe_next(target)})}"


def html_error(request: Request, status: int, message: str) -> Response:
    """The answer for a refused or failed request to a page (see the module docstring)."""
    if status == 401:
        if is_htmx(request):
            return Response(status_code=401, headers={**HEADERS, "HX-Redirect": login_url(request)})
        if request.method == "GET":
            return RedirectResponse(login_url(request), status_code=303, headers=HEADERS)
    template = "_error.html" if is_htmx(request) else "error.html"
    text = environment.get_template(template).render(
        status=status, message=message, request_path=request.url.path, principal=None, nav=[]
    )
    return Response(text, status_code=status, media_type="text/html", headers=HEADERS)
