"""Prometheus collectors read at scrape time: job queue depth and age per kind, free space per storage
backend, plus what features add (the sharing outbox, through the composition root); and the exposition
of everything, including the values of other gateway processes in multiprocess mode."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from imaging.archive import Archive
from imaging.index.schema import Job
from imaging.metrics import multiprocess_dir
from imaging.orm import utcnow

log = logging.getLogger(__name__)
FeatureMetrics = Callable[[Archive], Iterable[Metric]]
STATUSES = ("pending", "queued", "running", "failed")


class ArchiveCollector(Collector):
    def __init__(self, archive: Archive, features: Iterable[FeatureMetrics] = ()) -> None:
        self.archive = archive
        self.features = list(features)

    def collect(self) -> Iterator[Metric]:
        for part in (self._jobs, self._storage, *[lambda f=f: f(self.archive) for f in self.features]):  # type: ignore[misc]
            try:
                yield from part()
            except Exception as exc:  # a scrape never fails on one source; the gap shows in the graphs
                log.warning("metrics: a collector failed (%s)", type(exc).__name__)

    def _jobs(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "imaging_jobs", "Jobs by kind and status (done ones not counted)", labels=["kind", "status"]
        )
        age = GaugeMetricFamily(
            "imaging_job_oldest_waiting_seconds",
            "Age of the oldest job waiting (pending or queued) per kind",
            labels=["kind"],
        )
        now = utcnow()
        with self.archive.db.read() as session:
            rows = session.execute(
                select(Job.kind, Job.status, func.count(), func.min(Job.created_at))
                .where(Job.status.in_(STATUSES))
                .group_by(Job.kind, Job.status)
            ).all()
        oldest: dict[str, float] = {}
        for kind, status, count, first in rows:
            depth.add_metric([kind, status], count)
            if status in ("pending", "queued") and first is not None:
                oldest[kind] = max(oldest.get(kind, 0.0), (now - first).total_seconds())
        for kind, seconds in oldest.items():
            age.add_metric([kind], seconds)
        return [depth, age]

    def _storage(self) -> Iterable[Metric]:
        store = self.archive.store
        free = store.free_bytes()
        if free is None:
            return []
        gauge = GaugeMetricFamily(
            "imaging_storage_free_bytes", "Free space per storage backend", labels=["backend"]
        )
        gauge.add_metric([store.backend], free)
        return [gauge]


def exposition(collector: ArchiveCollector) -> bytes:
    """The text exposition: this process's metrics (all gateway processes' in multiprocess mode) and the
    archive's collectors."""
    folder = multiprocess_dir()
    if folder is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=folder)
        observed = generate_latest(registry)
    else:
        observed = generate_latest(REGISTRY)
    scraped = CollectorRegistry(auto_describe=False)  # (describing would collect: query twice)
    scraped.register(collector)
    return observed + generate_latest(scraped)
