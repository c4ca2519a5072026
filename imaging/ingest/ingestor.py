"""The single ingest path for every source (C-STORE, STOW-RS, import, AI results, de-identified copies):
parse → validate → store durably → index → change log. Success is returned only after all of it.

`ingest` takes one object (bytes, or a file for uploads of any size); `ingest_batch` a group (the parts of a
STOW-RS request): one sync for all their bytes and one index transaction for all their rows."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO

from pydicom.dataset import Dataset
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from imaging.config import OverwritePolicy
from imaging.errors import ArchiveError, DataSetMismatch, DuplicateConflict, OutOfResources
from imaging.index.db import Database
from imaging.index.extract import ParsedInstance, parse
from imaging.index.writer import Disposition, Recorded, key_referenced, record_instance, record_rejection
from imaging.ingest.committer import GroupCommitter
from imaging.metrics import INSTANCES_RECEIVED, error_status
from imaging.partition import CLINICAL
from imaging.storage.base import InstanceStore, Source, StagedObject, StoredObject

log = logging.getLogger(__name__)
IN_PROCESS_CHANNELS = {"import", "triage", "deid", "fsck", "reindex", "stow", "project"}


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


@dataclass(frozen=True)
class BatchItem:
    """One object of a batch (the parts of a STOW-RS request), with what the request says it is."""

    data: Source
    expected_sop_instance_uid: str | None = None
    expected_sop_class_uid: str | None = None
    expected_study_instance_uid: str | None = None


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
        data: Source,
        *,
        partition: str = CLINICAL,
        source: str = "",
        channel: str | None = None,
        expected_sop_instance_uid: str | None = None,
        expected_sop_class_uid: str | None = None,
        expected_study_instance_uid: str | None = None,
    ) -> IngestResult:
        """Store `data` exactly as received: a Part 10 stream (preamble optional, file meta required), as
        bytes or as a seekable file whose position 0 is its first byte (a large upload, never read whole).
        `channel`: how it came (the metrics' label: c-store, stow-rs; default from `source`)."""
        item = BatchItem(data, expected_sop_instance_uid, expected_sop_class_uid, expected_study_instance_uid)
        label = channel or _channel(source)
        try:
            result = self._ingest(item, partition, source)
        except BaseException as exc:
            INSTANCES_RECEIVED.labels(label, error_status(exc)).inc()
            raise
        INSTANCES_RECEIVED.labels(label, result.disposition.value).inc()
        return result

    def _ingest(self, item: BatchItem, partition: str, source: str) -> IngestResult:
        data = item.data
        if isinstance(data, bytes):
            # The bytes are written and synced (GIL released) while this thread parses them; they become
            # visible under their key only once they parsed, and durable before the index points at them.
            staging = self._stager.submit(self.store.stage, data, partition)
            try:
                parsed = _checked(item)
            except BaseException:
                _discard(self.store, staging)
                raise
            staged = staging.result()
        else:  # a file: parsed first (bulk values skipped), then copied in bounded chunks
            parsed = _checked(item)
            data.seek(0)
            staged = self.store.stage(data, partition)
        stored = self.store.publish(staged)

        def work(conn: Connection) -> Recorded:
            return record_instance(
                conn, parsed, stored, partition=partition, policy=self.policy, source=source
            )

        try:
            recorded = self.committer.run(work)
        except BaseException as exc:
            self._failed(exc, parsed, stored, source)
            if isinstance(exc, OperationalError) and _disk_full(exc):
                raise OutOfResources("index storage is full") from None
            raise
        if recorded.old_key:
            self._drop_if_orphan(recorded.old_key, True)
        return _result(parsed, recorded.disposition, stored.key, partition)

    def ingest_batch(
        self,
        items: Sequence[BatchItem],
        *,
        partition: str = CLINICAL,
        source: str = "",
        channel: str | None = None,
    ) -> list[IngestResult | ArchiveError]:
        """Ingest several objects as a group: each parsed and checked, all written, one sync makes them all
        durable, and one index transaction (a savepoint per object) records them. Each object gets its own
        outcome (a refused one does not hold back the others); every Success still comes only after the
        sync and the commit that hold it."""
        label = channel or _channel(source)
        try:
            outcomes = self._ingest_batch(items, partition, source)
        except BaseException as exc:
            INSTANCES_RECEIVED.labels(label, error_status(exc)).inc(len(items))
            raise
        for outcome in outcomes:
            status = error_status(outcome) if isinstance(outcome, ArchiveError) else outcome.disposition.value
            INSTANCES_RECEIVED.labels(label, status).inc()
        return outcomes

    def _ingest_batch(
        self, items: Sequence[BatchItem], partition: str, source: str
    ) -> list[IngestResult | ArchiveError]:
        outcomes: list[IngestResult | ArchiveError | None] = [None] * len(items)
        prepared = list(self._stager.map(lambda item: self._prepare(item, partition), items))
        ready: list[tuple[int, ParsedInstance, StagedObject]] = []
        for index, outcome in enumerate(prepared):
            if isinstance(outcome, ArchiveError):
                outcomes[index] = outcome
            else:
                ready.append((index, *outcome))
        try:
            published = self.store.publish_all([staged for _, _, staged in ready])
        except BaseException:
            for _, _, staged in ready:
                self.store.discard(staged)
            raise
        stored_items = [
            (index, parsed, stored) for (index, parsed, _), stored in zip(ready, published, strict=True)
        ]

        def work(conn: Connection) -> list[Recorded | ArchiveError]:
            recorded: list[Recorded | ArchiveError] = []
            for _, parsed, stored in stored_items:
                try:
                    with conn.begin_nested():
                        recorded.append(
                            record_instance(
                                conn, parsed, stored, partition=partition, policy=self.policy, source=source
                            )
                        )
                except ArchiveError as exc:  # this object refused: its savepoint rolled back, the rest go on
                    recorded.append(exc)
            return recorded

        try:
            results = self.committer.run(work) if stored_items else []
        except BaseException as exc:
            for _, parsed, stored in stored_items:
                self._failed(exc, parsed, stored, source)
            if isinstance(exc, OperationalError) and _disk_full(exc):
                raise OutOfResources("index storage is full") from None
            raise
        for (index, parsed, stored), result in zip(stored_items, results, strict=True):
            if isinstance(result, ArchiveError):
                self._failed(result, parsed, stored, source)
                outcomes[index] = result
            else:
                if result.old_key:
                    self._drop_if_orphan(result.old_key, True)
                outcomes[index] = _result(parsed, result.disposition, stored.key, partition)
        return [o for o in outcomes if o is not None]

    def _prepare(self, item: BatchItem, partition: str) -> tuple[ParsedInstance, StagedObject] | ArchiveError:
        """Parse, check and stage one object of a batch without syncing it (publish_all syncs them all)."""
        try:
            parsed = _checked(item)
            if not isinstance(item.data, bytes):
                item.data.seek(0)
            return parsed, self.store.stage(item.data, partition, sync=False)
        except ArchiveError as exc:
            return exc

    def _failed(self, exc: BaseException, parsed: ParsedInstance, stored: StoredObject, source: str) -> None:
        """After a failed index write: record a refused duplicate; remove a new object nothing points at
        (a crash here leaves an unindexed object, which `fsck --repair` / `reindex` pick up)."""
        if isinstance(exc, DuplicateConflict):
            self.committer.run(lambda s: record_rejection(s, parsed.sop_instance_uid, stored.key, source))
        self._drop_if_orphan(stored.key, stored.created)

    def ingest_dataset(
        self, ds: Dataset, *, partition: str = CLINICAL, source: str = "", channel: str | None = None
    ) -> IngestResult:
        """Ingest a dataset built in process (AI results, de-identified copies)."""
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return self.ingest(buffer.getvalue(), partition=partition, source=source, channel=channel)

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


def _channel(source: str) -> str:
    """The metrics' channel of an in-process producer, from its `source` ("import", "deid:<project>")."""
    kind = source.split(":", 1)[0]
    return kind if kind in IN_PROCESS_CHANNELS else "other"


def _checked(item: BatchItem) -> ParsedInstance:
    """Parse, and refuse an object that is not what the request says it is."""
    parsed = parse(item.data)
    if (
        item.expected_sop_instance_uid is not None
        and parsed.sop_instance_uid != item.expected_sop_instance_uid
    ):
        raise DataSetMismatch("SOP Instance UID differs from the request's")
    if (
        item.expected_sop_class_uid is not None
        and parsed.attributes["SOPClassUID"] != item.expected_sop_class_uid
    ):
        raise DataSetMismatch("SOP Class UID differs from the request's")
    if (
        item.expected_study_instance_uid is not None
        and parsed.attributes["StudyInstanceUID"] != item.expected_study_instance_uid
    ):
        raise DataSetMismatch("Study Instance UID differs from the request's")
    return parsed


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
