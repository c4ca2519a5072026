"""The operator's sharing pages: peers (add, edit, test the connection), policies (add, edit) and the outbox
per peer with its failed deliveries and a retry — the domain functions of `/api/peers`, `/api/policies`,
`/api/outbox` and `imaging share ...`, so each change is validated and audited alike. A peer's secret goes
in (to the key folder) and never comes back out: the edit form leaves it unchanged when left blank."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import RedirectResponse

from dicomweb.ui.render import HEADERS, is_htmx, render
from imaging.access import Permission, may
from imaging.access.http import Caller, Require
from imaging.errors import InvalidRequest, NotFound
from imaging.research.projects import list_projects
from imaging.sharing import outbox, peers, policies
from imaging.sharing.models import OutboxStatus

router = APIRouter(prefix="/ui/sharing", include_in_schema=False)
Admin = Annotated[Caller, Depends(Require(Permission.MANAGE_SHARING))]
Sharer = Annotated[Caller, Depends(Require(Permission.SHARE))]
Short = Annotated[str, Form(max_length=256)]
NAME = Annotated[str, Form(max_length=64)]
STATUSES = [s.value for s in OutboxStatus]


def _peer_fields(
    kind: str,
    description: str,
    url: str,
    ae_title: str,
    host: str,
    port: int,
    calling_ae_title: str,
    auth: str,
    username: str,
    timeout: float,
    ca_file: str,
    client_cert: str,
    client_key: str,
    tls_verify: bool,
    tls: bool,
    enabled: bool,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "description": description.strip(),
        "url": url.strip(),
        "ae_title": ae_title.strip(),
        "host": host.strip(),
        "port": port,
        "calling_ae_title": calling_ae_title.strip(),
        "auth": auth,
        "username": username.strip(),
        "timeout": timeout,
        "ca_file": ca_file.strip(),
        "client_cert": client_cert.strip(),
        "client_key": client_key.strip(),
        "tls_verify": tls_verify,
        "tls": tls,
        "enabled": enabled,
    }


class PeerForm:
    """The peer form's fields (one dependency, shared by add and edit)."""

    def __init__(
        self,
        kind: Annotated[str, Form(pattern=r"^(dicomweb|dimse|orthanc)$")],
        description: Short = "",
        url: Annotated[str, Form(max_length=512)] = "",
        ae_title: Annotated[str, Form(max_length=16)] = "",
        host: Short = "",
        port: Annotated[int, Form(ge=0, le=65535)] = 0,
        calling_ae_title: Annotated[str, Form(max_length=16)] = "",
        auth: Annotated[str, Form(pattern=r"^(none|basic|bearer)$")] = "none",
        username: Annotated[str, Form(max_length=128)] = "",
        secret: Annotated[str, Form(max_length=4096)] = "",
        timeout: Annotated[float, Form(gt=0, le=600)] = 30.0,
        ca_file: Annotated[str, Form(max_length=512)] = "",
        client_cert: Annotated[str, Form(max_length=512)] = "",
        client_key: Annotated[str, Form(max_length=512)] = "",
        tls_verify: Annotated[bool, Form()] = False,
        tls: Annotated[bool, Form()] = False,
        enabled: Annotated[bool, Form()] = False,
    ) -> None:
        self.fields = _peer_fields(
            kind, description, url, ae_title, host, port, calling_ae_title, auth, username, timeout,
            ca_file, client_cert, client_key, tls_verify, tls, enabled,
        )  # fmt: skip
        self.secret = secret


BLANK_PEER = {"name": "", **{k: v for k, v in peers.PEER_DEFAULTS.items()}, "kind": "dicomweb"}
BLANK_POLICY = {
    "name": "", "description": "", "enabled": True, "modalities": [], "body_parts": [],
    "description_regex": "", "priorities": [], "peers": [], "project": "", "identified": False,
}  # fmt: skip


def _names(caller: Caller) -> tuple[list[str], list[str]]:
    with caller.archive.db.read() as session:
        return [p.name for p in peers.list_peers(session)], [p.name for p in list_projects(session)]


