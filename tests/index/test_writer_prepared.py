"""record_instance runs its statements on the DBAPI cursor (imaging.index.prepared.Prepared): every row it writes
must be exactly what the previous path, the same Core statements through Connection.execute, wrote. (The
reference writes the instance's partition, which the index has held since issue 12; the scenario re-sends no
UID in another series, where the rules differ: tests/index/test_sop_instance_unique.py.)"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid
from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imaging import orm
from imaging.config import OverwritePolicy
from imaging.errors import DuplicateConflict
from imaging.events import ChangeKind
from imaging.index import writer
from imaging.index.attributes import PATIENT_KEYS, SERIES_KEYS, STUDY_KEYS
from imaging.index.db import Database
from imaging.index.extract import ParsedInstance, parse
from imaging.index.prepared import Prepared
from imaging.index.schema import ChangeLog, Instance, Patient, Series, StorageEvent, Study, utcnow
from imaging.index.writer import Disposition, Recorded, record_instance, record_rejection
from imaging.storage.base import StoredObject
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from tests.archive_fixtures import _empty_postgres

_P, _S, _SE, _I = (cast(Table, m.__table__) for m in (Patient, Study, Series, Instance))
_EVENT, _CHANGE = cast(Table, StorageEvent.__table__), cast(Table, ChangeLog.__table__)
TABLES = (_P, _S, _SE, _I, _EVENT, _CHANGE)


# ------------------------------------------------------------------ the previous path, kept as reference
_OLD_SE_MATCH = _SE.join(
    _I, (_I.c.series_pk == _SE.c.series_pk) & (_I.c.SOPInstanceUID == bindparam("p_sop")), isouter=True
)
_OLD_STUDY_SELECT = (
    select(
        _S.c.study_pk,
        _S.c.ModalitiesInStudy,
        _S.c.SOPClassesInStudy,
        *(_S.c[k] for k in STUDY_KEYS),
        _SE.c.series_pk,
        _I.c.instance_pk,
        _I.c.object_key,
    )
    .select_from(
        _S.outerjoin(
            _OLD_SE_MATCH,
            (_SE.c.study_pk == _S.c.study_pk) & (_SE.c.SeriesInstanceUID == bindparam("p_series_uid")),
        )
    )
    .where(_S.c.partition == bindparam("p_partition"), _S.c.StudyInstanceUID == bindparam("p_uid"))
)


def _old_insert_pk(conn: Connection, table: Table, values: dict[str, Any]) -> int:
    key = conn.execute(insert(table), values).inserted_primary_key
    assert key is not None
    return int(key[0])


def _old_touch_study(
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
        params = {"p_study": study_pk, "p_now": now, "p_new_series": series, "p_new_instances": instances}
        conn.execute(writer._STUDY_TOUCH.statement, params)


def previous_record_instance(
    db: Session | Connection,
    parsed: ParsedInstance,
    stored: StoredObject,
    *,
    partition: str,
    policy: OverwritePolicy,
    source: str = "",
) -> Recorded:
    """record_instance as it was before Prepared: Connection.execute, patient looked up on its own."""
    a = parsed.attributes
    conn = db if isinstance(db, Connection) else db.connection()
    now = utcnow()
    patient = conn.execute(
        writer._PATIENT_SELECT.statement,
        {"p_partition": partition, "p_id": a["PatientID"], "p_issuer": a["IssuerOfPatientID"]},
    ).first()
    if patient is None:
        patient_pk = _old_insert_pk(conn, _P, {"partition": partition, **{k: a[k] for k in PATIENT_KEYS}})
    else:
        patient_pk = patient.patient_pk
        changed = writer._differs(patient, PATIENT_KEYS, a)
        if changed:
            conn.execute(update(_P).where(_P.c.patient_pk == patient_pk).values(**changed))
    study = conn.execute(
        _OLD_STUDY_SELECT,
        {
            "p_partition": partition,
            "p_uid": a["StudyInstanceUID"],
            "p_series_uid": a["SeriesInstanceUID"],
            "p_sop": a["SOPInstanceUID"],
        },
    ).first()
    study_changes: dict[str, Any] = {}
    series_pk = existing_pk = existing_key = None
    if study is None:
        study_pk = _old_insert_pk(
            conn,
            _S,
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
        for key in STUDY_KEYS:
            if a[key] and not getattr(study, key):
                study_changes[key] = a[key]
    new_series = 0
    if series_pk is None:
        series_pk = _old_insert_pk(
            conn,
            _SE,
            {
                "study_pk": study_pk,
                "NumberOfSeriesRelatedInstances": 0,
                "last_received_at": now,
                "stable": False,
                **{k: a[k] for k in SERIES_KEYS},
            },
        )
        new_series = 1
        new_modalities = writer._multi_add(modalities, str(a["Modality"] or ""))
        if new_modalities != modalities:
            study_changes["ModalitiesInStudy"] = new_modalities
    kind = ChangeKind.INSTANCE_STORED
    old_key = ""
    touch_series = writer._SERIES_TOUCH.statement
    if existing_pk is not None:
        conn.execute(touch_series, {"p_series": series_pk, "p_now": now, "p_new": 0})
        _old_touch_study(conn, study_pk, now, study_changes, new_series, 0)
        if existing_key == stored.key:
            conn.execute(
                insert(_EVENT),
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
        conn.execute(
            insert(_EVENT),
            {
                "kind": "overwritten",
                "SOPInstanceUID": a["SOPInstanceUID"],
                "old_key": old_key,
                "new_key": stored.key,
                "source": source,
            },
        )
        conn.execute(
            update(_I)
            .where(_I.c.instance_pk == existing_pk)
            .values(**writer._instance_values(parsed, stored, now))
        )
        kind = ChangeKind.INSTANCE_OVERWRITTEN
    else:
        conn.execute(
            insert(_I),
            {"series_pk": series_pk, "partition": partition, **writer._instance_values(parsed, stored, now)},
        )
        conn.execute(touch_series, {"p_series": series_pk, "p_now": now, "p_new": 1})
        new_classes = writer._multi_add(sop_classes, str(a["SOPClassUID"]))
        if new_classes != sop_classes:
            study_changes["SOPClassesInStudy"] = new_classes
        _old_touch_study(conn, study_pk, now, study_changes, new_series, 1)
    conn.execute(
        insert(_CHANGE),
        {
            "kind": kind,
            "partition": partition,
            "StudyInstanceUID": a["StudyInstanceUID"],
            "SeriesInstanceUID": a["SeriesInstanceUID"],
            "SOPInstanceUID": a["SOPInstanceUID"],
        },
    )
    return Recorded(Disposition.OVERWRITTEN if old_key else Disposition.STORED, old_key)


# ------------------------------------------------------------------ the scenario
class _Clock:
    """A clock that ticks one microsecond per reading: both paths must read it in the same order."""

    def __init__(self) -> None:
        self.ticks = 0

    def now(self, tz: dt.tzinfo | None = None) -> dt.datetime:
        self.ticks += 1
        return dt.datetime(2024, 3, 15, 10, 0, tzinfo=tz) + dt.timedelta(microseconds=self.ticks)


def _parsed(ds: Any) -> ParsedInstance:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return parse(buffer.getvalue())


def _with(parsed: ParsedInstance, **attributes: Any) -> ParsedInstance:
    return dataclasses.replace(parsed, attributes={**parsed.attributes, **attributes})


def _stored(n: int) -> StoredObject:
    return StoredObject(f"clinical/{n:064x}", 1000 + n, True)


Step = tuple[ParsedInstance, StoredObject, str, OverwritePolicy]


def _steps() -> list[Step]:
    study = SyntheticStudy(patient=synthetic_patient(7))
    ct = [_parsed(ds) for ds in ct_series(study, 3, rows=8, columns=8)]
    ot_ds = next(ct_series(study, 1, series_number=2, rows=8, columns=8, modality="OT"))
    ot_ds.SOPClassUID = ot_ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ot = _parsed(ot_ds)
    bare = SyntheticStudy(patient=synthetic_patient(8), AccessionNumber="", StudyDescription="", StudyDate="")
    late = [_parsed(ds) for ds in ct_series(bare, 2, rows=8, columns=8)]
    other = [_parsed(ds) for ds in ct_series(SyntheticStudy(patient=synthetic_patient(9)), 1, rows=8)]
    reject, overwrite = OverwritePolicy.REJECT, OverwritePolicy.OVERWRITE
    return [
        (ct[0], _stored(1), "clinical", reject),  # new patient, study, series
        (ct[1], _stored(2), "clinical", reject),  # known series
        (_with(ct[2], SeriesNumber=None, Rows=None), _stored(3), "clinical", reject),  # NULLs
        (ot, _stored(4), "clinical", reject),  # new series: new modality and SOP class
        (ct[1], _stored(2), "clinical", reject),  # duplicate, identical bytes
        (ct[1], _stored(5), "clinical", reject),  # conflict: refused
        (ct[1], _stored(6), "clinical", overwrite),  # overwritten
        (late[0], _stored(7), "clinical", reject),  # a study without accession, description, date
        # ... which a later instance fills in, and that one renames the patient
        (
            _with(
                late[1],
                AccessionNumber="ACC9",
                StudyDescription="LATE",
                StudyDate="20240316",
                PatientName="RENAMED^PATIENT",
            ),
            _stored(8),
            "clinical",
            reject,
        ),
        # a known study received under another patient ID, then another issuer: each a patient of its own
        (
            _with(ct[0], PatientID="OTHER", SOPInstanceUID=generate_uid()),
            _stored(9),
            "clinical",
            reject,
        ),
        (
            _with(ct[0], IssuerOfPatientID="ISS", SOPInstanceUID=generate_uid()),
            _stored(10),
            "clinical",
            reject,
        ),
        (ct[0], _stored(11), "research-1", reject),  # same UIDs, other partition
        (other[0], _stored(12), "clinical", reject),
    ]


Record = Callable[..., Recorded]
Reject = Callable[[Any, str, str, str], None]


def _previous_rejection(conn: Connection, sop_instance_uid: str, key: str, source: str) -> None:
    values = {"kind": "rejected", "SOPInstanceUID": sop_instance_uid, "new_key": key, "source": source}
    conn.execute(insert(_EVENT), values)


def _run(db: Database, record: Record, reject: Reject, steps: list[Step]) -> list[Any]:
    """The steps as the ingest path takes them: a group commit (a savepoint each), single transactions, and
    a Session (reindex)."""
    outcomes: list[Any] = []

    def one(handle: Any, step: Step) -> Any:
        parsed, stored, partition, policy = step
        return record(handle, parsed, stored, partition=partition, policy=policy, source="SCU")

    with db.write_connection() as conn:
        for step in steps[:7]:
            try:
                with conn.begin_nested():
                    outcomes.append(one(conn, step))
            except DuplicateConflict:
                with conn.begin_nested():
                    reject(conn, step[0].sop_instance_uid, step[1].key, "SCU")
                outcomes.append("rejected")
    with db.write_connection() as conn:  # the stability job's doing: a new instance must clear it
        conn.execute(update(_SE).values(stable=True))
        conn.execute(update(_S).values(stable=True))
    for step in steps[7:11]:
        outcomes.append(db.core_transaction(lambda conn, s=step: one(conn, s)))
    for step in steps[11:]:
        outcomes.append(db.transaction(lambda session, s=step: one(session, s)))
    return outcomes


def _dump(db: Database) -> dict[str, list[str]]:
    """Every row as the driver returns it (SQLite: timestamps as stored text, booleans as integers)."""
    rows = {}
    with db.write_engine.connect() as conn:
        cursor = conn.connection.cursor()
        for table in TABLES:
            cursor.execute(
                f"SELECT * FROM {table.name} ORDER BY {table.primary_key.columns.values()[0].name}"
            )
            rows[table.name] = [
                repr(tuple(bytes(v) if isinstance(v, memoryview) else v for v in row))
                for row in cursor.fetchall()
            ]
    return rows


@pytest.fixture
def fresh_db(db_url: str, tmp_path: Path) -> Iterator[Callable[[], Database]]:
    """Factory: an empty, migrated index (SQLite in tmp_path, or the session's PostgreSQL emptied)."""
    opened: list[Database] = []

    def factory() -> Database:
        if db_url:
            _empty_postgres(db_url)
            db = Database(db_url)
        else:
            db = Database(f"sqlite:///{tmp_path}/index{len(opened)}.db")
            db.migrate()
        opened.append(db)
        return db

    yield factory
    for db in opened:
        db.dispose()


def test_rows_match_the_previous_path(
    fresh_db: Callable[[], Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = _steps()
    outcomes, dumps, ticks = [], [], []
    for record, reject in (
        (previous_record_instance, _previous_rejection),
        (record_instance, record_rejection),
    ):
        clock = _Clock()
        monkeypatch.setattr(orm, "dt", SimpleNamespace(datetime=clock, UTC=dt.UTC))  # utcnow reads it
        db = fresh_db()
        outcomes.append(_run(db, record, reject, steps))
        dumps.append(_dump(db))
        ticks.append(clock.ticks)
    assert outcomes[0] == outcomes[1]
    assert ticks[0] == ticks[1]  # column defaults read the clock as SQLAlchemy did
    for table in dumps[0]:
        assert dumps[1][table] == dumps[0][table], table
    # The scenario covered what it says.
    assert [o if isinstance(o, str) else o.disposition for o in outcomes[1][3:7]] == [
        Disposition.STORED,
        Disposition.DUPLICATE,
        "rejected",
        Disposition.OVERWRITTEN,
    ]
    counts = {table: len(rows) for table, rows in dumps[1].items()}
    assert counts == {
        "patient": 6,
        "study": 4,
        "series": 5,
        "instance": 10,
        "storage_event": 3,
        "change_log": 11,
    }


def test_prepared_errors_and_autobegin(fresh_db: Callable[[], Database]) -> None:
    db = fresh_db()
    add = Prepared(insert(_P))
    values = {"partition": "clinical", "PatientID": "X", "IssuerOfPatientID": ""}
    with db.write_connection() as conn:
        first = add.insert(conn, values)
        # A DBAPI error is SQLAlchemy's (the retries and the group commit rely on it); the savepoint's
        # rollback leaves the transaction usable.
        with pytest.raises(IntegrityError), conn.begin_nested():
            add.insert(conn, values)
        assert Prepared(select(_P.c.patient_pk)).first(conn, {}) == (first,)
    with db.write_engine.connect() as conn:  # no transaction yet: begun as Connection.execute would
        add.insert(conn, {**values, "PatientID": "Y"})
        assert conn.in_transaction()
        conn.rollback()
    with db.write_engine.connect() as conn:
        assert conn.execute(select(_P.c.PatientID)).scalars().all() == ["X"]
