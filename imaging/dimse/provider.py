"""pynetdicom's DIMSE service provider with a fast path for the gateway's most frequent messages: C-STORE
requests in, C-STORE responses out.

pynetdicom turns every command set into a pydicom Dataset and back: decoding a C-STORE-RQ's eight command
elements, copying its data set fragment by fragment into a BytesIO and filling the primitive costs ~0.8 ms of
CPU under the GIL, and encoding the six-element C-STORE-RSP (twice, once for its group length) ~0.9 ms. That
is a fifth of the CPU a received 0.5 MB CT slice costs the whole gateway. Here both are packed and unpacked
directly: implicit VR little endian, as PS3.7 6.3.1 fixes for every command set.

Anything else, and anything unusual in these two, takes pynetdicom's own path unchanged: other commands,
elements pynetdicom would warn about or drop, a command set split over more PDVs than one PDU holds, bound
EVT_DIMSE_RECV / EVT_DIMSE_SENT handlers (which want pynetdicom's message objects), chunked data sets.
tests/dimse/test_provider.py compares the results with pynetdicom's, byte for byte and field for field.

Bounds (issue 12): a message is at most `max_message` bytes, command set and data set (`max_upload_bytes`):
past it, a C-STORE's data set is dropped as it arrives and the request reaches the handler with no data set,
which answers Out of Resources; any other message is answered with an A-ABORT. A command set is at most
`COMMAND_LIMIT` bytes. A message that cannot be decoded, whatever the reason, is answered with an A-ABORT
too: never an exception in the upper layer's thread, which would leave the association without a reader.
"""

from __future__ import annotations

import logging
import struct
import tempfile
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pynetdicom import _config, evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

if TYPE_CHECKING:
    from pynetdicom.association import Association

log = logging.getLogger(__name__)

PDV = tuple[int, bytes]
COMMAND_LIMIT = 64 * 1024  # a command set is a few hundred bytes

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101
# A data set larger than this is written to a spool file as its fragments arrive (C-STORE of a large
# multi-frame object): it reaches the ingest path as a file, parsed and stored in bounded memory.
SPOOL_THRESHOLD = 32 * 1024 * 1024
SPOOL_DIR: str | None = None  # set by the gateway (Settings.data_dir/tmp); None: the system's temp dir
_US = struct.Struct("<H")
_HEADER = struct.Struct("<HHI")  # group, element, value length: implicit VR little endian


class _Unusual(Exception):
    """A command set the fast path leaves to pynetdicom."""


