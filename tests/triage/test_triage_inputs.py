"""Triage on the series scanners and exports really produce (tests/triage/chest_series.py, a generator
independent of the training phantoms): missing or empty Type 2 attributes, signed/unsigned storage with
any rescale, 0.5-1 mm pixels and 0.6-5 mm slices, non-zero origins, every patient position, compressed
transfer syntaxes, multi-frame Enhanced CT; and the series that cannot make a volume, refused with a
reason. Each series gets a result or a precise failure; none raises."""

from __future__ import annotations

import copy
import subprocess
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from tests.conftest import require_program
from tests.triage.chest_series import ORIENTATIONS, ChestSeries, Target, without
from triage.evidence import TYPE2
from triage.pipeline import TriageFailure, TriagePipeline, TriageResult
from triage.volume import VolumeError, build_volume

BASE = ChestSeries()
MISSING = (
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
)


def hit(result: TriageResult, spec: ChestSeries, n: int = 0) -> bool:
    truth = spec.target_lps(n)
    radius = max(spec.targets[n].diameter_mm / 2, 4.0)
    return any(np.linalg.norm(np.subtract(f.position_lps, truth)) <= radius for f in result.findings)


def hu_at_target(datasets: list[Dataset], spec: ChestSeries) -> float:
    volume = build_volume(datasets)
    index = np.rint(volume.to_index(spec.target_lps())).astype(int)
    return float(volume.hu[tuple(index)])


def roundtrip(datasets: list[Dataset], syntax: str | None = None) -> list[Dataset]:
    """Encode (compressing to `syntax`) and parse again, as files arrive."""
    out = []
    for ds in copy.deepcopy(datasets):
        if syntax == DeflatedExplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = syntax
        elif syntax is not None:
            ds.compress(syntax)
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        buffer.seek(0)
        out.append(dcmread(buffer))
    return out


@pytest.fixture(scope="module")
def base_series() -> list[Dataset]:
    return BASE.datasets()


@pytest.fixture(scope="module")
def base_result(pipeline: TriagePipeline, base_series: list[Dataset]) -> TriageResult:
    return pipeline.run(base_series)


def test_the_independent_chest_is_triaged_high_with_both_targets(base_result: TriageResult) -> None:
    assert hit(base_result, BASE, 0) and hit(base_result, BASE, 1), base_result.as_json()["findings"]
    assert str(base_result.priority) == "HIGH"


def test_the_independent_chest_without_targets_is_low(pipeline: TriagePipeline) -> None:
    result = pipeline.run(ChestSeries(targets=()).datasets())
    assert result.findings == [], result.as_json()["findings"]
    assert str(result.priority) == "LOW" and result.seg is None


@pytest.mark.parametrize("empty", [False, True], ids=["absent", "empty"])
def test_missing_type2_attributes_give_sr_and_seg_with_them_empty(
    pipeline: TriagePipeline, base_series: list[Dataset], base_result: TriageResult, empty: bool
) -> None:
    datasets = without(base_series, *MISSING, empty=empty)
    assert all(k not in ds or ds.get(k) == "" for ds in datasets for k in MISSING)
    result = pipeline.run(datasets)
    assert [f.position_lps for f in result.findings] == [f.position_lps for f in base_result.findings]
    assert result.seg is not None
    for output in (result.sr, result.seg):
        for keyword in TYPE2:
            assert keyword in output, keyword  # Type 2: present
        for keyword in MISSING:
            assert output[keyword].value in ("", None), keyword
        assert output.PatientID == "RI-0001" and output.StudyInstanceUID == base_series[0].StudyInstanceUID
    assert all(
        "PatientBirthDate" not in ds or ds.PatientBirthDate == "" for ds in datasets
    )  # inputs untouched


