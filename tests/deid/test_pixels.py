"""Burned-in text: masked or quarantined, never passed; uncompressed and JPEG-compressed.

Images are rendered here with Pillow (its bundled font, no download): a secondary capture with the
patient's name and MRN burned into it, and an ultrasound frame with text outside its regions.
"""

from __future__ import annotations

import difflib
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    generate_uid,
)

from imaging.deid import Deidentifier, DeidOption, DeidProfile
from imaging.deid.pixels import PixelCleaner, _ocr_words, _to_8bit, burned_in_risk, normalise
from tests.deid.conftest import KEY

NAME, MRN = "ZQXBURNEDNAME", "ZQX77123"
pytestmark = pytest.mark.tesseract


@pytest.fixture(autouse=True)
def _tesseract() -> None:
    from tests.conftest import require_program

    require_program("tesseract")


def _render(size: int = 256, colour: bool = False) -> np.ndarray:
    image = Image.new("RGB" if colour else "L", (size, size), (30, 30, 30) if colour else 30)
    draw = ImageDraw.Draw(image)
    draw.ellipse((70, 70, 190, 190), fill=(140, 120, 120) if colour else 140)
    font = ImageFont.load_default(size=18)
    draw.text((10, 30), NAME, fill=(250, 250, 250) if colour else 250, font=font)
    draw.text((10, 220), f"MRN {MRN}", fill=(250, 250, 250) if colour else 250, font=font)
    return np.array(image)


