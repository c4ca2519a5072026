"""C-FIND with dcmtk's findscu (Patient Root and Study Root) at every level, on SQLite and PostgreSQL:
single value, UID list, wildcard, date/time range, universal, sequence matching, person-name case rules;
each query returns exactly the expected identifiers."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from tests.archive_fixtures import ARCHIVE_AE, CLIENT_AE, require_program, run

pytestmark = pytest.mark.dcmtk

A, B, C = generate_uid(), generate_uid(), generate_uid()


@pytest.fixture
def loaded(db_url, make_archive, start_gateway):
    """Three studies of two synthetic patients, ingested through the single ingest path.
    A: patient 1, 20240315 10:15, CT 2 series x 2, ProcedureCodeSequence CT123
    B: patient 2, 20230101 14:30, MR 1 series x 3
    C: patient 1, 20220610 08:00, CT 1 series x 1
    """
    archive = make_archive()
    p1, p2 = synthetic_patient(1), synthetic_patient(2)
    layout = [
        (SyntheticStudy(p1, A, "20240315", "101500", "ACC0001"), "CT", [2, 2]),
        (SyntheticStudy(p2, B, "20230101", "143000", "ACC0002", "MR BRAIN"), "MR", [3]),
        (SyntheticStudy(p1, C, "20220610", "080000", "ACC0003"), "CT", [1]),
    ]
    series_uids: dict[str, list[str]] = {}
    sop_uids: dict[str, list[str]] = {}
    for study, modality, counts in layout:
        for number, count in enumerate(counts, start=1):
            uid = generate_uid()
            series_uids.setdefault(study.StudyInstanceUID, []).append(uid)
            for ds in ct_series(
                study, count, series_number=number, series_uid=uid, rows=16, columns=16, modality=modality
            ):
                if study.StudyInstanceUID == A:
                    code = Dataset()
                    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = (
                        "CT123",
                        "99SYN",
                        "CT chest",
                    )
                    ds.ProcedureCodeSequence = [code]
                archive.ingestor.ingest_dataset(ds)
                sop_uids.setdefault(uid, []).append(str(ds.SOPInstanceUID))
    port = start_gateway(archive)
    return port, series_uids, sop_uids


def findscu(port: int, tmp_path: Path, keys: list[str], *, model: str = "-S") -> list[Dataset]:
    out = tmp_path / f"rsp{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    args = [
        require_program("/usr/bin/findscu"),
        model,
        "-aet",
        CLIENT_AE,
        "-aec",
        ARCHIVE_AE,
        "-X",
        "-od",
        str(out),
    ]
    for key in keys:
        args += ["-k", key]
    result = run([*args, "127.0.0.1", str(port)])
    assert result.returncode == 0, result.stdout + result.stderr
    return [dcmread(p) for p in sorted(out.iterdir())]


def uids(answers: list[Dataset], keyword: str) -> set[str]:
    return {str(a.get(keyword)) for a in answers}


def test_study_level_matching(loaded, tmp_path):
    port, _, _ = loaded
    q = ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", "StudyDate"]
    # Wildcard on a person name, case-insensitive.
    assert uids(findscu(port, tmp_path, [*q, "PatientName=synth0001*"]), "StudyInstanceUID") == {A, C}
    # Single value person name in another case; trailing empty components are insignificant.
    assert uids(findscu(port, tmp_path, [*q, "PatientName=synth0002^patient^^"]), "StudyInstanceUID") == {B}
    # Date ranges: closed, open-ended both ways; single date.
    assert uids(findscu(port, tmp_path, [*q, "StudyDate=20230101-20231231"]), "StudyInstanceUID") == {B}
    assert uids(findscu(port, tmp_path, [*q, "StudyDate=20240101-"]), "StudyInstanceUID") == {A}
    assert uids(findscu(port, tmp_path, [*q, "StudyDate=-20221231"]), "StudyInstanceUID") == {C}
    assert uids(findscu(port, tmp_path, [*q, "StudyDate=20220610"]), "StudyInstanceUID") == {C}
    # Time range.
    assert uids(findscu(port, tmp_path, [*q, "StudyTime=1000-1200"]), "StudyInstanceUID") == {A}
    # UID list.
    assert uids(findscu(port, tmp_path, [*q[:1], f"StudyInstanceUID={A}\\{B}"]), "StudyInstanceUID") == {A, B}
    # Wildcard on a plain string (case-sensitive) and ? wildcard.
    assert uids(findscu(port, tmp_path, [*q, "AccessionNumber=ACC000?"]), "StudyInstanceUID") == {A, B, C}
    assert uids(findscu(port, tmp_path, [*q, "AccessionNumber=acc*"]), "StudyInstanceUID") == set()
    # Computed study attributes as matching keys and return keys.
    answers = findscu(
        port,
        tmp_path,
        [
            *q,
            "ModalitiesInStudy=MR",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
            "SOPClassesInStudy",
        ],
    )
    assert len(answers) == 1 and answers[0].StudyInstanceUID == B
    assert answers[0].ModalitiesInStudy == "MR"
    assert int(answers[0].NumberOfStudyRelatedSeries) == 1
    assert int(answers[0].NumberOfStudyRelatedInstances) == 3
    assert answers[0].SOPClassesInStudy == "1.2.840.10008.5.1.4.1.1.2"
    # Universal matching: every study, with each requested key present.
    answers = findscu(port, tmp_path, [*q, "ModalitiesInStudy", "AccessionNumber"])
    assert uids(answers, "StudyInstanceUID") == {A, B, C}
    by_uid = {a.StudyInstanceUID: a for a in answers}
    assert by_uid[A].StudyDate == "20240315" and by_uid[A].AccessionNumber == "ACC0001"
    assert str(by_uid[B].PatientName) == "SYNTH0002^PATIENT"
    assert all(a.QueryRetrieveLevel == "STUDY" and a.RetrieveAETitle == ARCHIVE_AE for a in answers)


def test_sequence_matching(loaded, tmp_path):
    port, _, _ = loaded
    q = ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"]
    # A sequence key is returned.
    answers = findscu(port, tmp_path, [*q, f"StudyInstanceUID={A}", "ProcedureCodeSequence[0].CodeValue"])
    assert len(answers) == 1
    assert answers[0].ProcedureCodeSequence[0].CodeValue == "CT123"
    # Matching on an item key: only the study whose sequence holds a matching item.
    answers = findscu(port, tmp_path, [*q, "ProcedureCodeSequence[0].CodeValue=CT123"])
    assert uids(answers, "StudyInstanceUID") == {A}
    answers = findscu(port, tmp_path, [*q, "ProcedureCodeSequence[0].CodeValue=CT*"])
    assert uids(answers, "StudyInstanceUID") == {A}
    assert findscu(port, tmp_path, [*q, "ProcedureCodeSequence[0].CodeValue=XX9"]) == []


def test_patient_root_every_level(loaded, tmp_path):
    port, series_uids, sop_uids = loaded
    answers = findscu(
        port,
        tmp_path,
        [
            "QueryRetrieveLevel=PATIENT",
            "PatientID=SYN*",
            "PatientName",
            "NumberOfPatientRelatedStudies",
            "NumberOfPatientRelatedInstances",
        ],
        model="-P",
    )
    by_id = {a.PatientID: a for a in answers}
    assert set(by_id) == {"SYN000001", "SYN000002"}
    assert int(by_id["SYN000001"].NumberOfPatientRelatedStudies) == 2
    assert int(by_id["SYN000001"].NumberOfPatientRelatedInstances) == 5
    answers = findscu(
        port, tmp_path, ["QueryRetrieveLevel=STUDY", "PatientID=SYN000001", "StudyInstanceUID"], model="-P"
    )
    assert uids(answers, "StudyInstanceUID") == {A, C}
    answers = findscu(
        port,
        tmp_path,
        [
            "QueryRetrieveLevel=SERIES",
            "PatientID=SYN000001",
            f"StudyInstanceUID={A}",
            "SeriesInstanceUID",
            "Modality",
            "NumberOfSeriesRelatedInstances",
        ],
        model="-P",
    )
    assert uids(answers, "SeriesInstanceUID") == set(series_uids[A])
    assert {int(a.NumberOfSeriesRelatedInstances) for a in answers} == {2}
    assert {a.Modality for a in answers} == {"CT"}
    series = series_uids[B][0]
    answers = findscu(
        port,
        tmp_path,
        [
            "QueryRetrieveLevel=IMAGE",
            "PatientID=SYN000002",
            f"StudyInstanceUID={B}",
            f"SeriesInstanceUID={series}",
            "SOPInstanceUID",
            "InstanceNumber",
        ],
        model="-P",
    )
    assert uids(answers, "SOPInstanceUID") == set(sop_uids[series])
    assert sorted(int(a.InstanceNumber) for a in answers) == [1, 2, 3]


def test_study_root_series_and_image_levels(loaded, tmp_path):
    port, series_uids, sop_uids = loaded
    answers = findscu(
        port,
        tmp_path,
        [
            "QueryRetrieveLevel=SERIES",
            f"StudyInstanceUID={A}",
            "SeriesInstanceUID",
            "SeriesNumber=2",
            "SeriesDescription=AXIAL*",
        ],
    )
    assert uids(answers, "SeriesInstanceUID") == {series_uids[A][1]}
    # IMAGE level with a UID list of two series and a wildcard SOP Instance UID.
    s1, s2 = series_uids[A]
    answers = findscu(
        port,
        tmp_path,
        [
            "QueryRetrieveLevel=IMAGE",
            f"StudyInstanceUID={A}",
            f"SeriesInstanceUID={s1}\\{s2}",
            "SOPInstanceUID=*",
            "SOPClassUID",
        ],
    )
    assert uids(answers, "SOPInstanceUID") == set(sop_uids[s1] + sop_uids[s2])
    one = sop_uids[s1][0]
    answers = findscu(
        port,
        tmp_path,
        [
            "QueryRetrieveLevel=IMAGE",
            f"StudyInstanceUID={A}",
            f"SeriesInstanceUID={s1}",
            f"SOPInstanceUID={one}",
            "Rows",
            "Columns",
        ],
    )
    assert len(answers) == 1 and answers[0].SOPInstanceUID == one and answers[0].Rows == 16


def test_invalid_keys_refused(loaded):
    """A malformed date and a level the model does not have: 0xA900, and the gateway keeps answering."""
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as StudyFind

    port, _, _ = loaded
    ae = AE(ae_title=CLIENT_AE)
    ae.add_requested_context(StudyFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=ARCHIVE_AE)

    def statuses(**keys: str) -> list[int]:
        q = Dataset()
        for k, v in keys.items():
            setattr(q, k, v)
        return [int(st.Status) for st, _ in assoc.send_c_find(q, StudyFind)]

    try:
        assert statuses(QueryRetrieveLevel="STUDY", StudyDate="2024XX01") == [0xA900]
        assert statuses(QueryRetrieveLevel="PATIENT", PatientID="") == [0xA900]
        assert statuses(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.x") == [0xA900]
        assert statuses(QueryRetrieveLevel="STUDY", StudyInstanceUID=A) == [0xFF00, 0x0000]
    finally:
        assoc.release()
