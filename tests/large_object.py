"""A large multi-frame object written to disk in bounded memory (the memory tests and benchmarks of
streamed ingest): a Multi-frame Grayscale Word Secondary Capture image (512 x 512, 16-bit, explicit VR
little endian) whose frames are generated as they are written. Synthetic PHI (imaging.synthetic)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from imaging.synthetic import SyntheticStudy, synthetic_patient

MULTIFRAME_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
ROWS = COLUMNS = 512
FRAME_BYTES = ROWS * COLUMNS * 2


def write_multiframe(path: Path, size_bytes: int, *, patient: int = 900) -> tuple[str, int]:
    """Write an object of about `size_bytes` (whole frames); returns (SOPInstanceUID, file size)."""
    frames = max(1, size_bytes // FRAME_BYTES)
    study = SyntheticStudy(patient=synthetic_patient(patient), StudyDescription="LARGE MULTIFRAME")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MULTIFRAME_WORD_SC
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = MULTIFRAME_WORD_SC, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study.StudyInstanceUID, generate_uid()
    ds.PatientName, ds.PatientID = study.patient.PatientName, study.patient.PatientID
    ds.PatientBirthDate, ds.PatientSex = study.patient.PatientBirthDate, study.patient.PatientSex
    ds.StudyDate, ds.StudyTime, ds.StudyID = study.StudyDate, study.StudyTime, study.StudyID
    ds.AccessionNumber, ds.StudyDescription = study.AccessionNumber, study.StudyDescription
    ds.Modality, ds.ConversionType, ds.SeriesNumber, ds.InstanceNumber = "OT", "WSD", 1, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns, ds.NumberOfFrames = ROWS, COLUMNS, frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = 40.0
    ds.ReferringPhysicianName = study.ReferringPhysicianName
    ds.Laterality = ds.PatientOrientation = ""
    ds.BurnedInAnnotation, ds.PresentationLUTShape = "NO", "IDENTITY"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.save_as(path, enforce_file_format=True)
    ramp = (np.arange(FRAME_BYTES // 2, dtype=np.uint16) % 4096).astype("<u2")
    with path.open("ab") as f:
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frames * FRAME_BYTES))
        for index in range(frames):
            f.write(np.roll(ramp, index).tobytes())
    return sop_uid, path.stat().st_size
