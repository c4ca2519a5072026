"""Sharing, consent, audit and outbox REST API (`router`, mounted at the application root under /api).

Roles: `admin` configures peers and policies, manages consent, reads the audit trail and re-arms failed
deliveries; `clinician` (and admin) shares a clinical study by hand, sees delivery status and creates or
revokes share links for clinical studies; a `researcher` may create share links for studies of their own
project. Secrets (peer passwords, share-link tokens) are accepted, never returned — except a new share
link's token, once, in the answer that creates it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from dicomweb.auth import Principal, authenticate
from imaging import audit
from imaging.archive import Archive
from imaging.errors import ArchiveError
from imaging.index.schema import CLINICAL
from imaging.sharing import consent, links, outbox, peers, policies
from imaging.sharing.models import PeerAuth, PeerKind

router = APIRouter(prefix="/api", tags=["Sharing"])
T = TypeVar("T")


# ------------------------------------------------------------------------------------ access
class Caller:
    def __init__(self, archive: Archive, principal: Principal) -> None:
        self.archive = archive
        self.principal = principal

    @property
    def user(self) -> str:
        p = self.principal
        return f"token:{p.token_pk}:{p.role}" if p.token_pk is not None else f"dev:{p.role}"


def _caller(*roles: str) -> Callable[[Request], Caller]:
    def dependency(request: Request) -> Caller:
        archive: Archive = request.app.state.archive
        principal = authenticate(archive, request)
        if principal.role not in roles:
            raise HTTPException(403, f"role {principal.role} may not do this")
        return Caller(archive, principal)

    return dependency


admin = _caller("admin")
clinician = _caller("admin", "clinician")
any_reader = _caller("admin", "clinician", "researcher")


def _run(fn: Callable[[], T]) -> T:
    """Domain errors → HTTP (works with or without the application's ArchiveError handler)."""
    try:
        return fn()
    except ArchiveError as exc:
        raise HTTPException(exc.http_status, str(exc) or type(exc).__name__) from exc
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


# ------------------------------------------------------------------------------------ peers
class PeerIn(BaseModel):
    kind: PeerKind
    description: str = ""
    url: str = ""
    ae_title: str = ""
    host: str = ""
    port: int = 0
    calling_ae_title: str = ""
    auth: PeerAuth = PeerAuth.NONE
    username: str = ""
    secret: str | None = Field(
        default=None, description="password or bearer token; stored apart, never returned"
    )
    tls_verify: bool = True
    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    tls: bool = False
    timeout: float = Field(default=30.0, gt=0, le=600)
    enabled: bool = True


@router.get("/peers", summary="Peer sites (without secrets)")
def list_peers(caller: Caller = Depends(admin)) -> list[dict[str, Any]]:
    with caller.archive.db.read() as session:
        return [peers.peer_info(p) for p in peers.list_peers(session)]


@router.put("/peers/{name}", summary="Add or change a peer site")
def put_peer(name: str, body: PeerIn, caller: Caller = Depends(admin)) -> dict[str, Any]:
    fields = body.model_dump(exclude={"kind", "secret"})
    fields["auth"] = body.auth.value
    peer = _run(lambda: peers.add_peer(caller.archive, name, body.kind.value, secret=body.secret, **fields))
    with caller.archive.db.write() as session:
        audit.record(
            session,
            audit.AuditEvent.SECURITY_ALERT,
            user=caller.user,
            action="U",
            source=f"peer:{name}",
            detail=f"110128 Network Configuration: peer {name} set",
        )
    return peers.peer_info(peer)


@router.delete("/peers/{name}", status_code=204, summary="Remove a peer site")
def delete_peer(name: str, caller: Caller = Depends(admin)) -> None:
    _run(lambda: peers.remove_peer(caller.archive, name))


# ------------------------------------------------------------------------------------ policies
class PolicyIn(BaseModel):
    description: str = ""
    enabled: bool = True
    modalities: list[str] = []
    body_parts: list[str] = []
    description_regex: str = ""
    priorities: list[str] = []
    peers: list[str]
    project: str = ""
    identified: bool = False


@router.get("/policies", summary="Sharing policies")
def list_policies(caller: Caller = Depends(admin)) -> list[dict[str, Any]]:
    with caller.archive.db.read() as session:
        return [policies.policy_info(p) for p in policies.list_policies(session)]


@router.put("/policies/{name}", summary="Add or replace a sharing policy")
def put_policy(name: str, body: PolicyIn, caller: Caller = Depends(admin)) -> dict[str, Any]:
    policy = _run(lambda: policies.add_policy(caller.archive, name, **body.model_dump()))
    return policies.policy_info(policy)


@router.delete("/policies/{name}", status_code=204, summary="Remove a sharing policy")
def delete_policy(name: str, caller: Caller = Depends(admin)) -> None:
    _run(lambda: policies.remove_policy(caller.archive, name))


# ------------------------------------------------------------------------------------ shares & outbox
class ShareIn(BaseModel):
    study_uid: str = Field(pattern=r"^[0-9.]{1,64}$")
    peers: list[str] = Field(min_length=1)
    project: str = ""
    identified: bool = False


@router.post("/shares", status_code=202, summary="Share a stable clinical study with peers now")
def share(body: ShareIn, caller: Caller = Depends(clinician)) -> dict[str, Any]:
    queued = _run(
        lambda: outbox.share_study(
            caller.archive,
            body.study_uid,
            body.peers,
            project=body.project,
            identified=body.identified,
            user=caller.user,
        )
    )
    return {"queued": queued}


@router.get("/outbox", summary="Delivery status per peer and study")
def outbox_status(
    caller: Caller = Depends(clinician),
    peer: str | None = None,
    study_uid: str | None = None,
    status: str | None = None,
    limit: int = Query(200, ge=1, le=5000),
) -> dict[str, Any]:
    with caller.archive.db.read() as session:
        summary = outbox.summary(session)
        groups = outbox.groups(session, peer=peer, study_uid=study_uid, status=status, limit=limit)
    return {
        "summary": summary,
        "deliveries": [
            {
                "peer": g.peer,
                "project": g.project,
                "StudyInstanceUID": g.StudyInstanceUID,
                "peer_StudyInstanceUID": g.peer_StudyInstanceUID,
                "counts": g.counts,
                "last_error": g.last_error,
                "attempts": g.attempts,
                "next_attempt_at": g.next_attempt_at.isoformat() + "Z" if g.next_attempt_at else None,
                "updated_at": g.updated_at.isoformat() + "Z" if g.updated_at else None,
            }
            for g in groups
        ],
    }


class RetryIn(BaseModel):
    peer: str | None = None
    study_uid: str | None = None


@router.post("/outbox/retry", summary="Re-arm failed deliveries")
def outbox_retry(body: RetryIn, caller: Caller = Depends(admin)) -> dict[str, int]:
    with caller.archive.db.write() as session:
        return {"rearmed": outbox.retry(session, peer=body.peer, study_uid=body.study_uid)}


# ------------------------------------------------------------------------------------ consent
class PatientIn(BaseModel):
    PatientID: str = Field(min_length=1, max_length=64)
    IssuerOfPatientID: str = Field(default="", max_length=64)


@router.post("/consent/opt-outs", status_code=201, summary="Record an opt-out (cancels queued deliveries)")
def post_opt_out(body: PatientIn, caller: Caller = Depends(admin)) -> dict[str, Any]:
    with caller.archive.db.write() as session:
        new = consent.opt_out(session, body.PatientID, body.IssuerOfPatientID, source="api", user=caller.user)
    return {"recorded": new}


@router.post("/consent/withdrawals", summary="Withdraw an opt-out")
def post_withdrawal(body: PatientIn, caller: Caller = Depends(admin)) -> dict[str, Any]:
    with caller.archive.db.write() as session:
        return {
            "withdrawn": consent.withdraw_opt_out(
                session, body.PatientID, body.IssuerOfPatientID, user=caller.user
            )
        }


@router.post("/consent/lookup", summary="Whether a patient opted out (identifiers in the body, not the URL)")
def post_lookup(body: PatientIn, caller: Caller = Depends(admin)) -> dict[str, Any]:
    with caller.archive.db.read() as session:
        return {"opted_out": consent.is_opted_out(session, body.PatientID, body.IssuerOfPatientID)}


@router.post("/consent/import", summary="Import opt-outs from CSV (PatientID[,IssuerOfPatientID])")
async def post_import(request: Request, caller: Caller = Depends(admin)) -> dict[str, int]:
    text = (await request.body()).decode("utf-8")
    list(csv.reader(io.StringIO(text)))  # refuse what is not CSV before writing anything
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "api-upload.csv"
        path.write_text(text, encoding="utf-8")
        with caller.archive.db.write() as session:
            return {"added": consent.import_csv(session, path, user=caller.user)}


# ------------------------------------------------------------------------------------ audit
@router.get("/audit", summary="Audit trail (PS3.15 A.5 event codes): JSON, JSON lines or DICOM audit XML")
def get_audit(
    caller: Caller = Depends(admin),
    event: str | None = Query(None, description="EventID code, e.g. 110104"),
    study_uid: str | None = None,
    user: str | None = None,
    source: str | None = None,
    partition: str | None = None,
    patient_ref: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    after: int = Query(0, ge=0, description="page: records after this id"),
    limit: int = Query(1000, ge=1, le=10000),
    format: str = Query("json", pattern="^(json|jsonl|xml)$"),
) -> Any:
    filters: dict[str, Any] = {
        "event": event, "study_uid": study_uid, "user": user, "source": source, "partition": partition,
        "patient_ref": patient_ref, "since": _naive(since), "until": _naive(until),
    }  # fmt: skip
    if event is not None and event not in {e.value for e in audit.AuditEvent}:
        raise HTTPException(400, "unknown event code")
    if format == "json":
        with caller.archive.db.read() as session:
            return [audit.to_dict(r) for r in audit.query(session, after_pk=after, limit=limit, **filters)]

    def lines() -> Iterator[bytes]:
        with caller.archive.db.read() as session:
            for line in audit.export(session, format, after_pk=after, **filters):
                yield line.encode()

    media = "application/x-ndjson" if format == "jsonl" else "application/xml"
    return StreamingResponse(lines(), media_type=media)


def _naive(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


# ------------------------------------------------------------------------------------ share links
class LinkIn(BaseModel):
    study_uids: list[str] = []
    partition: str = CLINICAL
    project: str = ""  # with cohort: the cohort's project
    cohort: str = ""
    expires_in_days: float = Field(default=7, gt=0)
    description: str = Field(default="", max_length=256)


def _may_link(principal: Principal, partition: str) -> None:
    if principal.role == "clinician" and partition != CLINICAL:
        raise HTTPException(403, "clinicians share clinical studies only")
    if principal.role == "researcher" and partition != principal.project:
        raise HTTPException(403, "researchers share studies of their own project only")


@router.post("/share-links", status_code=201, summary="Create an expiring read-only share link")
def post_link(body: LinkIn, caller: Caller = Depends(any_reader)) -> dict[str, Any]:
    partition = body.project if body.cohort else body.partition
    _may_link(caller.principal, partition)
    token, link = _run(
        lambda: links.create_link(
            caller.archive,
            study_uids=body.study_uids or None,
            cohort=(body.project, body.cohort) if body.cohort else None,
            partition=body.partition,
            expires_in=dt.timedelta(days=body.expires_in_days),
            created_by=caller.user,
            description=body.description,
        )
    )
    return {"token": token, "dicomweb": f"/shares/{token}/dicomweb", **links.link_info(link)}


@router.get("/share-links", summary="Share links (never their tokens)")
def get_links(
    caller: Caller = Depends(clinician), include_inactive: bool = Query(False, alias="all")
) -> list[dict[str, Any]]:
    with caller.archive.db.read() as session:
        return [
            links.link_info(link) for link in links.list_links(session, include_inactive=include_inactive)
        ]


@router.delete("/share-links/{link_id}", summary="Revoke a share link (effective at once)")
def delete_link(link_id: int, caller: Caller = Depends(any_reader)) -> dict[str, Any]:
    with caller.archive.db.write() as session:
        from imaging.sharing.models import ShareLink

        link = session.get(ShareLink, link_id)
        if link is None:
            raise HTTPException(404, "no such share link")
        _may_link(caller.principal, link.partition)
        return {"revoked": links.revoke(session, link_id, user=caller.user)}
