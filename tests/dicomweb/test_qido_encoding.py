"""QIDO answers are written as JSON text by precompiled per-request plans (dicomweb.routes.qido.Plan,
dicomweb.dicom_json.element_encoder). These tests hold them to the straightforward reference: one dict per
match built with `element()`, keys sorted, `json.dumps` — byte for byte, over the seeded archive plus rows
with awkward values inserted straight into the index (PN component groups, empty and multi-valued values,
quotes, backslashes, control and non-ASCII characters, NULL integers, triage priorities).
"""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import insert, update
from sqlalchemy.orm import Session
from starlette.requests import Request

from dicomweb.deps import Context
from dicomweb.dicom_json import (
    column_encoder,
    dumps,
    dumps_text,
    element,
    element_encoder,
    resolve,
    tag_key,
    vr_of,
)
from dicomweb.routes import qido
from imaging.access import Principal
from imaging.index.attributes import Level
from imaging.index.extract import metadata_dict
from imaging.index.query import Match, Query, count, find, representative_metadata
from imaging.index.schema import Instance, Patient, Series, Study
from tests.dicomweb.conftest import Seeded

# ------------------------------------------------------------------------------- the reference answer
_ROW_ATTR = {Patient: "patient", Study: "study", Series: "series", Instance: "instance"}


def reference_plan(keys: list[str], level: Level) -> list[tuple[str, str, str, str | None]]:
    models = {Level.STUDY: (Study, Patient), Level.SERIES: (Series, Study, Patient)}.get(
        level, (Instance, Series, Study, Patient)
    )
    plan = []
    for keyword in keys:
        tag, _ = resolve(keyword)
        holder = next((_ROW_ATTR[m] for m in models if keyword in qido._MODEL_COLUMNS[m]), None)
        if keyword in qido._COMPUTED:
            holder = "computed"
        plan.append((tag_key(tag), vr_of(tag), keyword, holder))
    return plan


def reference_answer(
    session: Session,
    ctx: Context,
    match: Match,
    level: Level,
    plan: list[tuple[str, str, str, str | None]],
    include_all: bool,
) -> bytes:
    body: dict[str, Any] = {}
    missing: list[tuple[str, str]] = []
    for key, vr, keyword, holder in plan:
        if holder is None:
            missing.append((key, vr))
        elif holder == "computed":
            if keyword == "InstanceAvailability":
                body[key] = {"vr": "CS", "Value": ["ONLINE"]}
                continue
            if keyword == qido.TRIAGE_PRIORITY:
                priority = match.study.priority if match.study is not None else ""
                body[key] = {"vr": "CS", "Value": [priority]} if priority else {"vr": "CS"}
                continue
            study_uid = match.study.StudyInstanceUID
            if level is Level.STUDY:
                url = ctx.study_url(study_uid)
            elif level is Level.SERIES:
                url = ctx.series_url(study_uid, match.series.SeriesInstanceUID)
            else:
                url = ctx.instance_url(
                    study_uid, match.series.SeriesInstanceUID, match.instance.SOPInstanceUID
                )
            body[key] = {"vr": "UR", "Value": [url]}
        else:
            body[key] = element(vr, getattr(getattr(match, holder), keyword))
    if missing or (include_all and level is Level.IMAGE):
        cached = representative_metadata(session, match)
        if include_all and level is Level.IMAGE:
            for key, value in cached.items():
                if key not in body and "BulkDataURI" not in value and key < "7FE00010":
                    body[key] = value
        for key, vr in missing:
            value = cached.get(key)
            body[key] = value if value is not None and "BulkDataURI" not in value else {"vr": vr}
    return dumps(dict(sorted(body.items())))


