"""The multi-process DIMSE gateway (IMAGING_DIMSE_PROCESSES > 1): `imaging serve` hands accepted connections
to extra gateway processes. 4 parallel dcmtk storescu store every instance (indexed,
byte-identical), C-FIND finds them, and no child outlives the server (SIGTERM or SIGKILL). A series received by
a child over an open association is not marked stable until the association is released."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from imaging.archive import Archive
from imaging.config import load_settings
from imaging.dimse.processes import Dispatcher, GatewayProcesses, QueueRelay, apply_message, forget_process
from imaging.dimse.server import Gateway
from imaging.index.schema import Instance, Series
from imaging.jobs.stability import mark_stable
from tests.archive_fixtures import (
    ARCHIVE_AE,
    CLIENT_AE,
    dataset_bytes,
    free_port,
    require_program,
    run,
    serve_subprocess,
    write_synthetic_study,
)

pytestmark = pytest.mark.dcmtk


def _children(pid: int) -> set[int]:
    """Live processes whose parent is `pid` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def _gateways(pid: int) -> set[int]:
    """The extra gateway processes among `pid`'s children (not multiprocessing's resource tracker)."""
    return {c for c in _children(pid) if b"spawn_main" in _cmdline(c)}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _gone(pids: set[int], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def test_four_associations_over_two_processes(tmp_path):
    storescu = require_program("/usr/bin/storescu")
    findscu = require_program("/usr/bin/findscu")
    data_dir = tmp_path / "data"
    port = free_port()
    log = tmp_path / "server.log"
    groups = [
        write_synthetic_study(tmp_path / f"g{i}", series=2, per_series=10, patient=i + 1, rows=64)
        for i in range(4)
    ]
    server = serve_subprocess(data_dir, port, log, timeout=90, dimse_processes="2")
    try:
        children = _children(server.pid)  # all of them must go with the server
        assert len(_gateways(server.pid)) == 1, "one extra gateway process"
        clients = [
            subprocess.Popen(
                [storescu, "-v", "-aet", CLIENT_AE, "-aec", ARCHIVE_AE, "127.0.0.1", str(port), *map(str, g)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for g in groups
        ]
        outputs = [c.communicate(timeout=120)[0].decode(errors="replace") for c in clients]
        assert all(c.returncode == 0 for c in clients), outputs
        total = sum(len(g) for g in groups)
        assert sum(o.count("Received Store Response (Success)") for o in outputs) == total, outputs

        out = tmp_path / "find"
        out.mkdir()
        keys = ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "NumberOfStudyRelatedInstances"]
        args = [findscu, "-S", "-aet", CLIENT_AE, "-aec", ARCHIVE_AE, "-X", "-od", str(out)]
        result = run([*args, *(a for k in keys for a in ("-k", k)), "127.0.0.1", str(port)])
        assert result.returncode == 0, result.stdout + result.stderr
        answers = {
            str(d.StudyInstanceUID): int(d.NumberOfStudyRelatedInstances) for d in map(dcmread, out.iterdir())
        }
        expected = {str(dcmread(g[0], stop_before_pixels=True).StudyInstanceUID): len(g) for g in groups}
        assert answers == expected
        assert all(_alive(p) for p in children)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    assert _gone(children), "a gateway process outlived the server"

    archive = Archive.open(load_settings(data_dir=data_dir, dev_mode=True))
    try:
        with archive.db.read() as s:
            rows = {r.SOPInstanceUID: r for r in s.scalars(select(Instance))}
        assert len(rows) == total
        for sent in (f for g in groups for f in g):
            uid = str(dcmread(sent, stop_before_pixels=True).SOPInstanceUID)
            assert dataset_bytes(archive.store.read(rows[uid].object_key)) == dataset_bytes(sent.read_bytes())
    finally:
        archive.close()
    assert "SYNTH000" not in log.read_text() and "SYN00000" not in log.read_text()


def test_children_die_with_a_killed_server(tmp_path):
    server = serve_subprocess(
        tmp_path / "data", free_port(), tmp_path / "server.log", timeout=90, dimse_processes="3"
    )
    children = _children(server.pid)
    assert len(_gateways(server.pid)) == 2
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    assert _gone(children), "a gateway process outlived a SIGKILLed server"


def test_relay_messages_keep_series_receiving(make_archive, tmp_path):
    archive = make_archive()
    [path] = write_synthetic_study(tmp_path / "s", series=1, per_series=1)
    result = archive.ingestor.ingest(path.read_bytes())
    series = (result.partition, result.series_instance_uid)

    class Messages(list[tuple[object, ...]]):
        put = list.append

    messages = Messages()
    relay = QueueRelay(messages)
    relay.add(7, *series)
    relay.add(8, *series)
    for m in messages:
        apply_message(archive.receiving, m)
    messages.clear()
    with archive.db.write() as s:
        assert mark_stable(s, 0, archive.receiving_series()) == 0
    relay.release(7)
    apply_message(archive.receiving, messages.pop())
    with archive.db.write() as s:
        assert mark_stable(s, 0, archive.receiving_series()) == 0  # still open on association 8
    forget_process(archive.receiving, os.getpid())  # its process died: its associations with it
    assert archive.receiving == {}
    with archive.db.write() as s:
        assert mark_stable(s, 0, archive.receiving_series()) == 1


def test_series_received_by_a_child_is_not_stable_before_release(make_archive, tmp_path):
    """Two associations at once: the first goes to the child, the second (the child now busier) stays in the
    server process. The child's series is not stable until its association is released."""
    from pynetdicom import AE, build_context

    archive = make_archive(network_timeout=20.0)
    files = write_synthetic_study(tmp_path / "s", series=2, per_series=2)
    extra = GatewayProcesses(archive, 1)
    gateway = Gateway(archive)
    port = gateway.start("127.0.0.1", 0, dispatcher=extra.dispatcher)
    extra.start("127.0.0.1", port)
    try:
        ae = AE(ae_title=CLIENT_AE)
        meta = dcmread(files[0], stop_before_pixels=True).file_meta
        ae.requested_contexts = [build_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])]
        first = ae.associate("127.0.0.1", port, ae_title=ARCHIVE_AE)
        second = ae.associate("127.0.0.1", port, ae_title=ARCHIVE_AE)
        assert first.is_established and second.is_established
        [child] = extra.processes
        assert extra.dispatcher.load == {os.getpid(): 1, child: 1}
        try:
            for f in files[:2]:
                assert first.send_c_store(f).Status == 0
            assert second.send_c_store(files[2]).Status == 0
            deadline = time.monotonic() + 10
            while len(archive.receiving) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            in_child = [k for k in archive.receiving if isinstance(k, tuple)]
            assert [pid for pid, _ in in_child] == [child]
            assert len(archive.receiving) == 2  # and one association served here
            with archive.db.write() as s:
                assert mark_stable(s, 0, archive.receiving_series()) == 0
        finally:
            first.release()
            second.release()
        deadline = time.monotonic() + 10
        while (archive.receiving or any(extra.dispatcher.load.values())) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert archive.receiving == {}
        assert extra.dispatcher.load == {os.getpid(): 0, child: 0}  # each close counted once
        with archive.db.write() as s:
            assert mark_stable(s, 0, archive.receiving_series()) == 2
            assert all(s.scalars(select(Series.stable)))
    finally:
        gateway.stop()
        extra.stop()
    assert not any(p.is_alive() for p in extra.processes.values())


