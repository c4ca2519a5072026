"""Retention rules: per partition, delete the studies that are old enough since they were received, or that
nobody read for long enough, optionally of some modalities only. `preview` says what a rule would delete
now; `apply` deletes it (audited as Study Deleted by `retention:<rule>`), daily through the durable job
`retention.apply` and on demand."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from imaging.archive import Archive
from imaging.errors import InvalidRequest, NotFound
from imaging.index.access import StudyAccess
from imaging.index.removal import purge, remove_instances, select_removable
from imaging.index.schema import Instance, Series, Study
from imaging.orm import Base, utcnow
from imaging.partition import CLINICAL, is_partition_name
from imaging.retention.schedule import schedule_rule

RULE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class RetentionRule(Base):
    __tablename__ = "retention_rule"
    rule_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    partition: Mapped[str] = mapped_column(String(64), default=CLINICAL)
    modalities: Mapped[list[str]] = mapped_column(JSON, default=list)  # any of ModalitiesInStudy; [] any
    received_days: Mapped[float | None] = mapped_column(Float, nullable=True)  # since the last receipt
    accessed_days: Mapped[float | None] = mapped_column(Float, nullable=True)  # since the last read
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(String(256), default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_run_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


@dataclass
class Candidate:
    StudyInstanceUID: str
    ModalitiesInStudy: str
    instances: int
    bytes: int
    last_received: str
    last_accessed: str


@dataclass
class Preview:
    rule: str
    partition: str
    studies: int = 0
    instances: int = 0
    bytes: int = 0
    candidates: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def set_rule(
    archive: Archive,
    name: str,
    *,
    partition: str = CLINICAL,
    modalities: list[str] | None = None,
    received_days: float | None = None,
    accessed_days: float | None = None,
    enabled: bool = True,
    description: str = "",
    user: str = "system",
) -> RetentionRule:
    """Create or replace a rule. A rule needs an age (since receipt or since the last read): one that
    named only modalities would delete every study of them at once."""
    if not name or len(name) > 64 or not set(name) <= RULE_NAME_CHARS:
        raise InvalidRequest("rule names are 1-64 lower-case letters, digits, '-', '_' or '.'")
    if not is_partition_name(partition):
        raise InvalidRequest("invalid partition")
    if received_days is None and accessed_days is None:
        raise InvalidRequest("a rule needs received_days or accessed_days")
    for days in (received_days, accessed_days):
        if days is not None and not 0 <= days <= 365 * 200:
            raise InvalidRequest("days must be between 0 and 73000")
    chosen = sorted({m.strip().upper() for m in modalities or [] if m.strip()})

    def work(session: Session) -> RetentionRule:
        rule = session.scalar(select(RetentionRule).where(RetentionRule.name == name))
        if rule is None:
            rule = RetentionRule(name=name, created_by=user[:128])
            session.add(rule)
        rule.partition, rule.modalities, rule.enabled = partition, chosen, enabled
        rule.received_days, rule.accessed_days, rule.description = (
            received_days,
            accessed_days,
            description[:256],
        )
        session.flush()
        if enabled:
            schedule_rule(session, archive.settings, name)
        return rule

    return archive.db.transaction(work, attempts=1)


def remove_rule(archive: Archive, name: str) -> None:
    def work(session: Session) -> None:
        session.delete(get_rule(session, name))

    archive.db.transaction(work, attempts=1)


def get_rule(session: Session, name: str) -> RetentionRule:
    rule = session.scalar(select(RetentionRule).where(RetentionRule.name == name))
    if rule is None:
        raise NotFound("no such retention rule")
    return rule


def list_rules(session: Session) -> list[RetentionRule]:
    return list(session.scalars(select(RetentionRule).order_by(RetentionRule.name)))


def rule_info(rule: RetentionRule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "partition": rule.partition,
        "modalities": list(rule.modalities),
        "received_days": rule.received_days,
        "accessed_days": rule.accessed_days,
        "enabled": rule.enabled,
        "description": rule.description,
        "last_run_at": rule.last_run_at.isoformat() + "Z" if rule.last_run_at else None,
    }


def candidates(session: Session, rule: RetentionRule, now: dt.datetime | None = None) -> list[Candidate]:
    """The studies the rule selects now, oldest receipt first."""
    moment = now or utcnow()
    last_received = func.max(Instance.received_at)
    stmt = (
        select(
            Study.StudyInstanceUID,
            Study.ModalitiesInStudy,
            func.count(Instance.instance_pk),
            func.coalesce(func.sum(Instance.size), 0),
            last_received,
            StudyAccess.last_accessed_at,
        )
        .join(Series, Series.study_pk == Study.study_pk)
        .join(Instance, Instance.series_pk == Series.series_pk)
        .outerjoin(
            StudyAccess,
            (StudyAccess.partition == Study.partition)
            & (StudyAccess.StudyInstanceUID == Study.StudyInstanceUID),
        )
        .where(Study.partition == rule.partition)
        .group_by(
            Study.study_pk, Study.StudyInstanceUID, Study.ModalitiesInStudy, StudyAccess.last_accessed_at
        )
        .order_by(last_received)
    )
    if rule.received_days is not None:
        stmt = stmt.having(last_received < moment - dt.timedelta(days=rule.received_days))
    wanted = set(rule.modalities)
    found = []
    for uid, modalities, count, size, received, accessed in session.execute(stmt):
        if wanted and not wanted & set(str(modalities).split("\\")):
            continue
        read = accessed if accessed is not None and accessed > received else received
        if rule.accessed_days is not None and read >= moment - dt.timedelta(days=rule.accessed_days):
            continue
        found.append(
            Candidate(
                uid,
                modalities,
                int(count),
                int(size),
                received.isoformat() + "Z",
                accessed.isoformat() + "Z" if accessed is not None else "",
            )
        )
    return found


def preview(archive: Archive, name: str, *, limit: int = 1000) -> Preview:
    """What the rule would delete now (the first `limit` studies listed; the totals count them all)."""
    with archive.db.read() as session:
        rule = get_rule(session, name)
        found = candidates(session, rule)
    return Preview(
        rule=name,
        partition=rule.partition,
        studies=len(found),
        instances=sum(c.instances for c in found),
        bytes=sum(c.bytes for c in found),
        candidates=found[:limit],
    )


def apply(archive: Archive, name: str, *, user: str | None = None) -> Preview:
    """Delete what the rule selects now, study by study (each in its own transaction, re-checked in it, so
    a study that received something meanwhile is kept); returns what was deleted."""
    with archive.db.read() as session:
        rule = get_rule(session, name)
        partition = rule.partition
        selected = candidates(session, rule)
    who = user or f"retention:{name}"
    done = Preview(rule=name, partition=partition)
    for candidate in selected:

        def work(session: Session, uid: str = candidate.StudyInstanceUID) -> tuple[list[str], int, int]:
            current = get_rule(session, name)
            if not any(c.StudyInstanceUID == uid for c in candidates(session, current)):
                return [], 0, 0
            rows = select_removable(session, partition, uid)
            removed = remove_instances(
                session, partition, rows, reason=f"retention:{name}", user=who, detail=_describe(current)
            )
            return removed.keys, removed.instances, removed.bytes

        keys, instances, size = archive.db.transaction(work, attempts=1)
        if keys:
            purge(archive.db, archive.store, keys=keys)
            done.studies += 1
            done.instances += instances
            done.bytes += size
            done.candidates.append(candidate)

    def stamp(session: Session) -> None:
        get_rule(session, name).last_run_at = utcnow()

    archive.db.transaction(stamp)
    return done


def _describe(rule: RetentionRule) -> str:
    parts = []
    if rule.received_days is not None:
        parts.append(f"received more than {rule.received_days:g} days ago")
    if rule.accessed_days is not None:
        parts.append(f"not read for {rule.accessed_days:g} days")
    if rule.modalities:
        parts.append("modalities " + ",".join(rule.modalities))
    return f"retention rule {rule.name}: " + "; ".join(parts)


def run_rule(archive: Archive, payload: dict[str, Any]) -> dict[str, Any]:
    """The `retention.apply` job: apply the rule if it is still enabled, then schedule tomorrow's run."""
    name = str(payload["rule"])
    with archive.db.read() as session:
        rule = session.scalar(select(RetentionRule).where(RetentionRule.name == name))
        enabled = rule is not None and rule.enabled
    if not enabled:
        return {"skipped": "rule removed or disabled"}
    done = apply(archive, name)
    planned = dt.datetime.fromisoformat(str(payload.get("at") or utcnow().isoformat()))
    after = max(utcnow(), planned) + dt.timedelta(seconds=1)
    archive.db.transaction(lambda s: schedule_rule(s, archive.settings, name, after))
    return {"studies": done.studies, "instances": done.instances, "bytes": done.bytes}