def _request(query: str) -> Request:
    return Request(
        {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": query.encode()}
    )


def both_answers(
    seeded: Seeded, level: Level, query: str, scope: dict[str, str] | None = None
) -> tuple[str, str]:
    """(the served body, the reference body) of one QIDO request, over the same index."""
    path = {Level.STUDY: "/studies", Level.SERIES: "/series", Level.IMAGE: "/instances"}[level]
    if scope and level is Level.IMAGE:
        path = f"/studies/{scope['StudyInstanceUID']}/instances"
    with seeded.client() as c:
        served = c.get(path + ("?" + query if query else ""))
    assert served.status_code == 200, served.text
    ctx = Context(seeded.archive, "clinical", seeded.server.root, Principal("admin"))
    q = qido.parse_request(_request(query), level, seeded.archive.settings.qido_max_results)
    q.keys.update(scope or {})
    maximum = seeded.archive.settings.qido_max_results
    capped = q.limit is None or q.limit > maximum
    limit = maximum if capped else q.limit
    query_ = Query(level=level, keys=q.keys, limit=limit, offset=q.offset, fuzzy=q.fuzzy, priority=q.priority)
    plan = reference_plan(qido._return_keys(q, level), level)
    with seeded.archive.db.read() as session:
        matches = find(session, query_)
        if capped and len(matches) == limit:
            remaining = count(session, query_) - q.offset - len(matches)
            if remaining > 0:
                q.warnings.insert(0, f"There are {remaining} additional results that can be requested")
        items = [reference_answer(session, ctx, m, level, plan, q.include_all) for m in matches]
    expected = (b"[" + b",".join(items) + b"]").decode()
    warning = ", ".join(f'299 imaging: "{w}"' for w in q.warnings) or None
    assert served.headers.get("warning") == warning
    return served.content.decode(), expected


# ------------------------------------------------------------------------------- element encoders
_VALUES: list[Any] = [
    None,
    "",
    [],
    (),
    "A",
    "20240315",
    "CT\\SR",
    "CT\\\\SR",
    "\\",
    "\\\\",
    "a\\",
    'quote " and back\\slash',
    "tab\tnew\nline\x01\x7f",
    "日本語 ÄÖÜ é",
    "\u2028\u2029",
    "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "=",
    "==",
    "===",
    "A^B=",
    "=X",
    "==Y^Z",
    "A=B=C=D",
    "^^^",
    "DOE^JOHN\\\\ROE^JANE",
    "12",
    "1\\2\\x",
    "1.5",
    "-0",
    " 7 ",
    "1e3\\nan\\inf",
    0,
    7,
    -3,
    2**70,
    True,
    False,
    1.0,
    1.5,
    -0.0,
    float("nan"),
    float("inf"),
    ["A", "", None, 3],
    ("A", "B"),
    b"bytes",
]
_VRS = sorted(
    {"AE", "AS", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH", "SL", "SS", "ST", "SV"}
    | {"TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV", "OB", "SQ", "AT"}
)


@pytest.mark.parametrize("vr", _VRS)
def test_element_encoder_is_dumps_of_element(vr: str) -> None:
    encode, member = element_encoder(vr), element_encoder(vr, "00100010")
    for value in _VALUES:
        try:
            expected = dumps_text(element(vr, value))
        except Exception as exc:  # the reference refuses the value: so must the encoder
            with pytest.raises(type(exc)):
                encode(value)
            continue
        assert encode(value) == expected, (vr, value)
        assert member(value) == dumps_text({"00100010": element(vr, value)})[1:-1], (vr, value)


@pytest.mark.parametrize("vr", _VRS)
def test_column_encoder_is_the_element_encoder_over_a_column(vr: str) -> None:
    values = []
    for value in _VALUES:
        try:
            dumps_text(element(vr, value))
        except Exception:  # not encodable at all (bytes): left to the element test
            continue
        values.append(value)
    for key in (None, "00100010"):
        assert column_encoder(vr, key)(values) == [element_encoder(vr, key)(v) for v in values]
        assert column_encoder(vr, key)(()) == []


def test_encoders_of_every_qido_return_key() -> None:
    keywords = set(itertools.chain(*qido.DEFAULT_KEYS.values(), *qido.ALL_EXTRA.values()))
    keywords |= set(itertools.chain(*qido._RETURN_COLUMNS.values()))
    for keyword in sorted(keywords):
        tag, _ = resolve(keyword)
        vr, key = vr_of(tag), tag_key(tag)
        for value in _VALUES:
            try:
                expected = dumps_text({key: element(vr, value)})[1:-1]
            except Exception:
                continue
            assert column_encoder(vr, key)([value]) == [expected], (keyword, value)


# ------------------------------------------------------------------------------- whole answers
@pytest.fixture(scope="module")
def awkward(seeded: Seeded) -> Seeded:
    """The seeded archive plus a study whose index rows hold awkward values (inserted directly)."""
    blob = None
    with seeded.archive.db.read() as s:
        blob = s.scalar(Instance.__table__.select().with_only_columns(Instance.metadata_json).limit(1))
    with seeded.archive.db.write() as s:
        conn = s.connection()
        conn.execute(
            insert(Patient),
            [
                {
                    "patient_pk": 900_001,
                    "partition": "clinical",
                    "PatientID": 'AWK"1\\x',
                    "PatientName": "Doe^John=ド^ジョン=どう^じょん\\\\=Only^Ideo",
                    "PatientBirthDate": "",
                    "PatientSex": "",
                },
                {
                    "patient_pk": 900_002,
                    "partition": "clinical",
                    "PatientID": "AWK2",
                    "PatientName": "===",
                    "PatientBirthDate": "19000101",
                    "PatientSex": "O",
                },
            ],
        )
        conn.execute(
            insert(Study),
            [
                {
                    "study_pk": 900_001,
                    "patient_pk": 900_001,
                    "partition": "clinical",
                    "StudyInstanceUID": "2.25.900001",
                    "StudyDate": "20991231",
                    "StudyTime": "235959.999999",
                    "AccessionNumber": "",
                    "StudyID": "tab\there\x01",
                    "ReferringPhysicianName": "^^^\\Dr=",
                    "StudyDescription": 'quote " back\\slash / 日本語 \u2028',
                    "ModalitiesInStudy": "CT\\\\SR\\",
                    "SOPClassesInStudy": "1.2.3\\1.2.4",
                    "NumberOfStudyRelatedSeries": 1,
                    "NumberOfStudyRelatedInstances": 1,
                    "priority": "HIGH",
                },
                {
                    "study_pk": 900_002,
                    "patient_pk": 900_002,
                    "partition": "clinical",
                    "StudyInstanceUID": "2.25.900002",
                    "StudyDate": "20991230",
                    "StudyTime": "",
                    "AccessionNumber": "X",
                    "StudyID": "",
                    "ReferringPhysicianName": "",
                    "StudyDescription": "",
                    "SOPClassesInStudy": "",
                    "priority": "",
                    "ModalitiesInStudy": "",
                    "NumberOfStudyRelatedSeries": 0,
                    "NumberOfStudyRelatedInstances": 0,
                },
            ],
        )
        conn.execute(
            insert(Series),
            [
                {
                    "series_pk": 900_001,
                    "study_pk": 900_001,
                    "SeriesInstanceUID": "2.25.900001.1",
                    "Modality": "SR",
                    "SeriesNumber": None,
                    "SeriesDescription": "a\\b",
                    "BodyPartExamined": "",
                    "NumberOfSeriesRelatedInstances": 1,
                }
            ],
        )
        conn.execute(
            insert(Instance),
            [
                {
                    "instance_pk": 900_001,
                    "series_pk": 900_001,
                    "SOPInstanceUID": "2.25.900001.1.1",
                    "SOPClassUID": "1.2.840.10008.5.1.4.1.1.88.22",
                    "InstanceNumber": None,
                    "Rows": None,
                    "Columns": 0,
                    "BitsAllocated": None,
                    "NumberOfFrames": 2,
                    "TransferSyntaxUID": "1.2.840.10008.1.2.1",
                    "object_key": "clinical/" + "0" * 64,
                    "size": 0,
                    "metadata_json": blob,
                }
            ],
        )
        s.execute(update(Study).where(Study.StudyInstanceUID == seeded.studies["mr"]).values(priority="LOW"))
    return seeded


STUDY_QUERIES = [
    "",
    "limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060",
    "includefield=all",
    "includefield=all&limit=5&offset=2",
    "includefield=PatientAge,00080080,PatientWeight,PixelSpacing,StudyComments",
    "includefield=ScheduledProcedureStepPriority&includefield=SOPClassesInStudy",
    "ScheduledProcedureStepPriority=HIGH%5CLOW",
    "PatientName=*",
    "PatientID=AWK*&includefield=all",
    "StudyInstanceUID=2.25.900001%5C2.25.900002&includefield=all",
    "PatientAge=040Y&PatientSize=1.8",
    "Modality=SR",
    "limit=3",
    "offset=1000",
]
SERIES_QUERIES = [
    "",
    "includefield=all",
    "includefield=Manufacturer,PatientAge,ScheduledProcedureStepPriority",
    "Modality=SR&includefield=all",
    "SeriesInstanceUID=2.25.900001.1",
    "limit=4&offset=3",
]
INSTANCE_QUERIES = [
    "",
    "includefield=all",
    "includefield=all&SOPInstanceUID=2.25.900001.1.1",
    "includefield=PixelSpacing,WindowCenter,ImageType,PatientName,ScheduledProcedureStepPriority",
    "includefield=7FE00010,00280030",
    "limit=7&offset=2&includefield=all",
]


@pytest.mark.parametrize(
    ("level", "query"),
    [(Level.STUDY, q) for q in STUDY_QUERIES]
    + [(Level.SERIES, q) for q in SERIES_QUERIES]
    + [(Level.IMAGE, q) for q in INSTANCE_QUERIES],
)
def test_answers_equal_the_reference_byte_for_byte(awkward: Seeded, level: Level, query: str) -> None:
    served, expected = both_answers(awkward, level, query)
    assert served == expected


def test_study_scoped_instances_equal_the_reference(awkward: Seeded) -> None:
    for study in (awkward.studies["ct"], awkward.studies["mr"], "2.25.900001"):
        for query in ("", "includefield=all"):
            served, expected = both_answers(awkward, Level.IMAGE, query, {"StudyInstanceUID": study})
            assert served == expected


def test_awkward_values_are_answered(awkward: Seeded) -> None:
    with awkward.client() as c:
        (study,) = c.get(
            "/studies",
            params={"StudyInstanceUID": "2.25.900001", "includefield": "all,ScheduledProcedureStepPriority"},
        ).json()
    assert study["00100010"]["Value"] == [
        {"Alphabetic": "Doe^John", "Ideographic": "ド^ジョン", "Phonetic": "どう^じょん"},
        None,
        {"Ideographic": "Only^Ideo"},
    ]
    assert study["00080061"]["Value"] == ["CT", None, "SR", None]
    assert study["00081030"]["Value"] == ['quote " back', "slash / 日本語 \u2028"]  # LO: backslash splits
    assert study["00080050"] == {"vr": "SH"}
    assert study["00741200"] == {"vr": "CS", "Value": ["HIGH"]}
    with awkward.client() as c:
        (other,) = c.get("/studies", params={"StudyInstanceUID": "2.25.900002"}).json()
    assert other["00100010"] == {"vr": "PN", "Value": [{}]}  # "===": no component group
    assert other["00080061"] == {"vr": "CS"}


def test_metadata_cache_keys_come_from_a_representative_instance(awkward: Seeded) -> None:
    with awkward.client() as c:
        (study,) = c.get(
            "/studies",
            params={"StudyInstanceUID": awkward.studies["ct"], "includefield": "PatientAge,00280030"},
        ).json()
    with awkward.archive.db.read() as s:
        blob = s.scalar(
            Instance.__table__.select()
            .with_only_columns(Instance.metadata_json)
            .join(Series, Series.series_pk == Instance.series_pk)
            .join(Study, Study.study_pk == Series.study_pk)
            .where(Study.StudyInstanceUID == awkward.studies["ct"])
            .order_by(Instance.instance_pk)
            .limit(1)
        )
    cached = metadata_dict(blob)
    assert study["00101010"] == cached.get("00101010", {"vr": "AS"})
    assert study["00280030"] == cached["00280030"]


def test_plans_are_compiled_once_per_request_shape() -> None:
    keys = ("StudyDate", "RetrieveURL", "PatientName")
    assert qido.compile_plan(Level.STUDY, keys, False) is qido.compile_plan(Level.STUDY, keys, False)
    plan = qido.compile_plan(Level.STUDY, keys, False)
    assert list(plan.keys) == sorted(plan.keys)
    assert len(plan.columns) == 3  # StudyInstanceUID (for the URL), StudyDate, PatientName: nothing else


def test_empty_matching_value_with_reference(awkward: Seeded) -> None:
    served, expected = both_answers(awkward, Level.STUDY, urlencode({"PatientName": "", "StudyDate": ""}))
    assert served == expected