def test_malformed_type2_values_are_written_empty(
    pipeline: TriagePipeline, base_series: list[Dataset]
) -> None:
    datasets = copy.deepcopy(base_series)
    for ds in datasets:
        ds.PatientSex, ds.PatientBirthDate, ds.StudyTime = "U", "1970-01-01", "25:99"
    result = pipeline.run(datasets)
    assert result.sr.PatientSex == "" and result.sr.PatientBirthDate == "" and result.sr.StudyTime == ""


@pytest.mark.dicom3tools
def test_sr_and_seg_without_type2_values_pass_dciodvfy(
    pipeline: TriagePipeline, base_series: list[Dataset], tmp_path: Path
) -> None:
    dciodvfy = require_program("/usr/bin/dciodvfy")
    result = pipeline.run(without(base_series, *MISSING))
    assert result.seg is not None
    for name, ds in (("sr", result.sr), ("seg", result.seg)):
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        report = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
        errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{name}: {errors}"


@pytest.mark.parametrize("storage", ["signed", "scaled", "signed12"])
def test_pixel_storage_and_rescale_give_the_same_hu(base_series: list[Dataset], storage: str) -> None:
    reference = build_volume(base_series).hu
    stored = ChestSeries(storage=storage).datasets()
    # Quantisation: the reference rounds to 1 HU, these to 1, 0.5 and 2 HU.
    tolerance = {"signed": 0.0, "scaled": 0.76, "signed12": 1.51}[storage]
    inside = reference > -1000  # the unsigned reference clips noisy air at -1024 HU
    assert np.abs(build_volume(stored).hu - reference)[inside].max() <= tolerance


@pytest.mark.parametrize(
    "syntax",
    [RLELossless, JPEGLSLossless, JPEG2000Lossless, DeflatedExplicitVRLittleEndian],
    ids=lambda s: s.name,
)
def test_compressed_transfer_syntaxes_decode_to_the_same_volume(
    base_series: list[Dataset], syntax: str
) -> None:
    reference = build_volume(base_series)
    received = roundtrip(base_series, syntax)
    assert received[0].file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(build_volume(received).hu, reference.hu)


def test_a_compressed_signed_series_is_triaged(pipeline: TriagePipeline) -> None:
    spec = ChestSeries(storage="signed")
    result = pipeline.run(roundtrip(spec.datasets(), JPEGLSLossless))
    assert hit(result, spec, 0)


@pytest.mark.parametrize("position", sorted(ORIENTATIONS))
def test_every_patient_position_with_a_non_zero_origin(pipeline: TriagePipeline, position: str) -> None:
    spec = ChestSeries(position=position, origin_offset=(-23.0, 41.0, 812.5))
    datasets = spec.datasets()
    assert hu_at_target(datasets, spec) > -100  # the planted target is where its LPS position says
    result = pipeline.run(datasets)
    assert hit(result, spec, 0), (position, result.as_json()["findings"])


@pytest.mark.parametrize(
    ("pixel", "thickness", "rows", "slices"),
    [(0.5, 0.6, 512, 60), (0.75, 1.0, 384, 60), (1.0, 5.0, 384, 40)],
    ids=["0.5x0.6", "0.75x1", "1x5"],
)
def test_voxel_sizes_across_the_clinical_range(
    pipeline: TriagePipeline, pixel: float, thickness: float, rows: int, slices: int
) -> None:
    # A slab through the larger target (z = -120), its field of view covering the whole chest where it can.
    top = -120 + (slices - 1) * thickness / 2
    spec = ChestSeries(
        rows=rows,
        columns=rows,
        pixel_mm=pixel,
        thickness_mm=thickness,
        slices=slices,
        z_top=top,
        targets=(Target((-75.0, -10.0, -120.0), 11.0),),
    )
    datasets = spec.datasets()
    volume = build_volume(datasets)
    assert volume.spacing_mm == pytest.approx((pixel, pixel, thickness))
    outcome = pipeline.run_many([datasets])[0]
    assert isinstance(outcome, TriageResult), outcome.as_json()
    assert hit(outcome, spec, 0), outcome.as_json()["findings"]


