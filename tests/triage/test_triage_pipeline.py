"""The reference bundle end to end: planted nodules found in patient coordinates, none on nodule-free
series, SR and SEG filed in the source study and valid."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage
from triage_sr_helpers import concept, content_items, measurement_groups, numbers, scoords

from imaging.synthetic import SyntheticStudy, ct_series
from tests.conftest import require_program
from triage.pipeline import Priority, TriagePipeline, TriageResult
from triage.results import Producer, build_seg, build_sr
from triage.training.bundle_files import BUNDLE_VERSION
from triage.training.phantom import Phantom
from triage.volume import build_volume


def match(position: tuple[float, float, float], phantom: Phantom) -> int | None:
    for n, nodule in enumerate(phantom.nodules):
        if np.linalg.norm(np.subtract(position, nodule.center_lps)) <= max(nodule.diameter_mm / 2, 4.0):
            return n
    return None


def test_planted_nodules_are_found_with_position_size_and_priority(
    nodule_result: TriageResult, nodule_phantom: Phantom
) -> None:
    matched = [match(f.position_lps, nodule_phantom) for f in nodule_result.findings]
    assert sorted(m for m in matched if m is not None) == [0, 1, 2], nodule_result.as_json()
    # No false positive that would change the priority (Fleischner: follow-up from 6 mm).
    assert all(f.diameter_mm < 6 for f, m in zip(nodule_result.findings, matched, strict=True) if m is None)
    for finding, n in zip(nodule_result.findings, matched, strict=True):
        if n is None:
            continue
        truth = nodule_phantom.nodules[n]  # type: ignore[index]
        assert np.linalg.norm(np.subtract(finding.position_lps, truth.center_lps)) < 2.5
        assert finding.diameter_mm == pytest.approx(truth.diameter_mm, rel=0.3)
        assert 0.6 <= finding.score <= 1.0
    assert nodule_result.priority is Priority.HIGH  # a 12 mm nodule
    assert set(nodule_result.timings) >= {"decode", "preprocess", "inference", "encode"}
    assert nodule_result.bundle_version == BUNDLE_VERSION


def test_nodule_free_series_is_low(clean_result: TriageResult, clean_series: list[Dataset]) -> None:
    assert clean_result.priority is Priority.LOW
    assert all(f.diameter_mm < 6 for f in clean_result.findings), clean_result.as_json()["findings"]
    assert clean_result.sr.StudyInstanceUID == clean_series[0].StudyInstanceUID


def test_a_negative_result_is_stated_in_the_sr(clean_series: list[Dataset]) -> None:
    producer = Producer("reference", "test", "0" * 64)
    sr = build_sr([], build_volume(clean_series), producer)
    assert build_seg(np.zeros((1, 1, 1), np.uint8), [], build_volume(clean_series), producer) is None
    [group] = measurement_groups(sr)  # "Nodule: Absent", stated rather than implied
    coded = {
        (concept(i), i.ConceptCodeSequence[0].CodeMeaning)
        for i in content_items(group)
        if i.ValueType == "CODE"
    }
    assert ("Nodule", "Absent") in coded


def test_plain_synthetic_ct_without_lungs_has_no_findings(pipeline: TriagePipeline) -> None:
    datasets = list(ct_series(SyntheticStudy(), count=40, rows=128, columns=128))
    assert pipeline.run(datasets).findings == []


def test_sr_is_tid1500_in_the_source_study_with_2d_and_3d_regions(
    nodule_result: TriageResult, nodule_series: list[Dataset], nodule_phantom: Phantom
) -> None:
    sr, source = nodule_result.sr, nodule_series[0]
    assert sr.SOPClassUID == Comprehensive3DSRStorage and sr.Modality == "SR"
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    by_uid = {ds.SOPInstanceUID: ds for ds in nodule_series}
    groups = measurement_groups(sr)
    assert len(groups) == 2 * len(nodule_result.findings)
    circles = [s for g in groups for s in scoords(g, "SCOORD") if s.GraphicType == "CIRCLE"]
    points = [s for g in groups for s in scoords(g, "SCOORD3D") if s.GraphicType == "POINT"]
    assert len(circles) == len(points) == len(nodule_result.findings) >= 3
    for finding, circle, point in zip(nodule_result.findings, circles, points, strict=True):
        # The 3D point is the finding's centroid, and on a planted nodule when it is one of 6 mm or more.
        assert np.asarray(point.GraphicData, float) == pytest.approx(finding.position_lps, abs=0.01)
        if finding.diameter_mm >= 6:
            assert match(tuple(float(v) for v in point.GraphicData), nodule_phantom) is not None
        # The circle lies on the source slice through the centre and references it.
        image = circle.ContentSequence[0].ReferencedSOPSequence[0]
        slice_z = float(by_uid[image.ReferencedSOPInstanceUID].ImagePositionPatient[2])
        assert abs(slice_z - finding.position_lps[2]) <= 1.25 + 1e-6
        centre, edge = np.asarray(circle.GraphicData, float).reshape(2, 2)
        assert np.linalg.norm(edge - centre) * 1.4 == pytest.approx(finding.diameter_mm / 2, rel=1e-3)
    diameters = [v for g in groups for v in numbers(g, "Diameter")]
    assert diameters == pytest.approx([f.diameter_mm for f in nodule_result.findings], abs=0.01)
    codes = {i.ConceptCodeSequence[0].CodeMeaning for i in content_items(sr) if i.ValueType == "CODE"}
    assert {"Nodule", "Lung"} <= codes
    assert len([v for g in groups for v in numbers(g, "Probability")]) == 2 * len(nodule_result.findings)


def test_seg_is_binary_in_the_source_study_and_frames_reference_source_slices(
    nodule_result: TriageResult, nodule_series: list[Dataset]
) -> None:
    seg, source = nodule_result.seg, nodule_series[0]
    assert seg is not None
    assert seg.SOPClassUID == SegmentationStorage and seg.SegmentationType == "BINARY"
    assert (
        seg.StudyInstanceUID == source.StudyInstanceUID
        and seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    )
    assert len(seg.SegmentSequence) == len(nodule_result.findings)
    family = (
        seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmFamilyCodeSequence[0]
    )
    assert (family.CodeValue, family.CodingSchemeDesignator) == ("123110", "DCM")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    z_of = {ds.SOPInstanceUID: float(ds.ImagePositionPatient[2]) for ds in nodule_series}
    frames_per_segment: dict[int, int] = {}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        referenced = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert referenced in z_of
        assert float(frame.PlanePositionSequence[0].ImagePositionPatient[2]) == pytest.approx(
            z_of[referenced]
        )
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        frames_per_segment[number] = frames_per_segment.get(number, 0) + 1
    for number, finding in enumerate(nodule_result.findings, start=1):
        # A nodule of d mm spans about d / 2.5 slices.
        assert abs(frames_per_segment[number] - finding.diameter_mm / 2.5) <= 2


@pytest.mark.dicom3tools
def test_sr_and_seg_pass_dciodvfy(
    nodule_result: TriageResult, clean_result: TriageResult, tmp_path: Path
) -> None:
    dciodvfy = require_program("/usr/bin/dciodvfy")
    assert nodule_result.seg is not None
    for name, ds in (("sr", nodule_result.sr), ("seg", nodule_result.seg), ("empty-sr", clean_result.sr)):
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        dcmread(path)  # round-trips
        report = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
        errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{name}: {errors}"


def test_run_many_batches_series_and_matches_single_runs(
    pipeline: TriagePipeline,
    nodule_series: list[Dataset],
    clean_series: list[Dataset],
    nodule_result: TriageResult,
    clean_result: TriageResult,
) -> None:
    batched = pipeline.run_many([nodule_series, clean_series])
    assert [r.series_instance_uid for r in batched] == [
        nodule_series[0].SeriesInstanceUID,
        clean_series[0].SeriesInstanceUID,
    ]
    assert np.allclose(
        np.reshape([f.position_lps for f in batched[1].findings], (-1, 3)),
        np.reshape([f.position_lps for f in clean_result.findings], (-1, 3)),
        atol=0.5,
    )
    assert len(batched[0].findings) == len(nodule_result.findings)
    for a, b in zip(batched[0].findings, nodule_result.findings, strict=True):
        assert a.position_lps == pytest.approx(b.position_lps, abs=0.5)
    # Same series, same bundle: same result UIDs (idempotent re-runs).
    assert batched[0].sr.SOPInstanceUID == nodule_result.sr.SOPInstanceUID
    assert batched[0].seg is not None and nodule_result.seg is not None
    assert batched[0].seg.SOPInstanceUID == nodule_result.seg.SOPInstanceUID


def test_selection_is_applied_by_the_pipeline(pipeline: TriagePipeline, nodule_series: list[Dataset]) -> None:
    assert pipeline.selects(nodule_series)
    assert not pipeline.selects(nodule_series[:10])
