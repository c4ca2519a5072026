"""REST resources of federated discovery, two APIs:

* `/api/federation/...` for this site's users (archive tokens, `Require`): counts here and at the peers
  (researchers, admins), access requests sent for a project (its researchers, admins), and for admins the
  site's id and public key, the peer sites with their switches, and the requests received, with approve
  and reject.
* `/federation/v1/...` for peer sites: each call authenticated by a token the peer signed for exactly
  that call (`SignedPeer`, imaging.federation.signing), not by an archive token: `ping`, `counts`,
  `access-requests` and the status of one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from imaging.access import Permission, Role, authorize
from imaging.access.http import Caller, Require, bearer_token
from imaging.archive import Archive
from imaging.errors import InvalidRequest, NotAuthorized, NotFound
from imaging.federation import client, permits, requesting, signing
from imaging.federation.criteria import CohortDefinition, definition
from imaging.federation.disclosure import answer, refuse
from imaging.federation.keys import public_key_pem
from imaging.federation.models import FederationPeer
from imaging.federation.peers import list_peers, peer_info, remove_peer, set_peer
from imaging.partition import PARTITION_PATTERN
from imaging.web import get_archive

router = APIRouter(prefix="/api/federation", tags=["Federation"])
peer_router = APIRouter(prefix=client.API, tags=["Federation: peer API"])

Admin = Annotated[Caller, Depends(Require(Permission.MANAGE_FEDERATION))]
Asker = Annotated[Caller, Depends(Require(Permission.FEDERATED_QUERY))]
Requester = Annotated[Caller, Depends(Require(Permission.FEDERATION_REQUEST, url_scoped=False))]
RequestUid = Annotated[str, Path(pattern=permits.REQUEST_UID)]


# ------------------------------------------------------------------------------------ this site's users
@router.get("/site", summary="This site's id and public key (register them at the peer sites)")
def site(caller: Admin) -> dict[str, Any]:
    settings = caller.archive.settings
    return {
        "site_id": settings.federation_site_id,
        "enabled": bool(settings.federation_site_id),
        "public_key": public_key_pem(settings),
    }


class PeerIn(BaseModel):
    """A peer site; fields left out (null) keep their value."""

    site_id: str | None = Field(default=None, max_length=128)
    url: str | None = Field(default=None, max_length=512)
    public_key: str | None = Field(default=None, max_length=4000, description="PEM, Ed25519")
    discovery: bool | None = Field(default=None, description="answer its count queries")
    requests: bool | None = Field(default=None, description="accept its access requests")
    ask: bool | None = Field(default=None, description="ask it when we count")
    delivery_peer: str | None = Field(default=None, max_length=64)
    ca_file: str | None = Field(default=None, max_length=512)
    description: str | None = Field(default=None, max_length=256)


@router.get("/peers", summary="Peer sites and their switches")
def peers(caller: Admin) -> list[dict[str, Any]]:
    with caller.archive.db.read() as session:
        return [peer_info(p) for p in list_peers(session)]


@router.put("/peers/{name}", summary="Add or change a peer site (e.g. switch its discovery off)")
def put_peer(name: str, body: PeerIn, caller: Admin) -> dict[str, Any]:
    return peer_info(set_peer(caller.archive, name, user=caller.user, **body.model_dump()))


@router.delete("/peers/{name}", status_code=204, summary="Remove a peer site")
def delete_peer(name: str, caller: Admin) -> None:
    remove_peer(caller.archive, name, user=caller.user)


@router.post("/peers/{name}/test", summary="Test the connection: a signed call the peer must accept")
def test_peer(name: str, caller: Admin) -> dict[str, Any]:
    return client.ping(caller.archive, name)


class CountsIn(BaseModel):
    definition: dict[str, Any] = Field(default_factory=dict, description="a cohort definition")
    peers: list[str] | None = Field(default=None, description="only these peers (default: every one asked)")
    local: bool = Field(default=True, description="include this site's count")


@router.post("/counts", summary="How many studies match, here and at every peer (counts only)")
def counts(body: CountsIn, caller: Asker) -> dict[str, Any]:
    cohort = definition(body.definition)
    rows = client.count_everywhere(
        caller.archive, cohort, user=caller.user, peers=body.peers, local=body.local
    )
    return {
        "definition": json.loads(cohort.canonical()),
        "sites": [r.as_json() for r in rows],
        "total": client.totals(rows),
    }


class RequestIn(BaseModel):
    peer: str = Field(max_length=64, description="the holding site (a federation peer)")
    project: str = Field(pattern=PARTITION_PATTERN, description="the project the data is for")
    definition: dict[str, Any] = Field(default_factory=dict)
    purpose: str = Field(default="", max_length=4000)


@router.post("/requests", status_code=202, summary="Send an access request for a project's cohort")
def send_request(body: RequestIn, caller: Requester) -> dict[str, Any]:
    authorize(caller.principal, Permission.FEDERATION_REQUEST, body.project)
    cohort = definition(body.definition)
    return requesting.send(
        caller.archive, body.peer, body.project, cohort, purpose=body.purpose, user=caller.user
    )


@router.get("/requests", summary="Access requests sent (a researcher: those of their project)")
def sent_requests(caller: Requester, project: str | None = None) -> list[dict[str, Any]]:
    if caller.principal.role == Role.RESEARCHER:
        project = caller.principal.project
    with caller.archive.db.read() as session:
        return [requesting.info(r) for r in requesting.list_requests(session, project)]


@router.get("/requests/{request_uid}", summary="An access request's status, as the holding site says")
def sent_request(request_uid: RequestUid, caller: Requester, refresh: bool = True) -> dict[str, Any]:
    with caller.archive.db.read() as session:
        row = requesting.get_request(session, request_uid)
    authorize(caller.principal, Permission.FEDERATION_REQUEST, row.project)
    if refresh:
        return requesting.refresh(caller.archive, request_uid)
    return requesting.info(row)


@router.get("/incoming", summary="Access requests received from peer sites")
def incoming(
    caller: Admin, status: Annotated[str | None, Query(pattern=r"^(pending|approved|rejected)$")] = None
) -> list[dict[str, Any]]:
    with caller.archive.db.read() as session:
        return [permits.info(session, r) for r in permits.list_requests(session, status)]


@router.get("/incoming/{request_uid}", summary="One access request received, with its delivery")
def incoming_one(request_uid: RequestUid, caller: Admin) -> dict[str, Any]:
    with caller.archive.db.read() as session:
        return permits.info(session, permits.get_request(session, request_uid))


class ApproveIn(BaseModel):
    deliver_to: str = Field(default="", max_length=64, description="sharing peer (default: the site's)")
    project: str = Field(default="", max_length=64, description="local project with the same key")


@router.post("/incoming/{request_uid}/approve", summary="Approve: the cohort is shared de-identified")
def approve(request_uid: RequestUid, body: ApproveIn, caller: Admin) -> dict[str, Any]:
    return permits.approve(
        caller.archive, request_uid, deliver_to=body.deliver_to, project=body.project, user=caller.user
    )


class RejectIn(BaseModel):
    reason: str = Field(default="", max_length=512, description="told to the requester")


@router.post("/incoming/{request_uid}/reject", summary="Reject: nothing is shared")
def reject(request_uid: RequestUid, body: RejectIn, caller: Admin) -> dict[str, Any]:
    return permits.reject(caller.archive, request_uid, reason=body.reason, user=caller.user)


# ------------------------------------------------------------------------------------ peer sites
@dataclass(frozen=True)
class PeerCaller:
    archive: Archive
    peer: FederationPeer
    body: bytes  # exactly the bytes the token's `bdy` claim covers

    @property
    def user(self) -> str:
        """How the audit trail names the calling site."""
        return f"site:{self.peer.site_id}"

    @property
    def source(self) -> str:
        return f"federation-peer:{self.peer.name}"

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else {}
        except ValueError:
            raise InvalidRequest("the body is not JSON") from None


MAX_BODY = 64 * 1024  # a cohort definition or an access request is a few hundred bytes


class BodyTooLarge(InvalidRequest):
    http_status = 413


async def _body(request: Request) -> bytes:
    """The request body, read up to MAX_BODY: the peer API reads it before the caller is known."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise BodyTooLarge("request body too large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BodyTooLarge("request body too large")
        chunks.append(chunk)
    return b"".join(chunks)


