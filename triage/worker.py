"""Triage inside the archive: a durable job per stable series (idempotent per series × bundle version)
that runs the pipeline, files SR and SEG into the source study through the single ingest path, records
the outcome and raises the study's priority.

Failures are recorded on the series' outcome with their reason (status "failed", error, attempts). A
failure that running again cannot cure (the series has gaps, mixed orientations, undecodable pixels...)
ends the job; one that may pass on another attempt (out of memory, a device or I/O error, storage or
the index briefly unavailable) is raised so the job runner retries it with back-off."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging.archive import Archive
from imaging.events import ChangeKind
from imaging.index.reads import instance_keys
from imaging.index.schema import ChangeLog, Series, Study
from imaging.jobs.runner import JobKind, JobRunner
from imaging.metrics import TRIAGE_STAGE
from imaging.partition import CLINICAL
from imaging.priority import rank
from triage.records import TriageOutcome

if TYPE_CHECKING:
    from triage.pipeline import TriagePipeline

log = logging.getLogger(__name__)

REFERENCE_BUNDLE = Path(__file__).parent / "bundles" / "lung_nodule_reference"
JOB_KIND = "triage"
# Our own output and objects without pixels are never triaged.
SKIPPED_MODALITIES = {"SR", "SEG", "PR", "KO", "DOC", "RTSTRUCT"}

_pipelines: dict[tuple[str, str, str, str], TriagePipeline] = {}
_lock = threading.Lock()


def pipeline_for(archive: Archive) -> TriagePipeline:
    """The configured pipeline, loaded once per process (bundle verified by checksum on load)."""
    # Imported on first use: torch and MONAI take seconds to import, and every `imaging` command imports
    # this module through the composition root (start-up time of the CLI).
    from triage.pipeline import TriagePipeline

    s = archive.settings
    bundle = s.triage_bundle or REFERENCE_BUNDLE
    key = (
        str(bundle),
        s.triage_bundle_sha256,
        s.triage_device,
        json.dumps(s.triage_bundle_overrides, sort_keys=True),
    )
    with _lock:
        if key not in _pipelines:
            _pipelines[key] = TriagePipeline.from_bundle(
                bundle,
                expected_sha256=s.triage_bundle_sha256 or None,
                device=s.triage_device or None,
                overrides=s.triage_bundle_overrides,
            )
        return _pipelines[key]


def model_version(pipeline: TriagePipeline) -> str:
    """What a triage outcome is idempotent on: the bundle's version and its digest (retraining the
    weights changes the digest, not necessarily the version string)."""
    return f"{pipeline.bundle_version}+{pipeline.bundle.identity[:12]}"


class TriageConsumer:
    name = "triage"
    kinds = frozenset({ChangeKind.SERIES_STABLE.value})  # the only changes it acts on

    def __init__(self, bundle_version: str) -> None:
        self.bundle_version = bundle_version

    def __call__(self, session: Session, change: ChangeLog) -> list[tuple[str, str, dict[str, Any]]]:
        if change.kind != ChangeKind.SERIES_STABLE or change.partition != CLINICAL:
            return []
        modality = session.scalar(
            select(Series.Modality)
            .join(Study, Study.study_pk == Series.study_pk)
            .where(Study.partition == change.partition, Series.SeriesInstanceUID == change.SeriesInstanceUID)
        )
        if modality is None or modality in SKIPPED_MODALITIES:
            return []
        key = f"{change.partition}:{change.SeriesInstanceUID}:{self.bundle_version}"
        payload = {
            "partition": change.partition,
            "StudyInstanceUID": change.StudyInstanceUID,
            "SeriesInstanceUID": change.SeriesInstanceUID,
            "stable_at": change.created_at.timestamp(),
        }
        return [(JOB_KIND, key, payload)]


def _series_datasets(archive: Archive, partition: str, series_uid: str) -> list[Dataset]:
    with archive.db.read() as session:
        keys = instance_keys(session, partition, series=series_uid)
    datasets: list[Dataset] = []
    for key in keys:
        with archive.store.open(key) as f:
            datasets.append(dcmread(f))
    return datasets


class RetryableTriageFailure(Exception):
    """A series' triage failed in a way another attempt may cure; the job runner retries it."""


