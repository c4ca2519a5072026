"""Who may use the gateway, and for what (issue 12).

Out of the box the gateway listens on localhost only and admits any calling AE with every service (the
machine's own users). A gateway reachable from other machines lists its peers (`Settings.calling_aes`): each
calling AE title is admitted only from its hosts, only for its services (store, find, get, move; C-ECHO always),
and, when it is bound to certificate names, only over DICOM TLS with a client certificate bearing one of
them. A connection from a host no entry names is closed before a byte is read; an association from an unknown
AE title, a wrong host or without the bound certificate is rejected (A-ASSOCIATE-RJ, rejected-permanent,
calling-AE-title-not-recognized). The presentation contexts of services an AE may not use are rejected at
negotiation, and each SCP handler checks again.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from imaging.config import DimseService, Settings
from imaging.dimse.contexts import FIND_MODELS, GET_MODELS, MOVE_MODELS
from imaging.dimse.tls import PeerCertificate

ALL_SERVICES = frozenset(DimseService)
_MODEL_SERVICE = {
    **{str(m): DimseService.FIND for m in FIND_MODELS},
    **{str(m): DimseService.GET for m in GET_MODELS},
    **{str(m): DimseService.MOVE for m in MOVE_MODELS},
    # Storage commitment confirms custody of what the caller stored: part of the store service.
    str(StorageCommitmentPushModel): DimseService.STORE,
}


@dataclass(frozen=True)
class Peer:
    """An admitted association's caller: what the audit trail names and what it may do."""

    ae_title: str
    host: str
    certificate: PeerCertificate | None
    services: frozenset[DimseService]

    @property
    def user(self) -> str:
        return audit_user(self.ae_title, self.certificate)

    def may(self, service: DimseService) -> bool:
        return service in self.services


def audit_user(ae_title: str, certificate: PeerCertificate | None) -> str:
    """The audit trail's user: the calling AE title, with the TLS subject when there is one."""
    user = f"ae:{ae_title}"
    return f"{user} tls:{certificate.subject}" if certificate else user


@dataclass(frozen=True)
class Refusal:
    reason: str  # for the audit trail and the log: no PHI, no secret


class AccessPolicy:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.listed = bool(settings.calling_aes)
        self._networks = [n for ae in settings.calling_aes for n in ae.networks()]

    def host_allowed(self, host: str) -> bool:
        """Whether a connection from `host` may send anything at all (any listed AE connects from it)."""
        if not self.listed:
            return True
        address = _address(host)
        return address is not None and any(address in network for network in self._networks)

    def admit(
        self, calling_ae: str, host: str, certificate: PeerCertificate | None, tls: bool
    ) -> Peer | Refusal:
        calling_ae = calling_ae.strip()
        if not self.listed:
            return Peer(calling_ae, host, certificate, ALL_SERVICES)
        entry = self.settings.calling_ae(calling_ae)
        if entry is None:
            return Refusal("calling AE title not listed")
        address = _address(host)
        if address is None or not any(address in network for network in entry.networks()):
            return Refusal("calling AE title not allowed from this host")
        if entry.tls_names:
            if not tls:
                return Refusal("calling AE title admitted over DICOM TLS only")
            if certificate is None or not certificate.bears(entry.tls_names):
                return Refusal("client certificate not bound to the calling AE title")
        return Peer(calling_ae, host, certificate, frozenset(entry.permissions))


def allowed_contexts(contexts: list[PresentationContext], peer: Peer) -> list[PresentationContext]:
    """The acceptor's contexts without those of services `peer` may not use: its proposals of them are
    rejected at negotiation. Storage contexts stay for a peer that may store, or retrieve with C-GET (whose
    sub-operations use them in the other direction)."""
    kept = []
    for cx in contexts:
        syntax = str(cx.abstract_syntax)
        service = _MODEL_SERVICE.get(syntax)
        if service is not None and not peer.may(service):
            continue
        # Storage contexts (standard and extra classes) are the ones offered with SCP/SCU role selection.
        storage = service is None and bool(cx.scp_role and cx.scu_role)
        if storage and not (peer.may(DimseService.STORE) or peer.may(DimseService.GET)):
            continue
        kept.append(cx)
    return kept


def peer_of(assoc: Any, settings: Settings) -> Peer:
    """The admitted caller of an association (set at A-ASSOCIATE-RQ by the gateway). One the gateway did
    not admit itself (a handler called directly) may do nothing where calling AEs are listed."""
    peer = getattr(assoc, "imaging_peer", None)
    if isinstance(peer, Peer):
        return peer
    services = frozenset() if settings.calling_aes else ALL_SERVICES
    return Peer(str(assoc.requestor.ae_title).strip(), "", None, services)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
