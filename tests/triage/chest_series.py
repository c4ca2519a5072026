"""An independent chest-CT series writer for the input-robustness tests.

Independent of the training phantoms (triage.training) and of imaging.synthetic on purpose: its anatomy
is analytic (super-ellipsoid lungs, straight vessel cylinders, rib arcs, a block-shaped heart, spherical
nodules), evaluated at each pixel's patient position from the series' own ImagePositionPatient and
ImageOrientationPatient, and it writes the DICOM attributes itself. So the tests see geometry, pixel
storage, transfer syntaxes, Enhanced CT and missing attributes the way another generator (or a scanner)
makes them. Synthetic PHI only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

_RENDERED: dict[str, tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]] = {}

# Patient positions -> (row direction, column direction) in LPS, as scanners write them.
ORIENTATIONS = {
    "HFS": ([1, 0, 0], [0, 1, 0]),
    "FFS": ([-1, 0, 0], [0, 1, 0]),
    "HFP": ([-1, 0, 0], [0, -1, 0]),
    "FFP": ([1, 0, 0], [0, -1, 0]),
    "HFDL": ([0, -1, 0], [1, 0, 0]),
    "HFDR": ([0, 1, 0], [-1, 0, 0]),
}


@dataclass(frozen=True)
class Target:
    centre: tuple[float, float, float]  # LPS mm
    diameter_mm: float
    hu: float = 30.0


@dataclass
class ChestSeries:
    """Geometry and storage of one series; `datasets()` renders it."""

    rows: int = 256
    columns: int = 256
    slices: int = 100
    pixel_mm: float = 1.4
    thickness_mm: float = 2.5
    origin_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # added to every position (non-zero origins)
    position: str = "HFS"
    storage: str = "unsigned"  # unsigned (+1024 offset), signed (HU), scaled (slope 0.5), signed12 (12 bits)
    targets: tuple[Target, ...] = (Target((-75.0, -10.0, -120.0), 11.0), Target((70.0, 15.0, -140.0), 8.0))
    noise_hu: float = 20.0
    seed: int = 0
    z_top: float = 0.0  # z of the most superior slice (before origin_offset)
    attributes: dict[str, object] = field(default_factory=dict)

    def hu_at(self, points: np.ndarray) -> np.ndarray:
        """Noise-free HU at LPS points (..., 3)."""
        x, y, z = points[..., 0], points[..., 1], points[..., 2]
        zc = self.z_top - 120.0  # lungs centred 120 mm below the top slice
        hu = np.full(x.shape, -1000.0)
        body = (x / 165) ** 2 + (y / 120) ** 2 <= 1
        hu[body] = -90.0
        hu[(x / 150) ** 2 + (y / 106) ** 2 <= 1] = 50.0
        # Ribs: rings of radius 6 mm round the chest every 25 mm along z (the lungs, painted next, stay clear).
        ring = np.sqrt((x / 139) ** 2 + (y / 96) ** 2)
        on_rib = (np.abs(ring - 1.0) * 100 < 5) & (np.abs(((z - zc) % 25) - 12.5) < 5)
        hu[on_rib & (y > -60)] = 600.0
        for side in (-1, 1):
            lung = (np.abs(x - side * 72) / 58) ** 2.5 + (np.abs(y + 2) / 82) ** 2.5 + (
                np.abs(z - zc) / 115
            ) ** 2.5 <= 1
            hu[lung] = -860.0
        # Heart: a rounded box (super-ellipsoid) in front of the spine, left of the midline.
        heart = (np.abs(x - 15) / 50) ** 4 + (np.abs(y + 40) / 42) ** 4 + (np.abs(z - zc + 40) / 48) ** 4 <= 1
        hu[heart] = 45.0
        # Vessels: straight cylinders from each hilum through the lung.
        for side in (-1, 1):
            for angle, radius in ((0.3, 3.0), (1.2, 2.2), (2.2, 1.6), (2.8, 2.5)):
                d = np.array([np.cos(angle), np.sin(angle) * 0.6, 0.5])
                d /= np.linalg.norm(d)
                a = np.array([side * 14.0, 0.0, zc])  # from the hilum, in the mediastinum
                p = points - a
                along = p @ d
                distance2 = (p**2).sum(-1) - along**2
                in_lung = hu < -700
                hu[(distance2 <= radius**2) & in_lung] = 40.0
        for target in self.targets:
            r2 = ((points - np.asarray(target.centre)) ** 2).sum(-1)
            hu[r2 <= (target.diameter_mm / 2) ** 2] = target.hu
        return hu

    def geometry(self) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(row direction, column direction, ImagePositionPatient of each slice in instance order)."""
        row, column = (np.asarray(v, float) for v in ORIENTATIONS[self.position])
        width_r, width_c = (self.columns - 1) * self.pixel_mm, (self.rows - 1) * self.pixel_mm
        # Centre the slice on x = y = 0 whatever the directions.
        corner = -(row * width_r + column * width_c) / 2
        feet_first = self.position.startswith("FF")
        positions = []
        for i in range(self.slices):
            k = self.slices - 1 - i if feet_first else i  # feet first: acquired from the feet up
            z = self.z_top - k * self.thickness_mm
            positions.append(corner + np.array([0.0, 0.0, z]) + np.asarray(self.origin_offset))
        return row, column, positions

    def hu_volume(self) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
        """(HU planes in instance order, their positions, row and column directions); rendered once per
        geometry (storage and attribute variants of one geometry share it)."""
        key = repr(
            (
                self.rows,
                self.columns,
                self.slices,
                self.pixel_mm,
                self.thickness_mm,
                self.origin_offset,
                self.position,
                self.targets,
                self.noise_hu,
                self.seed,
                self.z_top,
            )
        )
        if key not in _RENDERED:
            _RENDERED[key] = self._render()
        return _RENDERED[key]

    def _render(self) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
        row, column, positions = self.geometry()
        rng = np.random.default_rng(self.seed)
        jj, ii = np.mgrid[0 : self.rows, 0 : self.columns]
        planes = []
        offset = np.asarray(self.origin_offset)
        for position in positions:
            points = position + ii[..., None] * self.pixel_mm * row + jj[..., None] * self.pixel_mm * column
            hu = self.hu_at(points - offset)  # anatomy is fixed to the patient; the offset moves the grid
            planes.append(hu + rng.normal(0, self.noise_hu, hu.shape))
        return np.stack(planes), positions, row, column

    def target_lps(self, n: int = 0) -> np.ndarray:
        return np.asarray(self.targets[n].centre) + np.asarray(self.origin_offset)

    def datasets(self) -> list[Dataset]:
        planes, positions, row, column = self.hu_volume()
        study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
        out = []
        for i, (plane, position) in enumerate(zip(planes, positions, strict=True)):
            ds = _header(self, study, series, frame_of_reference)
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta = _file_meta(ds)
            ds.InstanceNumber = i + 1
            ds.ImagePositionPatient = [round(float(v), 4) for v in position]
            ds.ImageOrientationPatient = [*map(float, row), *map(float, column)]
            ds.PixelSpacing = [self.pixel_mm, self.pixel_mm]
            ds.SliceThickness = self.thickness_mm
            _store(ds, plane, self.storage)
            for keyword, value in self.attributes.items():
                setattr(ds, keyword, value)
            out.append(ds)
        return out

    def enhanced(self) -> Dataset:
        """The same slices as one Enhanced CT Image (functional groups, one frame per slice)."""
        planes, positions, row, column = self.hu_volume()
        ds = _header(self, generate_uid(), generate_uid(), generate_uid())
        ds.SOPClassUID = EnhancedCTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta = _file_meta(ds)
        ds.InstanceNumber = 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
        ds.NumberOfFrames = len(planes)
        ds.ContentQualification = "PRODUCT"
        shared = Dataset()
        measures = Dataset()
        measures.PixelSpacing = [self.pixel_mm, self.pixel_mm]
        measures.SliceThickness = self.thickness_mm
        orientation = Dataset()
        orientation.ImageOrientationPatient = [*map(float, row), *map(float, column)]
        transformation = Dataset()
        stored = _store(Dataset(), planes, self.storage)
        transformation.RescaleIntercept, transformation.RescaleSlope = (
            stored.RescaleIntercept,
            stored.RescaleSlope,
        )
        transformation.RescaleType = "HU"
        shared.PixelMeasuresSequence = Sequence([measures])
        shared.PlaneOrientationSequence = Sequence([orientation])
        shared.PixelValueTransformationSequence = Sequence([transformation])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        per_frame = []
        for i, position in enumerate(positions):
            item = Dataset()
            plane = Dataset()
            plane.ImagePositionPatient = [round(float(v), 4) for v in position]
            item.PlanePositionSequence = Sequence([plane])
            content = Dataset()
            content.FrameAcquisitionNumber = 1
            content.InStackPositionNumber = i + 1
            item.FrameContentSequence = Sequence([content])
            per_frame.append(item)
        ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
        for keyword in ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated"):
            setattr(ds, keyword, getattr(stored, keyword))
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
            stored.BitsStored,
            stored.HighBit,
            stored.PixelRepresentation,
        )
        ds.PixelData = stored.PixelData
        for keyword, value in self.attributes.items():
            setattr(ds, keyword, value)
        return ds