def _peers_page(request: Request, caller: Caller, *, status: int = 200, **context: Any) -> Response:
    with caller.archive.db.read() as session:
        peer_rows = [peers.peer_info(p) for p in peers.list_peers(session)]
        policy_rows = [policies.policy_info(p) for p in policies.list_policies(session)]
        project_names = [p.name for p in list_projects(session)]
    context.setdefault("blank_peer", BLANK_PEER)
    context.setdefault("blank_policy", BLANK_POLICY)
    return render(
        request,
        caller,
        "peers.html",
        status=status,
        peers=peer_rows,
        policies=policy_rows,
        peer_names=[p["name"] for p in peer_rows],
        project_names=project_names,
        **context,
    )


@router.get("/peers", summary="Peers and policies (page)")
def peers_page(request: Request, caller: Admin, saved: Annotated[str, Query(max_length=80)] = "") -> Response:
    return _peers_page(request, caller, message=f"{saved} saved." if saved else "")


def _save_peer(request: Request, caller: Caller, name: str, form: PeerForm, *, new: bool) -> Response:
    try:
        peers.add_peer(
            caller.archive, name, form.fields["kind"], secret=form.secret or None, user=caller.user,
            **{k: v for k, v in form.fields.items() if k != "kind"},
        )  # fmt: skip
    except InvalidRequest as exc:
        shown = {"name": name, **form.fields}
        if new:
            return _peers_page(request, caller, status=400, blank_peer=shown, peer_error=str(exc))
        return render(request, caller, "peer_edit.html", status=400, peer=shown, error=str(exc))
    return RedirectResponse(f"/ui/sharing/peers?saved=Peer+{name}#peers", status_code=303, headers=HEADERS)


@router.post("/peers", summary="Add a peer")
def add_peer(request: Request, caller: Admin, name: NAME, form: Annotated[PeerForm, Depends()]) -> Response:
    with caller.archive.db.read() as session:
        exists = name in {p.name for p in peers.list_peers(session)}
    if exists:
        shown = {"name": name, **form.fields}
        return _peers_page(
            request, caller, status=409, blank_peer=shown, peer_error=f"a peer named {name} exists: edit it"
        )
    return _save_peer(request, caller, name, form, new=True)


@router.get("/peers/{name}", summary="A peer's settings (page)")
def peer_page(request: Request, name: str, caller: Admin) -> Response:
    with caller.archive.db.read() as session:
        peer = peers.peer_info(peers.get_peer(session, name))
    return render(request, caller, "peer_edit.html", peer=peer)


@router.post("/peers/{name}", summary="Change a peer")
def edit_peer(request: Request, name: str, caller: Admin, form: Annotated[PeerForm, Depends()]) -> Response:
    with caller.archive.db.read() as session:
        peers.get_peer(session, name)  # NotFound: editing never creates
    return _save_peer(request, caller, name, form, new=False)


@router.post("/peers/{name}/test", summary="Test a peer's connection")
def test_peer(request: Request, name: str, caller: Admin) -> Response:
    result = peers.echo_peer(caller.archive, name)
    if is_htmx(request):
        return render(request, caller, "_peer_test.html", result=result)
    return _peers_page(request, caller, tested=result)


class PolicyForm:
    def __init__(
        self,
        description: Short = "",
        modalities: Short = "",
        body_parts: Short = "",
        description_regex: Short = "",
        priorities: Annotated[list[str], Form()] = [],  # noqa: B006 (FastAPI copies defaults)
        peers: Annotated[list[str], Form()] = [],  # noqa: B006
        project: Annotated[str, Form(max_length=64)] = "",
        identified: Annotated[bool, Form()] = False,
        enabled: Annotated[bool, Form()] = False,
    ) -> None:
        self.fields = {
            "description": description.strip(),
            "modalities": [m for m in modalities.replace(";", ",").split(",") if m.strip()],
            "body_parts": [b for b in body_parts.replace(";", ",").split(",") if b.strip()],
            "description_regex": description_regex.strip(),
            "priorities": priorities,
            "peers": peers,
            "project": project,
            "identified": identified,
            "enabled": enabled,
        }


