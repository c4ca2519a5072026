"""Calls to peer sites' federation APIs (`<url>/federation/v1/...`), each with a token signed for exactly
that call (imaging.federation.signing), and the fan-out of a count query to every peer we ask.

A peer's answer is data from outside: it is validated before use, and its error messages are cut short.
Errors are the sharing feature's: PeerUnavailable (cannot reach it, 502/503/504) and PeerRejected (it
answered and refused)."""

from __future__ import annotations

import json
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imaging import audit
from imaging.archive import Archive
from imaging.errors import Conflict, InvalidRequest
from imaging.federation.criteria import CohortDefinition
from imaging.federation.disclosure import answer
from imaging.federation.models import FederationPeer
from imaging.federation.peers import get_peer, list_peers
from imaging.federation.signing import sign
from imaging.sharing.peers import PeerError, PeerRejected, PeerUnavailable

API = "/federation/v1"
MAX_FANOUT = 16


class PeerRefused(PeerRejected):
    """The peer answered with an error status (kept in `status`); for our caller a gateway error (502)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _message(response: httpx.Response) -> str:
    """The peer's `detail`, printable and short (it is the peer's free text)."""
    try:
        detail = response.json().get("detail", "")
    except (ValueError, AttributeError):
        detail = ""
    text = "".join(c for c in str(detail) if c.isprintable())[:200]
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")


def call(archive: Archive, peer: FederationPeer, method: str, resource: str, payload: Any = None) -> Any:
    """One signed call to a peer site's federation API; its JSON answer."""
    settings = archive.settings
    if not settings.federation_site_id:
        raise Conflict("set federation_site_id before asking peer sites")
    if not peer.url:
        raise InvalidRequest(f"federation peer {peer.name} has no url")
    body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
    token = sign(archive, audience=peer.site_id, method=method, resource=resource, body=body)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    headers["User-Agent"] = "imaging-archive-federation"
    if payload is not None:
        headers["Content-Type"] = "application/json"
    verify: Any = ssl.create_default_context(cafile=peer.ca_file) if peer.ca_file else True
    try:
        with httpx.Client(timeout=settings.federation_timeout, verify=verify) as client:
            response = client.request(method, peer.url + API + resource, content=body, headers=headers)
    except httpx.TransportError as exc:
        raise PeerUnavailable(f"{peer.name}: {type(exc).__name__}") from exc
    if response.status_code in (502, 503, 504):
        raise PeerUnavailable(f"{peer.name}: HTTP {response.status_code}")
    if response.status_code >= 400:
        raise PeerRefused(f"{peer.name}: {_message(response)}", response.status_code)
    try:
        return response.json()
    except ValueError:
        raise PeerRejected(f"{peer.name}: the answer is not JSON") from None


class PeerCount(BaseModel):
    """A peer's count answer, as we accept it."""

    model_config = ConfigDict(extra="ignore")
    site: str = Field(max_length=128)
    status: str = Field(pattern=r"^(answered|suppressed|refused)$")
    studies: int | None = Field(default=None, ge=0)
    patients: int | None = Field(default=None, ge=0)
    threshold: int = Field(default=0, ge=0)
    reason: str = Field(default="", max_length=256)


@dataclass
class SiteCount:
    """One row of a federated count: a site's answer, or why there is none."""

    name: str  # our name for the site ("local": this site)
    site: str
    status: str  # answered | suppressed | refused | unavailable | error
    studies: int | None = None
    patients: int | None = None
    threshold: int = 0
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def ask_peer(archive: Archive, peer: FederationPeer, cohort: CohortDefinition) -> SiteCount:
    try:
        data = call(archive, peer, "POST", "/counts", {"definition": json.loads(cohort.canonical())})
        got = PeerCount.model_validate(data)
    except PeerUnavailable as exc:
        return SiteCount(peer.name, peer.site_id, "unavailable", reason=str(exc))
    except PeerRefused as exc:
        refused = exc.status in (401, 403)
        return SiteCount(peer.name, peer.site_id, "refused" if refused else "error", reason=str(exc))
    except (PeerError, ValidationError):
        return SiteCount(peer.name, peer.site_id, "error", reason=f"{peer.name}: unexpected answer")
    if got.site != peer.site_id:
        return SiteCount(peer.name, peer.site_id, "error", reason=f"{peer.name}: answered as another site")
    if got.status == "answered" and (got.studies is None or got.patients is None):
        return SiteCount(peer.name, peer.site_id, "error", reason=f"{peer.name}: answer without counts")
    released = got.status == "answered"
    return SiteCount(
        peer.name,
        peer.site_id,
        got.status,
        got.studies if released else None,
        got.patients if released else None,
        got.threshold,
        got.reason,
    )


def count_everywhere(
    archive: Archive,
    cohort: CohortDefinition,
    *,
    user: str,
    peers: list[str] | None = None,
    local: bool = True,
) -> list[SiteCount]:
    """This site's answer (the same function and the same disclosure control as a peer gets) and every
    asked peer's (`peers`: those names only; default: every peer with `ask` on and a url), in parallel."""
    with archive.db.read() as session:
        if peers is None:
            chosen = [p for p in list_peers(session) if p.ask and p.url]
        else:
            chosen = [get_peer(session, name) for name in dict.fromkeys(peers)]
    rows: list[SiteCount] = []
    if local:
        mine = answer(archive, cohort, requester=f"local:{user}", user=user, source="federation:local")
        rows.append(
            SiteCount(
                "local", mine.site, mine.status, mine.studies, mine.patients, mine.threshold, mine.reason
            )
        )
    if chosen:
        if not archive.settings.federation_site_id:
            raise Conflict("set federation_site_id before asking peer sites")
        with ThreadPoolExecutor(max_workers=min(MAX_FANOUT, len(chosen))) as pool:
            rows.extend(pool.map(lambda p: ask_peer(archive, p, cohort), chosen))
        with archive.db.write() as session:
            audit.record(
                session,
                audit.AuditEvent.QUERY,
                user=user[:128],
                action="E",
                source="federation:peers",
                detail=f"federated count {cohort.canonical()} asked of "
                + ", ".join(f"{r.name}: {r.status}" for r in rows if r.name != "local"),
            )
    return rows


def totals(rows: list[SiteCount]) -> dict[str, Any]:
    """Sums over the sites that released a count; how many sites did not."""
    released = [r for r in rows if r.status == "answered"]
    return {
        "studies": sum(r.studies or 0 for r in released),
        "patients": sum(r.patients or 0 for r in released),
        "sites_answered": len(released),
        "sites_suppressed": sum(1 for r in rows if r.status == "suppressed"),
        "sites_without_answer": sum(1 for r in rows if r.status not in ("answered", "suppressed")),
    }


def ping(archive: Archive, name: str) -> dict[str, Any]:
    """Test the connection to a peer site: it must know us, and answer as the site we registered."""
    with archive.db.read() as session:
        peer = get_peer(session, name)
    data = call(archive, peer, "GET", "/ping")
    if not isinstance(data, dict) or data.get("site") != peer.site_id:
        raise PeerRejected(f"{name}: answered as another site")
    return {"peer": name, "site": peer.site_id, "ok": True}
