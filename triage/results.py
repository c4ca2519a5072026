"""Findings -> DICOM objects filed into the source study: a TID 1500 Comprehensive 3D SR and a BINARY SEG.

Each finding becomes, in the SR, a planar ROI group with a CIRCLE on the source slice through its centre
(what OHIF draws) carrying the diameter and the model's probability, and a volumetric ROI group with a 3D
POINT at its centroid carrying the volume. The SEG has one segment per finding with frames that reference
the source slices. UIDs derive from (source series, bundle digest), so re-running the same model on the
same series gives the same UIDs: the archive can replace rather than duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from triage.evidence import evidence
from triage.findings import Finding
from triage.volume import Volume

CT_CHEST = Code("24627-2", "LN", "CT Chest")
MANUFACTURER = "imaging-archive triage"


@dataclass(frozen=True)
class Producer:
    """Who made the results: the bundle, pinned by its digest."""

    name: str
    version: str
    digest: str
    sr_series_number: int = 9901
    seg_series_number: int = 9902

    def uid(self, source_series_uid: str, *parts: str) -> str:
        return str(generate_uid(entropy_srcs=[source_series_uid, self.digest, *parts]))

    def algorithm(self) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(name=self.name[:64], version=self.version[:64])


def build_sr(findings: Sequence[Finding], volume: Volume, producer: Producer) -> Dataset:
    source = volume.datasets[0]
    series_uid = str(source.SeriesInstanceUID)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=producer.uid(series_uid, "device"),
            name=producer.name[:64],
            manufacturer_name=MANUFACTURER,
            model_name=producer.version[:64],
        ),
    )
    groups: list[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    for n, finding in enumerate(findings, start=1):
        groups.extend(_finding_groups(n, finding, volume, producer))
    if not groups:
        # TID 1500 needs at least one group: a negative result is stated, not left implicit.
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=producer.uid(series_uid, "no nodule"), identifier="Nodule search"
                ),
                finding_type=codes.SCT.Nodule,
                finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Lung)],
                algorithm_id=producer.algorithm(),
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(name=codes.SCT.Nodule, value=codes.SCT.Absent)
                ],
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=CT_CHEST,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence(volume.datasets),
        content=report,
        series_instance_uid=producer.uid(series_uid, "SR series"),
        series_number=producer.sr_series_number,
        sop_instance_uid=producer.uid(series_uid, "SR"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,  # machine output, not verified by a reader
        institution_name=getattr(source, "InstitutionName", None),
    )
    sr.SeriesDescription = f"AI nodules: {producer.name}"[:64]
    return sr


def _finding_groups(
    n: int, finding: Finding, volume: Volume, producer: Producer
) -> list[
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
]:
    series_uid = str(volume.datasets[0].SeriesInstanceUID)
    column, row, k = volume.to_index(finding.position_lps)
    frame = volume.frames[int(np.clip(round(k), 0, len(volume.frames) - 1))]
    image = frame.dataset
    columns, rows = int(image.Columns), int(image.Rows)
    # SCOORD pixel coordinates: (0, 0) is the outer corner of the first pixel, so its centre is (0.5, 0.5).
    x, y = float(np.clip(column + 0.5, 0, columns)), float(np.clip(row + 0.5, 0, rows))
    radius_px = finding.diameter_mm / 2 / frame.pixel_spacing[1]
    edge = min(x + radius_px, float(columns)) if x + radius_px <= columns else max(x - radius_px, 0.0)
    circle = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.CIRCLE,
        graphic_data=np.array([[x, y], [edge, y]]),
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=image.SOPClassUID,
            referenced_sop_instance_uid=image.SOPInstanceUID,
            referenced_frame_numbers=None if frame.frame_number is None else [frame.frame_number],
        ),
    )
    common = {
        "finding_type": codes.SCT.Nodule,
        "finding_sites": [hd.sr.FindingSite(anatomic_location=codes.SCT.Lung)],
        "algorithm_id": producer.algorithm(),
    }
    planar = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=producer.uid(series_uid, "nodule", str(n)), identifier=f"Nodule {n}"
        ),
        referenced_region=circle,
        measurements=[
            hd.sr.Measurement(
                name=codes.SCT.Diameter, value=round(finding.diameter_mm, 2), unit=codes.UCUM.Millimeter
            ),
            hd.sr.Measurement(
                name=codes.DCM.Probability, value=round(finding.score, 4), unit=codes.UCUM.NoUnits
            ),
        ],
        **common,  # type: ignore[arg-type]
    )
    point = hd.sr.VolumeSurface(
        graphic_type=hd.sr.GraphicTypeValues3D.POINT,
        graphic_data=np.array([finding.position_lps]),
        frame_of_reference_uid=str(image.FrameOfReferenceUID),
        source_series=hd.sr.SourceSeriesForSegmentation(series_uid),
    )
    volumetric = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=producer.uid(series_uid, "nodule centre", str(n)), identifier=f"Nodule {n} centre"
        ),
        referenced_volume_surface=point,
        measurements=[
            hd.sr.Measurement(
                name=codes.SCT.Volume, value=round(finding.volume_mm3, 1), unit=codes.UCUM.CubicMillimeter
            ),
            hd.sr.Measurement(
                name=codes.DCM.Probability, value=round(finding.score, 4), unit=codes.UCUM.NoUnits
            ),
        ],
        **common,  # type: ignore[arg-type]
    )
    return [planar, volumetric]


def build_seg(
    labels: np.ndarray, findings: Sequence[Finding], volume: Volume, producer: Producer
) -> Dataset | None:
    """BINARY SEG of a (columns, rows, slices) label map (finding n = value n); None without findings."""
    present = [n for n in range(1, len(findings) + 1) if n <= 255 and np.any(labels == n)]
    if not present:
        return None
    source = volume.datasets[0]
    series_uid = str(source.SeriesInstanceUID)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=producer.name[:64], family=codes.cid7162.ArtificialIntelligence, version=producer.version[:64]
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"Nodule {n}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Nodule,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=producer.uid(series_uid, "nodule", str(n)),
            tracking_id=f"Nodule {n}",
            anatomic_regions=[codes.SCT.Lung],
        )
        for number, n in enumerate(present, start=1)
    ]
    # Renumber to consecutive segment numbers (a finding whose mask fell outside the grid is skipped).
    remap = np.zeros(256, np.uint8)
    for number, n in enumerate(present, start=1):
        remap[n] = number
    planes = remap[labels].transpose(2, 1, 0)  # (slices, rows, columns) in slice order
    sources = volume.datasets
    if all(f.frame_number is None for f in volume.frames):
        # Single-frame sources: SEG frame i is source image i (the slices are already in that order).
        source_images = [f.dataset for f in volume.frames]
        pixel_array = np.ascontiguousarray(planes)
    elif len(sources) == 1:
        # One multi-frame source: SEG frame i is source frame i + 1.
        source_images = sources
        pixel_array = np.zeros((int(sources[0].NumberOfFrames), *planes.shape[1:]), np.uint8)
        for k, frame in enumerate(volume.frames):
            pixel_array[int(frame.frame_number or 1) - 1] = planes[k]
    else:
        return None  # several multi-frame sources: highdicom's SEG takes one (the SR still has the findings)
    seg = hd.seg.Segmentation(
        source_images=evidence(source_images),
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=producer.uid(series_uid, "SEG series"),
        series_number=producer.seg_series_number,
        sop_instance_uid=producer.uid(series_uid, "SEG"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=producer.name[:64],
        software_versions=producer.version[:64],
        device_serial_number=producer.digest[:16],
        content_label="NODULES",
        content_description=f"AI nodules: {producer.name}"[:64],
        omit_empty_frames=True,
    )
    seg.SeriesDescription = f"AI nodules SEG: {producer.name}"[:64]
    return seg