def _save_policy(request: Request, caller: Caller, name: str, form: PolicyForm, *, new: bool) -> Response:
    try:
        policies.add_policy(caller.archive, name, user=caller.user, **form.fields)
    except InvalidRequest as exc:
        shown = {"name": name, **form.fields}
        if new:
            return _peers_page(request, caller, status=400, blank_policy=shown, policy_error=str(exc))
        peer_names, project_names = _names(caller)
        return render(
            request, caller, "policy_edit.html", status=400, policy=shown, error=str(exc),
            peer_names=peer_names, project_names=project_names,
        )  # fmt: skip
    return RedirectResponse(
        f"/ui/sharing/peers?saved=Policy+{name}#policies", status_code=303, headers=HEADERS
    )


@router.post("/policies", summary="Add a sharing policy")
def add_policy(
    request: Request, caller: Admin, name: NAME, form: Annotated[PolicyForm, Depends()]
) -> Response:
    with caller.archive.db.read() as session:
        exists = name in {p.name for p in policies.list_policies(session)}
    if exists:
        shown = {"name": name, **form.fields}
        return _peers_page(
            request,
            caller,
            status=409,
            blank_policy=shown,
            policy_error=f"a policy named {name} exists: edit it",
        )
    return _save_policy(request, caller, name, form, new=True)


@router.get("/policies/{name}", summary="A sharing policy (page)")
def policy_page(request: Request, name: str, caller: Admin) -> Response:
    with caller.archive.db.read() as session:
        found = [p for p in policies.list_policies(session) if p.name == name]
        if not found:
            raise NotFound("no such policy")
        policy = policies.policy_info(found[0])
    peer_names, project_names = _names(caller)
    return render(
        request, caller, "policy_edit.html", policy=policy, peer_names=peer_names, project_names=project_names
    )


@router.post("/policies/{name}", summary="Change a sharing policy")
def edit_policy(
    request: Request, name: str, caller: Admin, form: Annotated[PolicyForm, Depends()]
) -> Response:
    with caller.archive.db.read() as session:
        if name not in {p.name for p in policies.list_policies(session)}:
            raise NotFound("no such policy")
    return _save_policy(request, caller, name, form, new=False)


def _outbox_context(caller: Caller, peer: str, status: str) -> dict[str, Any]:
    with caller.archive.db.read() as session:
        summary = outbox.summary(session)
        groups = outbox.groups(session, peer=peer or None, status=status or None, limit=200)
        peer_names = [p.name for p in peers.list_peers(session)]
    return {
        "summary": summary,
        "groups": groups,
        "statuses": STATUSES,
        "peer_names": sorted(set(peer_names) | set(summary)),
        "chosen": {"peer": peer, "status": status},
        "can_retry": may(caller.principal, Permission.MANAGE_SHARING),
    }


@router.get("/outbox", summary="The sharing outbox (page)")
def outbox_page(
    request: Request,
    caller: Sharer,
    peer: Annotated[str, Query(max_length=64)] = "",
    status: Annotated[str, Query(max_length=16)] = "",
    rearmed: Annotated[int, Query(ge=0, le=2**62)] = -1,
) -> Response:
    if status and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}")
    message = f"{rearmed} failed instances queued again." if rearmed >= 0 else ""
    return render(request, caller, "outbox.html", message=message, **_outbox_context(caller, peer, status))


@router.post("/outbox/retry", summary="Re-arm failed deliveries (a peer, a study)")
def retry(
    request: Request,
    caller: Admin,
    peer: Annotated[str, Form(max_length=64)] = "",
    study_uid: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    with caller.archive.db.write() as session:
        rearmed = outbox.retry(session, peer=peer or None, study_uid=study_uid or None)
    if not is_htmx(request):
        return RedirectResponse(f"/ui/sharing/outbox?rearmed={rearmed}", status_code=303, headers=HEADERS)
    context = _outbox_context(caller, "", "")
    return render(
        request, caller, "_outbox.html", message=f"{rearmed} failed instances queued again.", **context
    )
