"""Each option changes exactly what the standard says it changes."""

from __future__ import annotations

import pytest

from imaging.deid import Deidentifier, DeidOption, DeidProfile
from imaging.deid.options import parse_option
from tests.deid.conftest import KEY
from tests.deid.corpus import Corpus


def _run(corpus: Corpus, kind: str, *options: DeidOption):  # type: ignore[no-untyped-def]
    result = Deidentifier(key=KEY, profile=DeidProfile(options=frozenset(options))).deidentify(
        corpus.datasets[kind]
    )
    assert result.dataset is not None, result.reasons
    return result.dataset


def test_clean_descriptors_keeps_meaning_and_drops_identity(corpus: Corpus) -> None:
    basic = _run(corpus, "ct")
    assert "StudyDescription" not in basic and "SeriesDescription" not in basic
    out = _run(corpus, "ct", DeidOption.CLEAN_DESCRIPTORS)
    assert out.StudyDescription == "CT CHEST *"
    assert out.SeriesDescription == "AXIAL *"
    assert out.AdditionalPatientHistory == "FOLLOW UP *"
    assert out.RequestAttributesSequence[0].RequestedProcedureDescription == "*"
    assert "RequestedProcedureID" not in out.RequestAttributesSequence[0]


def test_clean_structured_content_cleans_sr_text(corpus: Corpus) -> None:
    basic = _run(corpus, "sr")
    assert basic.ContentSequence[0].TextValue == "ANONYMIZED"  # D: dummy, the item stays valid
    out = _run(corpus, "sr", DeidOption.CLEAN_STRUCTURED_CONTENT)
    assert out.ContentSequence[0].TextValue == "NODULE IN LEFT LUNG *"
    assert out.ContentSequence[1].PersonName == "ANONYMIZED"
    assert out.ContentSequence[5].ContentSequence[0].TextValue == "*"
    ct = _run(corpus, "ct", DeidOption.CLEAN_STRUCTURED_CONTENT)
    assert ct.AcquisitionContextSequence[0].TextValue == "*"


def test_retain_patient_characteristics(corpus: Corpus) -> None:
    assert "PatientAge" not in _run(corpus, "ct").ReferencedImageSequence[0]
    out = _run(corpus, "ct", DeidOption.RETAIN_PATIENT_CHARACTERISTICS)
    assert out.PatientSex == "F" and float(out.PatientWeight) == 71.5
    assert out.ReferencedImageSequence[0].PatientAge == "081Y"


def test_retain_device_and_institution_identity(corpus: Corpus) -> None:
    out = _run(corpus, "ct", DeidOption.RETAIN_DEVICE_IDENTITY, DeidOption.RETAIN_INSTITUTION_IDENTITY)
    assert out.DeviceSerialNumber == "ZQXSERIAL" and out.StationName == "ZQXSTATION"
    assert out.InstitutionName == "ZQXHOSPITAL" and out.InstitutionalDepartmentName == "ZQXDEPT"
    assert "DateOfLastCalibration" not in out  # a date: only the dates options keep it


def test_retain_device_identity_pseudonymises_ae_titles(corpus: Corpus) -> None:
    ds = corpus.datasets["ct"]
    ds.StationAETitle = "CT_ROOM3_ZQX"
    assert "StationAETitle" not in _run(corpus, "ct")
    first = _run(corpus, "ct", DeidOption.RETAIN_DEVICE_IDENTITY).StationAETitle
    second = _run(corpus, "ct", DeidOption.RETAIN_DEVICE_IDENTITY).StationAETitle
    assert first == second and first.startswith("AE") and "ZQX" not in first and len(first) <= 16


def test_retain_uids(corpus: Corpus) -> None:
    source = corpus.datasets["ct"]
    out = _run(corpus, "ct", DeidOption.RETAIN_UIDS)
    assert (out.StudyInstanceUID, out.SOPInstanceUID) == (source.StudyInstanceUID, source.SOPInstanceUID)
    assert out.file_meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID


def test_full_and_modified_dates(corpus: Corpus) -> None:
    source = corpus.datasets["ct"]
    full = _run(corpus, "ct", DeidOption.RETAIN_LONGITUDINAL_FULL_DATES)
    assert full.StudyDate == source.StudyDate and full.AcquisitionDateTime == source.AcquisitionDateTime
    modified = _run(corpus, "ct", DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES)
    assert modified.StudyDate != source.StudyDate and modified.StudyTime == source.StudyTime
    basic = _run(corpus, "ct")
    assert not basic.StudyDate and "AcquisitionDateTime" not in basic
    assert basic.StudyTime == "" or basic.StudyTime is None


def test_unlisted_dates_and_names_fail_closed(corpus: Corpus) -> None:
    out = _run(corpus, "ct", DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES)
    level1 = out.ReferencedImageSequence[0]
    assert "SecondaryReviewerName" not in level1  # unlisted PN: removed (Type 3)
    assert "PrivateDataElementDescription" not in level1  # unlisted UT: removed
    assert level1.SecondaryReviewDate != corpus.datasets["ct"].ReferencedImageSequence[0].SecondaryReviewDate


def test_option_names_parse() -> None:
    assert parse_option("retain-uids") is DeidOption.RETAIN_UIDS
    assert parse_option("Clean Descriptors Option") is DeidOption.CLEAN_DESCRIPTORS
    assert parse_option("RETAIN_LONGITUDINAL_MODIFIED_DATES") is DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES
    with pytest.raises(ValueError):
        parse_option("retain everything")
