"""The DICOM gateway: one pynetdicom AE serving C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET."""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

from pynetdicom import AE, _config, evt
from pynetdicom.transport import ThreadedAssociationServer
from pynetdicom.utils import make_target

from imaging.archive import Archive
from imaging.dimse import provider
from imaging.dimse.contexts import called_ae_title, scp_contexts
from imaging.dimse.find_scp import handle_find
from imaging.dimse.provider import GatewayDIMSEProvider
from imaging.dimse.receive_socket import ReceiveSocket
from imaging.dimse.retrieve_scp import handle_get, handle_move, send_stored
from imaging.dimse.store_scp import ReceivingRelay, handle_released, handle_store
from imaging.metrics import DIMSE_LATENCY

log = logging.getLogger(__name__)
# pynetdicom's debug output would print identifiers (PHI): keep it quiet. Its standard handlers also decode
# every message to format those lines, logged or not (~10% of a C-STORE's CPU): bind none. (`_config` is
# pynetdicom's documented configuration module, despite its name.)
logging.getLogger("pynetdicom").setLevel(logging.WARNING)
_config.LOG_HANDLER_LEVEL = "none"
# C-GET / C-MOVE sub-operations send stored files as they are, never decoded (imaging.dimse.retrieve_scp).
_config.STORE_SEND_CHUNKED_DATASET = True


class Dispatcher(Protocol):
    """Hands accepted connections to other gateway processes (imaging.dimse.processes.Dispatcher)."""

    def hand_off(self, connection: Any, address: Any) -> bool: ...

    def local_closed(self) -> None: ...


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


def timed(service: str, handler: Callable[..., Any]) -> Callable[..., Any]:
    """`handler` observed into imaging_dimse_request_duration_seconds{service}: a generator handler
    (C-FIND, C-MOVE, C-GET yield their responses) from its first to its last response."""
    histogram = DIMSE_LATENCY.labels(service)
    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def generator(*args: Any) -> Iterator[Any]:
            started = time.perf_counter()
            try:
                yield from handler(*args)
            finally:
                histogram.observe(time.perf_counter() - started)

        return generator

    @functools.wraps(handler)
    def function(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return handler(*args)
        finally:
            histogram.observe(time.perf_counter() - started)

    return function


def _echo(event: evt.Event) -> int:
    return 0x0000


def _requested(event: evt.Event, archive: Archive) -> None:
    """Before negotiation: refuse an unknown called AE title (with project-bound AE titles pynetdicom's
    single-title check is off; A-ASSOCIATE-RJ: rejected-permanent, service-user, 0x07), and give the
    association the C-STORE fast paths (imaging.dimse.provider, .receive_socket) before any P-DATA arrives."""
    if archive.receiver.partition_for(called_ae_title(event.assoc)) is None:
        event.assoc.acse.send_reject(0x01, 0x01, 0x07)
        return
    GatewayDIMSEProvider.install(event.assoc)
    ReceiveSocket.install(event.assoc)
    send_stored(event.assoc)  # C-GET sub-operations on this association send stored files as they are


class _DispatchingServer(ThreadedAssociationServer):
    """The listening server of a multi-process gateway: each accepted connection goes to the least-loaded
    gateway process, this one included (imaging.dimse.processes)."""

    dispatcher: Dispatcher

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.dispatcher.hand_off(request, client_address):
            super().process_request(request, client_address)

    def shutdown(self) -> None:
        # pynetdicom's shutdown also drops the server from the AE's list of servers it started itself;
        # made with AE.make_server, this one was never in it.
        socketserver.TCPServer.shutdown(self)
        self.server_close()


class _HandoffServer(ThreadedAssociationServer):
    """A child gateway process's server: it listens on nothing; the server process hands it connections."""

    def server_bind(self) -> None:
        pass

    def server_activate(self) -> None:
        pass

    def shutdown(self) -> None:  # no serve_forever loop to wait for (and never in the AE's own list)
        self.server_close()


def _closed_once(event: evt.Event, callback: Callable[[], None]) -> None:
    """EVT_CONN_CLOSE, counted once per association whichever state machine path reports it."""
    if not getattr(event.assoc, "_imaging_closed", False):
        event.assoc._imaging_closed = True  # type: ignore[attr-defined]
        callback()


class Gateway:
    def __init__(
        self,
        archive: Archive,
        *,
        relay: ReceivingRelay | None = None,
        on_connection_closed: Callable[[], None] | None = None,
    ) -> None:
        """`relay`: in an extra gateway process, where received series are reported to the parent.
        `on_connection_closed`: called once per closed connection (the load count of imaging.dimse.processes)."""
        self.archive = archive
        self.relay = relay
        self.on_connection_closed = on_connection_closed
        settings = archive.settings
        spool = settings.data_dir / "tmp"  # large data sets are spooled here as they arrive
        spool.mkdir(parents=True, exist_ok=True)
        provider.SPOOL_DIR = str(spool)
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
        # (Receiver.partition_for) instead of pynetdicom, which knows only one title.
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
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, _requested, a),
            (evt.EVT_C_ECHO, timed("C-ECHO", _echo)),
            (evt.EVT_C_STORE, timed("C-STORE", handle_store), r),
            (evt.EVT_C_FIND, timed("C-FIND", handle_find), a),
            (evt.EVT_C_MOVE, timed("C-MOVE", handle_move), a),
            (evt.EVT_C_GET, timed("C-GET", handle_get), a),
            (evt.EVT_RELEASED, handle_released, r),
            (evt.EVT_ABORTED, handle_released, r),
            (evt.EVT_CONN_CLOSE, handle_released, r),
        ]
        if self.on_connection_closed is not None:
            handlers.append((evt.EVT_CONN_CLOSE, _closed_once, [self.on_connection_closed]))
        return handlers

    def start(
        self, host: str | None = None, port: int | None = None, *, dispatcher: Dispatcher | None = None
    ) -> int:
        """Start listening in background threads; returns the bound port (useful with port 0).

        `dispatcher`: hand accepted connections to other gateway processes (imaging.dimse.processes)."""
        settings = self.archive.settings
        address = (host or settings.dicom_host, settings.dicom_port if port is None else port)
        if dispatcher is None:
            server = self.ae.start_server(address, block=False, evt_handlers=self.handlers())
        else:
            if self.on_connection_closed is None:
                self.on_connection_closed = dispatcher.local_closed
            server = self._start_server(address, _DispatchingServer, listen=True)
            cast(_DispatchingServer, server).dispatcher = dispatcher
        assert server is not None
        server.contexts = _Contexts(server.contexts)
        self.server = server
        return int(server.server_address[1])

    def start_without_listening(self, address: tuple[str, int]) -> ThreadedAssociationServer:
        """In a child gateway process: a server for connections accepted by the server process on `address`;
        hand each to its `process_request`."""
        server = self._start_server(address, _HandoffServer, listen=False)
        server.contexts = _Contexts(server.contexts)
        self.server = server
        return server

    def _start_server(
        self, address: tuple[str, int], server_class: type[ThreadedAssociationServer], *, listen: bool
    ) -> ThreadedAssociationServer:
        # AE.start_server(block=False), with our server class (it takes none).
        server = self.ae.make_server(address, evt_handlers=self.handlers(), server_class=server_class)
        if listen:
            threading.Thread(
                target=make_target(server.serve_forever), name="AcceptorServer", daemon=True
            ).start()
        return cast(ThreadedAssociationServer, server)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
