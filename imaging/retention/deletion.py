"""Deleting a study, a series or an instance (administrators; the CLI, REST and DICOMweb DELETE call this):
out of the index in one transaction (audited as Study Deleted, 110105), then the objects out of storage at
once. Instances a rejection note already hid are deleted with their study too, without waiting for their
title's delay: what dcm4chee-arc's DELETE of a rejected study does."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging.archive import Archive
from imaging.errors import InvalidRequest, NotFound
from imaging.index.extract import valid_uid
from imaging.index.removal import PendingDeletion, Removed, purge, remove_instances, select_removable


@dataclass
class DeletionReport:
    instances: int  # taken out of the index now
    studies: list[str]
    objects_deleted: int  # objects removed from storage (including instances rejected earlier)
    bytes: int


def delete(
    archive: Archive,
    partition: str,
    study: str,
    series: str | None = None,
    sop: str | None = None,
    *,
    user: str,
    reason: str = "deleted",
) -> DeletionReport:
    """Delete a study, one of its series or one instance of a partition; NotFound when nothing matches."""
    for uid in (study, series, sop):
        if uid is not None and not valid_uid(uid):
            raise InvalidRequest("invalid UID")
    if sop is not None and series is None:
        raise InvalidRequest("an instance is named with its series")

    def work(session: Session) -> tuple[Removed, list[str]]:
        rows = select_removable(session, partition, study, series, [sop] if sop else None)
        hidden = _hidden_keys(session, partition, study, sop)
        if not rows and not hidden:
            raise NotFound("no such " + ("instance" if sop else "series" if series else "study"))
        return remove_instances(session, partition, rows, reason=reason, user=user), hidden

    removed, hidden = archive.db.transaction(work, attempts=1)
    purged = purge(archive.db, archive.store, keys=[*removed.keys, *hidden])
    return DeletionReport(removed.instances, sorted(removed.studies), purged.deleted, removed.bytes)


def _hidden_keys(session: Session, partition: str, study: str, sop: str | None) -> list[str]:
    """Objects of the study (or instance) already out of the index and waiting for deletion (rejected)."""
    stmt = select(PendingDeletion.object_key).where(
        PendingDeletion.partition == partition, PendingDeletion.StudyInstanceUID == study
    )
    if sop is not None:
        stmt = stmt.where(PendingDeletion.SOPInstanceUID == sop)
    return list(session.scalars(stmt))
