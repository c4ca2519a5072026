"""DIMSE gateway processes (Settings.dimse_processes): C-STORE work spread over cores.

Ingest is CPU-bound under one GIL: ~6 ms of CPU per 0.5 MB instance, pynetdicom's state machine and reactor
loops, parsing, hashing, indexing and the file system together. With N processes, the server process still listens on the DIMSE
port and accepts every connection, but hands each accepted connection to whichever of the N (itself or one of
its N-1 children) has the fewest open connections: the socket is passed over a Unix socket pair (SCM_RIGHTS),
and the child serves it as if it had accepted it. Unlike SO_REUSEPORT, which spreads connections by a hash of
the client's address, four associations over two processes always end up two and two.

Each child has its own Archive opened from the same Settings; durability is unchanged: every process writes
files and commits to the shared index exactly as one does alone. The children run no job runner. Stability (in
the server process) must still wait for association release: each child reports its open associations'
received series over a queue ("add"/"release" messages), which a thread of the server process applies to
`archive.receiving`, keyed by (pid, association id); it also reports each closed connection ("closed"), which
keeps the load counts right. A child that dies takes its entries with it and is started again.

A child dies with its parent: PR_SET_PDEATHSIG on Linux, a thread watching the parent's sentinel, and the end
of its socket pair.
"""

from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Hashable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

from imaging.archive import Archive
from imaging.config import Settings
from imaging.dimse.server import Gateway
from imaging.lifecycle import configure_server_process, wait_until_terminated

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
Message = tuple[Any, ...]


class QueueRelay:
    """Child side of the relay: store_scp's handlers report through this (see store_scp.ReceivingRelay)."""

    def __init__(self, messages: Any) -> None:
        self.messages = messages
        self.pid = os.getpid()

    def add(self, assoc_id: int, partition: str, series_instance_uid: str) -> None:
        self.messages.put(("add", self.pid, assoc_id, partition, series_instance_uid))

    def release(self, assoc_id: int) -> None:
        self.messages.put(("release", self.pid, assoc_id))

    def closed(self) -> None:
        self.messages.put(("closed", self.pid))


def apply_message(receiving: dict[Hashable, set[tuple[str, str]]], message: Message) -> None:
    """Parent side: apply one relay message to `archive.receiving`."""
    kind, pid = message[0], message[1]
    if kind == "add":
        _, _, assoc_id, partition, series = message
        receiving.setdefault((pid, assoc_id), set()).add((partition, series))
    elif kind == "release":
        receiving.pop((pid, message[2]), None)


def forget_process(receiving: dict[Hashable, set[tuple[str, str]]], pid: int) -> None:
    """Drop what a dead child was receiving: its associations died with it."""
    for key in [k for k in list(receiving) if isinstance(k, tuple) and k[0] == pid]:
        receiving.pop(key, None)


class Dispatcher:
    """Server side: chooses, for each accepted connection, the process with the fewest open connections.

    `load` counts connections handed to each process (this one under its own pid) and not yet closed. On a
    tie a child is chosen: the server process also answers HTTP and runs the jobs.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.load: dict[int, int] = {self.pid: 0}
        self.channels: dict[int, socket.socket] = {}
        self._lock = threading.Lock()

    def add_worker(self, pid: int, channel: socket.socket) -> None:
        with self._lock:
            self.channels[pid] = channel
            self.load[pid] = 0

    def remove_worker(self, pid: int) -> None:
        with self._lock:
            channel = self.channels.pop(pid, None)
            self.load.pop(pid, None)
        if channel is not None:
            channel.close()

    def hand_off(self, connection: socket.socket, address: Any, tls: bool = False) -> bool:
        """Give `connection` (accepted on the TLS port when `tls`: the process serving it does the handshake)
        to the least-loaded process. False: this process is to serve it itself."""
        with self._lock:
            pid = min(self.load, key=lambda p: (self.load[p], p == self.pid))
            self.load[pid] += 1
            channel = self.channels.get(pid)
        if channel is None:
            return False
        try:
            client = list(address) if isinstance(address, tuple) else address
            payload = json.dumps({"address": client, "tls": tls}).encode()
            socket.send_fds(channel, [payload], [connection.fileno()])
        except OSError:  # the child died: serve it here; the watcher restarts the child
            log.warning("could not hand a connection to gateway process %d", pid)
            self.closed(pid)
            with self._lock:
                self.load[self.pid] += 1
            return False
        connection.close()  # the child has its own descriptor; close ours without shutting the connection
        return True

    def closed(self, pid: int) -> None:
        with self._lock:
            if self.load.get(pid, 0) > 0:
                self.load[pid] -= 1

    def local_closed(self) -> None:
        self.closed(self.pid)

    def open_connections(self) -> int:
        """Connections handed to every process (this one included) and not yet closed."""
        with self._lock:
            return sum(self.load.values())

    def processes(self) -> int:
        with self._lock:
            return len(self.load)


def receive_connections(channel: socket.socket, serve: Any, stop: threading.Event) -> None:
    """Child side: serve every connection the server process hands over, until the pair is closed."""
    while not stop.is_set():
        try:
            payload, fds, _flags, _ = socket.recv_fds(channel, 4096, 1)
        except OSError:
            break
        if not payload and not fds:  # the server process closed its end: it is gone or stopping
            break
        for fd in fds:
            connection = socket.socket(fileno=fd)
            handed = json.loads(payload)
            address = handed["address"]
            serve(connection, tuple(address) if isinstance(address, list) else address, bool(handed["tls"]))
    stop.set()


def _die_with_parent(parent_pid: int, stop: threading.Event) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            log.warning("prctl(PR_SET_PDEATHSIG) unavailable: relying on the parent watcher")
    if os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(1)
    parent = multiprocessing.parent_process()
    if parent is not None:

        def watch() -> None:
            wait([parent.sentinel])
            stop.set()

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def child_main(
    settings: Settings, address: tuple[str, int], channel: socket.socket, messages: Any, parent_pid: int
) -> None:
    """An extra gateway process: serve the connections handed over until SIGTERM or the parent's death."""
    stop = threading.Event()  # set by the parent watcher or the end of the socket pair
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    _die_with_parent(parent_pid, stop)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_server_process()
    messages.cancel_join_thread()  # exiting never waits on a parent that stopped reading
    archive = Archive.open(settings, maintenance=False)
    relay = QueueRelay(messages)
    gateway = Gateway(archive, relay=relay, on_connection_closed=relay.closed)
    serve = gateway.start_without_listening(address)
    threading.Thread(
        target=receive_connections,
        args=(channel, serve, stop),
        name="dimse-handoff",
        daemon=True,
    ).start()
    try:
        messages.put(("ready", os.getpid()))
        wait_until_terminated(stop)
    finally:
        gateway.stop()
        archive.close()


