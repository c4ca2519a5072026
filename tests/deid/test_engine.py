"""Markers, references, idempotence, clean pixels, overlays in pixel data, input left alone."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from imaging.deid import Deidentifier, DeidOption, DeidProfile
from tests.deid.checker import file_bytes
from tests.deid.conftest import KEY
from tests.deid.corpus import Corpus, overlay_in_pixels


def _codes(ds: pydicom.Dataset) -> list[tuple[str, str, str]]:
    return [
        (i.CodeValue, i.CodingSchemeDesignator, i.CodeMeaning) for i in ds.DeidentificationMethodCodeSequence
    ]


def test_markers_list_exactly_the_profile_and_options_applied(corpus: Corpus) -> None:
    options = frozenset({DeidOption.CLEAN_DESCRIPTORS, DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES})
    out = (
        Deidentifier(key=KEY, profile=DeidProfile(options=options)).deidentify(corpus.datasets["ct"]).dataset
    )
    assert out is not None
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    dcm = codes.DCM
    expected = [
        dcm.BasicApplicationConfidentialityProfile,
        dcm.RetainLongitudinalTemporalInformationModifiedDatesOption,
        dcm.CleanDescriptorsOption,
    ]
    assert sorted(_codes(out)) == sorted((c.value, c.scheme_designator, c.meaning) for c in expected)
    assert out.DeidentificationMethod[0].startswith("imaging-archive PS3.15 E.1-1")


def test_basic_profile_alone_marks_dates_removed_and_no_clean_pixel_code(corpus: Corpus) -> None:
    out = (
        Deidentifier(key=KEY, profile=DeidProfile(options=frozenset()))
        .deidentify(corpus.datasets["ct"])
        .dataset
    )
    assert out is not None
    assert [c[0] for c in _codes(out)] == ["113100"]
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert "AcquisitionDate" not in out  # X (Type 3 in CT)
    assert "StudyDate" in out and not out.StudyDate  # Z (Type 2)
    assert "ContentDate" in out and not out.ContentDate  # Z/D: Type 2C in the CT Image IOD -> Z


def test_clean_pixel_code_only_when_cleaning_ran(corpus: Corpus) -> None:
    """CT originals are not at risk of burned-in text: the option is selected but nothing ran."""
    out = Deidentifier(key=KEY).deidentify(corpus.datasets["ct"]).dataset
    assert out is not None
    assert DeidOption.CLEAN_PIXEL_DATA in DeidProfile().options
    assert "113101" not in [c[0] for c in _codes(out)]


def test_references_resolve_to_the_new_uids(corpus: Corpus) -> None:
    deid = Deidentifier(key=KEY)
    ct = deid.deidentify(corpus.datasets["ct"])
    sr = deid.deidentify(corpus.datasets["sr"])
    assert ct.dataset is not None and sr.dataset is not None
    evidence = sr.dataset.CurrentRequestedProcedureEvidenceSequence[0]
    series = evidence.ReferencedSeriesSequence[0]
    assert evidence.StudyInstanceUID == ct.dataset.StudyInstanceUID == sr.dataset.StudyInstanceUID
    assert series.SeriesInstanceUID == ct.dataset.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ct.dataset.SOPInstanceUID
    image_item = sr.dataset.ContentSequence[5].ContentSequence[1]
    assert image_item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ct.dataset.SOPInstanceUID
    assert ct.dataset.StudyInstanceUID == sr.dataset.ContentSequence[4].UID
    # The uid_map (the re-identification table) holds exactly these pairs.
    assert ct.uid_map[corpus.datasets["ct"].SOPInstanceUID] == ct.dataset.SOPInstanceUID
    assert ct.dataset.file_meta.MediaStorageSOPInstanceUID == ct.dataset.SOPInstanceUID
    # Registered UIDs (SOP classes, transfer syntaxes) are not touched.
    assert series.ReferencedSOPSequence[0].ReferencedSOPClassUID == corpus.datasets["ct"].SOPClassUID


def test_idempotent_on_its_own_output(corpus: Corpus) -> None:
    deid = Deidentifier(key=KEY)
    for ds in corpus.datasets.values():
        first = deid.deidentify(ds)
        assert first.dataset is not None
        again = deid.deidentify(pydicom.dcmread(pydicom.filebase.DicomBytesIO(file_bytes(first.dataset))))
        assert again.dataset is not None and not again.quarantined
        assert file_bytes(again.dataset) == file_bytes(first.dataset)  # nothing shifted or mapped twice


def test_a_forged_marker_does_not_bypass_the_engine(corpus: Corpus) -> None:
    ds = copy.deepcopy(corpus.datasets["ct"])
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = ["imaging-archive PS3.15 E.1-1 2026c", "seal AAAAAAAAAAAAAAAAAAAA"]
    out = Deidentifier(key=KEY).deidentify(ds).dataset
    assert out is not None and out.PatientID != ds.PatientID


def test_a_different_profile_re_deidentifies(corpus: Corpus) -> None:
    full = Deidentifier(
        key=KEY, profile=DeidProfile(options=frozenset({DeidOption.RETAIN_LONGITUDINAL_FULL_DATES}))
    )
    first = full.deidentify(corpus.datasets["ct"]).dataset
    assert first is not None
    second = Deidentifier(key=KEY, profile=DeidProfile(options=frozenset())).deidentify(first).dataset
    assert second is not None and not second.StudyDate and first.StudyDate


def test_clean_pixel_data_is_unchanged(corpus: Corpus) -> None:
    for kind in ("ct", "enhanced", "pet"):
        ds = corpus.datasets[kind]
        out = Deidentifier(key=KEY).deidentify(ds).dataset
        assert out is not None
        assert hashlib.sha256(out.PixelData).digest() == hashlib.sha256(ds.PixelData).digest(), kind


def test_overlay_bits_in_pixel_data_are_cleared() -> None:
    ds = overlay_in_pixels()
    out = Deidentifier(key=KEY).deidentify(ds).dataset
    assert out is not None
    before = np.frombuffer(ds.PixelData, dtype="<u2")
    after = np.frombuffer(out.PixelData, dtype="<u2")
    assert np.any(before & 0xF000) and not np.any(after & 0xF000)
    assert np.array_equal(after, before & 0x0FFF)  # the stored 12 bits are untouched
    assert not [e for e in out if e.tag.group == 0x6000]


def test_input_is_not_mutated(corpus: Corpus) -> None:
    for ds in corpus.datasets.values():
        before = file_bytes(ds)
        Deidentifier(key=KEY).deidentify(ds)
        assert file_bytes(ds) == before


def test_input_read_from_file_is_not_mutated_and_raw_values_are_shared_safely(corpus: Corpus) -> None:
    data = file_bytes(corpus.datasets["ct"])
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
    result = Deidentifier(key=KEY).deidentify(ds)
    assert result.dataset is not None
    result.dataset.ImagePositionPatient[0] = 999.0
    assert file_bytes(ds)[-len(ds.PixelData) :] == data[-len(ds.PixelData) :]
    assert float(ds.ImagePositionPatient[0]) != 999.0


def test_fail_closed_quarantine_reasons_hold_no_phi(corpus: Corpus) -> None:
    ds = copy.deepcopy(corpus.datasets["ct"])
    ds.Modality = "US"  # at risk of burned-in text, and the Basic profile cannot clean pixels
    result = Deidentifier(key=KEY, profile=DeidProfile(options=frozenset())).deidentify(ds)
    assert result.quarantined and result.dataset is None and result.reasons
    text = " ".join(result.reasons)
    assert not [t for t in corpus.tokens if t in text]


def test_combined_actions_follow_the_attribute_type_in_the_iod(corpus: Corpus) -> None:
    """DeviceSerialNumber (X/Z/D): Type 3 in CT Image -> removed; Type 1 in Enhanced CT -> dummy."""
    ct = corpus.datasets["ct"]
    enhanced = copy.deepcopy(corpus.datasets["enhanced"])
    enhanced.DeviceSerialNumber = "ZQXSERIAL"
    deid = Deidentifier(key=KEY)
    ct_out, enhanced_out = deid.deidentify(ct).dataset, deid.deidentify(enhanced).dataset
    assert ct_out is not None and enhanced_out is not None
    assert "DeviceSerialNumber" not in ct_out
    assert enhanced_out.DeviceSerialNumber == "ANONYMIZED"
    # ContentDate (Z/D) is Type 1 in Enhanced CT: a dummy under Basic, never empty.
    basic = Deidentifier(key=KEY, profile=DeidProfile(options=frozenset())).deidentify(enhanced).dataset
    assert basic is not None and basic.ContentDate == "19000101"