def test_dispatcher_balances_and_falls_back_when_a_child_is_gone():
    """Four connections over this process and one child: two each. A child whose end is closed gets none:
    the connection is served here."""
    import socket as socketlib

    dispatcher = Dispatcher()
    ours, theirs = socketlib.socketpair(socketlib.AF_UNIX, socketlib.SOCK_SEQPACKET)
    dispatcher.add_worker(4242, ours)
    listener = socketlib.create_server(("127.0.0.1", 0))
    clients, handed = [], 0
    try:
        for _ in range(4):
            clients.append(socketlib.create_connection(listener.getsockname()))
            connection, address = listener.accept()
            if dispatcher.hand_off(connection, address):
                handed += 1
                payload, fds, _, _ = socketlib.recv_fds(theirs, 4096, 1)
                assert len(fds) == 1 and payload.startswith(b'{"address": ["127.0.0.1"')
                with socketlib.socket(fileno=fds[0]) as passed:  # the same connection, now the child's
                    passed.sendall(b"x")
                assert clients[-1].recv(1) == b"x"
            else:
                connection.close()
        assert handed == 2
        assert dispatcher.load == {os.getpid(): 2, 4242: 2}
        for _ in range(2):
            dispatcher.closed(4242)
        dispatcher.closed(4242)  # never below zero
        assert dispatcher.load[4242] == 0

        theirs.close()  # the child died
        clients.append(socketlib.create_connection(listener.getsockname()))
        connection, address = listener.accept()
        assert not dispatcher.hand_off(connection, address)
        connection.close()
        assert dispatcher.load == {os.getpid(): 3, 4242: 0}
    finally:
        for c in clients:
            c.close()
        listener.close()
        ours.close()


def test_gateway_process_exits_on_repeated_sigterm(make_archive):
    """Two SIGTERMs in a row (the parent's stop and PR_SET_PDEATHSIG) once deadlocked a child that set a
    threading.Event from its signal handler."""
    archive = make_archive()
    extra = GatewayProcesses(archive, 1)
    extra.start("127.0.0.1", free_port())
    [(pid, process)] = extra.processes.items()
    try:
        for _ in range(3):
            os.kill(pid, signal.SIGTERM)
            time.sleep(0.01)
        process.join(15)
        assert not process.is_alive(), "the gateway process did not exit"
    finally:
        extra.stop()
