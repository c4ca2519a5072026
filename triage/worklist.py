"""The triage worklist as the radiologist reads it: clinical studies by priority (HIGH first) and time
(newest first), each with its findings summary, the bundle(s) that produced them and where triage stands.

The REST worklist (triage.api.worklist) and the web page (dicomweb.ui) both read it from here, so they
filter, order and summarise alike.

Status of a study, from its series' latest outcomes and triage jobs:
* `failed` — a series' triage job gave up (the job runner's last error is the reason);
* `pending` — a series waits for stability or for its triage job (running, or retrying after an error);
* `done` — every triaged series has its outcome; the findings are those outcomes';
* `none` — nothing in the study is for triage (no series the bundle selects, or triage is off).

`changes_since` answers the page's "has anything changed since token T" cheaply (no worklist query):
the newest clinical change-log sequence number, the newest outcome and the number of failed triage jobs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, case, func, or_, select
from sqlalchemy.orm import Session

from imaging.index.matching import condition
from imaging.index.schema import ChangeLog, Job, Patient, Series, Study
from imaging.partition import CLINICAL
from imaging.priority import RANK, Priority
from triage.records import TriageOutcome
from triage.worker import JOB_KIND, SKIPPED_MODALITIES

_RANK = case({p: r for p, r in RANK.items() if p}, value=Study.priority, else_=0)
WAITING_JOBS = ("pending", "queued", "running")
REASON_LENGTH = 300


@dataclass(frozen=True)
class WorklistFilter:
    """What the radiologist narrows the list to; empty fields match everything. `modality` and
    `study_date` use DICOM matching (`CT`, `CT\\MR`; `20240101-20241231`, `20240301-`)."""

    priorities: Sequence[Priority] = ()
    modality: str = ""
    study_date: str = ""
    limit: int = 100
    offset: int = 0

    def where(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = [Study.partition == CLINICAL]
        if self.priorities:
            clauses.append(Study.priority.in_([p.value for p in self.priorities]))
        for keyword, value in (("ModalitiesInStudy", self.modality), ("StudyDate", self.study_date)):
            clause = condition(keyword, value)  # InvalidMatchKey (a ValueError) for a malformed value
            if clause is not None:
                clauses.append(clause)
        return clauses


@dataclass
class WorklistEntry:
    StudyInstanceUID: str
    StudyDate: str
    StudyTime: str
    AccessionNumber: str
    StudyDescription: str
    ModalitiesInStudy: list[str]
    PatientName: str
    PatientID: str
    priority: str
    status: str = "none"  # failed | pending | done | none
    reason: str = ""  # why it failed, or the error a pending retry follows
    findings: int = 0
    largest_mm: float | None = None
    bundles: list[str] = field(default_factory=list)
    series_triaged: int = 0
    sr_sop_instance_uids: list[str] = field(default_factory=list)
    seg_sop_instance_uids: list[str] = field(default_factory=list)


def worklist(session: Session, wanted: WorklistFilter) -> list[WorklistEntry]:
    stmt = (
        select(Study, Patient)
        .join(Patient, Patient.patient_pk == Study.patient_pk)
        .where(*wanted.where())
        .order_by(_RANK.desc(), Study.StudyDate.desc(), Study.StudyTime.desc(), Study.study_pk.desc())
        .offset(wanted.offset)
        .limit(wanted.limit)
    )
    entries: dict[int, WorklistEntry] = {}
    stable: dict[int, bool] = {}
    for study, patient in session.execute(stmt):
        entries[study.study_pk] = WorklistEntry(
            study.StudyInstanceUID,
            study.StudyDate,
            study.StudyTime,
            study.AccessionNumber,
            study.StudyDescription,
            [m for m in study.ModalitiesInStudy.split("\\") if m],
            patient.PatientName,
            patient.PatientID,
            study.priority,
        )
        stable[study.study_pk] = study.stable
    if entries:
        _summarise(session, entries, stable)
    return list(entries.values())


def _summarise(session: Session, entries: dict[int, WorklistEntry], stable: dict[int, bool]) -> None:
    """Findings, bundles and status of the listed studies: three queries, whatever their number."""
    series_of: dict[int, list[tuple[str, str]]] = defaultdict(list)  # study_pk -> [(series UID, modality)]
    for study_pk, series_uid, modality in session.execute(
        select(Series.study_pk, Series.SeriesInstanceUID, Series.Modality).where(
            Series.study_pk.in_(list(entries))
        )
    ):
        series_of[study_pk].append((series_uid, modality))
    by_uid = {e.StudyInstanceUID: pk for pk, e in entries.items()}
    latest: dict[str, TriageOutcome] = {}  # series UID -> its newest outcome
    for outcome in session.scalars(
        select(TriageOutcome)
        .where(
            TriageOutcome.partition == CLINICAL,
            TriageOutcome.StudyInstanceUID.in_(list(by_uid)),
        )
        .order_by(TriageOutcome.outcome_pk)
    ):
        latest[outcome.SeriesInstanceUID] = outcome
    triageable = {
        uid for series in series_of.values() for uid, modality in series if modality not in SKIPPED_MODALITIES
    }
    jobs = _latest_jobs(session, triageable)
    for study_pk, entry in entries.items():
        _status(entry, series_of[study_pk], latest, jobs, stable[study_pk])


def _latest_jobs(session: Session, series_uids: Iterable[str]) -> dict[str, Job]:
    """The newest triage job of each series (its key is `clinical:<series UID>:<bundle version>`)."""
    found: dict[str, Job] = {}
    uids = sorted(series_uids)
    for start in range(0, len(uids), 200):
        chunk = uids[start : start + 200]
        prefixes = [Job.key.startswith(f"{CLINICAL}:{uid}:", autoescape=True) for uid in chunk]
        for job in session.scalars(
            select(Job).where(Job.kind == JOB_KIND, or_(*prefixes)).order_by(Job.job_pk)
        ):
            found[job.key.split(":", 2)[1]] = job
    return found


def _status(
    entry: WorklistEntry,
    series: list[tuple[str, str]],
    latest: dict[str, TriageOutcome],
    jobs: dict[str, Job],
    stable: bool,
) -> None:
    failed, waiting, retrying, selected = [], False, "", False
    diameters: list[float] = []
    for uid, modality in series:
        outcome, job = latest.get(uid), jobs.get(uid)
        if job is not None and job.status == "failed":
            failed.append(_first_line(job.last_error))
            continue
        if job is not None and job.status in WAITING_JOBS:
            waiting = True
            if job.last_error and not retrying:
                retrying = _first_line(job.last_error)
            continue
        if outcome is None:
            # A triageable series not triaged yet: waits for stability (then its job is queued).
            waiting = waiting or (modality not in SKIPPED_MODALITIES and job is None and not stable)
            continue
        if not outcome.selected:
            continue
        selected = True
        entry.series_triaged += 1
        entry.findings += len(outcome.findings)
        diameters += [float(f.get("diameter_mm", 0.0)) for f in outcome.findings]
        if outcome.bundle_version not in entry.bundles:
            entry.bundles.append(outcome.bundle_version)
        if outcome.sr_sop_instance_uid:
            entry.sr_sop_instance_uids.append(outcome.sr_sop_instance_uid)
        if outcome.seg_sop_instance_uid:
            entry.seg_sop_instance_uids.append(outcome.seg_sop_instance_uid)
    entry.largest_mm = max(diameters) if diameters else None
    if failed:
        entry.status, entry.reason = "failed", "; ".join(dict.fromkeys(failed))[:REASON_LENGTH]
    elif waiting:
        entry.status, entry.reason = "pending", retrying
    elif selected:
        entry.status = "done"


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no reason recorded"
    return line[:REASON_LENGTH]


def changes_since(session: Session) -> str:
    """A token that changes whenever the worklist may have: a clinical change (a study arrived, a series
    became stable, a priority was set), a new outcome, a triage job that gave up."""
    seq = session.scalar(
        select(ChangeLog.seq).where(ChangeLog.partition == CLINICAL).order_by(ChangeLog.seq.desc()).limit(1)
    )
    outcome = session.scalar(select(func.max(TriageOutcome.outcome_pk)))
    failed = session.scalar(
        select(func.count()).select_from(Job).where(Job.status == "failed", Job.kind == JOB_KIND)
    )
    return f"{seq or 0}.{outcome or 0}.{failed or 0}"
