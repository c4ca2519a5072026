"""The single ingest path for every source (C-STORE, STOW-RS, import, AI results, de-identified copies):
parse → validate → store durably → index → change log. Success is returned only after all of it."""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO

from pydicom.dataset import Dataset
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from imaging.config import OverwritePolicy
from imaging.errors import DataSetMismatch, DuplicateConflict, OutOfResources
from imaging.index.db import Database
from imaging.index.extract import ParsedInstance, parse
from imaging.index.writer import Disposition, Recorded, key_referenced, record_instance, record_rejection
from imaging.ingest.committer import GroupCommitter
from imaging.partition import CLINICAL
from imaging.storage.base import InstanceStore, StagedObject

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    disposition: Disposition
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    object_key: str
    partition: str
    warnings: list[str] = field(default_factory=list)


class Ingestor:
    def __init__(
        self, db: Database, store: InstanceStore, *, policy: OverwritePolicy = OverwritePolicy.REJECT
    ) -> None:
        self.db = db
        self.store = store
        self.policy = policy
        self.committer = GroupCommitter(db)
        # One thread per concurrent ingest is enough (each waits for its own write).
        self._stager = ThreadPoolExecutor(max_workers=32, thread_name_prefix="stage")

    def ingest(
        self,
        data: bytes,
        *,
        partition: str = CLINICAL,
        source: str = "",
        expected_sop_instance_uid: str | None = None,
        expected_sop_class_uid: str | None = None,
        expected_study_instance_uid: str | None = None,
    ) -> IngestResult:
        """Store `data` (a Part 10 stream: preamble optional, file meta required) exactly as received."""
        # The bytes are written and synced (GIL released) while this thread parses them; they become visible
        # under their key only once they parsed, and durable before the index points at them.
        staging = self._stager.submit(self.store.stage, data, partition)
        try:
            parsed = parse(data)
            if expected_sop_instance_uid is not None and parsed.sop_instance_uid != expected_sop_instance_uid:
                raise DataSetMismatch("SOP Instance UID differs from the request's")
            if (
                expected_sop_class_uid is not None
                and parsed.attributes["SOPClassUID"] != expected_sop_class_uid
            ):
                raise DataSetMismatch("SOP Class UID differs from the request's")
            if (
                expected_study_instance_uid is not None
                and parsed.attributes["StudyInstanceUID"] != expected_study_instance_uid
            ):
                raise DataSetMismatch("Study Instance UID differs from the request's")
        except BaseException:
            _discard(self.store, staging)
            raise
        stored = self.store.publish(staging.result())

        def work(conn: Connection) -> Recorded:
            return record_instance(
                conn, parsed, stored, partition=partition, policy=self.policy, source=source
            )

        try:
            recorded = self.committer.run(work)
        except DuplicateConflict:
            self.committer.run(lambda s: record_rejection(s, parsed.sop_instance_uid, stored.key, source))
            self._drop_if_orphan(stored.key, stored.created)
            raise
        except OperationalError as exc:
            # Nothing points at a new object whose index transaction failed: remove it (a crash here
            # leaves an unindexed object, which `fsck --repair` / `reindex` pick up).
            self._drop_if_orphan(stored.key, stored.created)
            if _disk_full(exc):
                raise OutOfResources("index storage is full") from None
            raise
        except BaseException:
            self._drop_if_orphan(stored.key, stored.created)
            raise
        if recorded.old_key:
            self._drop_if_orphan(recorded.old_key, True)
        return _result(parsed, recorded.disposition, stored.key, partition)

    def ingest_dataset(self, ds: Dataset, *, partition: str = CLINICAL, source: str = "") -> IngestResult:
        """Ingest a dataset built in process (AI results, de-identified copies)."""
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return self.ingest(buffer.getvalue(), partition=partition, source=source)

    def close(self) -> None:
        self._stager.shutdown(wait=True)

    def _drop_if_orphan(self, key: str, created: bool) -> None:
        if not created:
            return
        try:
            with self.db.read() as session:
                if key_referenced(session, key):
                    return
            self.store.delete(key)
        except Exception:  # best effort: fsck reports what is left
            log.warning("could not remove unreferenced object %s", key)


def _discard(store: InstanceStore, staging: Future[StagedObject]) -> None:
    """Remove what a failed ingest staged, once the write is over (a failed write left nothing)."""
    with contextlib.suppress(Exception):  # the write itself failed: it left nothing behind
        store.discard(staging.result())


def _disk_full(exc: Exception) -> bool:
    text = str(exc).lower()
    return "disk is full" in text or "no space left" in text or "diskfull" in text


def _result(parsed: ParsedInstance, disposition: Disposition, key: str, partition: str) -> IngestResult:
    a = parsed.attributes
    return IngestResult(
        disposition=disposition,
        sop_class_uid=str(a["SOPClassUID"]),
        sop_instance_uid=str(a["SOPInstanceUID"]),
        study_instance_uid=str(a["StudyInstanceUID"]),
        series_instance_uid=str(a["SeriesInstanceUID"]),
        object_key=key,
        partition=partition,
        warnings=parsed.warnings,
    )
