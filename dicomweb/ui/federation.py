"""The site operator's federation page: this site's id and public key (to register at the peer sites), the
peer sites with their switches (add, edit, test the connection, remove), and the access requests received
with approve / reject and each approved one's delivery.

The domain functions of `/api/federation/site|peers|incoming` and `imaging federation ...` (peers,
client.ping, permits), under the same permission, so each change is validated and audited alike.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Query, Request, Response
from fastapi.responses import RedirectResponse

from dicomweb.ui.discovery import describe
from dicomweb.ui.render import HEADERS, is_htmx, render
from imaging.access import Permission
from imaging.access.http import Caller, Require
from imaging.errors import ArchiveError, InvalidRequest
from imaging.federation import client, permits
from imaging.federation.keys import public_key_pem
from imaging.federation.peers import get_peer, list_peers, peer_info, remove_peer, set_peer
from imaging.research.projects import list_projects
from imaging.sharing.peers import list_peers as list_sharing_peers

router = APIRouter(prefix="/ui/federation", include_in_schema=False)
Admin = Annotated[Caller, Depends(Require(Permission.MANAGE_FEDERATION))]
RequestUid = Annotated[str, Path(pattern=permits.REQUEST_UID)]
STATUSES = ("pending", "approved", "rejected")
BLANK_PEER: dict[str, Any] = {
    "name": "", "site_id": "", "url": "", "public_key": "", "discovery": True, "requests": True,
    "ask": True, "delivery_peer": "", "ca_file": "", "description": "",
}  # fmt: skip


class PeerForm:
    """The fields of PeerIn (imaging.federation.api) as a form. Unticked boxes are off; a blank public key
    keeps the registered one (the edit form does not make the operator paste it again)."""

    def __init__(
        self,
        site_id: Annotated[str, Form(max_length=128)] = "",
        url: Annotated[str, Form(max_length=512)] = "",
        public_key: Annotated[str, Form(max_length=4000)] = "",
        discovery: Annotated[bool, Form()] = False,
        requests: Annotated[bool, Form()] = False,
        ask: Annotated[bool, Form()] = False,
        delivery_peer: Annotated[str, Form(max_length=64)] = "",
        ca_file: Annotated[str, Form(max_length=512)] = "",
        description: Annotated[str, Form(max_length=256)] = "",
    ) -> None:
        self.fields: dict[str, Any] = {
            "site_id": site_id.strip(), "url": url.strip(), "public_key": public_key.strip() or None,
            "discovery": discovery, "requests": requests, "ask": ask, "delivery_peer": delivery_peer.strip(),
            "ca_file": ca_file.strip(), "description": description.strip(),
        }  # fmt: skip


def _incoming(caller: Caller, status: str) -> list[dict[str, Any]]:
    with caller.archive.db.read() as session:
        return [permits.info(session, r) for r in permits.list_requests(session, status or None)]


def _choices(caller: Caller) -> dict[str, Any]:
    """What an approval may name: a sharing peer to deliver to, a local project to de-identify with."""
    with caller.archive.db.read() as session:
        return {
            "sharing_peers": [p.name for p in list_sharing_peers(session)],
            "projects": [p.name for p in list_projects(session)],
        }


def _page(request: Request, caller: Caller, *, status: int = 200, **context: Any) -> Response:
    settings = caller.archive.settings
    with caller.archive.db.read() as session:
        peers = [peer_info(p) for p in list_peers(session)]
    context.setdefault("blank_peer", BLANK_PEER)
    context.setdefault("chosen_status", "")
    return render(
        request,
        caller,
        "federation.html",
        status=status,
        site={"site_id": settings.federation_site_id, "public_key": public_key_pem(settings)},
        peers=peers,
        incoming=_incoming(caller, context["chosen_status"]),
        statuses=STATUSES,
        describe=describe,
        **_choices(caller),
        **context,
    )


@router.get("", summary="Federation: this site, peer sites, access requests received (page)")
def federation_page(
    request: Request,
    caller: Admin,
    status: Annotated[str, Query(pattern=r"^(|pending|approved|rejected)$")] = "",
    saved: Annotated[str, Query(max_length=80)] = "",
) -> Response:
    return _page(request, caller, chosen_status=status, message=f"{saved}." if saved else "")


def _save(request: Request, caller: Caller, name: str, form: PeerForm, *, new: bool) -> Response:
    try:
        set_peer(caller.archive, name, user=caller.user, **form.fields)
    except InvalidRequest as exc:
        shown = {**BLANK_PEER, **{k: v or "" for k, v in form.fields.items()}, "name": name}
        shown.update({k: form.fields[k] for k in ("discovery", "requests", "ask")})
        if new:
            return _page(request, caller, status=400, blank_peer=shown, peer_error=str(exc))
        return render(request, caller, "federation_peer.html", status=400, peer=shown, error=str(exc))
    return RedirectResponse(
        f"/ui/federation?saved=Peer+site+{name}+saved#peers", status_code=303, headers=HEADERS
    )


@router.post("/peers", summary="Add a peer site")
def add_peer(
    request: Request,
    caller: Admin,
    name: Annotated[str, Form(max_length=64)],
    form: Annotated[PeerForm, Depends()],
) -> Response:
    with caller.archive.db.read() as session:
        exists = name in {p.name for p in list_peers(session)}
    if exists:  # adding never overwrites: set_peer alone would change the existing one
        shown = {**BLANK_PEER, **{k: v or "" for k, v in form.fields.items()}, "name": name}
        return _page(
            request, caller, status=409, blank_peer=shown, peer_error=f"a peer site named {name} exists"
        )
    return _save(request, caller, name, form, new=True)


@router.get("/peers/{name}", summary="A peer site's settings (page)")
def peer_page(request: Request, name: str, caller: Admin) -> Response:
    with caller.archive.db.read() as session:
        peer = peer_info(get_peer(session, name))
    return render(request, caller, "federation_peer.html", peer=peer)


@router.post("/peers/{name}", summary="Change a peer site (e.g. switch its discovery off)")
def edit_peer(request: Request, name: str, caller: Admin, form: Annotated[PeerForm, Depends()]) -> Response:
    with caller.archive.db.read() as session:
        get_peer(session, name)  # NotFound: editing never creates
    return _save(request, caller, name, form, new=False)


@router.post("/peers/{name}/remove", summary="Remove a peer site")
def delete_peer(request: Request, name: str, caller: Admin) -> Response:
    remove_peer(caller.archive, name, user=caller.user)
    target = f"/ui/federation?saved=Peer+site+{name}+removed#peers"
    if is_htmx(request):  # asked after a confirmation: the whole page changes, so htmx loads it
        return Response(status_code=204, headers={**HEADERS, "HX-Redirect": target})
    return RedirectResponse(target, status_code=303, headers=HEADERS)


@router.post("/peers/{name}/test", summary="Test the connection: a signed call the peer must accept")
def test_peer(request: Request, name: str, caller: Admin) -> Response:
    try:
        result = {"peer": name, "ok": True, **client.ping(caller.archive, name)}
    except ArchiveError as exc:  # unreachable, refused, no site id here: the message says which
        result = {"peer": name, "ok": False, "detail": str(exc)}
    if is_htmx(request):
        return render(request, caller, "_federation_test.html", result=result)
    return _page(request, caller, tested=result)


def _decided(request: Request, caller: Caller, request_uid: str, what: str) -> Response:
    """The received requests' table again (htmx swaps it over the old one), or back to the page."""
    if not is_htmx(request):
        return RedirectResponse(
            f"/ui/federation?saved=Request+{request_uid}+{what}#incoming", status_code=303, headers=HEADERS
        )
    return render(
        request,
        caller,
        "_incoming.html",
        headers={"HX-Retarget": "#incoming", "HX-Reswap": "outerHTML"},
        incoming=_incoming(caller, ""),
        statuses=STATUSES,
        chosen_status="",
        describe=describe,
        message=f"Request {request_uid} {what}.",
        **_choices(caller),
    )


@router.post("/incoming/{request_uid}/approve", summary="Approve: the cohort is shared de-identified")
def approve(
    request: Request,
    request_uid: RequestUid,
    caller: Admin,
    deliver_to: Annotated[str, Form(max_length=64)] = "",
    project: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    permits.approve(caller.archive, request_uid, deliver_to=deliver_to, project=project, user=caller.user)
    return _decided(request, caller, request_uid, "approved")


@router.post("/incoming/{request_uid}/reject", summary="Reject: nothing is shared")
def reject(
    request: Request,
    request_uid: RequestUid,
    caller: Admin,
    reason: Annotated[str, Form(max_length=512)] = "",
) -> Response:
    permits.reject(caller.archive, request_uid, reason=reason.strip(), user=caller.user)
    return _decided(request, caller, request_uid, "rejected")