class SignedPeer:
    """Dependency of the peer API: a registered peer site, by the token it signed for this very request.
    Not an archive token, so no `Permission`: the route table says `peer-signed`."""

    permission = None
    credential = "peer-signed"

    async def __call__(self, request: Request) -> PeerCaller:
        archive = get_archive(request)
        body = await _body(request)
        resource = request.url.path.partition(client.API)[2]
        peer = await run_in_threadpool(
            signing.verify,
            archive,
            bearer_token(request),
            method=request.method,
            resource=resource,
            body=body,
        )
        return PeerCaller(archive, peer, body)


Peer = Annotated[PeerCaller, Depends(SignedPeer())]


@peer_router.get("/ping", summary="A peer checks that we know it")
def ping(caller: Peer) -> dict[str, str]:
    return {"site": caller.archive.settings.federation_site_id}


@peer_router.post("/counts", summary="How many studies match here (counts only, small cells suppressed)")
def peer_counts(caller: Peer) -> dict[str, Any]:
    archive, who = caller.archive, caller.user
    data = caller.json()
    cohort: CohortDefinition | None = None
    problem: InvalidRequest | None = None
    try:
        cohort = definition(data.get("definition", {}) if isinstance(data, dict) else None)
    except InvalidRequest as exc:
        problem = exc
    if not caller.peer.discovery:
        reason = "discovery is switched off for this site"
        refuse(archive, cohort, requester=who, user=who, source=caller.source, reason=reason)
        raise NotAuthorized(reason)
    if problem is not None or cohort is None:
        refuse(archive, None, requester=who, user=who, source=caller.source, reason="invalid definition")
        raise problem or InvalidRequest("invalid cohort definition")
    return answer(archive, cohort, requester=who, user=who, source=caller.source).as_json()


@peer_router.post("/access-requests", summary="A peer site asks for a cohort for one of its projects")
def peer_request(caller: Peer) -> dict[str, Any]:
    return permits.receive(caller.archive, caller.peer, permits.parse_request(caller.json()))


@peer_router.get("/access-requests/{request_uid}", summary="The status of a request the peer sent")
def peer_request_status(request_uid: RequestUid, caller: Peer) -> dict[str, Any]:
    with caller.archive.db.read() as session:
        row = permits.get_request(session, request_uid)
        if row.site_id != caller.peer.site_id:
            raise NotFound("no such access request")
        return permits.status(session, row)


routers = (router, peer_router)
