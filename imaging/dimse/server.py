"""The DICOM gateway: one pynetdicom AE serving C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET."""

from __future__ import annotations

import copy
import logging
import socket
import threading
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer
from pynetdicom.utils import make_target

from imaging.archive import Archive
from imaging.dimse.contexts import called_ae_title, scp_contexts
from imaging.dimse.find_scp import handle_find
from imaging.dimse.retrieve_scp import handle_get, handle_move
from imaging.dimse.store_scp import ReceivingRelay, handle_released, handle_store

log = logging.getLogger(__name__)
# pynetdicom's debug output would print identifiers (PHI): keep it quiet.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)


class _Contexts(list[Any]):
    """The server's supported contexts, copied cheaply for each new association.

    pynetdicom deep-copies the acceptor's contexts per association; with every storage SOP class in every
    transfer syntax (thousands of pydicom UIDs, each re-validated on copy) that costs ~0.1 s of CPU under
    the GIL per association. A context is a few scalars and a list of immutable UIDs: copying the object
    and its transfer syntax list is the same thing, a hundred times cheaper.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        out = []
        for cx in self:
            clone = copy.copy(cx)
            clone._transfer_syntax = list(cx._transfer_syntax)
            out.append(clone)
        return out


def _echo(event: evt.Event) -> int:
    return 0x0000


def _check_called_ae(event: evt.Event, archive: Archive) -> None:
    """With project-bound AE titles pynetdicom's single-title check is off; refuse an unknown called AE
    title here, before negotiation (A-ASSOCIATE-RJ: rejected-permanent, service-user, 0x07)."""
    if archive.partition_for(called_ae_title(event.assoc)) is None:
        event.assoc.acse.send_reject(0x01, 0x01, 0x07)


class _ReusePortServer(ThreadedAssociationServer):
    """An association server whose listening socket shares its port with other processes' (SO_REUSEPORT):
    the kernel spreads incoming connections over them (imaging.dimse.processes)."""

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class Gateway:
    def __init__(self, archive: Archive, *, relay: ReceivingRelay | None = None) -> None:
        """`relay`: in an extra gateway process, where received series are reported to the parent."""
        self.archive = archive
        self.relay = relay
        settings = archive.settings
        ae = AE(ae_title=settings.ae_title)
        for cx in scp_contexts(settings.extra_sop_classes):
            # (the `supported_contexts` setter would drop the SCP/SCU role selection of each context)
            ae.add_supported_context(
                str(cx.abstract_syntax), cx.transfer_syntax, scu_role=cx.scu_role, scp_role=cx.scp_role
            )
        ae.maximum_associations = settings.max_associations
        ae.network_timeout = settings.network_timeout
        ae.acse_timeout = settings.network_timeout
        ae.dimse_timeout = settings.network_timeout
        ae.maximum_pdu_size = 0  # no limit: fewer, larger P-DATA PDUs from the peer
        # Project-bound AE titles are extra called AE titles: each operation checks the called AE
        # (Archive.partition_for) instead of pynetdicom, which knows only one title.
        ae.require_called_aet = not settings.project_ae_titles
        if settings.allowed_calling_aets:
            ae.require_calling_aet = list(settings.allowed_calling_aets)
        else:
            log.warning("DIMSE accepts any calling AE title: set allowed_calling_aets to restrict")
        self.ae = ae
        self.server: ThreadedAssociationServer | None = None

    def handlers(self) -> list[Any]:
        a = [self.archive]
        r = a if self.relay is None else [self.archive, self.relay]
        return [
            (evt.EVT_REQUESTED, _check_called_ae, a),
            (evt.EVT_C_ECHO, _echo),
            (evt.EVT_C_STORE, handle_store, r),
            (evt.EVT_C_FIND, handle_find, a),
            (evt.EVT_C_MOVE, handle_move, a),
            (evt.EVT_C_GET, handle_get, a),
            (evt.EVT_RELEASED, handle_released, r),
            (evt.EVT_ABORTED, handle_released, r),
            (evt.EVT_CONN_CLOSE, handle_released, r),
        ]

    def start(self, host: str | None = None, port: int | None = None, *, reuse_port: bool = False) -> int:
        """Start listening in background threads; returns the bound port (useful with port 0).

        `reuse_port`: bind with SO_REUSEPORT, to share the port with other gateway processes."""
        settings = self.archive.settings
        address = (host or settings.dicom_host, settings.dicom_port if port is None else port)
        server: ThreadedAssociationServer | None
        if reuse_port:
            # AE.start_server(block=False) with our server class (it takes none).
            server = self.ae.make_server(address, evt_handlers=self.handlers(), server_class=_ReusePortServer)
            threading.Thread(
                target=make_target(server.serve_forever), name="AcceptorServer-reuseport", daemon=True
            ).start()
            self.ae._servers.append(server)
        else:
            server = self.ae.start_server(address, block=False, evt_handlers=self.handlers())
        assert server is not None
        server.contexts = _Contexts(server.contexts)
        self.server = server
        return int(server.server_address[1])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
