"""Rendering the pages: the Jinja2 environment (autoescaped), the navigation each role sees, display filters,
and the answer itself — a whole page, or for an htmx request only the fragment it swaps in.

Every answer carries a Content-Security-Policy that allows scripts, styles and images from this origin only
(no inline script, no eval: htmx runs with `allowEval` off), and is never cached (the pages name patients).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from imaging.access.http import Caller
from imaging.access.principal import Permission, Principal, may
from imaging.errors import InvalidRequest

TEMPLATES = Path(__file__).parent / "templates"
BASE = "/ui"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "Referrer-Policy": "same-origin"}


@dataclass(frozen=True)
class NavItem:
    href: str
    label: str
    permission: Permission


NAV = (
    NavItem(f"{BASE}/worklist", "Worklist", Permission.WORKLIST),
    NavItem(f"{BASE}/projects", "Projects", Permission.PROJECTS),
    NavItem(f"{BASE}/operations", "Operations", Permission.OPERATIONS),
    NavItem(f"{BASE}/sharing/peers", "Peers & policies", Permission.MANAGE_SHARING),
    NavItem(f"{BASE}/federation", "Federation", Permission.MANAGE_FEDERATION),
    NavItem(f"{BASE}/sharing/outbox", "Outbox", Permission.SHARE),
    NavItem(f"{BASE}/consent", "Consent", Permission.CONSENT),
    NavItem(f"{BASE}/audit", "Audit", Permission.AUDIT),
    NavItem(f"{BASE}/tokens", "Tokens", Permission.MANAGE_TOKENS),
)


def navigation(principal: Principal) -> list[NavItem]:
    return [item for item in NAV if may(principal, item.permission)]


def home(principal: Principal) -> str | None:
    """Where a role starts: its first page (None: the role has none, e.g. ingest)."""
    items = navigation(principal)
    return items[0].href if items else None


def size(value: int | None) -> str:
    """Bytes for people: 1.2 GB (decimal units, as disks are sold)."""
    amount = float(value or 0)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if amount < 1000 or unit == "TB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{amount:.1f} PB"


def dicom_date(value: str | None) -> str:
    """DA 20240315 -> 2024-03-15 (anything else as it is)."""
    text = value or ""
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


def dicom_time(value: str | None) -> str:
    """TM 101500.123 -> 10:15."""
    text = (value or "").replace(":", "")
    return f"{text[:2]}:{text[2:4]}" if len(text) >= 4 and text[:4].isdigit() else text


def person_name(value: str | None) -> str:
    """PN Doe^Jane^^Dr -> Doe, Jane (the alphabetic group only)."""
    alphabetic = (value or "").split("=")[0]
    family, _, rest = alphabetic.partition("^")
    given = rest.split("^")[0] if rest else ""
    return f"{family}, {given}" if given else family


def timestamp(value: dt.datetime | str | None) -> str:
    """A UTC time, to the second: 2026-12-03 10:15:02 UTC."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.rstrip("Z"))
    return value.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def html_date(value: str) -> str:
    """An <input type=date> value (2024-03-15) as a DICOM date (20240315); '' stays ''; InvalidRequest for
    anything that is no date."""
    if not value:
        return ""
    try:
        return dt.date.fromisoformat(value).strftime("%Y%m%d")
    except ValueError:
        raise InvalidRequest("a date is YYYY-MM-DD") from None


environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters.update(
    size=size, dicom_date=dicom_date, dicom_time=dicom_time, person_name=person_name, timestamp=timestamp
)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def render(
    request: Request,
    caller: Caller | None,
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A template as an HTML answer; the layout gets the caller's navigation and the current path."""
    principal = caller.principal if caller is not None else None
    text = environment.get_template(template).render(
        request_path=request.url.path,
        principal=principal,
        nav=navigation(principal) if principal is not None else [],
        may=(lambda permission: may(principal, permission)) if principal is not None else (lambda _: False),
        Permission=Permission,
        **context,
    )
    return HTMLResponse(text, status_code=status, headers={**HEADERS, **(headers or {})})


def page_or_fragment(
    request: Request, caller: Caller, page: str, fragment: str, **context: Any
) -> HTMLResponse:
    """The fragment for htmx (it swaps it into the page), the whole page otherwise (no script)."""
    return render(request, caller, fragment if is_htmx(request) else page, **context)