class GatewayDIMSEProvider(DIMSEServiceProvider):
    def __init__(self, assoc: Association, max_message: int = 4 << 30) -> None:
        super().__init__(assoc)
        self.max_message = max_message
        self._consumed: list[PDV] = []  # this message's command fragments, replayed if pynetdicom takes over
        self._command = bytearray()
        self._request: C_STORE | None = None  # a decoded C-STORE-RQ waiting for its data set
        self._fragments: list[memoryview] = []
        self._size = 0  # bytes of the current message so far
        self._held = 0  # bytes in _fragments
        self._oversize = False  # the current C-STORE's data set is being dropped
        self._spool: Any = None  # a large data set's fragments (a NamedTemporaryFile)
        self._passthrough = False  # pynetdicom is decoding the current message

    @classmethod
    def install(cls, assoc: Association, max_message: int = 4 << 30) -> None:
        """Use this provider for `assoc` (before any P-DATA arrives)."""
        assoc.dimse = cls(assoc, max_message)

    def _observed(self, event: evt.EventType) -> bool:
        return bool(self.assoc.get_handlers(event))

    # -- receiving ---------------------------------------------------------------------------------------

    def receive_primitive(self, primitive: P_DATA) -> None:
        try:
            self._receive(cast(list[PDV], primitive.presentation_data_value_list))
        except Exception as exc:  # whatever a hostile message does to a decoder: abort, keep the reader
            self._invalid(f"undecodable message ({type(exc).__name__})")

    def _invalid(self, what: str) -> None:
        """An invalid DIMSE message: A-ABORT (as pynetdicom answers one), nothing more of it kept."""
        log.warning("invalid DIMSE message: %s", what)
        self._reset()
        self._passthrough = False
        self.message = None
        self.dul.event_queue.put("Evt19")

    def _receive(self, pdvs: list[PDV]) -> None:
        if any(not data for _, data in pdvs):  # no message control header (the upper layer refuses these)
            self._invalid("presentation data value without a message control header")
            return
        if self._passthrough:
            self._pynetdicom(pdvs)
            return
        for index, (context_id, data) in enumerate(pdvs):
            if self._request is None:  # in the command set
                if not data[0] & 1 or (not self._consumed and not self._fast_path_allowed()):
                    self._hand_over(pdvs[index:])
                    return
                self._consumed.append((context_id, data))
                self._command += memoryview(data)[1:]
                if len(self._command) > COMMAND_LIMIT:
                    self._invalid("command set too long")
                    return
                if data[0] & 2:  # the last command fragment
                    try:
                        self._request = _decode_c_store_rq(bytes(self._command))
                    except _Unusual:
                        self._hand_over(pdvs[index + 1 :])
                        return
                    self._request._context_id = context_id
            elif data[0] & 1:  # a command fragment where the data set should continue
                self._invalid("command fragment inside a data set")
                return
            else:
                self._size += len(data) - 1
                if self._size > self.max_message:  # too large to keep: dropped as it arrives
                    if not self._oversize:
                        self._drop_data_set()
                    self._oversize = True
                else:
                    self._data_set_fragment(memoryview(data)[1:])
                if data[0] & 2:  # the last data set fragment: the request is complete
                    request = self._request
                    if self._oversize:  # none, which the C-STORE handler answers 0xA700
                        request.DataSet = None
                    else:
                        self._complete_data_set(request)
                    self._reset()
                    self.msg_queue.put((cast(int, request._context_id), request))

    def _data_set_fragment(self, fragment: memoryview) -> None:
        """Keep a data set fragment: in memory, or past SPOOL_THRESHOLD in a spool file (a data set of any
        size is received in bounded memory)."""
        if self._spool is None:
            self._fragments.append(fragment)
            self._held += len(fragment)
            if self._held <= SPOOL_THRESHOLD:
                return
            # Closed and removed by pynetdicom once the C-STORE handler returned (its chunked-data-set
            # convention: C_STORE._dataset_file / _dataset_path).
            self._spool = tempfile.NamedTemporaryFile(dir=SPOOL_DIR, prefix=".spool-", delete=False)  # noqa: SIM115
            fragments, self._fragments = self._fragments, []
            for held in fragments:
                self._spool.write(held)
        else:
            self._spool.write(fragment)

    def _complete_data_set(self, request: C_STORE) -> None:
        """The received data set in `request`: DataSet (BytesIO), or the spool file as pynetdicom's own
        chunked mode leaves it (`_dataset_file`, `_dataset_path`; DataSet empty)."""
        if self._spool is None:
            request.DataSet = BytesIO(b"".join(self._fragments))
            return
        spool, self._spool = self._spool, None
        spool.flush()
        request.DataSet = BytesIO()  # (pynetdicom serves no request without one)
        request._dataset_file = spool
        request._dataset_path = (Path(spool.name), 0)

    def _drop_data_set(self) -> None:
        """Forget what was kept of the current data set (an aborted or oversized message's)."""
        self._fragments = []
        self._held = 0
        if self._spool is not None:
            self._spool.close()
            Path(self._spool.name).unlink(missing_ok=True)
            self._spool = None

    def _fast_path_allowed(self) -> bool:
        return not _config.STORE_RECV_CHUNKED_DATASET and not self._observed(evt.EVT_DIMSE_RECV)

    def _hand_over(self, rest: list[PDV]) -> None:
        """Let pynetdicom decode the current message: what this provider consumed of it, then `rest`."""
        consumed = self._consumed
        self._reset()
        self._passthrough = True
        self._pynetdicom([*consumed, *rest])

    def _pynetdicom(self, pdvs: list[PDV]) -> None:
        self._size += sum(len(data) - 1 for _, data in pdvs)
        if self._size > self.max_message:
            self._invalid(f"message over {self.max_message} bytes")
            return
        p_data = P_DATA()
        p_data.presentation_data_value_list.extend(pdvs)  # (its setter wants lists, the DUL gives tuples)
        super().receive_primitive(p_data)
        if self.message is None:  # pynetdicom finished the message
            self._passthrough = False
            self._size = 0

    def _reset(self) -> None:
        self._consumed = []
        self._command = bytearray()
        self._request = None
        self._fragments = []
        self._size = 0
        self._oversize = False
        self._drop_data_set()

    # -- sending -----------------------------------------------------------------------------------------

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if (
            isinstance(primitive, C_STORE)
            and primitive.MessageIDBeingRespondedTo is not None
            and not self._observed(evt.EVT_DIMSE_SENT)
        ):
            encoded = encode_c_store_rsp(primitive)
            limit = self.maximum_pdu_size
            if encoded is not None and (limit == 0 or len(encoded) <= limit - 6):  # one PDV, as pynetdicom
                pdata = P_DATA()
                pdata.presentation_data_value_list.append((context_id, b"\x03" + encoded))
                self.dul.send_pdu(pdata)
                return
        super().send_msg(primitive, context_id)


