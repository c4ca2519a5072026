"""Triage outcomes in the index: one row per (series, bundle version), so a result is queryable and the
job is idempotent; the study's priority is the highest of its series'."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from imaging.orm import Base, utcnow


class TriageOutcome(Base):
    __tablename__ = "triage_outcome"
    outcome_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    partition: Mapped[str] = mapped_column(String(64))
    StudyInstanceUID: Mapped[str] = mapped_column(String(64), index=True)
    SeriesInstanceUID: Mapped[str] = mapped_column(String(64))
    bundle_version: Mapped[str] = mapped_column(String(128))
    selected: Mapped[bool] = mapped_column(default=True)
    # done, failed (error says why, PHI-free) or skipped (not selected); attempts counts the runs.
    status: Mapped[str] = mapped_column(String(16), default="done")
    error: Mapped[str] = mapped_column(String(1024), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[str] = mapped_column(String(8), default="")
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    timings: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    sr_sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    seg_sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    latency_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # series stable → flag set
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    __table_args__ = (UniqueConstraint("partition", "SeriesInstanceUID", "bundle_version", name="uq_triage"),)


def study_outcomes(session: Session, study_uid: str, partition: str = "clinical") -> list[TriageOutcome]:
    return list(
        session.scalars(
            select(TriageOutcome)
            .where(TriageOutcome.partition == partition, TriageOutcome.StudyInstanceUID == study_uid)
            .order_by(TriageOutcome.outcome_pk)
        )
    )
