"""Issue 12, finding 1 and the DIMSE ones of finding 5: what a peer declares never costs the gateway memory it
has not sent, a PDU longer than the negotiated maximum is answered with an A-ABORT, a presentation data value
item shorter than the standard allows is answered with an A-ABORT (never a dead reader thread), and the
gateway keeps serving. Memory is measured as a real server process's RSS (its gateway processes included)."""

from __future__ import annotations

import signal
import struct
import time

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from tests.archive_fixtures import ARCHIVE_AE, CLIENT_AE, echo, free_port, serve_subprocess
from tests.dimse import raw
from tests.dimse.memory import tree_rss

# A thread of the gateway that dies with an exception fails the test (pytest only warns by default).
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

MiB = 1 << 20


@pytest.fixture
def server(tmp_path):
    port = free_port()
    proc = serve_subprocess(tmp_path / "data", port, tmp_path / "server.log")
    yield proc, port, tmp_path / "server.log"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except Exception:
        proc.kill()


def _abort_then_close(sock) -> None:
    answer = raw.read_pdu(sock)
    assert answer is not None, "the gateway closed without an A-ABORT"
    assert answer[0] == raw.ABORT, answer
    assert raw.closed(sock), "the gateway kept the connection open after its A-ABORT"


@pytest.mark.slow
def test_declared_lengths_cost_no_memory(server):
    """The issue's attack: P-DATA-TF headers declaring 1 GiB (and 4 GiB) and nothing after them, before and
    after association. RSS stays flat and each connection gets an A-ABORT."""
    proc, port, log = server
    assert echo(port)
    time.sleep(1.0)
    before = tree_rss(proc.pid)
    sockets = []
    for length in (1 << 30, 1 << 30, 0xFFFFFFFF):
        sock = raw.connect(port)  # no association: a P-DATA-TF is unexpected there anyway
        sock.sendall(struct.pack(">BBI", raw.P_DATA_TF, 0, length))
        sockets.append(sock)
    for length in (1 << 30, 1 << 30, 0xFFFFFFFF):
        sock = raw.associate(port, contexts=[(1, raw.VERIFICATION, [raw.IMPLICIT_LE])])
        sock.sendall(struct.pack(">BBI", raw.P_DATA_TF, 0, length))
        sockets.append(sock)
    time.sleep(2.0)  # unfixed, the zero-filled buffers are all resident by now
    grown = tree_rss(proc.pid) - before
    assert grown < 64 * MiB, f"RSS grew by {grown / MiB:.0f} MiB for 6 PDU headers sent"
    for sock in sockets:
        _abort_then_close(sock)
        sock.close()
    assert echo(port)
    assert proc.poll() is None
    assert "Traceback" not in log.read_text()


def test_pdu_over_negotiated_maximum_is_aborted(make_archive, start_gateway):
    """A P-DATA-TF one byte longer than the maximum the gateway announced: A-ABORT, nothing read after."""
    archive = make_archive()
    port = start_gateway(archive)
    sock = raw.connect(port)
    sock.sendall(raw.associate_rq())
    answer = raw.read_pdu(sock)
    assert answer is not None and answer[0] == raw.ASSOCIATE_AC
    announced = _max_pdu(answer[1])
    assert 256 * 1024 <= announced <= MiB, announced
    item = raw.pdv(1, 0x03, raw.c_echo_rq())
    filler = b"\0" * (announced - len(item) + 1 - 6)
    sock.sendall(raw.p_data(item, raw.pdv(1, 0x00, filler)))
    _abort_then_close(sock)
    assert echo(port)


def test_pdu_at_negotiated_maximum_is_served(make_archive, start_gateway):
    """The limit is the standard's: a P-DATA-TF exactly as long as announced is read and answered."""
    archive = make_archive()
    port = start_gateway(archive)
    sock = raw.connect(port)
    sock.sendall(raw.associate_rq(contexts=[(1, raw.CT_IMAGE_STORAGE, [raw.EXPLICIT_LE])]))
    answer = raw.read_pdu(sock)
    assert answer is not None and answer[0] == raw.ASSOCIATE_AC
    announced = _max_pdu(answer[1])
    sock.sendall(raw.p_data(raw.pdv(1, 0x03, raw.c_store_rq(raw.CT_IMAGE_STORAGE, "1.2.3.4"))))
    # One data set fragment filling the PDU to the byte (6: the item's length, context ID and control
    # header), then the last, short one: not a valid data set, so a C-STORE-RSP with an error status.
    sock.sendall(raw.p_data(raw.pdv(1, 0x00, b"\0" * (announced - 6))))
    sock.sendall(raw.p_data(raw.pdv(1, 0x02, b"\0" * 8)))
    answer = raw.read_pdu(sock)
    assert answer is not None and answer[0] == raw.P_DATA_TF, answer
    sock.close()


