"""The DICOM Upper Layer (PS3.8) as the gateway runs it: pynetdicom's state machine, with the PDUs it reads
bounded and checked before anything is allocated for them (issue 12).

pynetdicom reads a PDU's 6-byte header and then as many bytes as the header announces, whatever they are: a
P-DATA-TF announcing 1 GiB made it allocate and zero-fill 1 GiB. Here each PDU type has a limit, P-DATA-TF the
maximum length the gateway announced at association (PS3.8 D.1, `Settings.dicom_max_pdu_size`), the others
what their structure allows; a PDU over its limit, of an unknown type, or a P-DATA-TF whose presentation data
value items do not tile it exactly with items of at least 2 bytes (context ID and message control header,
PS3.8 9.3.5.1), is invalid: the state machine answers it with an A-ABORT (service-provider source, reason
invalid-PDU-parameter-value or unrecognized-PDU), nothing more is read, and the connection is closed.
A P-DATA-TF is decoded here in one pass (pynetdicom copies a PDU three times on its way in).

The state machine also drops what the local user (pynetdicom's association thread) asks for once the
association is over: a peer that sends an A-ASSOCIATE-RQ and an invalid PDU straight after it is aborted
(Sta13) while the association thread is still negotiating, and its A-ASSOCIATE-AC (Evt7 in Sta13, not in
PS3.8's state table) made pynetdicom's upper layer thread die with an exception (found by tests/fuzz).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import struct
from typing import TYPE_CHECKING, Any, cast

from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import TRANSITION_TABLE, StateMachine
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.transport import AssociationSocket

log = logging.getLogger(__name__)

ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_PDU, RELEASE_RQ, RELEASE_RP, ABORT = range(1, 8)
# Association PDUs carry presentation contexts and user information: generous for 128 contexts with every
# transfer syntax, and user identity items. The fixed-length PDUs are 4 bytes (PS3.8 Tables 9-21, 9-24..26).
ASSOCIATION_PDU_LIMIT = 1 << 20
_FIXED = {ASSOCIATE_RJ: 4, RELEASE_RQ: 4, RELEASE_RP: 4, ABORT: 4}
_EVENTS = {
    ASSOCIATE_RQ: "Evt6",
    ASSOCIATE_AC: "Evt3",
    ASSOCIATE_RJ: "Evt4",
    P_DATA_PDU: "Evt10",
    RELEASE_RQ: "Evt12",
    RELEASE_RP: "Evt13",
    ABORT: "Evt16",
}
UNRECOGNIZED_PDU = 0x01  # A-ABORT reason/diag (PS3.8 9.3.8)
INVALID_PARAMETER = 0x06
_HEADER = struct.Struct(">BBI")
_PDV_LENGTH = struct.Struct(">I")


class _ReceivedPData(P_DATA_TF):
    """A P-DATA-TF decoded here: its presentation data values as the DIMSE provider wants them."""

    def __init__(self, items: list[tuple[int, bytes]]) -> None:
        super().__init__()
        self.items = items

    def to_primitive(self) -> P_DATA:
        primitive = P_DATA()
        primitive.presentation_data_value_list = []
        primitive.presentation_data_value_list.extend(self.items)  # (its setter wants lists)
        return primitive


def pdv_items(body: bytes | bytearray) -> list[tuple[int, bytes]] | None:
    """The (context ID, message control header + fragment) items of a P-DATA-TF's variable field, or None
    when they do not tile it exactly, or one is shorter than 2 bytes (PS3.8 9.3.5.1)."""
    items = []
    view = memoryview(body)
    offset, end = 0, len(body)
    if not end:
        return None
    while offset < end:
        if end - offset < 6:
            return None
        length = _PDV_LENGTH.unpack_from(body, offset)[0]
        if length < 2 or length > end - offset - 4:
            return None
        items.append((body[offset + 4], bytes(view[offset + 5 : offset + 4 + length])))
        offset += 4 + length
    view.release()
    return items


# Events raised by the local user's primitives (A-ASSOCIATE request/response, P-DATA, A-RELEASE, A-ABORT).
_LOCAL_EVENTS = {"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"}


class _GatewayStateMachine(StateMachine):
    def do_action(self, event: str) -> None:
        if event in _LOCAL_EVENTS and (event, self.current_state) not in TRANSITION_TABLE:
            # The association ended under the local user's feet: its primitive is moot. Take it off the
            # queue (the action would have), instead of raising in the upper layer's thread.
            log.info("%s dropped in %s: the association is over", event, self.current_state)
            with contextlib.suppress(queue.Empty):
                self.dul.to_provider_queue.get(False)
            return
        super().do_action(event)


class GatewayDUL(DULServiceProvider):
    """pynetdicom's DUL with bounded, checked PDU reads (installed on each accepted connection)."""

    max_p_data: int  # the maximum length the gateway announces (and so accepts) for a P-DATA-TF
    _abort_reason: int | None
    _invalid: bool

    @classmethod
    def install(cls, assoc: Association, max_p_data: int) -> None:
        """Use this DUL for `assoc` (before its thread starts)."""
        dul = assoc.dul
        dul.__class__ = cls
        dul = cast(GatewayDUL, dul)
        dul.max_p_data = max_p_data
        dul._abort_reason = None
        dul._invalid = False
        dul.state_machine.__class__ = _GatewayStateMachine

    def _read_pdu_data(self) -> None:
        sock = cast("AssociationSocket", self.socket)
        if self._invalid or self.state_machine.current_state == "Sta13":
            # After an A-ABORT, A-ASSOCIATE-RJ or A-RELEASE-RP only the peer's closing is awaited (PS3.8
            # Sta13: any PDU is ignored): read nothing more, close. (The association thread may already
            # have shut the connection down: a TLS one would then read raw records.)
            sock.close()
            return
        try:
            header = sock.recv(6)
        except (OSError, TimeoutError):
            self._closed()
            return
        if len(header) < 6:
            self._closed()
            return
        pdu_type, _, length = _HEADER.unpack(header)
        if pdu_type not in _EVENTS:
            self._refuse(UNRECOGNIZED_PDU, f"PDU type 0x{pdu_type:02X}")
            return
        limit = self.max_p_data if pdu_type == P_DATA_PDU else _FIXED.get(pdu_type, ASSOCIATION_PDU_LIMIT)
        if length > limit:
            self._refuse(
                INVALID_PARAMETER, f"PDU of type 0x{pdu_type:02X} announces {length} bytes (at most {limit})"
            )
            return
        try:
            body = sock.recv(length)
        except (OSError, TimeoutError):
            self._closed()
            return
        if len(body) != length:
            self._closed()
            return
        if pdu_type == P_DATA_PDU and not self._observed():
            items = pdv_items(body)
            if items is None:
                self._refuse(INVALID_PARAMETER, "P-DATA-TF with malformed presentation data value items")
                return
            pdu: Any = _ReceivedPData(items)
        else:
            if pdu_type == P_DATA_PDU and pdv_items(body) is None:
                self._refuse(INVALID_PARAMETER, "P-DATA-TF with malformed presentation data value items")
                return
            try:
                pdu, _ = self._decode_pdu(header + body)
            except Exception as exc:
                self._refuse(
                    INVALID_PARAMETER, f"PDU of type 0x{pdu_type:02X} not decodable: {type(exc).__name__}"
                )
                return
        self.event_queue.put(_EVENTS[pdu_type])
        self._recv_pdu.put(pdu)

    def _observed(self) -> bool:
        return bool(self.assoc.get_handlers(evt.EVT_DATA_RECV) or self.assoc.get_handlers(evt.EVT_PDU_RECV))

    def _refuse(self, reason: int, what: str) -> None:
        """An invalid PDU: the state machine's A-ABORT (Evt19), with `reason`; then close."""
        log.warning("invalid PDU from %s: %s", _peer(self), what)
        self._invalid = True
        self._abort_reason = reason
        self.event_queue.put("Evt19")
        refused = getattr(self.assoc, "imaging_on_invalid_pdu", None)
        if refused is not None:
            refused(what)

    def _closed(self) -> None:
        """The connection closed, or a PDU did not arrive in time (Evt17)."""
        self.event_queue.put("Evt17")
        self._release_waiting_acceptor()

    def _release_waiting_acceptor(self) -> None:
        """Before association (Sta2) an abort or a closed connection is the end: tell the association thread,
        which otherwise waits for an A-ASSOCIATE-RQ for the whole ACSE timeout, holding its slot."""
        if self.state_machine.current_state == "Sta2":
            self.to_user_queue.put(None)  # type: ignore[arg-type]  # its receive_pdu returns None: gives up

    def _send(self, pdu: Any) -> None:
        if isinstance(pdu, A_ABORT_RQ):
            if pdu.source == 0x02 and self._abort_reason is not None:
                pdu.reason_diagnostic = self._abort_reason  # the provider abort that answers our refusal
                self._abort_reason = None
            super()._send(pdu)
            self._release_waiting_acceptor()  # sent: the association thread may close the connection now
            return
        super()._send(pdu)


def _peer(dul: DULServiceProvider) -> str:
    address = getattr(dul.assoc.requestor, "address", "")
    return str(address or "peer")
