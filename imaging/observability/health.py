"""Liveness and readiness.

Liveness: the process answers. Readiness: every component it depends on works now, each reported on its own:

* `index`    — a query answers;
* `storage`  — a probe object is written and removed (the backend, and its free space where it has one);
* `workers`  — job workers are alive (heartbeats in the index, imaging.jobs.heartbeat), and every job kind
               with jobs waiting has a live worker taking it;
* components the live workers report (e.g. `triage`: its model loaded, on which device): a triage that
  disabled itself (a bundle failing its checksum, a CUDA runtime the driver cannot run) is not ready;
* `dimse`, `broker` — added by `imaging serve`: the DICOM listener accepts connections; the broker answers.

A check that raises is reported not ready with the exception's class (never its message: no PHI, no
credentials from a URL)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select, text

from imaging.archive import Archive
from imaging.index.schema import Job
from imaging.jobs.heartbeat import live_workers

log = logging.getLogger(__name__)
Check = Callable[[], dict[str, Any]]
WAITING = ("pending", "queued")


class Readiness:
    def __init__(self, archive: Archive, *, workers: bool = False) -> None:
        """`workers`: this deployment runs jobs, so live workers are required."""
        self.archive = archive
        self.checks: dict[str, Check] = {"index": self._index, "storage": self._storage}
        if workers:
            self.checks["workers"] = self._workers

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

    def check(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        components: dict[str, dict[str, Any]] = {}
        for name, check in self.checks.items():
            components[name] = _run(name, check)
        if components["index"]["ready"]:
            components.update(_run_reported(self._reported))
        return all(c["ready"] for c in components.values()), components

    # -- checks ---------------------------------------------------------------------------------------

    def _index(self) -> dict[str, Any]:
        with self.archive.db.read() as session:
            session.execute(text("SELECT 1"))
        return {"ready": True}

    def _storage(self) -> dict[str, Any]:
        store = self.archive.store
        store.check_writable()
        state: dict[str, Any] = {"ready": True, "backend": store.backend}
        free = store.free_bytes()
        if free is not None:
            state["free_bytes"] = free
            if free < self.archive.settings.min_free_bytes:
                state.update(ready=False, reason="below min_free_bytes")
        return state

    def _workers(self) -> dict[str, Any]:
        settings = self.archive.settings
        with self.archive.db.read() as session:
            workers = live_workers(session, settings.worker_heartbeat_seconds)
            waiting = dict(
                session.execute(
                    select(Job.kind, func.count()).where(Job.status.in_(WAITING)).group_by(Job.kind)
                ).all()
            )
        taken = {kind for worker in workers for kind in worker.kinds}
        orphaned = sorted(kind for kind in waiting if kind not in taken)
        state: dict[str, Any] = {"ready": bool(workers) and not orphaned, "live": len(workers)}
        state["kinds"] = sorted(taken)
        if not workers:
            state["reason"] = "no live job worker"
        elif orphaned:
            state["reason"] = "jobs waiting with no live worker for: " + ", ".join(orphaned)
        return state

    def _reported(self) -> dict[str, dict[str, Any]]:
        """Components as live workers report them; one not ready anywhere is not ready."""
        with self.archive.db.read() as session:
            workers = live_workers(session, self.archive.settings.worker_heartbeat_seconds)
        merged: dict[str, dict[str, Any]] = {}
        for worker in workers:
            for name, state in (worker.components or {}).items():
                entry = merged.setdefault(name, {"ready": True, "workers": []})
                entry["workers"].append({"worker": worker.worker_id, **state})
                if not state.get("ready", False):
                    entry["ready"] = False
                    entry.setdefault("reason", state.get("reason", "not ready"))
        return merged


def listener_check(host: str, port: int) -> Check:
    """The DICOM listener accepts a TCP connection (a wildcard address is tried on loopback)."""
    target = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host

    def check() -> dict[str, Any]:
        with socket.create_connection((target, port), timeout=2):
            pass
        return {"ready": True, "port": port}

    return check


def _run(name: str, check: Check) -> dict[str, Any]:
    try:
        return check()
    except Exception as exc:
        log.warning("readiness: %s not ready (%s)", name, type(exc).__name__)
        return {"ready": False, "reason": type(exc).__name__}


def _run_reported(reported: Callable[[], dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    try:
        return reported()
    except Exception as exc:
        return {"workers_reported": {"ready": False, "reason": type(exc).__name__}}
