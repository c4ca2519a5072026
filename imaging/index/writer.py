"""Record one stored instance in the index: patient → study → series → instance, counters, change log."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, insert, literal_column, select, update
from sqlalchemy.orm import Session

from imaging.config import OverwritePolicy
from imaging.errors import DuplicateConflict
from imaging.events import ChangeKind
from imaging.index.attributes import INSTANCE_KEYS, PATIENT_KEYS, SERIES_KEYS, STUDY_KEYS
from imaging.index.extract import ParsedInstance
from imaging.index.prepared import Prepared
from imaging.index.rejection import KEY_OBJECT_SELECTION, apply_rejection, refuse_rejected, rejection_note
from imaging.index.schema import ChangeLog, Instance, Patient, Series, StorageEvent, Study, utcnow
from imaging.storage.base import StoredObject


class Disposition(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # identical bytes already stored: success, nothing rewritten
    OVERWRITTEN = "overwritten"
    REJECTION_NOTE = (
        "rejection-note"  # an IOCM rejection note: its instances rejected (imaging.index.rejection)
    )


@dataclass(frozen=True)
class Recorded:
    disposition: Disposition
    old_key: str = ""  # object no longer referenced after an overwrite


def _multi_add(current: str, value: str) -> str:
    values = [v for v in current.split("\\") if v]
    if value and value not in values:
        values.append(value)
    return "\\".join(sorted(values))


# SQLAlchemy Core statements with bound parameters, compiled once per dialect and run on the DBAPI cursor
# (imaging.index.prepared.Prepared): per new instance of a known series one indexed lookup and four writes, no
# ORM unit of work and no per-statement Connection.execute (~0.1 ms of Python each).
_P, _S, _SE, _I = (cast(Table, m.__table__) for m in (Patient, Study, Series, Instance))
_EVENT, _CHANGE = cast(Table, StorageEvent.__table__), cast(Table, ChangeLog.__table__)
_PATIENT_COLUMNS = (_P.c.patient_pk, *(_P.c[k] for k in PATIENT_KEYS))
_PATIENT_MATCH = (
    (_P.c.partition == bindparam("p_partition"))
    & (_P.c.PatientID == bindparam("p_id"))
    & (_P.c.IssuerOfPatientID == bindparam("p_issuer"))
)
_PATIENT_SELECT = Prepared(select(*_PATIENT_COLUMNS).where(_PATIENT_MATCH))
# One row, whatever exists: the study with, when they exist, the series and the study's patient if it is the one
# the received PatientID and issuer name (else that patient is looked up on its own, as for a new study), and
# the instance stored under the SOP Instance UID anywhere in the partition (a UID names one instance in its
# partition, in whichever series it was first sent). A known study takes one lookup instead of four.
_ANCHOR = select(literal_column("1").label("anchor")).subquery("anchor")
_STUDY_SELECT = Prepared(
    select(
        _S.c.study_pk,
        _S.c.ModalitiesInStudy,
        _S.c.SOPClassesInStudy,
        *(_S.c[k] for k in STUDY_KEYS),
        _SE.c.series_pk,
        _I.c.instance_pk,
        _I.c.object_key,
        _I.c.series_pk.label("instance_series_pk"),
        *_PATIENT_COLUMNS,
    ).select_from(
        _ANCHOR.outerjoin(
            _S, (_S.c.partition == bindparam("p_partition")) & (_S.c.StudyInstanceUID == bindparam("p_uid"))
        )
        .outerjoin(
            _SE, (_SE.c.study_pk == _S.c.study_pk) & (_SE.c.SeriesInstanceUID == bindparam("p_series_uid"))
        )
        .outerjoin(_P, (_P.c.patient_pk == _S.c.patient_pk) & _PATIENT_MATCH)
        .outerjoin(
            _I, (_I.c.partition == bindparam("p_partition")) & (_I.c.SOPInstanceUID == bindparam("p_sop"))
        )
    )
)
_SERIES_TOUCH = Prepared(
    update(_SE)
    .where(_SE.c.series_pk == bindparam("p_series"))
    .values(
        last_received_at=bindparam("p_now"),
        stable=False,
        NumberOfSeriesRelatedInstances=_SE.c.NumberOfSeriesRelatedInstances + bindparam("p_new"),
    )
)
# The usual study update (counters, not stable); other changes (modalities, SOP classes, attributes a first
# instance left empty) take a statement built for them.
_STUDY_TOUCH = Prepared(
    update(_S)
    .where(_S.c.study_pk == bindparam("p_study"))
    .values(
        stable=False,
        updated_at=bindparam("p_now"),
        NumberOfStudyRelatedSeries=_S.c.NumberOfStudyRelatedSeries + bindparam("p_new_series"),
        NumberOfStudyRelatedInstances=_S.c.NumberOfStudyRelatedInstances + bindparam("p_new_instances"),
    )
)
_INSERT = {t.name: Prepared(insert(t)) for t in (_P, _S, _SE, _I, _EVENT, _CHANGE)}


def _differs(row: Any, keys: tuple[str, ...], attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: attributes[k] for k in keys if getattr(row, k) != attributes[k]}


def _touch_study(
    conn: Connection, study_pk: int, now: Any, changed: dict[str, Any], series: int, instances: int
) -> None:
    if changed:
        counters = {
            "NumberOfStudyRelatedSeries": _S.c.NumberOfStudyRelatedSeries + series,
            "NumberOfStudyRelatedInstances": _S.c.NumberOfStudyRelatedInstances + instances,
        }
        values = {"stable": False, "updated_at": now, **counters, **changed}
        conn.execute(update(_S).where(_S.c.study_pk == study_pk).values(**values))
    else:
        _STUDY_TOUCH.execute(
            conn, {"p_study": study_pk, "p_now": now, "p_new_series": series, "p_new_instances": instances}
        )


def record_instance(
    db: Session | Connection,
    parsed: ParsedInstance,
    stored: StoredObject,
    *,
    partition: str,
    policy: OverwritePolicy,
    source: str = "",
) -> Recorded:
    a = parsed.attributes
    if a["SOPClassUID"] == KEY_OBJECT_SELECTION and (note := rejection_note(parsed.dataset)) is not None:
        if isinstance(db, Session):
            apply_rejection(db, note, note_key=stored.key, partition=partition, user=source or "system")
        else:
            with Session(bind=db, join_transaction_mode="create_savepoint") as session:
                apply_rejection(
                    session, note, note_key=stored.key, partition=partition, user=source or "system"
                )
                session.commit()  # releases the savepoint; the caller's transaction commits it all
        return Recorded(Disposition.REJECTION_NOTE)
    conn = db if isinstance(db, Connection) else db.connection()
    now = utcnow()

    match = {
        "p_partition": partition,
        "p_id": a["PatientID"],
        "p_issuer": a["IssuerOfPatientID"],
        "p_uid": a["StudyInstanceUID"],
        "p_series_uid": a["SeriesInstanceUID"],
        "p_sop": a["SOPInstanceUID"],
    }
    study = _STUDY_SELECT.first(conn, match)
    old_key = ""
    if study.instance_pk is not None and study.instance_series_pk != study.series_pk:
        # The UID is stored in another series or study of the partition: the same instance sent again
        # elsewhere. `reject` keeps the first; `overwrite` moves it (the old row goes, the new one is added).
        if policy is OverwritePolicy.REJECT:
            raise DuplicateConflict("a different object is already stored under this SOP Instance UID")
        old_key = str(study.object_key)
        _remove_instance(conn, study.instance_pk, study.instance_series_pk, now)
        study = _STUDY_SELECT.first(conn, match)  # the old series or study may be gone now
    # The study's patient when it is the received one; else found by (partition, ID, issuer) on its own.
    patient = study if study.patient_pk is not None else _PATIENT_SELECT.first(conn, match)
    if patient is None:
        patient_pk = _INSERT[_P.name].insert(
            conn, {"partition": partition, **{k: a[k] for k in PATIENT_KEYS}}
        )
    else:
        patient_pk = patient.patient_pk
        changed = _differs(patient, PATIENT_KEYS, a)
        if changed:
            conn.execute(update(_P).where(_P.c.patient_pk == patient_pk).values(**changed))

    study_changes: dict[str, Any] = {}
    series_pk = existing_pk = existing_key = None
    if study.study_pk is None:
        study_pk = _INSERT[_S.name].insert(
            conn,
            {
                "partition": partition,
                "patient_pk": patient_pk,
                "ModalitiesInStudy": "",
                "SOPClassesInStudy": "",
                "NumberOfStudyRelatedSeries": 0,
                "NumberOfStudyRelatedInstances": 0,
                **{k: a[k] for k in STUDY_KEYS},
            },
        )
        modalities = sop_classes = ""
    else:
        study_pk, series_pk = study.study_pk, study.series_pk
        existing_pk, existing_key = study.instance_pk, study.object_key
        modalities, sop_classes = study.ModalitiesInStudy, study.SOPClassesInStudy
        # Fill study attributes a first instance left empty; never let a later instance blank them.
        for key in STUDY_KEYS:
            if a[key] and not getattr(study, key):
                study_changes[key] = a[key]

    new_series = 0
    if series_pk is None:
        series_pk = _INSERT[_SE.name].insert(
            conn,
            {
                "study_pk": study_pk,
                "NumberOfSeriesRelatedInstances": 0,
                "last_received_at": now,
                "stable": False,
                **{k: a[k] for k in SERIES_KEYS},
            },
        )
        new_series = 1
        new_modalities = _multi_add(modalities, str(a["Modality"] or ""))
        if new_modalities != modalities:
            study_changes["ModalitiesInStudy"] = new_modalities

    kind = ChangeKind.INSTANCE_OVERWRITTEN if old_key else ChangeKind.INSTANCE_STORED
    if existing_pk is not None:
        _SERIES_TOUCH.execute(conn, {"p_series": series_pk, "p_now": now, "p_new": 0})
        _touch_study(conn, study_pk, now, study_changes, new_series, 0)
        if existing_key == stored.key:
            _INSERT[_EVENT.name].execute(
                conn,
                {
                    "kind": "duplicate",
                    "SOPInstanceUID": a["SOPInstanceUID"],
                    "new_key": stored.key,
                    "source": source,
                },
            )
            return Recorded(Disposition.DUPLICATE)
        if policy is OverwritePolicy.REJECT:
            raise DuplicateConflict("a different object is already stored under this SOP Instance UID")
        old_key = str(existing_key)
        _INSERT[_EVENT.name].execute(
            conn,
            {
                "kind": "overwritten",
                "SOPInstanceUID": a["SOPInstanceUID"],
                "old_key": old_key,
                "new_key": stored.key,
                "source": source,
            },
        )
        conn.execute(
            update(_I).where(_I.c.instance_pk == existing_pk).values(**_instance_values(parsed, stored, now))
        )
        kind = ChangeKind.INSTANCE_OVERWRITTEN
    else:
        refuse_rejected(conn, partition, a["SOPInstanceUID"])  # IOCM: a rejected instance stays out
        if old_key:
            _INSERT[_EVENT.name].execute(
                conn,
                {
                    "kind": "overwritten",
                    "SOPInstanceUID": a["SOPInstanceUID"],
                    "old_key": old_key,
                    "new_key": stored.key,
                    "source": source,
                },
            )
        _INSERT[_I.name].execute(
            conn, {"series_pk": series_pk, "partition": partition, **_instance_values(parsed, stored, now)}
        )
        _SERIES_TOUCH.execute(conn, {"p_series": series_pk, "p_now": now, "p_new": 1})
        new_classes = _multi_add(sop_classes, str(a["SOPClassUID"]))
        if new_classes != sop_classes:
            study_changes["SOPClassesInStudy"] = new_classes
        _touch_study(conn, study_pk, now, study_changes, new_series, 1)
    _INSERT[_CHANGE.name].execute(
        conn,
        {
            "kind": kind,
            "partition": partition,
            "StudyInstanceUID": a["StudyInstanceUID"],
            "SeriesInstanceUID": a["SeriesInstanceUID"],
            "SOPInstanceUID": a["SOPInstanceUID"],
        },
    )
    return Recorded(Disposition.OVERWRITTEN if old_key else Disposition.STORED, old_key)


def _remove_instance(conn: Connection, instance_pk: int, series_pk: int, now: Any) -> None:
    """Take an instance out of its series (an overwrite that moves it): counters and computed study
    attributes follow, an emptied series, study and patient go, and the change log says so. Rare: plain
    statements."""
    old = conn.execute(
        select(
            _SE.c.SeriesInstanceUID,
            _SE.c.NumberOfSeriesRelatedInstances,
            _S.c.study_pk,
            _S.c.StudyInstanceUID,
            _S.c.partition,
            _S.c.patient_pk,
            _I.c.SOPInstanceUID,
        )
        .select_from(
            _I.join(_SE, _SE.c.series_pk == _I.c.series_pk).join(_S, _S.c.study_pk == _SE.c.study_pk)
        )
        .where(_I.c.instance_pk == instance_pk)
    ).one()
    conn.execute(delete(_I).where(_I.c.instance_pk == instance_pk))
    series_gone = old.NumberOfSeriesRelatedInstances <= 1
    if series_gone:
        conn.execute(delete(_SE).where(_SE.c.series_pk == series_pk))
    else:
        conn.execute(
            update(_SE)
            .where(_SE.c.series_pk == series_pk)
            .values(
                stable=False,
                last_received_at=now,
                NumberOfSeriesRelatedInstances=_SE.c.NumberOfSeriesRelatedInstances - 1,
            )
        )
    remaining = conn.execute(
        select(_SE.c.Modality, _I.c.SOPClassUID)
        .select_from(_SE.join(_I, _I.c.series_pk == _SE.c.series_pk))
        .where(_SE.c.study_pk == old.study_pk)
    ).all()
    if remaining:
        conn.execute(
            update(_S)
            .where(_S.c.study_pk == old.study_pk)
            .values(
                stable=False,
                updated_at=now,
                NumberOfStudyRelatedSeries=_S.c.NumberOfStudyRelatedSeries - int(series_gone),
                NumberOfStudyRelatedInstances=_S.c.NumberOfStudyRelatedInstances - 1,
                ModalitiesInStudy="\\".join(sorted({m for m, _ in remaining if m})),
                SOPClassesInStudy="\\".join(sorted({c for _, c in remaining if c})),
            )
        )
    else:
        conn.execute(delete(_S).where(_S.c.study_pk == old.study_pk))
        others = select(_S.c.study_pk).where(_S.c.patient_pk == old.patient_pk).limit(1)
        if conn.execute(others).first() is None:
            conn.execute(delete(_P).where(_P.c.patient_pk == old.patient_pk))
    conn.execute(
        insert(_CHANGE).values(
            kind=ChangeKind.INSTANCE_DELETED,
            partition=old.partition,
            StudyInstanceUID=old.StudyInstanceUID,
            SeriesInstanceUID=old.SeriesInstanceUID,
            SOPInstanceUID=old.SOPInstanceUID,
            created_at=now,
        )
    )


def _instance_values(parsed: ParsedInstance, stored: StoredObject, now: Any) -> dict[str, Any]:
    a = parsed.attributes
    return {
        **{k: a[k] for k in INSTANCE_KEYS},
        "TransferSyntaxUID": parsed.transfer_syntax,
        "object_key": stored.key,
        "size": stored.size,
        "metadata_json": parsed.metadata_json,
        "pixel_offset": parsed.pixel_offset,
        "pixel_length": parsed.pixel_length,
        "received_at": now,
    }


def record_rejection(db: Session | Connection, sop_instance_uid: str, key: str, source: str) -> None:
    conn = db if isinstance(db, Connection) else db.connection()
    values = {"kind": "rejected", "SOPInstanceUID": sop_instance_uid, "new_key": key, "source": source}
    _INSERT[_EVENT.name].execute(conn, values)


def key_referenced(session: Session, key: str) -> bool:
    return (
        session.scalars(select(Instance.instance_pk).where(Instance.object_key == key).limit(1)).first()
        is not None
    )