def _image(
    pixels: np.ndarray, *, modality: str = "OT", sop_class: str = SecondaryCaptureImageStorage
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
    ds.PatientName = f"{NAME}^JANE"
    ds.PatientID = MRN
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    ds.PhotometricInterpretation = "RGB" if pixels.ndim == 3 else "MONOCHROME2"
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PixelData = pixels.tobytes()
    return ds


def _jpeg(ds: Dataset, pixels: np.ndarray) -> Dataset:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    if pixels.ndim == 3:
        ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.LossyImageCompression = "01"
    return ds


def _ocr_tokens(ds: Dataset) -> set[str]:
    frame = ds.pixel_array
    words = _ocr_words(_to_8bit(frame, False))
    text = " ".join(normalise(w[0]) for w in words)
    # Fuzzy: a token counts as read when all but its last character are (OCR may misread one).
    return {t for t in (NAME, MRN) if normalise(t)[:-1] in text}


def _check_masked_or_quarantined(ds: Dataset) -> None:
    assert _ocr_tokens(ds) == {NAME, MRN}  # the fixture really carries readable burned-in PHI
    result = Deidentifier(key=KEY).deidentify(ds)
    if result.quarantined:
        assert result.dataset is None and result.reasons
        return
    out = result.dataset
    assert out is not None
    assert _ocr_tokens(out) == set()
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # modified: written uncompressed
    assert NAME.encode() not in out.PixelData and MRN.encode() not in bytes(out.PixelData)


def test_header_heuristics() -> None:
    assert burned_in_risk(_image(_render()))  # SC / OT
    ct = _image(_render(), modality="CT", sop_class="1.2.840.10008.5.1.4.1.1.2")
    ct.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert not burned_in_risk(ct)
    ct.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    assert burned_in_risk(ct)
    ct.ImageType = ["ORIGINAL", "PRIMARY"]
    ct.BurnedInAnnotation = "YES"
    assert burned_in_risk(ct)


def test_secondary_capture_uncompressed() -> None:
    _check_masked_or_quarantined(_image(_render()))


def test_secondary_capture_jpeg_baseline_grey() -> None:
    pixels = _render()
    _check_masked_or_quarantined(_jpeg(_image(pixels), pixels))


def test_secondary_capture_jpeg_baseline_colour() -> None:
    pixels = _render(colour=True)
    _check_masked_or_quarantined(_jpeg(_image(pixels), pixels))


def test_without_clean_pixel_data_an_image_at_risk_is_quarantined() -> None:
    profile = DeidProfile(options=frozenset({DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES}))
    result = Deidentifier(key=KEY, profile=profile).deidentify(_image(_render()))
    assert result.quarantined and result.dataset is None
    assert not [r for r in result.reasons if NAME in r or MRN in r]


def test_ultrasound_keeps_only_its_regions() -> None:
    pixels = _render()
    pixels[100:200, 60:200] = np.tile(np.linspace(60, 120, 140, dtype=np.uint8), (100, 1))  # smooth image
    ds = _image(pixels, modality="US", sop_class=UltrasoundImageStorage)
    region = Dataset()
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 60, 100
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 199, 199
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    result = Deidentifier(key=KEY).deidentify(ds)
    assert not result.quarantined, result.reasons
    out = result.dataset
    assert out is not None
    after = out.pixel_array
    assert np.array_equal(after[100:200, 60:200], pixels[100:200, 60:200])  # the region is untouched
    assert int(after[:100].max()) == int(pixels.min())  # outside: blanked, burned-in text with it
    assert _ocr_tokens(out) == set()


def _ultrasound(seed: int, inside: str = "", colour: bool = False) -> tuple[Dataset, np.ndarray]:
    """A 480x640 ultrasound frame: speckled tissue with a bright echogenic interface in one region
    (x 120-519, y 90-459), a Doppler-like strip in a second region (x 540-629, y 300-459), the patient's
    name and MRN burned in above them, device labels at the side, and optionally text inside the image.
    Returns the dataset and the region mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640]
    tissue = rng.rayleigh(55, (480, 640)) * (0.7 + 0.5 * np.sin(xx / 37.0) * np.cos(yy / 23.0))
    tissue += 180 * np.exp(-((yy - 250 - 30 * np.sin(xx / 60)) ** 2) / 30)  # a bright interface
    regions = ((120, 90, 519, 459), (540, 300, 629, 459))
    inside_regions = np.zeros((480, 640), dtype=bool)
    for x0, y0, x1, y1 in regions:
        inside_regions[y0 : y1 + 1, x0 : x1 + 1] = True
    frame = np.where(inside_regions, np.clip(tissue, 0, 255), 0).astype(np.uint8)
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=18)
    draw.text((10, 10), f"{NAME}^JANE", fill=255, font=font)
    draw.text((10, 40), f"MRN {MRN}", fill=255, font=font)
    draw.text((540, 130), "C5-2 GAIN 50", fill=255, font=ImageFont.load_default(size=12))
    if inside:
        draw.text((300, 400), inside, fill=255, font=font)
    pixels = np.array(image.convert("RGB") if colour else image)
    ds = _image(pixels, modality="US", sop_class=UltrasoundImageStorage)
    items = []
    for x0, y0, x1, y1 in regions:
        region = Dataset()
        region.RegionLocationMinX0, region.RegionLocationMinY0 = x0, y0
        region.RegionLocationMaxX1, region.RegionLocationMaxY1 = x1, y1
        items.append(region)
    ds.SequenceOfUltrasoundRegions = Sequence(items)
    return ds, inside_regions


def _ocr_layer_tokens(ds: Dataset) -> set[str]:
    """The PHI tokens OCR reads, loosely (a reading 70 % like a token counts), in the bright strokes of
    the frame: pixels over 140 that touch one over 230 (OCR of the whole frame reads speckle as garbage
    and takes seconds; the engine's own text layer is built otherwise)."""
    grey = np.asarray(_to_8bit(ds.pixel_array, False)).astype(np.int16)
    top = np.pad(grey >= 230, 1)
    near_top = np.zeros_like(grey, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near_top |= top[1 + dy : top.shape[0] - 1 + dy, 1 + dx : top.shape[1] - 1 + dx]
    layer = Image.fromarray(np.where(near_top & (grey >= 140), 0, 255).astype(np.uint8))
    words = [normalise(w[0]) for w in _ocr_words(layer)]
    return {
        token
        for token in (NAME, MRN)
        if any(difflib.SequenceMatcher(None, normalise(token), word).ratio() >= 0.7 for word in words)
    }


@pytest.mark.parametrize(
    ("seed", "inside", "colour"),
    [(0, "", False), (1, "", True), (2, NAME, False), (3, f"MRN {MRN}", False)],
    ids=["text-outside", "colour", "name-inside", "mrn-inside"],
)
def test_ultrasound_with_burned_in_text_is_cleaned_not_quarantined(
    seed: int, inside: str, colour: bool
) -> None:
    """Issue 16: an ultrasound image with text outside its regions (and speckle inside, which OCR reads
    as garbage) was quarantined. Masking outside the regions plus OCR of the text layer inside cleans it."""
    ds, regions = _ultrasound(seed, inside, colour)
    before = ds.pixel_array
    assert _ocr_layer_tokens(ds) == {NAME, MRN}  # the fixture really carries readable PHI
    result = Deidentifier(key=KEY).deidentify(ds)
    assert not result.quarantined, result.reasons
    out = result.dataset
    assert out is not None
    assert _ocr_layer_tokens(out) == set()
    after = out.pixel_array
    assert not after[~regions].any()  # outside the regions: blanked
    unchanged = np.all(after == before, axis=-1) if colour else after == before
    assert unchanged[regions].mean() > 0.95  # the image itself is kept (a few masked words aside)
    assert "113101" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]


def test_ultrasound_without_regions_is_quarantined() -> None:
    ds = _image(_render(), modality="US", sop_class=UltrasoundImageStorage)
    assert Deidentifier(key=KEY).deidentify(ds).quarantined


def test_more_frames_than_can_be_checked_is_doubt() -> None:
    pixels = np.stack([_render(64), _render(64)])
    ds = _image(pixels[0])
    ds.NumberOfFrames = 2
    ds.PixelData = pixels.tobytes()
    outcome = PixelCleaner(max_frames=1).clean(ds, [])
    assert outcome.ran and not outcome.passed and outcome.reasons


def test_device_signature_mask_blanks_its_rectangles() -> None:
    pixels = _render()
    pixels[:24] = np.tile(np.arange(256, dtype=np.uint8), (24, 1))  # a banner OCR cannot read as text
    ds = _image(pixels)
    ds.Manufacturer, ds.ManufacturerModelName = "SYNTHETIC", "SCREEN CAPTURE"
    out = Deidentifier(key=KEY).deidentify(ds).dataset
    assert out is not None
    after = out.pixel_array
    assert int(after[:24].max()) == int(pixels.min())
    assert np.array_equal(after[100:200], pixels[100:200])
