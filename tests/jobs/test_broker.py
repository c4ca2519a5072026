"""Scale-out: durable jobs dispatched through Dramatiq on the real RabbitMQ and Redis of this machine,
with the index on SQLite and PostgreSQL. Lost and duplicated messages never lose or repeat a job."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from imaging.archive import Archive
from imaging.index.schema import Job
from imaging.jobs.runner import JobKind, JobRunner, enqueue

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
BROKERS = [
    pytest.param(
        os.environ.get("IMAGING_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672"),
        marks=pytest.mark.rabbitmq,
        id="rabbitmq",
    ),
    pytest.param(
        os.environ.get("IMAGING_TEST_REDIS", "redis://127.0.0.1:6379/15"), marks=pytest.mark.redis, id="redis"
    ),
]


@pytest.fixture(params=BROKERS)
def dispatch(request: pytest.FixtureRequest) -> Iterator[Any]:
    from imaging.jobs.broker import BrokerDispatch

    try:
        d = BrokerDispatch(request.param, namespace=f"imaging-test-{secrets.token_hex(3)}")
        d.actor("work")
        d.broker.flush_all()
    except Exception as exc:  # the service is down
        if IN_CI:
            pytest.fail(f"broker not reachable: {type(exc).__name__}: {exc}")
        pytest.skip(f"broker not reachable: {exc}")
    yield d
    d.broker.flush_all()
    d.close()


def _wait(archive: Archive, count: int, timeout: float = 30.0) -> list[Job]:
    deadline = time.monotonic() + timeout
    while True:
        with archive.db.read() as s:
            jobs = list(s.scalars(select(Job).order_by(Job.job_pk)))
        if sum(j.status == "done" for j in jobs) >= count or time.monotonic() > deadline:
            return jobs
        time.sleep(0.1)


def test_jobs_flow_through_the_broker_exactly_once(make_archive: Any, db_url: str, dispatch: Any) -> None:
    archive = make_archive()
    executed: list[str] = []
    lock = threading.Lock()

    def work(_a: Archive, payload: dict[str, Any]) -> dict[str, Any]:
        with lock:
            executed.append(payload["n"])
        return {"n": payload["n"]}

    server = JobRunner(archive)  # stability, consumers, publishing
    server.register(work=JobKind(work, base_delay=0.0))
    server.publisher = dispatch
    node = JobRunner(archive)  # a worker process's runner (same index)
    node.register(work=JobKind(work, base_delay=0.0))
    consumer = dispatch.worker(node, threads=4)
    consumer.start()
    try:
        with archive.db.write() as s:
            for i in range(30):
                enqueue(s, "work", f"k{i}", {"n": str(i)})
        assert server.tick() == 30
        # A duplicated message (e.g. a broker redelivery) does not run a job twice.
        with archive.db.read() as s:
            first = s.scalars(select(Job).order_by(Job.job_pk)).first()
        dispatch.publish(first.job_pk, "work")
        jobs = _wait(archive, 30)
        time.sleep(0.5)
    finally:
        consumer.stop()
    assert sorted(int(n) for n in executed) == list(range(30))
    assert all(j.status == "done" and j.attempts == 1 for j in jobs)


def test_a_lost_message_is_published_again(make_archive: Any, db_url: str, dispatch: Any) -> None:
    archive = make_archive()
    executed: list[str] = []
    server = JobRunner(archive, requeue_after=0.0)
    server.publisher = dispatch
    node = JobRunner(archive)
    node.register(work=JobKind(lambda a, p: executed.append(p["n"]) or {}, base_delay=0.0))
    with archive.db.write() as s:
        enqueue(s, "work", "lost", {"n": "lost"})
        # Published once, but the message never arrived (broker restart, flushed queue).
        s.flush()
        s.execute(update(Job).values(status="queued", updated_at=dt.datetime(2000, 1, 1)))
    consumer = dispatch.worker(node, threads=1)
    consumer.start()
    try:
        assert server.tick() == 1  # the stale `queued` job went back to pending and out again
        jobs = _wait(archive, 1)
    finally:
        consumer.stop()
    assert executed == ["lost"] and jobs[0].status == "done"


def test_failures_retry_through_the_broker(make_archive: Any, db_url: str, dispatch: Any) -> None:
    archive = make_archive()
    attempts: list[int] = []

    def flaky(_a: Archive, _p: dict[str, Any]) -> dict[str, Any]:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("peer down")
        return {}

    server = JobRunner(archive)
    server.publisher = dispatch
    node = JobRunner(archive)
    node.register(work=JobKind(flaky, base_delay=0.0))
    consumer = dispatch.worker(node, threads=1)
    consumer.start()
    try:
        with archive.db.write() as s:
            enqueue(s, "work", "flaky", {})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            server.tick()
            jobs = _wait(archive, 1, timeout=0.5)
            if jobs[0].status == "done":
                break
    finally:
        consumer.stop()
    assert jobs[0].status == "done" and jobs[0].attempts == 3
