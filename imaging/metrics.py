"""The archive's Prometheus metrics (prometheus-client), defined once here and observed where things happen:
the ingest path, the protocol edges, the job features. Gauges read from the index at scrape time (job queues,
the sharing outbox, free space) are collectors in imaging.observability.

Label values are bounded sets (a channel, a status, a route template, a DIMSE service, a stage name), never
an identifier, an AE title or a user: nothing about patients, and no unbounded series.

A server with several DIMSE gateway processes counts in all of them: `use_multiprocess(folder)` before the
first observation switches this process, and the processes it spawns afterwards, to prometheus-client's
multiprocess mode (each process writes its values to a file there; `/metrics` adds them up)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import Counter, Histogram, values

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Latencies from sub-millisecond (a C-ECHO, a cached QIDO) to a minute (a large STOW, a C-MOVE).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

INSTANCES_RECEIVED = Counter(
    "imaging_instances_received",
    "Instances received by the ingest path, by channel (c-store, stow-rs, import, triage, deid, fsck) and "
    "outcome (stored, duplicate, overwritten, or the refusal: cannot_understand, data_set_mismatch, ...)",
    ["source", "status"],
)
HTTP_LATENCY = Histogram(
    "imaging_http_request_duration_seconds",
    "HTTP requests by route template, method and status code",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
DIMSE_LATENCY = Histogram(
    "imaging_dimse_request_duration_seconds",
    "DIMSE requests served by the gateway, by service (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET)",
    ["service"],
    buckets=LATENCY_BUCKETS,
)
TRIAGE_STAGE = Histogram(
    "imaging_triage_stage_duration_seconds",
    "Triage of one series, by pipeline stage (volume, inference, findings, results, ...)",
    ["stage"],
    buckets=STAGE_BUCKETS,
)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def use_multiprocess(folder: Path) -> None:
    """Count in files under `folder` (emptied first: values of a previous run are not ours), here and in
    every process started after this call (they inherit the environment variable)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(folder)
    # The value class is chosen at import; labelled metrics create their values at first use, after this.
    values.ValueClass = values.get_value_class()


def error_status(exc: BaseException) -> str:
    """A refusal's status label: its class name in snake case (DataSetMismatch -> data_set_mismatch)."""
    name = type(exc).__name__
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))