def test_enhanced_ct_multi_frame(
    pipeline: TriagePipeline, base_series: list[Dataset], base_result: TriageResult
) -> None:
    enhanced = BASE.enhanced()
    volume = build_volume([enhanced])
    assert np.array_equal(volume.hu, build_volume(base_series).hu)
    assert [f.frame_number for f in volume.frames] == list(range(100, 0, -1))  # frame 1 is the top slice
    result = pipeline.run([enhanced])
    assert np.allclose(
        np.reshape([f.position_lps for f in result.findings], (-1, 3)),
        np.reshape([f.position_lps for f in base_result.findings], (-1, 3)),
    )
    # The SR's regions and the SEG's frames reference frames of the one Enhanced CT instance.
    referenced = [
        item
        for group in result.sr.ContentSequence
        if group.get("ContentSequence")
        for item in _walk(group)
        if "ReferencedFrameNumber" in item
    ]
    assert referenced and all(item.ReferencedSOPInstanceUID == enhanced.SOPInstanceUID for item in referenced)
    assert result.seg is not None
    sources = {
        frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for frame in result.seg.PerFrameFunctionalGroupsSequence
    }
    assert sources == {enhanced.SOPInstanceUID}


def _walk(item: Dataset) -> list[Dataset]:
    found = [item]
    for child in item.get("ContentSequence", []):
        found += _walk(child)
    for child in item.get("ReferencedSOPSequence", []):
        found.append(child)
    return found


def broken(base: list[Dataset], kind: str) -> list[Dataset]:
    datasets = copy.deepcopy(base)
    if kind == "gap":
        return datasets[:40] + datasets[42:]
    if kind == "duplicate":
        twin = copy.deepcopy(datasets[10])
        twin.SOPInstanceUID = twin.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.7.8.9"
        return [*datasets, twin]
    if kind == "orientation":
        datasets[5].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        return datasets
    if kind == "irregular":
        for ds in datasets[50:]:
            ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) - 0.9]
        return datasets
    if kind == "size":
        datasets[3].Rows = 128
        return datasets
    if kind == "no position":
        del datasets[7].ImagePositionPatient
        return datasets
    if kind == "no frame of reference":
        for ds in datasets:
            del ds.FrameOfReferenceUID
        return datasets
    if kind == "undecodable":
        for ds in datasets:
            ds.file_meta.TransferSyntaxUID = JPEGLSLossless
            ds.PixelData = b"\xff\xd8 not a codestream" * 4
        return datasets
    raise ValueError(kind)


REFUSALS = {
    "gap": r"gap: 2 slice\(s\) missing",
    "duplicate": "duplicate slice positions",
    "orientation": "mixed orientations",
    "irregular": "irregular slice spacing",
    "size": "slices differ in size",
    "no position": "lacks ImagePositionPatient",
    "undecodable": "cannot be decoded",
    "no frame of reference": "no FrameOfReferenceUID",
}


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_series_that_make_no_volume_are_refused_with_a_reason(base_series: list[Dataset], kind: str) -> None:
    with pytest.raises(VolumeError, match=REFUSALS[kind]) as caught:
        build_volume(broken(base_series, kind))
    assert "ROBUST" not in str(caught.value) and "RI-0001" not in str(caught.value)  # no PHI


def test_a_refused_series_does_not_stop_the_others(
    pipeline: TriagePipeline, base_series: list[Dataset]
) -> None:
    outcomes = pipeline.run_many(
        [broken(base_series, "gap"), base_series, broken(base_series, "undecodable")]
    )
    assert [type(o).__name__ for o in outcomes] == ["TriageFailure", "TriageResult", "TriageFailure"]
    gap, _, undecodable = outcomes
    assert isinstance(gap, TriageFailure) and not gap.retryable and "gap" in gap.reason
    assert isinstance(undecodable, TriageFailure) and "JPEG-LS" in undecodable.reason
    assert gap.as_json() == {
        "SeriesInstanceUID": base_series[0].SeriesInstanceUID,
        "status": "failed",
        "error": gap.reason,
    }
