"""SQLAlchemy schema of the index. Column names are DICOM keywords; `*_pk` are our surrogate keys.

Every table carries `partition` indirectly: the clinical archive is partition "clinical", each research
project has its own; the same UID may exist in several partitions (de-identified copies get new UIDs,
but a share-only node may hold the same study in two projects).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from imaging.orm import Base, utcnow
from imaging.partition import CLINICAL

__all__ = ["CLINICAL", "ApiToken", "Base", "ChangeLog", "ConsumerCursor", "Instance", "Job", "Patient"]
__all__ += ["Series", "StorageEvent", "Study", "utcnow"]


class Patient(Base):
    __tablename__ = "patient"
    patient_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    partition: Mapped[str] = mapped_column(String(64), default=CLINICAL)
    PatientID: Mapped[str] = mapped_column(String(64), default="")
    IssuerOfPatientID: Mapped[str] = mapped_column(String(64), default="")
    PatientName: Mapped[str] = mapped_column(String(320), default="")
    PatientBirthDate: Mapped[str] = mapped_column(String(8), default="")
    PatientSex: Mapped[str] = mapped_column(String(16), default="")
    studies: Mapped[list[Study]] = relationship(back_populates="patient")
    __table_args__ = (
        UniqueConstraint("partition", "PatientID", "IssuerOfPatientID", name="uq_patient"),
        Index("ix_patient_name", "PatientName"),
    )


class Study(Base):
    __tablename__ = "study"
    study_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.patient_pk"), index=True)
    partition: Mapped[str] = mapped_column(String(64), default=CLINICAL)
    StudyInstanceUID: Mapped[str] = mapped_column(String(64))
    StudyDate: Mapped[str] = mapped_column(String(8), default="")
    StudyTime: Mapped[str] = mapped_column(String(32), default="")
    AccessionNumber: Mapped[str] = mapped_column(String(64), default="")
    StudyID: Mapped[str] = mapped_column(String(16), default="")
    ReferringPhysicianName: Mapped[str] = mapped_column(String(320), default="")
    StudyDescription: Mapped[str] = mapped_column(String(256), default="")
    ModalitiesInStudy: Mapped[str] = mapped_column(String(256), default="")
    SOPClassesInStudy: Mapped[str] = mapped_column(Text, default="")
    NumberOfStudyRelatedSeries: Mapped[int] = mapped_column(Integer, default=0)
    NumberOfStudyRelatedInstances: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    stable: Mapped[bool] = mapped_column(Boolean, default=False)
    # Triage outcome: HIGH / MEDIUM / LOW, empty when not (yet) triaged.
    priority: Mapped[str] = mapped_column(String(8), default="")
    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")
    __table_args__ = (
        UniqueConstraint("partition", "StudyInstanceUID", name="uq_study"),
        Index("ix_study_accession", "AccessionNumber"),
    )


# The study list's order (newest first, QIDO's and the worklist's default) read straight off an index, so
# `ORDER BY StudyDate DESC, StudyTime DESC, study_pk LIMIT n` stops after n rows instead of sorting every
# study of the partition; StudyDate ranges use it too. patient_pk rides along so that a filter on a
# patient attribute (PatientName wildcards) joins each index entry to its patient without first reading the
# study row.
Index(
    "ix_study_date",
    Study.partition,
    Study.StudyDate.desc(),
    Study.StudyTime.desc(),
    Study.study_pk,
    Study.patient_pk,
)


class Series(Base):
    __tablename__ = "series"
    series_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.study_pk"), index=True)
    SeriesInstanceUID: Mapped[str] = mapped_column(String(64))
    Modality: Mapped[str] = mapped_column(String(16), default="")
    SeriesNumber: Mapped[int | None] = mapped_column(Integer, nullable=True)
    SeriesDescription: Mapped[str] = mapped_column(String(256), default="")
    BodyPartExamined: Mapped[str] = mapped_column(String(64), default="")
    SeriesDate: Mapped[str] = mapped_column(String(8), default="")
    SeriesTime: Mapped[str] = mapped_column(String(32), default="")
    PerformedProcedureStepStartDate: Mapped[str] = mapped_column(String(8), default="")
    PerformedProcedureStepStartTime: Mapped[str] = mapped_column(String(32), default="")
    NumberOfSeriesRelatedInstances: Mapped[int] = mapped_column(Integer, default=0)
    last_received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    stable: Mapped[bool] = mapped_column(Boolean, default=False)
    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")
    __table_args__ = (
        UniqueConstraint("study_pk", "SeriesInstanceUID", name="uq_series"),
        Index("ix_series_uid", "SeriesInstanceUID"),
        Index("ix_series_unstable", "stable", "last_received_at"),
    )


class Instance(Base):
    __tablename__ = "instance"
    instance_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.series_pk"), index=True)
    # The study's partition, repeated here so that the index itself keeps a SOP Instance UID unique in its
    # partition (uq_instance_uid): wherever it is sent again, in another series or study, it is the same
    # instance (issue 12).
    partition: Mapped[str] = mapped_column(String(64), default=CLINICAL, server_default=CLINICAL)
    SOPInstanceUID: Mapped[str] = mapped_column(String(64))
    SOPClassUID: Mapped[str] = mapped_column(String(64), default="")
    InstanceNumber: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ContentDate: Mapped[str] = mapped_column(String(8), default="")
    ContentTime: Mapped[str] = mapped_column(String(32), default="")
    Rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    Columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    BitsAllocated: Mapped[int | None] = mapped_column(Integer, nullable=True)
    NumberOfFrames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    TransferSyntaxUID: Mapped[str] = mapped_column(String(64), default="")
    # Storage: "<partition>/<SHA-256 hex of the stored bytes>" and size.
    object_key: Mapped[str] = mapped_column(String(160), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    # DICOM JSON of the instance without bulk data, zlib-compressed; BulkDataURIs are filled in at serve time.
    metadata_json: Mapped[bytes] = mapped_column(LargeBinary)
    # Byte offset and length of the PixelData value in the stored object (None when not addressable).
    pixel_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    pixel_length: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    series: Mapped[Series] = relationship(back_populates="instances")
    __table_args__ = (
        UniqueConstraint("series_pk", "SOPInstanceUID", name="uq_instance"),
        Index("ix_instance_uid", "SOPInstanceUID"),
        Index("uq_instance_uid", "partition", "SOPInstanceUID", unique=True),
    )


class ChangeLog(Base):
    """Every change to the index, with a rising sequence number: the source of durable events."""

    __tablename__ = "change_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    partition: Mapped[str] = mapped_column(String(64), default=CLINICAL)
    StudyInstanceUID: Mapped[str] = mapped_column(String(64), default="")
    SeriesInstanceUID: Mapped[str] = mapped_column(String(64), default="")
    SOPInstanceUID: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ConsumerCursor(Base):
    """How far each consumer of the change log has read (durable, so a restart resumes)."""

    __tablename__ = "consumer_cursor"
    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, default=0)


class Job(Base):
    """Durable work item; `key` makes each job idempotent (e.g. series UID + model version)."""

    __tablename__ = "job"
    job_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    payload: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("kind", "key", name="uq_job"),)


class ApiToken(Base):
    """Bearer tokens for the HTTP API, stored as SHA-256 hashes only."""

    __tablename__ = "api_token"
    token_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    project: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    # Issue 12 (revision 0005_identity): who created and who revoked the token, and when.
    created_by: Mapped[str] = mapped_column(String(128), default="")
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class StorageEvent(Base):
    """Overwrites and rejected conflicts under an existing SOP Instance UID, kept for the record."""

    __tablename__ = "storage_event"
    event_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # duplicate | overwritten | rejected
    SOPInstanceUID: Mapped[str] = mapped_column(String(64))
    old_key: Mapped[str] = mapped_column(String(160), default="")
    new_key: Mapped[str] = mapped_column(String(160), default="")
    source: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
