"""The DICOM gateway: one pynetdicom AE serving C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET and Storage
Commitment (N-ACTION, imaging.dimse.commitment_scp), on its DIMSE port
and, when configured, on its own DICOM TLS port (PS3.15 B.9).

Every accepted connection is read through the gateway's bounded upper layer (imaging.dimse.upper_layer,
.receive_socket) and DIMSE provider (.provider), admitted by the access policy (.access) and audited
(.audit_trail). A connection from a host no listed calling AE uses is closed at once; past the connection
limit (`max_associations` per gateway process, and a few for the polite A-ASSOCIATE-RJ of those over it) new
connections are closed at once too, so that idle or half-open connections cannot pile up threads and
buffers. The TLS handshake runs in the connection's thread, never the accepting one, under the network
timeout.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

from pynetdicom import AE, _config, evt
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

from imaging.archive import Archive
from imaging.config import Settings
from imaging.dimse import provider
from imaging.dimse.access import ALL_SERVICES, AccessPolicy, Refusal, allowed_contexts, audit_user
from imaging.dimse.audit_trail import AuditWriter, StoreTally
from imaging.dimse.commitment_scp import CommitmentSCP
from imaging.dimse.contexts import called_ae_title, calling_ae_title, scp_contexts
from imaging.dimse.find_scp import handle_find
from imaging.dimse.provider import GatewayDIMSEProvider
from imaging.dimse.receive_socket import ReceiveSocket
from imaging.dimse.retrieve_scp import handle_get, handle_move, send_stored
from imaging.dimse.store_scp import ReceivingRelay, handle_released, handle_store
from imaging.dimse.tls import peer_certificate, server_context
from imaging.dimse.upper_layer import GatewayDUL
from imaging.metrics import DIMSE_LATENCY

log = logging.getLogger(__name__)
# pynetdicom's debug output would print identifiers (PHI): keep it quiet. Its standard handlers also decode
# every message to format those lines, logged or not (~10% of a C-STORE's CPU): bind none. (`_config` is
# pynetdicom's documented configuration module, despite its name.)
logging.getLogger("pynetdicom").setLevel(logging.WARNING)
# Its decoders log every malformed value a peer sends (with tracebacks, and the raw value, control characters
# included) before the gateway's upper layer answers the PDU with an A-ABORT and logs one line for it: a
# hostile peer would write what it likes into the log, as fast as it can connect.
for _decoder in ("utils", "presentation", "pdu", "pdu_items", "pdu_primitives"):
    logging.getLogger(f"pynetdicom.{_decoder}").setLevel(logging.CRITICAL)
_config.LOG_HANDLER_LEVEL = "none"
# C-GET / C-MOVE sub-operations send stored files as they are, never decoded (imaging.dimse.retrieve_scp).
_config.STORE_SEND_CHUNKED_DATASET = True

# Connections beyond max_associations that are still read, so that an association over the limit gets
# pynetdicom's A-ASSOCIATE-RJ (local-limit-exceeded) rather than a closed connection.
CONNECTION_MARGIN = 4
REJECTED_PERMANENT, SERVICE_USER = 0x01, 0x01
CALLING_AE_NOT_RECOGNIZED, CALLED_AE_NOT_RECOGNIZED = 0x03, 0x07


class Dispatcher(Protocol):
    """Hands accepted connections to other gateway processes (imaging.dimse.processes.Dispatcher)."""

    def hand_off(self, connection: Any, address: Any, tls: bool = False) -> bool: ...

    def local_closed(self) -> None: ...

    def open_connections(self) -> int: ...

    def processes(self) -> int: ...


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


def _requested(event: evt.Event, gateway: Gateway) -> None:
    """Before negotiation: refuse an unknown called AE title (with project-bound AE titles pynetdicom's
    single-title check is off) and a caller the access policy does not admit (A-ASSOCIATE-RJ,
    rejected-permanent, service-user); give an admitted caller the contexts of its services."""
    assoc = event.assoc
    host = str(assoc.requestor.address)
    calling = calling_ae_title(assoc)
    if gateway.archive.receiver.partition_for(called_ae_title(assoc)) is None:
        gateway.audit.alert(user=f"ae:{calling}", source=host, reason="called AE title not served")
        _reject(assoc, CALLED_AE_NOT_RECOGNIZED)
        return
    sock = cast(Any, assoc.dul.socket).socket
    certificate = peer_certificate(sock)
    admitted = gateway.policy.admit(calling, host, certificate, isinstance(sock, ssl.SSLSocket))
    if isinstance(admitted, Refusal):
        log.warning("association from %s refused: %s", host, admitted.reason)
        gateway.audit.alert(user=audit_user(calling, certificate), source=host, reason=admitted.reason)
        _reject(assoc, CALLING_AE_NOT_RECOGNIZED)
        return
    assoc.imaging_peer = admitted  # type: ignore[attr-defined]  # (the gateway's per-association state)
    assoc.imaging_stores = StoreTally(user=admitted.user, source=host)  # type: ignore[attr-defined]
    if admitted.services != ALL_SERVICES:
        assoc.acceptor.supported_contexts = allowed_contexts(assoc.acceptor.supported_contexts, admitted)
    send_stored(assoc)  # C-GET sub-operations on this association send stored files as they are


def _reject(assoc: Any, reason: int) -> None:
    """A-ASSOCIATE-RJ (rejected-permanent, service-user), sent before this handler returns: pynetdicom's
    association thread shuts the connection down right after, which would otherwise race the upper layer
    sending it (and, on TLS, leave it sending unencrypted bytes)."""
    assoc.acse.send_reject(REJECTED_PERMANENT, SERVICE_USER, reason)
    deadline = time.monotonic() + 5.0
    while assoc.dul.state_machine.current_state not in ("Sta13", "Sta1") and time.monotonic() < deadline:
        time.sleep(0.001)


class _GatewayRequestHandler(RequestHandler):
    """Creates each accepted connection's association with the gateway's upper layer, socket and DIMSE
    provider in place before its first byte is read, and reports its end once its thread is done."""

    server: _GatewayServer

    def handle(self) -> None:
        gateway = self.server.gateway
        started = False
        try:
            assoc = self._create_association()
            GatewayDUL.install(assoc, gateway.ae.maximum_pdu_size)
            ReceiveSocket.install(assoc, gateway.settings.network_timeout)
            GatewayDIMSEProvider.install(assoc, gateway.settings.max_upload_bytes)
            host = str(self.client_address[0])
            # (what was wrong goes to the log; one reason for the alerts, so that they throttle per host)
            assoc.imaging_on_invalid_pdu = lambda what: gateway.audit.alert(  # type: ignore[attr-defined]
                user="", source=host, reason="invalid PDU"
            )
            run = assoc.run

            def run_then_close() -> None:
                try:
                    run()
                finally:
                    gateway.association_ended(assoc)

            assoc.run = run_then_close  # type: ignore[method-assign]
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()
            started = True
        finally:
            if not started:
                gateway.connection_closed()


class _GatewayServer(ThreadedAssociationServer):
    """A listening server of the gateway (plain or TLS): admits connections by host and by count."""

    gateway: Gateway
    tls_context: ssl.SSLContext | None = None

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self.gateway.admit_connection(str(client_address[0]))

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if self.tls_context is not None:
            secured = self.gateway.tls_handshake(self.tls_context, request, str(client_address[0]))
            if secured is None:
                return
            request = secured
        try:
            self.finish_request(request, client_address)
        except Exception:
            log.exception("DIMSE connection failed before association")
            self.shutdown_request(request)

    def shutdown(self) -> None:
        # pynetdicom's shutdown also drops the server from the AE's list of servers it started itself;
        # made with AE.make_server, this one was never in it.
        socketserver.TCPServer.shutdown(self)
        self.server_close()


class _DispatchingServer(_GatewayServer):
    """The listening server of a multi-process gateway: each accepted connection goes to the least-loaded
    gateway process, this one included (imaging.dimse.processes); TLS is done by the process serving it."""

    dispatcher: Dispatcher

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.dispatcher.hand_off(request, client_address, self.tls_context is not None):
            super().process_request(request, client_address)


class _HandoffServer(_GatewayServer):
    """A child gateway process's server: it listens on nothing; the server process hands it connections
    (already admitted and counted there)."""

    def server_bind(self) -> None:
        pass

    def server_activate(self) -> None:
        pass

    def shutdown(self) -> None:  # no serve_forever loop to wait for (and never in the AE's own list)
        self.server_close()


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
        self.settings: Settings = archive.settings
        self.relay = relay
        self.on_connection_closed = on_connection_closed
        self.policy = AccessPolicy(self.settings)
        self.audit = AuditWriter(archive.db)
        self.tls_context = server_context(self.settings) if self.settings.dicom_tls_port is not None else None
        settings = self.settings
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
        ae.maximum_pdu_size = settings.dicom_max_pdu_size  # what one connection may make us hold per PDU
        # Project-bound AE titles are extra called AE titles: each operation checks the called AE
        # (Receiver.partition_for) instead of pynetdicom, which knows only one title.
        ae.require_called_aet = not settings.project_ae_titles
        if not settings.calling_aes and not settings.dimse_on_loopback_only():
            log.warning("DIMSE gateway beyond localhost admits any calling AE (dev mode): set calling_aes")
        self.ae = ae
        self.servers: list[ThreadedAssociationServer] = []
        self.tls_port: int | None = None
        self.dispatcher: Dispatcher | None = None
        self._open = 0  # connections this process accepted and serves (without a dispatcher)
        self._open_lock = threading.Lock()
        self.commitment = CommitmentSCP(archive)

    def handlers(self) -> list[Any]:
        r = [self.archive, self.relay]
        return [
            (evt.EVT_REQUESTED, _requested, [self]),
            (evt.EVT_C_ECHO, timed("C-ECHO", _echo)),
            (evt.EVT_C_STORE, timed("C-STORE", handle_store), r),
            (evt.EVT_C_FIND, timed("C-FIND", handle_find), [self.archive, self.audit]),
            (evt.EVT_C_MOVE, timed("C-MOVE", handle_move), [self.archive, self.audit]),
            (evt.EVT_C_GET, timed("C-GET", handle_get), [self.archive, self.audit]),
            (evt.EVT_N_ACTION, timed("N-ACTION", self.commitment.handle_action)),
            (evt.EVT_RELEASED, handle_released, r),
            (evt.EVT_ABORTED, handle_released, r),
            (evt.EVT_CONN_CLOSE, handle_released, r),
        ]

    # -- listening -----------------------------------------------------------------------------------------

    def start(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        dispatcher: Dispatcher | None = None,
        tls_port: int | None = None,
    ) -> int:
        """Start listening in background threads; returns the bound DIMSE port (useful with port 0). With
        DICOM TLS configured, its listener starts too, on `tls_port` or the configured one (`self.tls_port`
        is the bound port); `host` overrides both listeners' configured hosts.

        `dispatcher`: hand accepted connections to other gateway processes (imaging.dimse.processes)."""
        settings = self.settings
        self.dispatcher = dispatcher
        if dispatcher is not None and self.on_connection_closed is None:
            self.on_connection_closed = dispatcher.local_closed
        server_class = _GatewayServer if dispatcher is None else _DispatchingServer
        address = (host or settings.dicom_host, settings.dicom_port if port is None else port)
        server = self._listen(address, server_class, None)
        if self.tls_context is not None:
            chosen = settings.dicom_tls_port if tls_port is None else tls_port
            tls = self._listen((host or settings.tls_host, int(chosen or 0)), server_class, self.tls_context)
            self.tls_port = int(tls.server_address[1])
        return int(server.server_address[1])

    def start_without_listening(self, address: tuple[str, int]) -> Callable[[socket.socket, Any, bool], None]:
        """In a child gateway process: servers for connections accepted by the server process; returns the
        function to hand each one to (connection, client address, over TLS)."""
        plain = self._server(address, _HandoffServer, None)
        tls = self._server(address, _HandoffServer, self.tls_context) if self.tls_context else None

        def serve(connection: socket.socket, client_address: Any, over_tls: bool) -> None:
            if over_tls and tls is None:  # not configured here: cannot happen with one Settings
                connection.close()
                self.connection_closed()
                return
            (tls if over_tls and tls is not None else plain).process_request(connection, client_address)

        return serve

    def _listen(
        self, address: tuple[str, int], server_class: type[_GatewayServer], tls: ssl.SSLContext | None
    ) -> _GatewayServer:
        server = self._server(address, server_class, tls)
        if isinstance(server, _DispatchingServer):
            assert self.dispatcher is not None
            server.dispatcher = self.dispatcher
        threading.Thread(target=make_target(server.serve_forever), name="AcceptorServer", daemon=True).start()
        return server

    def _server(
        self, address: tuple[str, int], server_class: type[_GatewayServer], tls: ssl.SSLContext | None
    ) -> _GatewayServer:
        server = cast(
            _GatewayServer,
            self.ae.make_server(
                address,
                evt_handlers=self.handlers(),
                server_class=server_class,
                request_handler=_GatewayRequestHandler,
            ),
        )
        server.gateway = self
        server.tls_context = tls
        server.contexts = _Contexts(server.contexts)
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
        self.servers = []
        self.audit.close()

    # -- connections ---------------------------------------------------------------------------------------

    def connection_limit(self) -> int:
        processes = self.dispatcher.processes() if self.dispatcher is not None else 1
        return self.settings.max_associations * processes + CONNECTION_MARGIN

    def admit_connection(self, host: str) -> bool:
        """At accept, before a byte is read: a host some listed calling AE uses, under the connection limit."""
        if not self.policy.host_allowed(host):
            self.audit.alert(user="", source=host, reason="connection from a host no calling AE uses")
            return False
        with self._open_lock:
            open_now = self.dispatcher.open_connections() if self.dispatcher is not None else self._open
            if open_now >= self.connection_limit():
                full = True
            else:
                full = False
                if self.dispatcher is None:
                    self._open += 1
        if full:
            log.warning("DIMSE connection limit reached: connection from %s closed", host)
            self.audit.alert(user="", source=host, reason="connection limit reached")
            return False
        return True

    def connection_closed(self) -> None:
        """Once per connection this process served, however it ended."""
        if self.on_connection_closed is not None:
            self.on_connection_closed()
            return
        with self._open_lock:
            self._open = max(0, self._open - 1)

    def association_ended(self, assoc: Any) -> None:
        """The association's thread is done (released, aborted, refused or timed out): its C-STOREs go to
        the audit trail and its connection slot is free."""
        try:
            stores = getattr(assoc, "imaging_stores", None)
            if isinstance(stores, StoreTally):
                stores.write(self.audit)
        finally:
            self.connection_closed()

    def tls_handshake(
        self, context: ssl.SSLContext, request: socket.socket, host: str
    ) -> ssl.SSLSocket | None:
        """The server side of the TLS handshake, in the connection's thread, under the network timeout; a
        failure (no, a wrong or an untrusted client certificate, no TLS at all) is a Security Alert."""
        try:
            request.settimeout(self.settings.network_timeout)
            return context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            log.warning("DICOM TLS handshake with %s failed: %s", host, reason)
            self.audit.alert(user="", source=host, reason=f"TLS handshake failed: {str(reason)[:64]}")
            try:
                request.close()
            finally:
                self.connection_closed()
            return None
