"""Research projects: a name (= partition), de-identification options, a secret key and its members
(researcher tokens bound to the project). Publishing a study materialises its de-identified copy through
the single ingest path into the project's partition, where DICOMweb serves it like clinical data.

The key and the optional re-identification table are kept apart from the data, in `Settings.keys_path`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import secrets
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from sqlalchemy import JSON, Boolean, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from imaging import audit
from imaging.archive import Archive
from imaging.errors import ArchiveError, NotFound
from imaging.index.schema import CLINICAL, Base, Instance, Patient, Series, Study, utcnow
from imaging.sharing.consent import is_opted_out

PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class ConsentRefused(ArchiveError):
    """The patient opted out of secondary use."""

    http_status = 409


class Quarantined(ArchiveError):
    """The instance could not be shown clean (e.g. burned-in text) and was not stored."""

    dimse_status = 0xA9A0  # A9xx: refused, the data set does not meet what the destination requires
    http_status = 409


class Project(Base):
    __tablename__ = "project"
    project_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(256), default="")
    options: Mapped[list[str]] = mapped_column(JSON, default=list)  # DeidOption values
    keep_reidentification: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Quarantine(Base):
    """Instances that could not be shown clean (e.g. burned-in text): never published, reported."""

    __tablename__ = "deid_quarantine"
    quarantine_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    object_key: Mapped[str] = mapped_column(String(160))  # the clinical object, by opaque key
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


def parse_option(text: str) -> Any:
    """A DeidOption from its standard name ("Clean Descriptors") or its enum name (CLEAN_DESCRIPTORS)."""
    from imaging.deid import DeidOption

    key = text.strip().upper().replace(" ", "_").replace("-", "_")
    if key in DeidOption.__members__:
        return DeidOption[key]
    return DeidOption(text)


def _key_path(archive: Archive, name: str) -> Path:
    return archive.settings.keys_path / f"{name}.key"


def create_project(
    archive: Archive,
    name: str,
    *,
    options: list[str] | None = None,
    description: str = "",
    key: bytes | None = None,
    keep_reidentification: bool = False,
) -> Project:
    """Create a project; its key is generated (or given, to share pseudonyms with other sites) and
    written with 0600 permissions outside the data directory."""

    if not PROJECT_NAME.match(name) or name == CLINICAL:
        raise ValueError("project names are 1-64 lower-case letters, digits, '-' or '_', not 'clinical'")
    chosen = [parse_option(o).value for o in options or []]
    keys = archive.settings.keys_path
    keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = _key_path(archive, name)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write((key or secrets.token_bytes(32)).hex())
    with archive.db.write() as session:
        project = Project(
            name=name, options=chosen, description=description, keep_reidentification=keep_reidentification
        )
        session.add(project)
    return project


def get_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise NotFound("no such project")
    return project


def project_key(archive: Archive, name: str) -> bytes:
    return bytes.fromhex(_key_path(archive, name).read_text().strip())


def deidentifier_for(archive: Archive, name: str) -> Any:
    """The project's Deidentifier (profile options + key)."""
    from imaging.deid import Deidentifier, DeidOption, DeidProfile

    with archive.db.read() as session:
        project = get_project(session, name)
        options = frozenset(DeidOption(o) for o in project.options)
    return Deidentifier(key=project_key(archive, name), profile=DeidProfile(options=options))


class ReidentificationTable:
    """source UID ↔ de-identified UID per project, in its own SQLite file beside the keys (admin only)."""

    def __init__(self, archive: Archive) -> None:
        self.path = archive.settings.keys_path / "reidentification.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlite3.connect(self.path)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS uid_map (project TEXT, deid_uid TEXT, source_uid TEXT,"
            " PRIMARY KEY (project, deid_uid))"
        )
        os.chmod(self.path, 0o600)
        return conn

    def add(self, project: str, uid_map: dict[str, str]) -> None:
        with self._connect() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO uid_map VALUES (?, ?, ?)",
                [(project, new, old) for old, new in uid_map.items()],
            )

    def source_of(self, project: str, deid_uid: str) -> str | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT source_uid FROM uid_map WHERE project = ? AND deid_uid = ?", (project, deid_uid)
            ).fetchone()
        return None if row is None else str(row[0])


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
    from imaging.deid.table import EDITION

    deid = deidentifier_for(archive, project)
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
        keys = session.scalars(
            select(Instance.object_key)
            .join(Series, Series.series_pk == Instance.series_pk)
            .where(Series.study_pk == study.study_pk)
            .order_by(Instance.instance_pk)
        ).all()
        keep_map = project_row.keep_reidentification
        priority = study.priority
    report = PublishReport(project=project, study_uid=deid.uid_for(study_uid))
    reid = ReidentificationTable(archive) if keep_map else None
    for key in keys:
        ds = dcmread(archive.object_path(key))
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


def receive_into_project(archive: Archive, project: str, data: bytes, *, source: str) -> Any:
    """De-identify on receive: what arrives at a project-bound AE title or STOW root is de-identified
    before anything is stored, so no identified copy is ever kept (a share-only node)."""
    from io import BytesIO

    deid = deidentifier_for(archive, project)
    try:
        ds = dcmread(BytesIO(data))
    except Exception:
        from imaging.index.extract import parse

        parse(data)  # raises the precise CannotUnderstand / DataSetMismatch
        raise
    with archive.db.read() as session:
        patient_id, issuer = str(ds.get("PatientID", "")), str(ds.get("IssuerOfPatientID", ""))
        if is_opted_out(session, patient_id, issuer):
            raise ConsentRefused("the patient opted out of secondary use")
    result = deid.deidentify(ds)
    if result.quarantined or result.dataset is None:
        key = "sha256:" + hashlib.sha256(data).hexdigest()
        reasons = list(result.reasons)
        archive.db.transaction(lambda s: s.add(Quarantine(project=project, object_key=key, reasons=reasons)))
        raise Quarantined("pixel data could not be shown free of burned-in text; not stored")
    stored = archive.ingestor.ingest_dataset(result.dataset, partition=project, source=source)
    with archive.db.write() as session:
        audit.record(
            session,
            audit.AuditEvent.INSTANCES_ACCESSED,
            user=source,
            action="C",
            source=f"project:{project}",
            partition=project,
            study_uid=stored.study_instance_uid,
            patient_ref=result.patient_pseudonym,
            detail="de-identified on receive",
        )
    return stored
