"""The single ingest path for every source (C-STORE, STOW-RS, import, AI results, de-identified copies):
parse → validate → store durably → index → change log. Success is returned only after all of it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from imaging.config import OverwritePolicy
from imaging.errors import DataSetMismatch, DuplicateConflict
from imaging.index.db import Database
from imaging.index.extract import ParsedInstance, parse
from imaging.index.schema import CLINICAL
from imaging.index.writer import Disposition, key_referenced, record_instance, record_rejection
from imaging.storage.base import InstanceStore

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

    def ingest(
        self,
        data: bytes,
        *,
        partition: str = CLINICAL,
        source: str = "",
        expected_sop_instance_uid: str | None = None,
    ) -> IngestResult:
        """Store `data` (a Part 10 stream: preamble optional, file meta required) exactly as received."""
        parsed = parse(data)
        if expected_sop_instance_uid is not None and parsed.sop_instance_uid != expected_sop_instance_uid:
            raise DataSetMismatch("SOP Instance UID differs from the request's")
        stored = self.store.put(data, partition)  # durable before the index points at it

        def work(session):  # type: ignore[no-untyped-def]
            return record_instance(
                session, parsed, stored, partition=partition, policy=self.policy, source=source
            )

        try:
            recorded = self.db.transaction(work)
        except DuplicateConflict:
            self.db.transaction(lambda s: record_rejection(s, parsed.sop_instance_uid, stored.key, source))
            self._drop_if_orphan(stored.key, stored.created)
            raise
        if recorded.old_key:
            self._drop_if_orphan(recorded.old_key, True)
        return _result(parsed, recorded.disposition, stored.key, partition)

    def ingest_dataset(self, ds: Dataset, *, partition: str = CLINICAL, source: str = "") -> IngestResult:
        """Ingest a dataset built in process (AI results, de-identified copies)."""
        from io import BytesIO

        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return self.ingest(buffer.getvalue(), partition=partition, source=source)

    def _drop_if_orphan(self, key: str, created: bool) -> None:
        if not created:
            return
        with self.db.read() as session:
            if key_referenced(session, key):
                return
        self.store.delete(key)


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