def run_triage_job(archive: Archive, payload: dict[str, Any]) -> dict[str, Any]:
    # Imported on first use (start-up time of the CLI, as in pipeline_for).
    from triage.pipeline import TriageFailure, describe

    partition, study_uid, series_uid = (
        payload["partition"],
        payload["StudyInstanceUID"],
        payload["SeriesInstanceUID"],
    )
    pipeline = pipeline_for(archive)
    version = model_version(pipeline)
    # Storage errors propagate: the job runner retries reads that fail.
    datasets = _series_datasets(archive, partition, series_uid)
    try:
        selected = bool(datasets) and pipeline.selects(datasets)
    except Exception as error:  # malformed attributes: a reason, not a crash loop
        failure = TriageFailure(series_uid, f"selection: {describe(error)[0]}")
        _record(archive, partition, study_uid, series_uid, version, failure, payload)
        return {"selected": True, "failed": failure.reason}
    if not selected:
        _record(archive, partition, study_uid, series_uid, version, None, payload)
        return {"selected": False}
    [result] = pipeline.run_many([datasets])
    if isinstance(result, TriageFailure):
        _record(archive, partition, study_uid, series_uid, version, result, payload)
        if result.retryable:
            raise RetryableTriageFailure(result.reason)
        log.info("triage of a series failed for good: %s", result.reason)
        return {"selected": True, "failed": result.reason}
    for stage, seconds in result.timings.items():
        TRIAGE_STAGE.labels(stage).observe(float(seconds))
    sr_uid = seg_uid = ""
    if result.sr is not None:
        sr_uid = archive.ingestor.ingest_dataset(
            result.sr, partition=partition, source="triage"
        ).sop_instance_uid
    if result.seg is not None:
        seg_uid = archive.ingestor.ingest_dataset(
            result.seg, partition=partition, source="triage"
        ).sop_instance_uid
    _record(archive, partition, study_uid, series_uid, version, result, payload, sr_uid, seg_uid)
    return {"selected": True, "priority": str(result.priority), "findings": len(result.findings)}


def _record(
    archive: Archive,
    partition: str,
    study_uid: str,
    series_uid: str,
    version: str,
    result: Any,
    payload: dict[str, Any],
    sr_uid: str = "",
    seg_uid: str = "",
) -> None:
    def work(session: Session) -> None:
        outcome = session.scalar(
            select(TriageOutcome).where(
                TriageOutcome.partition == partition,
                TriageOutcome.SeriesInstanceUID == series_uid,
                TriageOutcome.bundle_version == version,
            )
        )
        if outcome is None:
            outcome = TriageOutcome(
                partition=partition,
                StudyInstanceUID=study_uid,
                SeriesInstanceUID=series_uid,
                bundle_version=version,
            )
            session.add(outcome)
        failed = result is not None and not hasattr(result, "findings")
        outcome.selected = result is not None
        outcome.attempts = (outcome.attempts or 0) + 1
        outcome.status = "failed" if failed else "done" if result is not None else "skipped"
        outcome.error = result.reason[:1024] if failed else ""
        if failed:
            outcome.priority = ""
        elif result is not None:
            outcome.priority = str(result.priority)
            outcome.findings = [
                {
                    "position_lps": [float(v) for v in f.position_lps],
                    "diameter_mm": float(f.diameter_mm),
                    "score": float(f.score),
                }
                for f in result.findings
            ]
            outcome.timings = {k: float(v) for k, v in result.timings.items()}
            outcome.sr_sop_instance_uid, outcome.seg_sop_instance_uid = sr_uid, seg_uid
        outcome.latency_seconds = max(0.0, time.time() - float(payload.get("stable_at", time.time())))
        study = session.scalar(
            select(Study).where(Study.partition == partition, Study.StudyInstanceUID == study_uid)
        )
        if study is not None and result is not None and not failed:
            new = str(result.priority)
            if rank(new) > rank(study.priority):
                study.priority = new
                session.add(
                    ChangeLog(
                        kind=ChangeKind.STUDY_PRIORITY,
                        partition=partition,
                        StudyInstanceUID=study_uid,
                        detail=new,
                    )
                )

    archive.db.transaction(work)


def register(runner: JobRunner, archive: Archive) -> None:
    """Register the triage job kind, its model loaded; a model that cannot be loaded (a bundle failing its
    checksum, a GPU its CUDA runtime cannot use) disables triage here, and readiness says so."""
    if not archive.settings.triage_enabled:
        return
    try:
        pipeline = pipeline_for(archive)
        version = model_version(pipeline)
    except Exception as exc:
        log.exception("triage bundle could not be loaded: triage disabled")
        runner.components[JOB_KIND] = {"ready": False, "reason": f"model not loaded: {type(exc).__name__}"}
        return
    runner.components[JOB_KIND] = {"ready": True, "model": version, "device": str(pipeline.device)}
    runner.register(
        TriageConsumer(version), **{JOB_KIND: JobKind(run_triage_job, max_attempts=5, base_delay=5.0)}
    )
