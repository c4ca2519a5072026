"""Test objects for retrieve and transcoding: pydicom's bundled files in every transfer syntax the DIMSE
tests use (tests/archive_fixtures.py), plus a generated Segmentation (highdicom, over a synthetic CT series)
stored in Explicit VR Big Endian, which pydicom does not ship."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRBigEndian, generate_uid

from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from tests.archive_fixtures import EXTRA_FILES, TRANSFER_SYNTAX_FILES, quiet, testdata_file, unique_copy

# A 12-bit JPEG Extended stream that no installed decoder reads (pylibjpeg rejects its scan header; Pillow
# has no 12-bit JPEG): it can only go out as stored.
UNDECODABLE = "JPEG-lossy.dcm"


def segmentation_big_endian(path: Path, patient: int = 7) -> Path:
    """A binary SEG over a 3-slice synthetic CT series, written in Explicit VR Big Endian."""
    study = SyntheticStudy(patient=synthetic_patient(patient))
    source = list(ct_series(study, 3, rows=32, columns=32))
    mask = np.zeros((3, 32, 32), np.uint8)
    mask[1, 8:20, 10:24] = 1
    algorithm = hd.AlgorithmIdentificationSequence(
        name="test", family=codes.cid7162.ArtificialIntelligence, version="1"
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Nodule,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    seg = hd.seg.Segmentation(
        source_images=source,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=generate_uid(),
        series_number=50,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    # 1-bit pixel data is OB: nothing to byte-swap; pydicom writes every other value big endian.
    seg.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, seg, enforce_file_format=True)
    return path


def rt_plan(path: Path) -> Path:
    """pydicom's RT Plan (implicit VR, no pixel data), its file meta made to name its own SOP Instance UID
    (the bundled file's does not, and a C-STORE of it is refused as mismatched)."""
    ds = dcmread(testdata_file("rtplan.dcm"))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def retrieve_objects(folder: Path) -> list[Path]:
    """One object per transfer syntax of the DIMSE tests, the extra files, and the big endian SEG."""
    names = [n for n in dict.fromkeys([*TRANSFER_SYNTAX_FILES.values(), *EXTRA_FILES]) if n != "rtplan.dcm"]
    files = [unique_copy(name, folder / f"{i}_{name}", i) for i, name in enumerate(names)]
    for path in files:
        if path.name.endswith(UNDECODABLE):  # a study of its own, so that the others can be asked alone
            with quiet():
                ds = dcmread(path)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            ds.save_as(path)
    return [*files, rt_plan(folder / "rtplan.dcm"), segmentation_big_endian(folder / "seg_big_endian.dcm")]


def pixels(ds: Dataset) -> np.ndarray | None:
    """Decoded pixel values (RGB for colour), or None without pixel data."""
    if "PixelData" not in ds:
        return None
    with quiet():
        return np.asarray(ds.pixel_array)


def uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
