"""Keyed pseudonyms, UIDs and date offsets: consistent per key and patient, different across keys."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from imaging.deid import Deidentifier, DeidProfile
from imaging.deid.pseudonyms import MAX_DATE_OFFSET_DAYS, MIN_DATE_OFFSET_DAYS
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from tests.deid.checker import write
from tests.deid.conftest import KEY, OTHER_KEY
from tests.deid.corpus import Corpus

REPO = Path(__file__).resolve().parents[2]


def _days(a: str, b: str) -> int:
    return (dt.datetime.strptime(b[:8], "%Y%m%d") - dt.datetime.strptime(a[:8], "%Y%m%d")).days


def test_one_offset_per_patient_shifts_every_date_and_keeps_time_and_zone(corpus: Corpus) -> None:
    deid = Deidentifier(key=KEY)
    offsets = set()
    for kind, ds in corpus.datasets.items():
        result = deid.deidentify(ds)
        assert result.dataset is not None and result.date_offset_days is not None
        offsets.add(result.date_offset_days)
        if kind == "ct":
            out = result.dataset
            assert _days(ds.StudyDate, out.StudyDate) == result.date_offset_days
            assert out.AcquisitionDateTime[8:] == "101500.000000+0530"  # time of day and zone kept
            assert [
                _days(a, b) for a, b in zip(ds.DateOfLastCalibration, out.DateOfLastCalibration, strict=True)
            ] == [result.date_offset_days] * 2
            nested = out.ReferencedImageSequence[0].SourceImageSequence[0].PurposeOfReferenceCodeSequence[0]
            source = ds.ReferencedImageSequence[0].SourceImageSequence[0].PurposeOfReferenceCodeSequence[0]
            assert _days(source.AcquisitionDate, nested.AcquisitionDate) == result.date_offset_days
            assert nested.AcquisitionDateTime.endswith("101500.5+0100")
        if kind == "pet":
            start = result.dataset.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
            original = ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
            assert _days(original, start) == result.date_offset_days and start.endswith("093000.000000-0500")
        if kind == "enhanced":
            for src, out in zip(
                ds.PerFrameFunctionalGroupsSequence,
                result.dataset.PerFrameFunctionalGroupsSequence,
                strict=True,
            ):
                a = src.FrameContentSequence[0].FrameAcquisitionDateTime
                b = out.FrameContentSequence[0].FrameAcquisitionDateTime
                assert _days(a, b) == result.date_offset_days and b[8:] == a[8:]
    assert len(offsets) == 1
    (offset,) = offsets
    assert MIN_DATE_OFFSET_DAYS <= offset <= MAX_DATE_OFFSET_DAYS


def test_two_series_in_separate_runs_share_study_pseudonym_and_offset() -> None:
    study = SyntheticStudy(patient=synthetic_patient(7))
    first = next(ct_series(study, 1, series_number=1, rows=16, columns=16))
    second = next(ct_series(study, 1, series_number=2, rows=16, columns=16))
    a = Deidentifier(key=KEY).deidentify(first)
    b = Deidentifier(key=KEY).deidentify(second)  # a separate run: nothing shared but the key
    assert a.dataset is not None and b.dataset is not None
    assert a.dataset.StudyInstanceUID == b.dataset.StudyInstanceUID
    assert a.dataset.SeriesInstanceUID != b.dataset.SeriesInstanceUID
    assert a.patient_pseudonym == b.patient_pseudonym == a.dataset.PatientID == str(a.dataset.PatientName)
    assert a.date_offset_days == b.date_offset_days


def test_patients_never_collide() -> None:
    deid = Deidentifier(key=KEY)
    patients = [synthetic_patient(n) for n in range(200)]
    pseudonyms = {deid.pseudonym_for(p.PatientID) for p in patients}
    assert len(pseudonyms) == 200
    offsets = {deid.date_offset_days(p.PatientID) for p in patients}
    assert len(offsets) > 150  # 3286 possible offsets: a few birthday collisions at most
    # The issuer is part of the identity: the same number from two issuers is two patients.
    assert deid.pseudonym_for("12345", "HOSPITAL A") != deid.pseudonym_for("12345", "HOSPITAL B")


def test_key_rotation_changes_every_derived_value(corpus: Corpus) -> None:
    ds = corpus.datasets["ct"]
    a = Deidentifier(key=KEY).deidentify(ds)
    b = Deidentifier(key=OTHER_KEY).deidentify(ds)
    assert a.dataset is not None and b.dataset is not None
    assert a.patient_pseudonym != b.patient_pseudonym
    assert set(a.uid_map) == set(b.uid_map)
    assert not set(a.uid_map.values()) & set(b.uid_map.values())
    assert a.dataset.StudyDate != b.dataset.StudyDate or a.date_offset_days != b.date_offset_days


def test_uids_are_valid_and_under_2_25(corpus: Corpus) -> None:
    result = Deidentifier(key=KEY).deidentify(corpus.datasets["ct"])
    assert result.uid_map
    for new in result.uid_map.values():
        assert (
            new.startswith("2.25.") and len(new) <= 64 and new[5:].isdigit() and not new[5:].startswith("0")
        )


def test_the_key_never_appears_in_output(corpus: Corpus, tmp_path: Path) -> None:
    for ds in corpus.datasets.values():
        result = Deidentifier(key=KEY).deidentify(ds)
        assert result.dataset is not None
        data = write(result.dataset, tmp_path / "out.dcm")
        assert KEY not in data and KEY.hex().encode() not in data and KEY.hex().upper().encode() not in data


_CHILD = """
import json, sys
import pydicom
from imaging.deid import Deidentifier
result = Deidentifier(key=bytes.fromhex(sys.argv[1])).deidentify(pydicom.dcmread(sys.argv[2]))
out = result.dataset
print(json.dumps([out.PatientID, out.StudyInstanceUID, out.SeriesInstanceUID, out.SOPInstanceUID,
                  out.StudyDate, result.date_offset_days]))
"""


def test_separate_processes_with_the_same_key_agree(corpus: Corpus, tmp_path: Path) -> None:
    path = tmp_path / "in.dcm"
    corpus.datasets["ct"].save_as(path, enforce_file_format=True)

    def child(key: bytes) -> list[object]:
        run = subprocess.run(
            [sys.executable, "-c", _CHILD, key.hex(), str(path)],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
            timeout=120,
        )
        return list(json.loads(run.stdout))

    first, second, other = child(KEY), child(KEY), child(OTHER_KEY)
    assert first == second
    assert all(a != b for a, b in zip(first[:4], other[:4], strict=True))
    here = Deidentifier(key=KEY).deidentify(corpus.datasets["ct"]).dataset
    assert here is not None and first[:4] == [
        here.PatientID,
        here.StudyInstanceUID,
        here.SeriesInstanceUID,
        here.SOPInstanceUID,
    ]


def test_pseudonyms_need_a_real_key() -> None:
    import pytest

    with pytest.raises(ValueError):
        Deidentifier(key=b"short", profile=DeidProfile())
