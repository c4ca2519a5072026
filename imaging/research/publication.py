"""Publication: a clinical study's de-identified copy materialised in a project's partition through the
single ingest path, where DICOMweb, cohorts and sharing serve it like clinical data."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom import dcmread
from sqlalchemy import select

from imaging import audit
from imaging.archive import Archive
from imaging.consent import is_opted_out
from imaging.deid.table import EDITION
from imaging.errors import NotFound
from imaging.index.reads import instance_keys
from imaging.index.schema import Patient, Study
from imaging.ingest import ConsentRefused
from imaging.ingest.partitions import Quarantine, deidentifier_for, get_project
from imaging.partition import CLINICAL
from imaging.research.projects import ReidentificationTable


@dataclass
class PublishReport:
    project: str
    study_uid: str  # the de-identified Study Instance UID
    published: int = 0
    quarantined: int = 0
    patient_pseudonym: str = ""
    reasons: list[str] = field(default_factory=list)


def publish_study(archive: Archive, project: str, study_uid: str, *, user: str = "system") -> PublishReport:
    """De-identify every instance of a clinical study into the project's partition (idempotent: the
    same key gives the same UIDs, so a second run finds duplicates and rewrites nothing)."""
    with archive.db.read() as session:
        project_row = get_project(session, project)
        study = session.scalar(
            select(Study).where(Study.partition == CLINICAL, Study.StudyInstanceUID == study_uid)
        )
        if study is None:
            raise NotFound("no such study")
        patient = session.get(Patient, study.patient_pk)
        assert patient is not None
        if is_opted_out(session, patient.PatientID, patient.IssuerOfPatientID):
            raise ConsentRefused("the patient opted out of secondary use")
        keys = instance_keys(session, CLINICAL, study=study_uid)
        keep_map = project_row.keep_reidentification
        priority = study.priority
    deid = deidentifier_for(archive.db, archive.settings.keys_path, project)
    report = PublishReport(project=project, study_uid=deid.uid_for(study_uid))
    reid = ReidentificationTable(archive.settings.keys_path) if keep_map else None
    for key in keys:
        with archive.store.open(key) as f:
            ds = dcmread(f)
        result = deid.deidentify(ds)
        if result.quarantined or result.dataset is None:
            report.quarantined += 1
            report.reasons.extend(result.reasons)
            with archive.db.write() as session:
                session.add(Quarantine(project=project, object_key=key, reasons=list(result.reasons)))
            continue
        archive.ingestor.ingest_dataset(result.dataset, partition=project, source=f"deid:{project}")
        report.published += 1
        report.patient_pseudonym = result.patient_pseudonym
        if reid is not None:
            reid.add(project, result.uid_map)
    with archive.db.write() as session:
        copy = session.scalar(
            select(Study).where(Study.partition == project, Study.StudyInstanceUID == report.study_uid)
        )
        if copy is not None and priority:
            copy.priority = priority  # cohorts select on AI findings inside the project
        audit.record(
            session,
            audit.AuditEvent.INSTANCES_ACCESSED,
            user=user,
            action="C",
            outcome=audit.Outcome.SUCCESS if not report.quarantined else audit.Outcome.MINOR_FAILURE,
            source=f"project:{project}",
            partition=project,
            study_uid=report.study_uid,
            patient_ref=report.patient_pseudonym,
            detail=(
                f"de-identified and published {report.published} instances, quarantined {report.quarantined};"
                f" PS3.15 Table E.1-1 {EDITION}; options {','.join(sorted(deid.profile.options)) or 'none'}"
            ),
        )
    return report
