"""IOCM rejection notes (IHE RAD Imaging Object Change Management; PS3.16 CID 7011) in the index.

A Key Object Selection document whose title (ConceptNameCodeSequence) is one of the rejection titles,
received through the single ingest path (C-STORE, STOW-RS, import), rejects the instances its
CurrentRequestedProcedureEvidenceSequence lists. In the same transaction as the note's own record, the
instances leave the index (imaging.index.removal: hidden from QIDO, WADO, C-FIND and retrieve at once) and a
RejectedInstance row per instance keeps the rejection: a later copy of a rejected instance is refused
(`rejected_title`, checked by the writer). The objects, and the note's own object, wait in PendingDeletion
until their title's delay has passed (the retention feature's purge job; settings `rejection_delete_after_days`).
The note itself is not indexed as an instance: it is no image to show, and a study rejected whole must not
linger as a study holding only its rejection note.

Refusals follow dcm4chee-arc's status codes (its StoreService): 0xA771 subsequent occurrence of a rejected
instance, 0xA772 a referenced instance is not here, 0xA773 its SOP class differs, 0xA774 already rejected
by another note. A note sent again (a lost answer) is a success that changes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import Connection, DateTime, Integer, String, Table, UniqueConstraint, bindparam, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from imaging.errors import ArchiveError
from imaging.index.prepared import Prepared
from imaging.index.removal import PendingDeletion, remove_instances, select_removable
from imaging.orm import Base, utcnow

KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"


class RejectionTitle(StrEnum):
    """Document titles of CID 7011 that reject the referenced instances (scheme DCM)."""

    QUALITY = "113001"  # Rejected for Quality Reasons
    PATIENT_SAFETY = "113037"  # Rejected for Patient Safety Reasons
    WORKLIST = "113038"  # Incorrect Modality Worklist Entry
    RETENTION_EXPIRED = "113039"  # Data Retention Policy Expired


TITLE_NAMES = {
    RejectionTitle.QUALITY: "Rejected for Quality Reasons",
    RejectionTitle.PATIENT_SAFETY: "Rejected for Patient Safety Reasons",
    RejectionTitle.WORKLIST: "Incorrect Modality Worklist Entry",
    RejectionTitle.RETENTION_EXPIRED: "Data Retention Policy Expired",
}


class RejectedInstance(Base):
    """An instance a rejection note rejected: hidden, deleted after its title's delay, refused if sent again."""

    __tablename__ = "rejected_instance"
    rejected_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    partition: Mapped[str] = mapped_column(String(64))
    StudyInstanceUID: Mapped[str] = mapped_column(String(64))
    SeriesInstanceUID: Mapped[str] = mapped_column(String(64))
    SOPInstanceUID: Mapped[str] = mapped_column(String(64))
    SOPClassUID: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(16))  # RejectionTitle code
    note_uid: Mapped[str] = mapped_column(String(64))  # the rejection note's SOP Instance UID
    rejected_by: Mapped[str] = mapped_column(String(128), default="")
    rejected_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("partition", "SOPInstanceUID", name="uq_rejected_instance"),)


class RejectionRefused(ArchiveError):
    http_status = 409


class SubsequentOccurrence(RejectionRefused):
    """A copy of an instance that a rejection note rejected."""

    dimse_status = 0xA771


class NoSuchInstance(RejectionRefused):
    """The note rejects an instance that is not stored here."""

    dimse_status = 0xA772


class ClassInstanceConflict(RejectionRefused):
    """The note names a SOP class that is not the stored instance's."""

    dimse_status = 0xA773


class AlreadyRejected(RejectionRefused):
    """Another rejection note rejected the instance already."""

    dimse_status = 0xA774


@dataclass(frozen=True)
class Reference:
    StudyInstanceUID: str
    SeriesInstanceUID: str
    SOPClassUID: str
    SOPInstanceUID: str


@dataclass(frozen=True)
class RejectionNote:
    title: RejectionTitle
    note_uid: str
    references: tuple[Reference, ...]

    @property
    def title_name(self) -> str:
        return TITLE_NAMES[self.title]


def rejection_note(ds: Dataset) -> RejectionNote | None:
    """The rejection a Key Object Selection document carries, or None (any other object, any other title)."""
    if str(ds.get("SOPClassUID", "")) != KEY_OBJECT_SELECTION:
        return None
    names = ds.get("ConceptNameCodeSequence") or []
    if len(names) != 1:
        return None
    code, scheme = str(names[0].get("CodeValue", "")), str(names[0].get("CodingSchemeDesignator", ""))
    if scheme != "DCM" or code not in set(RejectionTitle):
        return None
    references = []
    for study in ds.get("CurrentRequestedProcedureEvidenceSequence") or []:
        for series in study.get("ReferencedSeriesSequence") or []:
            for item in series.get("ReferencedSOPSequence") or []:
                references.append(
                    Reference(
                        str(study.get("StudyInstanceUID", "")),
                        str(series.get("SeriesInstanceUID", "")),
                        str(item.get("ReferencedSOPClassUID", "")),
                        str(item.get("ReferencedSOPInstanceUID", "")),
                    )
                )
    return RejectionNote(RejectionTitle(code), str(ds.get("SOPInstanceUID", "")), tuple(references))


_R = cast(Table, RejectedInstance.__table__)
_REJECTED = Prepared(
    select(_R.c.title).where(
        _R.c.partition == bindparam("p_partition"), _R.c.SOPInstanceUID == bindparam("p_sop")
    )
)