def _element(tag: int, value: bytes) -> bytes:
    return _HEADER.pack(0, tag, len(value)) + value


def _uid(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b"\x00" if len(data) % 2 else data


def encode_c_store_rsp(primitive: C_STORE) -> bytes | None:
    """The command set of a C-STORE-RSP as pynetdicom encodes it, or None where the response carries more
    than a status (an error comment, offending elements): pynetdicom encodes those."""
    if primitive.ErrorComment is not None or primitive.OffendingElement is not None:
        return None
    if primitive.Status is None or primitive.MessageIDBeingRespondedTo is None:
        return None
    body = b"".join(
        (
            _element(0x0002, _uid(primitive.AffectedSOPClassUID)) if primitive.AffectedSOPClassUID else b"",
            _element(0x0100, _US.pack(C_STORE_RSP)),
            _element(0x0120, _US.pack(primitive.MessageIDBeingRespondedTo)),
            _element(0x0800, _US.pack(NO_DATA_SET)),
            _element(0x0900, _US.pack(primitive.Status)),
            _element(0x1000, _uid(primitive.AffectedSOPInstanceUID))
            if primitive.AffectedSOPInstanceUID
            else b"",
        )
    )
    return _element(0x0000, struct.pack("<I", len(body))) + body


# The C-STORE-RQ command elements (PS3.7 Table 9.3-1): element number -> (primitive attribute, kind).
_RQ_ELEMENTS = {
    0x0000: ("", "UL"),  # Command Group Length
    0x0002: ("AffectedSOPClassUID", "UI"),
    0x0100: ("", "US"),  # Command Field
    0x0110: ("MessageID", "US"),
    0x0700: ("Priority", "US"),
    0x0800: ("", "US"),  # Command Data Set Type
    0x1000: ("AffectedSOPInstanceUID", "UI"),
    0x1030: ("MoveOriginatorApplicationEntityTitle", "AE"),
    0x1031: ("MoveOriginatorMessageID", "US"),
}


def _decode_c_store_rq(command: bytes) -> C_STORE:
    """A C-STORE-RQ primitive with a data set to follow; _Unusual for any other command set, or one that
    pynetdicom would decode with warnings, coercions or errors."""
    values: dict[int, Any] = {}
    offset, end = 0, len(command)
    while offset < end:
        if offset + 8 > end:
            raise _Unusual
        group, element, length = _HEADER.unpack_from(command, offset)
        offset += 8
        value = command[offset : offset + length]
        offset += length
        if group != 0 or element not in _RQ_ELEMENTS or len(value) != length or element in values:
            raise _Unusual
        kind = _RQ_ELEMENTS[element][1]
        if kind == "US":
            if length != 2:
                raise _Unusual
            values[element] = _US.unpack(value)[0]
        elif kind == "UL":
            if length != 4:
                raise _Unusual
        else:
            if b"\\" in value or not value.isascii():
                raise _Unusual
            text = value.decode("ascii")
            values[element] = text.strip(" ") if kind == "AE" else text.rstrip("\x00 ")
    if values.get(0x0100) != C_STORE_RQ or values.get(0x0800) == NO_DATA_SET or 0x0800 not in values:
        raise _Unusual
    request = C_STORE()
    try:
        for element, value in values.items():
            attribute = _RQ_ELEMENTS[element][0]
            if attribute:
                setattr(request, attribute, value)
    except (ValueError, TypeError):
        raise _Unusual from None
    # pynetdicom's setters drop an invalid value with an error logged: take its path for those.
    if any(getattr(request, _RQ_ELEMENTS[e][0]) is None for e in values if _RQ_ELEMENTS[e][0]):
        raise _Unusual
    request._dataset_path = None
    request._dataset_file = None
    return request
