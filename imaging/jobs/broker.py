"""Scale-out dispatch on an existing distributed task engine: Dramatiq on RabbitMQ (`amqp://`) or Redis
(`redis://`). Messages carry only a job's primary key; the durable job row in the index stays the truth,
so a lost or duplicated message costs a delay, never a lost or repeated job. Each job kind has its own
queue, so GPU nodes can consume only `triage`."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
import pika
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from imaging.jobs.runner import JobRunner

log = logging.getLogger(__name__)
ACTOR = "imaging_run_job"


def make_broker(url: str) -> dramatiq.Broker:
    if url.startswith(("amqp://", "amqps://")):
        return RabbitmqBroker(url=url)
    if url.startswith(("redis://", "rediss://")):
        return RedisBroker(url=url)
    raise ValueError("broker_url must start with amqp:// or redis://")


def ping(url: str, timeout: float = 3.0) -> None:
    """Connect to the broker and disconnect (readiness); raises when it does not answer."""
    if url.startswith(("amqp://", "amqps://")):
        parameters = pika.URLParameters(url)
        parameters.socket_timeout = timeout
        parameters.connection_attempts = 1
        pika.BlockingConnection(parameters).close()
    elif url.startswith(("redis://", "rediss://")):
        redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout).ping()
    else:
        raise ValueError("broker_url must start with amqp:// or redis://")


class BrokerDispatch:
    """Publisher for the server's JobRunner and the actor that worker processes execute."""

    def __init__(self, url: str, *, namespace: str = "imaging") -> None:
        self.broker = make_broker(url)
        self.namespace = namespace
        self._actors: dict[str, dramatiq.Actor[Any, Any]] = {}
        self.runner: JobRunner | None = None  # set in worker processes

    def queue(self, kind: str) -> str:
        return f"{self.namespace}-{kind}"

    def actor(self, kind: str) -> dramatiq.Actor[Any, Any]:
        if kind not in self._actors:
            self._actors[kind] = dramatiq.actor(  # type: ignore[call-overload]
                self._execute,
                broker=self.broker,
                actor_name=f"{ACTOR}_{self.namespace}_{kind}".replace("-", "_"),
                queue_name=self.queue(kind),
                max_retries=0,  # retries are the job row's business (backoff, attempts)
            )
        return self._actors[kind]

    def publish(self, job_pk: int, kind: str) -> None:
        self.actor(kind).send(job_pk)

    def _execute(self, job_pk: int) -> None:
        if self.runner is None:
            raise RuntimeError("this process runs no jobs")
        self.runner.run_one(job_pk)

    def worker(
        self, runner: JobRunner, *, kinds: list[str] | None = None, threads: int = 2
    ) -> dramatiq.Worker:
        """A Dramatiq worker running `runner`'s job kinds (or only `kinds`, e.g. ["triage"] on a GPU node)."""
        self.runner = runner
        chosen = kinds or list(runner.kinds)
        for kind in chosen:
            self.actor(kind)
        return dramatiq.Worker(self.broker, queues={self.queue(k) for k in chosen}, worker_threads=threads)

    def close(self) -> None:
        self.broker.close()
