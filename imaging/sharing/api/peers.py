"""`/api/peers`: peer sites (admin). Secrets go in, never come out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from imaging.access import Permission
from imaging.access.http import Caller, Require
from imaging.sharing import peers
from imaging.sharing.models import PeerAuth, PeerKind

router = APIRouter(prefix="/api/peers", tags=["Sharing: peers"])
Admin = Annotated[Caller, Depends(Require(Permission.MANAGE_SHARING))]


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


@router.get("", summary="Peer sites (without secrets)")
def list_peers(caller: Admin) -> list[dict[str, Any]]:
    with caller.archive.db.read() as session:
        return [peers.peer_info(p) for p in peers.list_peers(session)]


@router.put("/{name}", summary="Add or change a peer site")
def put_peer(name: str, body: PeerIn, caller: Admin) -> dict[str, Any]:
    fields = body.model_dump(exclude={"kind", "secret"})
    fields["auth"] = body.auth.value
    peer = peers.add_peer(
        caller.archive, name, body.kind.value, secret=body.secret, user=caller.user, **fields
    )
    return peers.peer_info(peer)


@router.post("/{name}/echo", summary="Test the connection (QIDO-RS, C-ECHO or Orthanc /system)")
def echo_peer(name: str, caller: Admin) -> dict[str, Any]:
    return peers.echo_peer(caller.archive, name)


@router.delete("/{name}", status_code=204, summary="Remove a peer site")
def delete_peer(name: str, caller: Admin) -> None:
    peers.remove_peer(caller.archive, name, user=caller.user)
