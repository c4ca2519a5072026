"""Readiness, component by component, over real HTTP (uvicorn on loopback): the index and the storage; job
workers alive by their heartbeats in the index, and every kind with jobs waiting taken by one of them; what
workers report about their components (a triage whose model did not load is not ready); the DICOM
listener. Liveness stays 200 throughout."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from imaging import app as composition
from imaging.archive import Archive
from imaging.index.schema import Job
from imaging.jobs.heartbeat import Heartbeat, WorkerHeartbeat
from imaging.jobs.runner import enqueue
from imaging.observability.health import Readiness, listener_check
from tests.dicomweb.conftest import Server


@pytest.fixture
def serve(make_archive: Any) -> Iterator[Any]:
    servers: list[Server] = []

    def start(archive: Archive, readiness: Readiness) -> str:
        server = Server(archive)
        server.server.config.app.state.readiness = readiness  # (the app create_app built)
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


def _health(url: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{url}/health", timeout=30)
    assert httpx.get(f"{url}/health/live").status_code == 200
    return response.status_code, response.json()


def test_workers_by_heartbeat_and_waiting_job_kinds(make_archive: Any, serve: Any) -> None:
    archive = make_archive()
    url = serve(archive, Readiness(archive, workers=True))
    status, body = _health(url)
    assert status == 503 and body["components"]["workers"] == {
        "ready": False,
        "live": 0,
        "kinds": [],
        "reason": "no live job worker",
    }
    assert body["components"]["index"]["ready"] and body["components"]["storage"]["ready"]
    assert body["components"]["storage"]["backend"] == "filesystem"

    heartbeat = Heartbeat(archive.db, "worker", ["share.deliver"], lambda: {})
    heartbeat.start()
    try:
        assert _health(url)[0] == 200
        # A triage job waits and no live worker takes triage: not ready, and says which kind.
        archive.db.transaction(lambda s: enqueue(s, "triage", "series-1", {}))
        status, body = _health(url)
        assert status == 503 and "triage" in body["components"]["workers"]["reason"]
        archive.db.transaction(lambda s: s.execute(update(Job).values(status="done")))
        assert _health(url)[0] == 200
        # The heartbeat stops coming (a worker that died): stale after worker_heartbeat_seconds.
        stale = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=5)
        archive.db.transaction(lambda s: s.execute(update(WorkerHeartbeat).values(beat_at=stale)))
        assert _health(url)[0] == 503
        heartbeat.beat()
        assert _health(url)[0] == 200
    finally:
        heartbeat.stop()
    assert _health(url)[0] == 503  # a worker that stops removes its heartbeat


@pytest.mark.slow
def test_triage_that_disabled_itself_is_not_ready(make_archive: Any, serve: Any) -> None:
    """The bundle refuses to load (its checksum differs from the pinned one), as a model that cannot run
    on the node's GPU would: triage registers no jobs, and readiness says triage is not ready."""
    archive = make_archive(triage_bundle_sha256="0" * 64)
    runner = composition.build_runner(archive)
    assert "triage" not in runner.kinds
    assert runner.components["triage"]["ready"] is False
    heartbeat = Heartbeat(archive.db, "worker", list(runner.kinds), lambda: runner.components)
    heartbeat.start()
    try:
        status, body = _health(serve(archive, Readiness(archive, workers=True)))
    finally:
        heartbeat.stop()
    assert status == 503
    triage = body["components"]["triage"]
    assert triage["ready"] is False and triage["reason"].startswith("model not loaded")
    assert body["components"]["workers"]["ready"] is True


@pytest.mark.slow
def test_triage_loaded_reports_its_device(make_archive: Any) -> None:
    archive = make_archive(triage_device="cpu")
    runner = composition.build_runner(archive)
    assert runner.components["triage"]["ready"] is True
    assert runner.components["triage"]["device"] == "cpu"
    heartbeat = Heartbeat(archive.db, "worker", list(runner.kinds), lambda: runner.components)
    heartbeat.start()
    try:
        ready, components = Readiness(archive, workers=True).check()
    finally:
        heartbeat.stop()
    assert ready and components["triage"]["workers"][0]["device"] == "cpu"


def test_dicom_listener(make_archive: Any, start_gateway: Any) -> None:
    archive = make_archive()
    readiness = Readiness(archive)
    port = start_gateway(archive)
    readiness.add("dimse", listener_check("0.0.0.0", port))
    ready, components = readiness.check()
    assert ready and components["dimse"] == {"ready": True, "port": port}
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    readiness.add("dimse", listener_check("127.0.0.1", closed))
    ready, components = readiness.check()
    assert not ready and components["dimse"] == {"ready": False, "reason": "ConnectionRefusedError"}


def test_storage_below_its_free_space_floor(make_archive: Any) -> None:
    archive = make_archive(min_free_bytes=1 << 62)
    ready, components = Readiness(archive).check()
    assert not ready
    assert (
        components["storage"]["ready"] is False and components["storage"]["reason"] == "below min_free_bytes"
    )