def rejected_title(conn: Connection, partition: str, sop_instance_uid: str) -> str | None:
    """The title that rejected this instance in this partition, if one did (the writer's check)."""
    row = _REJECTED.first(conn, {"p_partition": partition, "p_sop": sop_instance_uid})
    return None if row is None else str(row.title)


def refuse_rejected(conn: Connection, partition: str, sop_instance_uid: str) -> None:
    title = rejected_title(conn, partition, sop_instance_uid)
    if title is not None:
        raise SubsequentOccurrence(f"the instance was rejected ({TITLE_NAMES[RejectionTitle(title)]})")


def apply_rejection(
    session: Session, note: RejectionNote, *, note_key: str, partition: str, user: str
) -> int:
    """Reject the note's instances in the caller's transaction; returns how many left the index now (0
    for a note received again)."""
    if not note.references:
        raise NoSuchInstance("the rejection note references no instance")
    wanted = {ref.SOPInstanceUID: ref for ref in note.references}
    earlier = {
        row.SOPInstanceUID: row
        for row in session.scalars(
            select(RejectedInstance).where(
                RejectedInstance.partition == partition, RejectedInstance.SOPInstanceUID.in_(list(wanted))
            )
        )
    }
    if any(row.note_uid != note.note_uid for row in earlier.values()):
        raise AlreadyRejected("an instance the note references was rejected by another note")
    rows = select_removable(session, partition, sops=[u for u in wanted if u not in earlier])
    found = {row.SOPInstanceUID: row for row in rows}
    for sop_uid, ref in wanted.items():
        if sop_uid in earlier:
            continue
        row = found.get(sop_uid)
        if row is None or row.StudyInstanceUID != ref.StudyInstanceUID:
            raise NoSuchInstance("an instance the rejection note references is not stored here")
        if row.SOPClassUID != ref.SOPClassUID:
            raise ClassInstanceConflict("the rejection note names another SOP class than the stored one")
    if not rows:
        return 0  # the same note again: nothing new
    now = utcnow()
    for row in rows:
        session.add(
            RejectedInstance(
                partition=partition,
                StudyInstanceUID=row.StudyInstanceUID,
                SeriesInstanceUID=row.SeriesInstanceUID,
                SOPInstanceUID=row.SOPInstanceUID,
                SOPClassUID=row.SOPClassUID,
                title=note.title.value,
                note_uid=note.note_uid,
                rejected_by=user[:128],
                rejected_at=now,
            )
        )
    session.add(
        PendingDeletion(
            object_key=note_key,
            partition=partition,
            StudyInstanceUID=rows[0].StudyInstanceUID,
            SOPInstanceUID=note.note_uid,
            reason=f"rejection-note:{note.title.value}",
            requested_by=user[:128],
            created_at=now,
        )
    )
    remove_instances(
        session,
        partition,
        rows,
        reason=f"rejected:{note.title.value}",
        user=user,
        detail=f"rejection note {note.note_uid}: {note.title_name}; hidden at once, deleted on the title's rule",
    )
    return len(rows)


def rejection_of(session: Session, partition: str, sop_instance_uid: str) -> Any:
    """The RejectedInstance row of an instance, or None."""
    return session.scalar(
        select(RejectedInstance).where(
            RejectedInstance.partition == partition, RejectedInstance.SOPInstanceUID == sop_instance_uid
        )
    )


def make_rejection_note(
    title: RejectionTitle,
    references: list[Reference],
    *,
    patient_id: str = "",
    patient_name: str = "",
    manufacturer: str = "imaging-archive",
) -> Dataset:
    """A Key Object Selection document (TID 2010) rejecting `references` (all of one study) with `title`:
    what the archive sends a DIMSE peer to have it delete what it received (imaging.sharing), and what
    tests send the archive."""
    if not references or len({r.StudyInstanceUID for r in references}) != 1:
        raise ValueError("a rejection note references instances of one study")
    now = dt.datetime.now(dt.UTC)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(KEY_OBJECT_SELECTION)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = KEY_OBJECT_SELECTION
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "", ""
    ds.StudyInstanceUID = references[0].StudyInstanceUID
    ds.StudyDate = ds.StudyTime = ds.ReferringPhysicianName = ds.StudyID = ds.AccessionNumber = ""
    ds.Modality = "KO"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9999
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.Manufacturer = manufacturer
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = [_code(title.value, TITLE_NAMES[title])]
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "2010"
    ds.ContentTemplateSequence = [template]
    by_series: dict[str, list[Reference]] = {}
    for ref in references:
        by_series.setdefault(ref.SeriesInstanceUID, []).append(ref)
    study = Dataset()
    study.StudyInstanceUID = references[0].StudyInstanceUID
    study.ReferencedSeriesSequence = []
    for series_uid, refs in by_series.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.ReferencedSOPSequence = [_sop(ref) for ref in refs]
        study.ReferencedSeriesSequence.append(series)
    ds.CurrentRequestedProcedureEvidenceSequence = [study]
    content = []
    for ref in references:
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "IMAGE" if "Image" in UID(ref.SOPClassUID).name else "COMPOSITE"
        item.ReferencedSOPSequence = [_sop(ref)]
        content.append(item)
    ds.ContentSequence = content
    return ds


def _code(value: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, "DCM", meaning
    return code


def _sop(ref: Reference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ref.SOPClassUID, ref.SOPInstanceUID
    return item
