"""Extra DIMSE gateway processes (Settings.dimse_processes > 1): C-STORE parsing spread over cores.

Ingest is CPU-bound under one GIL (pynetdicom's receive loop, pydicom parsing). With N processes, the server
process runs its own gateway plus N-1 children (multiprocessing, spawn), each with its own Archive opened from
the same Settings and its own gateway bound with SO_REUSEPORT on the same host:port; the kernel spreads the
incoming connections over the N listening sockets (by a hash of the client address and port, not by load).
Durability is unchanged: every process writes files and commits to the shared index exactly as one does alone.

The children run no job runner. Stability (in the server process) must still wait for association release:
each child reports its open associations' received series over a queue ("add"/"release" messages), which a
thread of the server process applies to `archive.receiving`, keyed by (pid, association id). A child that
dies takes its entries with it and is started again.

A child dies with its parent: PR_SET_PDEATHSIG on Linux, and a thread watching the parent's sentinel.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Hashable
from multiprocessing.process import BaseProcess
from typing import Any

from imaging.archive import Archive
from imaging.config import Settings

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
            from multiprocessing.connection import wait

            wait([parent.sentinel])
            stop.set()

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def child_main(settings: Settings, host: str, port: int, messages: Any, parent_pid: int) -> None:
    """An extra gateway process: serve DIMSE on the shared port until SIGTERM or the parent's death."""
    from imaging.dimse.server import Gateway

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    _die_with_parent(parent_pid, stop)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    messages.cancel_join_thread()  # exiting never waits on a parent that stopped reading
    archive = Archive.open(settings, maintenance=False)
    gateway = Gateway(archive, relay=QueueRelay(messages))
    try:
        gateway.start(host, port, reuse_port=True)
        messages.put(("ready", os.getpid()))
        stop.wait()
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
        self.host = ""
        self.port = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int, timeout: float = 120.0) -> None:
        """Start `count` processes serving host:port and wait until each listens."""
        self.host, self.port = host, port
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
            if message[0] == "ready":
                ready.add(message[1])
            else:
                apply_message(self.archive.receiving, message)
        self._thread = threading.Thread(target=self._loop, name="dimse-processes", daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        process = self.context.Process(
            target=child_main,
            args=(self.archive.settings, self.host, self.port, self.messages, os.getpid()),
            name="imaging-dimse",
            daemon=True,
        )
        process.start()
        assert process.pid is not None
        self.processes[process.pid] = process

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.messages.get(timeout=0.5)
            except queue.Empty:
                message = None
            except (EOFError, OSError):
                return
            if message is not None and message[0] != "ready":
                apply_message(self.archive.receiving, message)
            for pid, process in list(self.processes.items()):
                if process.is_alive() or self._stop.is_set():
                    continue
                log.warning("DIMSE gateway process %d exited with %s: restarting it", pid, process.exitcode)
                del self.processes[pid]
                forget_process(self.archive.receiving, pid)
                time.sleep(self.RESTART_DELAY)
                if not self._stop.is_set():
                    self._spawn()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every child and wait for it (SIGKILL past `timeout`)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
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
            forget_process(self.archive.receiving, pid)
        self.processes.clear()
