"""The receive service: every protocol edge (C-STORE, STOW-RS) hands what arrived to `Receiver.receive`,
which decides the partition, de-identifies on receive where a project is bound, and ingests.

* Clinical partition: the bytes go to the single ingest path exactly as received (parsed once, there).
* A project partition (a project-bound called AE title, or the project's STOW root): the received object is
  read once, checked against the request, refused if the patient opted out, de-identified with the project's
  profile and key, and the de-identified copy is ingested; no identified copy is ever stored (a share-only
  node). What cannot be shown clean is quarantined (recorded, not stored).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from imaging import audit
from imaging.config import Settings
from imaging.consent import is_opted_out
from imaging.errors import ArchiveError, CannotUnderstand, DataSetMismatch, NotAuthorized, NotFound
from imaging.index.db import Database
from imaging.index.extract import parse
from imaging.ingest.ingestor import BatchItem, Ingestor, IngestResult
from imaging.ingest.partitions import Quarantine, deidentifier_for, project_exists
from imaging.partition import CLINICAL
from imaging.storage.base import Source, digest_file

DEIDENTIFY_CONCURRENCY = 4  # objects of one request de-identified at once (project partitions)


class ConsentRefused(ArchiveError):
    """The patient opted out of secondary use."""

    http_status = 409


class Quarantined(ArchiveError):
    """The instance could not be shown clean (e.g. burned-in text) and was not stored."""

    dimse_status = 0xA9A0  # A9xx: refused, the data set does not meet what the destination requires
    http_status = 409


@dataclass(frozen=True)
class Expected:
    """What the request says the object is; a received object that differs is refused (DataSetMismatch)."""

    SOPInstanceUID: str | None = None
    SOPClassUID: str | None = None
    StudyInstanceUID: str | None = None  # STOW-RS to /studies/{study}


class Receiver:
    def __init__(self, settings: Settings, db: Database, ingestor: Ingestor) -> None:
        self.settings = settings
        self.db = db
        self.ingestor = ingestor

    def partition_for(self, called_ae: str) -> str | None:
        """The partition a called AE title serves: ours → clinical, a project-bound one → that project,
        anything else → None (refused)."""
        called = called_ae.strip()
        if called == self.settings.ae_title:
            return CLINICAL
        return self.settings.project_ae_titles.get(called)

    def receive(
        self,
        data: Source,
        *,
        source: str,
        called_ae: str | None = None,
        partition: str | None = None,
        expected: Expected = Expected(),
    ) -> IngestResult:
        """Store a received Part 10 stream (bytes, or a file whose position 0 is its first byte) in the
        partition named by `called_ae` (DIMSE) or `partition` (a DICOMweb service root). `source` says who
        sent it (audit, storage events): "ae:<calling AE>", "stow:<user>"."""
        channel = "c-store" if called_ae is not None else "stow-rs"
        partition = self._partition(called_ae, partition)
        if partition == CLINICAL:
            return self.ingestor.ingest(
                data,
                source=source,
                channel=channel,
                expected_sop_instance_uid=expected.SOPInstanceUID,
                expected_sop_class_uid=expected.SOPClassUID,
                expected_study_instance_uid=expected.StudyInstanceUID,
            )
        return self._deidentify_on_receive(data, partition, source, expected, channel)

    def receive_batch(
        self,
        items: Sequence[tuple[Source, Expected]],
        *,
        source: str,
        called_ae: str | None = None,
        partition: str | None = None,
    ) -> list[IngestResult | ArchiveError]:
        """`receive` for a group (the parts of a STOW-RS request), each with its own outcome: into the clinical
        partition as one group commit (Ingestor.ingest_batch); into a project each on its own, de-identified
        first, a few at a time."""
        partition = self._partition(called_ae, partition)
        channel = "c-store" if called_ae is not None else "stow-rs"
        if partition == CLINICAL:
            batch = [
                BatchItem(data, e.SOPInstanceUID, e.SOPClassUID, e.StudyInstanceUID) for data, e in items
            ]
            return self.ingestor.ingest_batch(batch, source=source, channel=channel)

        def one(item: tuple[Source, Expected]) -> IngestResult | ArchiveError:
            try:
                return self._deidentify_on_receive(item[0], partition, source, item[1], channel)
            except ArchiveError as exc:
                return exc

        if len(items) == 1:
            return [one(items[0])]
        # De-identification (the burned-in text check above all) is the slow part: several at once.
        with ThreadPoolExecutor(min(len(items), DEIDENTIFY_CONCURRENCY), thread_name_prefix="deid") as pool:
            return list(pool.map(one, items))

    def _partition(self, called_ae: str | None, partition: str | None) -> str:
        if called_ae is not None:
            found = self.partition_for(called_ae)
            if found is None:
                raise NotAuthorized("called AE title not served here")
            return found
        return partition or CLINICAL

    def _deidentify_on_receive(
        self, data: Source, project: str, source: str, expected: Expected, channel: str
    ) -> IngestResult:
        ds = _read(data)
        _check(ds, expected)
        keys_dir: Path = self.settings.keys_path
        with self.db.read() as session:
            if not project_exists(session, project):
                raise NotFound("no such project")
            if is_opted_out(session, str(ds.get("PatientID", "")), str(ds.get("IssuerOfPatientID", ""))):
                raise ConsentRefused("the patient opted out of secondary use")
        result = deidentifier_for(self.db, keys_dir, project).deidentify(ds)
        if result.quarantined or result.dataset is None:
            key = "sha256:" + (
                hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else digest_file(data)[0]
            )
            reasons = list(result.reasons)
            self.db.transaction(lambda s: s.add(Quarantine(project=project, object_key=key, reasons=reasons)))
            raise Quarantined("pixel data could not be shown free of burned-in text; not stored")
        stored = self.ingestor.ingest_dataset(
            result.dataset, partition=project, source=source, channel=channel
        )
        with self.db.write() as session:
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


def _read(data: Source) -> Dataset:
    """The whole received data set (de-identification needs the pixels too), read once; on failure the
    index's parser names the precise problem (CannotUnderstand / DataSetMismatch)."""
    try:
        return dcmread(BytesIO(data) if isinstance(data, bytes) else data)
    except Exception:
        if not isinstance(data, bytes):
            data.seek(0)
        parse(data)  # raises the precise error for this stream
        raise CannotUnderstand("data set cannot be parsed") from None


def _check(ds: Dataset, expected: Expected) -> None:
    for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID"):
        wanted = getattr(expected, keyword)
        if wanted is not None and str(ds.get(keyword, "")) != wanted:
            raise DataSetMismatch(f"{keyword} differs from the request's")