class GatewayProcesses:
    """Server side: starts, watches and stops the extra gateway processes, and applies their reports."""

    RESTART_DELAY = 1.0

    def __init__(self, archive: Archive, count: int) -> None:
        self.archive = archive
        self.count = count
        self.context = multiprocessing.get_context("spawn")
        self.messages: Any = self.context.Queue()
        self.processes: dict[int, BaseProcess] = {}
        self.dispatcher = Dispatcher()
        self.address: tuple[str, int] = ("", 0)
        self._channels: dict[int, socket.socket] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int, timeout: float = 120.0) -> None:
        """Start `count` processes for the gateway listening on host:port and wait until each is ready;
        only then are connections handed to them."""
        self.address = (host, port)
        for _ in range(self.count):
            self._spawn()
        ready: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(ready) < self.count:
            dead = [p for p in self.processes.values() if not p.is_alive()]
            if dead:
                self.stop()
                raise RuntimeError(f"DIMSE gateway process exited with {dead[0].exitcode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("DIMSE gateway processes did not start")
            try:
                message = self.messages.get(timeout=0.2)
            except queue.Empty:
                continue
            self._apply(message)
            if message[0] == "ready":
                ready.add(message[1])
        self._thread = threading.Thread(target=self._loop, name="dimse-processes", daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        process = self.context.Process(
            target=child_main,
            args=(self.archive.settings, self.address, theirs, self.messages, os.getpid()),
            name="imaging-dimse",
            daemon=True,
        )
        process.start()
        theirs.close()
        assert process.pid is not None
        self.processes[process.pid] = process
        self._channels[process.pid] = ours

    def _apply(self, message: Message) -> None:
        if message[0] == "ready":
            channel = self._channels.pop(message[1], None)
            if channel is not None:
                self.dispatcher.add_worker(message[1], channel)
        elif message[0] == "closed":
            self.dispatcher.closed(message[1])
        else:
            apply_message(self.archive.receiving, message)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.messages.get(timeout=0.5)
            except queue.Empty:
                message = None
            except (EOFError, OSError):
                return
            if message is not None:
                self._apply(message)
            for pid, process in list(self.processes.items()):
                if process.is_alive() or self._stop.is_set():
                    continue
                log.warning("DIMSE gateway process %d exited with %s: restarting it", pid, process.exitcode)
                self._forget(pid)
                time.sleep(self.RESTART_DELAY)
                if not self._stop.is_set():
                    self._spawn()

    def _forget(self, pid: int) -> None:
        self.processes.pop(pid, None)
        self.dispatcher.remove_worker(pid)
        channel = self._channels.pop(pid, None)
        if channel is not None:
            channel.close()
        forget_process(self.archive.receiving, pid)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every child and wait for it (SIGKILL past `timeout`)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        for pid in list(self.processes):
            self.dispatcher.remove_worker(pid)  # no more connections for it
        for process in self.processes.values():
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1)
        for pid in list(self.processes):
            self._forget(pid)
