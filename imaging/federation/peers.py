"""The federation peer registry: sites we ask and sites that may ask us, each with its public key and its
switches (discovery, access requests, asked by us). Changes are audited as network configuration."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging import audit
from imaging.archive import Archive
from imaging.errors import InvalidRequest, NotFound
from imaging.federation.keys import load_public_key
from imaging.federation.models import FederationPeer

PEER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
FIELDS = (
    "site_id", "url", "public_key", "discovery", "requests", "ask", "delivery_peer", "ca_file", "description",
)  # fmt: skip


def set_peer(archive: Archive, name: str, *, user: str = "system", **fields: Any) -> FederationPeer:
    """Create or change a peer site; `None` leaves a field as it is. A new peer needs its site id and
    public key."""
    if not PEER_NAME.match(name):
        raise InvalidRequest("peer names are 1-64 letters, digits, '.', '-' or '_'")
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown peer settings: {', '.join(sorted(unknown))}")
    values = {k: v for k, v in fields.items() if v is not None}
    if "site_id" in values and not SITE_ID.match(str(values["site_id"])):
        raise InvalidRequest("a site id is 1-128 letters, digits, '.', ':', '-' or '_'")
    if "public_key" in values:
        load_public_key(str(values["public_key"]))
        values["public_key"] = str(values["public_key"]).strip() + "\n"
    if values.get("url") and not re.match(r"^https?://[^\s/]+", str(values["url"])):
        raise InvalidRequest("a peer url is http(s)://host[:port][/path]")
    if "url" in values:
        values["url"] = str(values["url"]).rstrip("/")
    with archive.db.write() as session:
        peer = session.scalar(select(FederationPeer).where(FederationPeer.name == name))
        if peer is None:
            if not values.get("site_id") or not values.get("public_key"):
                raise InvalidRequest("a new peer site needs its site id and public key")
            peer = FederationPeer(name=name, site_id=values["site_id"], public_key=values["public_key"])
            peer.url = peer.delivery_peer = peer.ca_file = peer.description = ""
            peer.discovery = peer.requests = peer.ask = True
            session.add(peer)
        other = session.scalar(
            select(FederationPeer.name).where(
                FederationPeer.site_id == values.get("site_id", peer.site_id), FederationPeer.name != name
            )
        )
        if other is not None:
            raise InvalidRequest(f"site id already registered as peer {other}")
        for key, value in values.items():
            setattr(peer, key, value)
        changed = [
            f"{k} {'on' if v else 'off'}" if isinstance(v, bool) else k for k, v in sorted(values.items())
        ]
        _audit_change(session, name, user, "set: " + ", ".join(changed))
    return peer


def remove_peer(archive: Archive, name: str, *, user: str = "system") -> None:
    with archive.db.write() as session:
        session.delete(get_peer(session, name))
        _audit_change(session, name, user, "removed")


def _audit_change(session: Session, name: str, user: str, what: str) -> None:
    """PS3.15 A.5.3.11 Security Alert, 110128 Network Configuration: who may query us, whom we ask."""
    audit.record(
        session,
        audit.AuditEvent.SECURITY_ALERT,
        user=user,
        action="U",
        source=f"federation-peer:{name}",
        detail=f"110128 Network Configuration: federation peer {name} {what}",
    )


def get_peer(session: Session, name: str) -> FederationPeer:
    peer = session.scalar(select(FederationPeer).where(FederationPeer.name == name))
    if peer is None:
        raise NotFound("no such federation peer")
    return peer


def peer_by_site(session: Session, site_id: str) -> FederationPeer | None:
    return session.scalar(select(FederationPeer).where(FederationPeer.site_id == site_id))


def list_peers(session: Session) -> list[FederationPeer]:
    return list(session.scalars(select(FederationPeer).order_by(FederationPeer.name)))


def peer_info(peer: FederationPeer) -> dict[str, Any]:
    return {"name": peer.name, **{key: getattr(peer, key) for key in FIELDS}}