@pytest.mark.parametrize("item_length", [0, 1])
def test_short_pdv_item_is_aborted(make_archive, start_gateway, item_length):
    """A presentation data value item of length 0 or 1 (PS3.8 9.3.5.1: at least the context ID and the control
    header): the gateway answers A-ABORT, closes, and keeps serving."""
    archive = make_archive()
    port = start_gateway(archive)
    sock = raw.associate(port)
    item = struct.pack(">I", item_length) + b"\x01" * item_length  # at most a context ID, no header
    sock.sendall(raw.p_data(item))
    _abort_then_close(sock)
    assert echo(port)


def test_short_pdv_item_from_pynetdicom_association(make_archive, start_gateway):
    """The same on an association a real client (pynetdicom) opened: the client sees the A-ABORT."""
    archive = make_archive()
    port = start_gateway(archive)
    received: list[str] = []
    ae = AE(ae_title=CLIENT_AE)
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title=ARCHIVE_AE,
        evt_handlers=[(evt.EVT_PDU_RECV, lambda event: received.append(type(event.pdu).__name__))],
    )
    assert assoc.is_established
    assoc.dul.socket.socket.sendall(raw.p_data(struct.pack(">IB", 1, 1)))
    deadline = time.monotonic() + 10
    while assoc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted
    assert "A_ABORT_RQ" in received, received  # an A-ABORT, not a dropped connection
    assert echo(port)


def _max_pdu(associate_ac_body: bytes) -> int:
    """The Maximum Length Received of an A-ASSOCIATE-AC (user information item, sub-item 0x51)."""
    offset = 68  # protocol version, reserved, AE titles (echoed), reserved
    while offset < len(associate_ac_body):
        item_type, _, length = struct.unpack_from(">BBH", associate_ac_body, offset)
        if item_type == 0x50:
            sub = offset + 4
            while sub < offset + 4 + length:
                sub_type, _, sub_length = struct.unpack_from(">BBH", associate_ac_body, sub)
                if sub_type == 0x51:
                    return int(struct.unpack_from(">I", associate_ac_body, sub + 4)[0])
                sub += 4 + sub_length
        offset += 4 + length
    raise AssertionError("no maximum length in the A-ASSOCIATE-AC")


def test_gateway_limits_connections(make_archive, start_gateway):
    """Connections that never associate hold no more than a bounded number of slots: beyond it the gateway
    closes new ones at once, and once they are gone it serves again."""
    archive = make_archive(max_associations=4)
    port = start_gateway(archive)
    idle = [raw.connect(port) for _ in range(40)]
    time.sleep(0.5)
    refused = sum(raw.closed(sock, timeout=0.2) for sock in idle)
    assert refused >= 40 - (4 + 4), refused
    for sock in idle:
        sock.close()
    deadline = time.monotonic() + 10
    while not echo(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert echo(port)


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickling"])
def test_a_pdu_must_arrive_in_time(make_archive, start_gateway, trickle):
    """A peer that announces a PDU and then stalls, or sends it a byte at a time, is cut off after about the
    network timeout, and its slot is free again."""
    archive = make_archive(network_timeout=2.0)
    port = start_gateway(archive)
    sock = raw.connect(port)
    sock.sendall(struct.pack(">BBI", raw.ASSOCIATE_RQ, 0, 1000) + b"\0")
    started = time.monotonic()
    gone = False
    while time.monotonic() - started < 15 and not gone:
        if trickle:
            try:
                sock.sendall(b"\0")
            except OSError:
                gone = True
                break
        gone = raw.closed(sock, timeout=0.5)
    assert gone, "the gateway kept a stalled connection"
    assert time.monotonic() - started < 2 * 2.0 + 3
    sock.close()
    assert echo(port)