def _header(spec: ChestSeries, study: str, series: str, frame_of_reference: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Modality = "CT"
    ds.Manufacturer = "INDEPENDENT PHANTOM WORKS"
    ds.PatientName = "ROBUST^INPUT"
    ds.PatientID = "RI-0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.StudyDate, ds.StudyTime = "20250102", "080000"
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "7", "RI7", "WHO^EVER"
    ds.SeriesNumber = 3
    ds.SeriesDescription = "CHEST 1.0 B45f"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = spec.position
    return ds


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _store(ds: Dataset, hu: np.ndarray, storage: str) -> Dataset:
    """Pixel module for HU values `hu` ((rows, columns) or (frames, rows, columns)) in `storage`."""
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = hu.shape[-2], hu.shape[-1]
    ds.BitsAllocated = 16
    if storage == "unsigned":
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        values = np.clip(np.rint(hu + 1024), 0, 65535).astype(np.uint16)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 0
    elif storage == "signed":
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        values = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
    elif storage == "scaled":
        ds.RescaleSlope, ds.RescaleIntercept = 0.5, -3000
        values = np.clip(np.rint((hu + 3000) / 0.5), 0, 65535).astype(np.uint16)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 0
    elif storage == "signed12":
        ds.RescaleSlope, ds.RescaleIntercept = 2, -100
        values = np.clip(np.rint((hu + 100) / 2), -2048, 2047).astype(np.int16)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 1
    else:
        raise ValueError(storage)
    ds.RescaleType = "HU"
    ds.PixelData = values.tobytes()
    return ds


def without(datasets: list[Dataset], *keywords: str, empty: bool = False) -> list[Dataset]:
    """Copies with `keywords` removed (or present and empty)."""
    out = []
    for ds in datasets:
        ds = copy.deepcopy(ds)
        for keyword in keywords:
            if empty:
                setattr(ds, keyword, "")
            elif keyword in ds:
                delattr(ds, keyword)
        out.append(ds)
    return out
