"""Synthetic CT studies with synthetic PHI, for tests, benchmarks and demos.

Nothing here is real patient data: names, IDs and dates are generated from a seed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid


@dataclass
class SyntheticPatient:
    PatientName: str = "DOE^JANE"
    PatientID: str = "PAT-0001"
    PatientBirthDate: str = "19600101"
    PatientSex: str = "F"


@dataclass
class SyntheticStudy:
    patient: SyntheticPatient = field(default_factory=SyntheticPatient)
    StudyInstanceUID: str = field(default_factory=generate_uid)
    StudyDate: str = "20240315"
    StudyTime: str = "101500"
    AccessionNumber: str = "ACC0001"
    StudyDescription: str = "CT CHEST"
    StudyID: str = "1"
    ReferringPhysicianName: str = "HOUSE^GREGORY"
    FrameOfReferenceUID: str = field(default_factory=generate_uid)


def ct_slice(
    study: SyntheticStudy,
    series_uid: str,
    series_number: int,
    index: int,
    *,
    rows: int = 512,
    columns: int = 512,
    slice_thickness: float = 1.25,
    pixels: np.ndarray | None = None,
    series_description: str = "AXIAL 1.25",
    body_part: str = "CHEST",
    modality: str = "CT",
) -> Dataset:
    """One axial CT image (16-bit, HU = value - 1024) of a synthetic study."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    sop_uid = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study.StudyDate
    ds.SeriesDate = study.StudyDate
    ds.ContentDate = study.StudyDate
    ds.StudyTime = study.StudyTime
    ds.SeriesTime = study.StudyTime
    ds.ContentTime = study.StudyTime
    ds.AccessionNumber = study.AccessionNumber
    ds.Modality = modality
    ds.Manufacturer = "SYNTHETIC"
    ds.InstitutionName = "SYNTHETIC GENERAL HOSPITAL"
    ds.ReferringPhysicianName = study.ReferringPhysicianName
    ds.StudyDescription = study.StudyDescription
    ds.SeriesDescription = series_description
    ds.PatientName = study.patient.PatientName
    ds.PatientID = study.patient.PatientID
    ds.PatientBirthDate = study.patient.PatientBirthDate
    ds.PatientSex = study.patient.PatientSex
    ds.BodyPartExamined = body_part
    ds.SliceThickness = slice_thickness
    ds.KVP = 120
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study.StudyInstanceUID
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study.StudyID
    ds.SeriesNumber = series_number
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [-0.5 * columns * 0.7, -0.5 * rows * 0.7, -index * slice_thickness]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = study.FrameOfReferenceUID
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = -index * slice_thickness
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    if pixels is None:
        rng = np.random.default_rng(index)
        yy, xx = np.mgrid[0:rows, 0:columns]
        body = (
            (yy - rows / 2) ** 2 / (0.42 * rows) ** 2 + (xx - columns / 2) ** 2 / (0.45 * columns) ** 2
        ) < 1
        pixels = np.where(body, 1064, 24).astype(np.uint16) + rng.integers(
            0, 20, (rows, columns), dtype=np.uint16
        )
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def ct_series(
    study: SyntheticStudy | None = None,
    count: int = 10,
    *,
    series_number: int = 1,
    series_uid: str | None = None,
    **kwargs: object,
) -> Iterator[Dataset]:
    """`count` slices of one CT series of `study`."""
    study = study or SyntheticStudy()
    series_uid = series_uid or generate_uid()
    for i in range(count):
        yield ct_slice(study, series_uid, series_number, i, **kwargs)  # type: ignore[arg-type]


def synthetic_patient(n: int) -> SyntheticPatient:
    """The n-th synthetic patient: distinct, greppable name and ID."""
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=397 * n)
    return SyntheticPatient(
        PatientName=f"SYNTH{n:04d}^PATIENT",
        PatientID=f"SYN{n:06d}",
        PatientBirthDate=birth.strftime("%Y%m%d"),
        PatientSex="MF"[n % 2],
    )
