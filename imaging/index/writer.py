"""Record one stored instance in the index: patient → study → series → instance, counters, change log."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging.config import OverwritePolicy
from imaging.errors import DuplicateConflict
from imaging.events import ChangeKind
from imaging.index.attributes import INSTANCE_KEYS, PATIENT_KEYS, SERIES_KEYS, STUDY_KEYS
from imaging.index.extract import ParsedInstance
from imaging.index.schema import ChangeLog, Instance, Patient, Series, StorageEvent, Study, utcnow
from imaging.storage.base import StoredObject


class Disposition(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # identical bytes already stored: success, nothing rewritten
    OVERWRITTEN = "overwritten"


@dataclass(frozen=True)
class Recorded:
    disposition: Disposition
    old_key: str = ""  # object no longer referenced after an overwrite


def _assign(row: object, keys: tuple[str, ...], attributes: dict[str, object]) -> None:
    for key in keys:
        setattr(row, key, attributes[key])


def _multi_add(current: str, value: str) -> str:
    values = [v for v in current.split("\\") if v]
    if value and value not in values:
        values.append(value)
    return "\\".join(sorted(values))


def record_instance(
    session: Session,
    parsed: ParsedInstance,
    stored: StoredObject,
    *,
    partition: str,
    policy: OverwritePolicy,
    source: str = "",
) -> Recorded:
    a = parsed.attributes
    patient = session.scalars(
        select(Patient).where(
            Patient.partition == partition,
            Patient.PatientID == a["PatientID"],
            Patient.IssuerOfPatientID == a["IssuerOfPatientID"],
        )
    ).one_or_none()
    if patient is None:
        patient = Patient(partition=partition)
        session.add(patient)
    _assign(patient, PATIENT_KEYS, a)

    study = session.scalars(
        select(Study).where(Study.partition == partition, Study.StudyInstanceUID == a["StudyInstanceUID"])
    ).one_or_none()
    if study is None:
        study = Study(partition=partition, patient=patient, ModalitiesInStudy="", SOPClassesInStudy="")
        study.NumberOfStudyRelatedSeries = 0
        study.NumberOfStudyRelatedInstances = 0
        session.add(study)
        _assign(study, STUDY_KEYS, a)
    else:
        # Fill study attributes a first instance left empty; never let a later instance blank them.
        for key in STUDY_KEYS:
            if a[key] and not getattr(study, key):
                setattr(study, key, a[key])
    session.flush()

    series = session.scalars(
        select(Series).where(
            Series.study_pk == study.study_pk, Series.SeriesInstanceUID == a["SeriesInstanceUID"]
        )
    ).one_or_none()
    if series is None:
        series = Series(study=study, NumberOfSeriesRelatedInstances=0)
        session.add(series)
        _assign(series, SERIES_KEYS, a)
        study.NumberOfStudyRelatedSeries += 1
        study.ModalitiesInStudy = _multi_add(study.ModalitiesInStudy, str(a["Modality"] or ""))
        session.flush()
    now = utcnow()
    series.last_received_at = now
    series.stable = False
    study.stable = False
    study.updated_at = now

    existing = session.scalars(
        select(Instance).where(
            Instance.series_pk == series.series_pk, Instance.SOPInstanceUID == a["SOPInstanceUID"]
        )
    ).one_or_none()
    kind = ChangeKind.INSTANCE_STORED
    old_key = ""
    if existing is not None:
        if existing.object_key == stored.key:
            session.add(
                StorageEvent(
                    kind="duplicate", SOPInstanceUID=a["SOPInstanceUID"], new_key=stored.key, source=source
                )
            )
            return Recorded(Disposition.DUPLICATE)
        if policy is OverwritePolicy.REJECT:
            raise DuplicateConflict("a different object is already stored under this SOP Instance UID")
        old_key = existing.object_key
        session.add(
            StorageEvent(
                kind="overwritten",
                SOPInstanceUID=a["SOPInstanceUID"],
                old_key=old_key,
                new_key=stored.key,
                source=source,
            )
        )
        instance = existing
        kind = ChangeKind.INSTANCE_OVERWRITTEN
    else:
        instance = Instance(series=series)
        session.add(instance)
        series.NumberOfSeriesRelatedInstances += 1
        study.NumberOfStudyRelatedInstances += 1
        study.SOPClassesInStudy = _multi_add(study.SOPClassesInStudy, str(a["SOPClassUID"]))

    _assign(instance, INSTANCE_KEYS, a)
    instance.TransferSyntaxUID = parsed.transfer_syntax
    instance.object_key = stored.key
    instance.size = stored.size
    instance.metadata_json = parsed.metadata_json
    instance.pixel_offset = parsed.pixel_offset
    instance.pixel_length = parsed.pixel_length
    instance.received_at = now
    session.add(
        ChangeLog(
            kind=kind,
            partition=partition,
            StudyInstanceUID=a["StudyInstanceUID"],
            SeriesInstanceUID=a["SeriesInstanceUID"],
            SOPInstanceUID=a["SOPInstanceUID"],
        )
    )
    return Recorded(Disposition.OVERWRITTEN if old_key else Disposition.STORED, old_key)


def record_rejection(session: Session, sop_instance_uid: str, key: str, source: str) -> None:
    session.add(StorageEvent(kind="rejected", SOPInstanceUID=sop_instance_uid, new_key=key, source=source))


def key_referenced(session: Session, key: str) -> bool:
    return (
        session.scalars(select(Instance.instance_pk).where(Instance.object_key == key).limit(1)).first()
        is not None
    )
