"""Raw DICOM Upper Layer PDUs (PS3.8 9.3) for tests that must put exactly these bytes on the wire: hostile
lengths, broken items, PDUs out of order. Built by hand from the standard's tables, not by pynetdicom (whose
encoder would refuse to build most of them)."""

from __future__ import annotations

import socket
import struct
import time

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.9.7433.1.1"

ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = range(1, 8)


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def _ae(title: str) -> bytes:
    return title.encode("ascii").ljust(16)[:16]


def pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def associate_rq(
    called: str = "IMAGING",
    calling: str = "TESTSCU",
    contexts: list[tuple[int, str, list[str]]] | None = None,
    max_pdu: int = 16384,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 Table 9-11) proposing `contexts` (id, abstract syntax, syntaxes)."""
    contexts = contexts or [(1, VERIFICATION, [IMPLICIT_LE])]
    items = _item(0x10, APPLICATION_CONTEXT.encode())
    for context_id, abstract, syntaxes in contexts:
        sub = _item(0x30, abstract.encode()) + b"".join(_item(0x40, s.encode()) for s in syntaxes)
        items += _item(0x20, struct.pack(">BBBB", context_id, 0, 0, 0) + sub)
    user = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, IMPLEMENTATION_UID.encode())
    items += _item(0x50, user)
    header = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + b"\0" * 32
    return pdu(ASSOCIATE_RQ, header + items)


def pdv(context_id: int, control: int, data: bytes) -> bytes:
    """A presentation data value item (PS3.8 Table 9-23): length, context ID, control header, data."""
    return struct.pack(">IBB", len(data) + 2, context_id, control) + data


def p_data(*items: bytes) -> bytes:
    return pdu(P_DATA_TF, b"".join(items))


def _element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0, tag, len(value)) + value


def _uid(value: str) -> bytes:
    return value.encode() + b"\0" * (len(value) % 2)


def _command(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<I", len(body))) + body


def c_echo_rq(message_id: int = 1) -> bytes:
    """The command set of a C-ECHO-RQ, implicit VR little endian (PS3.7 9.3.5)."""
    return _command(
        _element(0x0002, _uid(VERIFICATION)),
        _element(0x0100, struct.pack("<H", 0x0030)),
        _element(0x0110, struct.pack("<H", message_id)),
        _element(0x0800, struct.pack("<H", 0x0101)),
    )


def c_store_rq(sop_class: str, sop_instance: str, message_id: int = 1) -> bytes:
    """The command set of a C-STORE-RQ with a data set to follow (PS3.7 9.3.1)."""
    return _command(
        _element(0x0002, _uid(sop_class)),
        _element(0x0100, struct.pack("<H", 0x0001)),
        _element(0x0110, struct.pack("<H", message_id)),
        _element(0x0700, struct.pack("<H", 0)),
        _element(0x0800, struct.pack("<H", 0x0000)),
        _element(0x1000, _uid(sop_instance)),
    )


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_pdu(sock: socket.socket, timeout: float = 10.0) -> tuple[int, bytes] | None:
    """The next PDU the peer sends as (type, body), or None when it closed the connection first."""
    deadline = time.monotonic() + timeout
    header = _read(sock, 6, deadline)
    if len(header) < 6:
        return None
    pdu_type, _, length = struct.unpack(">BBI", header)
    body = _read(sock, length, deadline)
    return (pdu_type, body) if len(body) == length else None


def _read(sock: socket.socket, count: int, deadline: float) -> bytes:
    data = b""
    while len(data) < count:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(count - len(data))
        except (ConnectionError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk
    return data


def closed(sock: socket.socket, timeout: float = 10.0) -> bool:
    """Whether the peer closes the connection within `timeout` (reading and dropping what else it sends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except ConnectionError:
            return True
        except TimeoutError:
            return False
    return False


def associate(port: int, **kwargs: object) -> socket.socket:
    """A connection with an established association (A-ASSOCIATE-AC received)."""
    sock = connect(port)
    sock.sendall(associate_rq(**kwargs))  # type: ignore[arg-type]
    answer = read_pdu(sock)
    assert answer is not None and answer[0] == ASSOCIATE_AC, answer
    return sock
