"""Burned-in text: which images are at risk, device region masks, OCR of every frame, masking.

Pipeline (offline): header heuristics decide whether an image is at risk -> device signature masks
(and, for ultrasound, everything outside SequenceOfUltrasoundRegions) are blanked -> each frame is
decompressed, windowed to 8 bits and read with tesseract (for ultrasound, inside its regions, only the
layer of pixels at the top of the range: tissue speckle reads as garbage words) -> every word found is
blanked -> the frame is read again, and any text still found (or a header PHI value, or any failure
along the way) means doubt, so the caller quarantines. An ultrasound image without regions is
quarantined: nothing says where its image ends and its text begins. Compressed images are decoded
first; modified pixels are written uncompressed.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from imaging.deid import raw

RISKY_MODALITIES = frozenset({"US", "SC", "OT", "XA", "RF", "ES", "XC", "GM", "DOC", "SR", "IVUS", "OP"})
RISKY_IMAGE_TYPES = frozenset({"SECONDARY", "DERIVED", "SCREEN SAVE", "SCREENSHOT", "DOSE REPORT"})
RISKY_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture family
    "1.2.840.10008.5.1.4.1.1.104",  # Encapsulated documents
)
MAX_OCR_FRAMES = 300  # beyond this the work is not done and the instance is quarantined (doubt)
_MIN_CONFIDENCE_REMAINING = 40.0
_MIN_CONFIDENCE_STRICT = 60.0
TEXT_LEVEL = 230  # of 255: where the text layer of an ultrasound frame starts
EDGE_LEVEL = 140  # of 255: the anti-aliased edges of its strokes
LOSSLESS_SYNTAXES = frozenset(
    {
        RLELossless,
        JPEGLossless,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEG2000Lossless,
        DeflatedExplicitVRLittleEndian,
    }
)
_WORD = re.compile(r"[A-Za-z0-9]")
_PixelData, _BurnedInAnnotation, _Modality = BaseTag(0x7FE00010), BaseTag(0x00280301), BaseTag(0x00080060)
_ImageType, _SOPClassUID = BaseTag(0x00080008), BaseTag(0x00080016)


@dataclass(frozen=True)
class DeviceMask:
    """Rectangles (x0, y0, x1, y1; end exclusive) a device always burns text into."""

    Manufacturer: str
    ManufacturerModelName: str
    Rows: int
    Columns: int
    rectangles: tuple[tuple[int, int, int, int], ...]

    def matches(self, ds: Dataset) -> bool:
        return (
            str(ds.get("Manufacturer", "")).strip().upper() == self.Manufacturer.upper()
            and str(ds.get("ManufacturerModelName", "")).strip().upper() == self.ManufacturerModelName.upper()
            and int(ds.get("Rows", 0)) == self.Rows
            and int(ds.get("Columns", 0)) == self.Columns
        )


# Site configuration: extend with the devices of the site (reviewed by a person for each model).
DEVICE_MASKS: tuple[DeviceMask, ...] = (
    # The archive's synthetic demo screen-capture device: a header banner 24 pixels high.
    DeviceMask("SYNTHETIC", "SCREEN CAPTURE", 256, 256, ((0, 0, 256, 24),)),
)


@dataclass
class PixelOutcome:
    """What pixel cleaning did: `passed` False means quarantine, with `reasons` (no PHI in them)."""

    ran: bool = False
    passed: bool = True
    reasons: list[str] = field(default_factory=list)
    pixel_data: bytes | None = None  # new native PixelData when pixels were modified
    attributes: dict[str, Any] = field(default_factory=dict)  # to set on the output when modified


def burned_in_risk(ds: Dataset) -> list[str]:
    """Why this image may carry burned-in text (empty: no header signal of risk)."""
    if _PixelData not in ds._dict:
        return []
    signals = []
    if raw.text(ds, _BurnedInAnnotation).upper() == "YES":
        signals.append("BurnedInAnnotation is YES")
    modality = raw.text(ds, _Modality).upper()
    if modality in RISKY_MODALITIES:
        signals.append(f"modality {modality}")
    if RISKY_IMAGE_TYPES & {v.upper() for v in raw.texts(ds, _ImageType)}:
        signals.append("image type secondary/derived/screen save")
    if raw.text(ds, _SOPClassUID).startswith(RISKY_SOP_PREFIXES):
        signals.append("secondary capture SOP class")
    return signals


def tesseract_available() -> bool:
    return shutil.which("tesseract") is not None


def _frames(ds: Dataset) -> np.ndarray:
    """All frames as (frames, rows, columns[, samples]), decompressed, RGB for colour."""
    array = np.array(ds.pixel_array)  # own, writable copy
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames == 1 and array.ndim == (3 if samples > 1 else 2):
        array = array[np.newaxis]
    return array


def _to_8bit(frame: np.ndarray, monochrome1: bool) -> Image.Image:
    """Window a frame to 8 bits over its full range (burned-in text is usually at an extreme)."""
    if frame.ndim == 3:
        frame = frame.astype(np.float32).mean(axis=2)
    values = frame.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    scaled = np.zeros_like(values) if high <= low else (values - low) * (255.0 / (high - low))
    if monochrome1:
        scaled = 255.0 - scaled
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _ocr_words(image: Image.Image) -> list[tuple[str, float, tuple[int, int, int, int]]]:
    """(text, confidence, box in image pixels) of each word tesseract reads, on a 2x upscaled copy."""
    import pytesseract

    scale = 2 if max(image.size) <= 1024 else 1
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.LANCZOS)
    words = []
    # One pass: tesseract 5 also reads light-on-dark text (it inverts low-confidence lines itself).
    data = pytesseract.image_to_data(image, config="--psm 11", output_type=pytesseract.Output.DICT)
    for text, conf, left, top, width, height in zip(
        data["text"], data["conf"], data["left"], data["top"], data["width"], data["height"], strict=True
    ):
        text = str(text).strip()
        if len(_WORD.findall(text)) >= 2 and float(conf) >= 0:
            box = (left // scale, top // scale, -(-(left + width) // scale), -(-(top + height) // scale))
            words.append((text, float(conf), box))
    return words


def normalise(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum())


def _phi_matches(words: list[tuple[str, float, tuple[int, int, int, int]]], phi: frozenset[str]) -> int:
    """How many words match (part of) a header PHI value."""
    found = 0
    for text, _conf, _box in words:
        token = normalise(text)
        if len(token) >= 3 and any(token in value or value in token for value in phi if len(value) >= 3):
            found += 1
    return found


def bitmap_has_text(bitmap: np.ndarray) -> bool:
    """Whether tesseract reads any word in a 0/1 bitmap (an overlay plane)."""
    image = Image.fromarray((bitmap > 0).astype(np.uint8) * 255, mode="L")
    return bool(_ocr_words(image))


def _neighbours(layer: np.ndarray) -> np.ndarray:
    """How many of its 8 neighbours each pixel of a boolean layer has in the layer."""
    padded = np.pad(layer, 1).astype(np.uint8)
    rows, columns = layer.shape
    count = np.zeros((rows, columns), dtype=np.uint8)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                count += padded[1 + dy : rows + 1 + dy, 1 + dx : columns + 1 + dx]
    return count


def _bright(image: Image.Image) -> np.ndarray:
    """Strokes of burned-in text and graphics: pixels at the top of the 8-bit range that touch two
    others like them (not the isolated bright dots of speckle), grown by one pixel into their
    anti-aliased edges."""
    grey = np.asarray(image)
    top = grey >= TEXT_LEVEL
    core = top & (_neighbours(top) >= 2)
    return (core | (_neighbours(core) > 0)) & (grey >= EDGE_LEVEL)


def _text_layer(image: Image.Image) -> Image.Image:
    """Dark text on white, for OCR: the bright strokes of `image`."""
    return Image.fromarray(np.where(_bright(image), 0, 255).astype(np.uint8), mode="L")


def _whole_line(layer: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """`box` widened over the bright strokes that continue it left and right (OCR often reads only
    part of a word set in speckle): a gap wider than the line height ends it, and it grows by at most
    three times its width each way (a bright echo running through it is not text)."""
    x0, y0, x1, y1 = box
    columns: np.ndarray = np.asarray(layer[max(y0, 0) : y1].any(axis=0))
    gap = max(y1 - y0, 4)
    left, right = max(x0 - 3 * (x1 - x0), 0), min(x1 + 3 * (x1 - x0), columns.size)
    while x0 > left and columns[max(x0 - gap, left) : x0].any():
        x0 = max(x0 - gap, left) + int(np.argmax(columns[max(x0 - gap, left) : x0]))
    while x1 < right and columns[x1 : min(x1 + gap, right)].any():
        x1 = x1 + int(np.flatnonzero(columns[x1 : min(x1 + gap, right)])[-1]) + 1
    return x0, y0, x1, y1


def _looks_like_text(word: tuple[str, float, tuple[int, int, int, int]], strict: bool) -> bool:
    """Whether a word read after masking is text to worry about (else OCR noise).

    Strict (ultrasound text layer): confident, with three characters; bright echoes make short,
    unsure readings that are not text.
    """
    text, confidence, _box = word
    if strict:
        return confidence >= _MIN_CONFIDENCE_STRICT and len(_WORD.findall(text)) >= 3
    return confidence >= _MIN_CONFIDENCE_REMAINING


def _ultrasound_keep_mask(ds: Dataset, rows: int, columns: int) -> np.ndarray | None:
    regions = ds.get("SequenceOfUltrasoundRegions")
    if not regions:
        return None
    keep = np.zeros((rows, columns), dtype=bool)
    for region in regions:
        x0, y0 = int(region.RegionLocationMinX0), int(region.RegionLocationMinY0)
        x1, y1 = int(region.RegionLocationMaxX1), int(region.RegionLocationMaxY1)
        keep[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
    return keep


class PixelCleaner:
    """Blank burned-in text of at-risk images, or say why it cannot be trusted to have done so."""

    def __init__(
        self, masks: tuple[DeviceMask, ...] = DEVICE_MASKS, max_frames: int = MAX_OCR_FRAMES
    ) -> None:
        self.masks = masks
        self.max_frames = max_frames

    def clean(self, ds: Dataset, phi_values: list[str]) -> PixelOutcome:
        outcome = PixelOutcome(ran=True)
        if not tesseract_available():
            return PixelOutcome(ran=True, passed=False, reasons=["OCR engine (tesseract) is not available"])
        frames_count = int(ds.get("NumberOfFrames", 1) or 1)
        if frames_count > self.max_frames:
            return PixelOutcome(
                ran=True, passed=False, reasons=[f"{frames_count} frames exceed the OCR limit"]
            )
        try:
            frames = _frames(ds)
        except Exception as exc:  # undecodable pixels are doubt, not a pass
            return PixelOutcome(
                ran=True, passed=False, reasons=[f"pixel data not decodable ({type(exc).__name__})"]
            )
        original = frames.copy()
        photometric = str(ds.get("PhotometricInterpretation", "")).upper()
        monochrome1 = photometric == "MONOCHROME1"
        rows, columns = frames.shape[1], frames.shape[2]
        fill = frames.max() if monochrome1 else frames.min()
        phi = frozenset(normalise(v) for v in phi_values if len(normalise(v)) >= 3)

        for mask in self.masks:
            if mask.matches(ds):
                for x0, y0, x1, y1 in mask.rectangles:
                    frames[:, y0:y1, x0:x1] = fill
        ultrasound = str(ds.get("Modality", "")).upper() == "US"
        if ultrasound:
            keep = _ultrasound_keep_mask(ds, rows, columns)
            if keep is None:
                outcome.reasons.append("ultrasound without SequenceOfUltrasoundRegions")
                outcome.passed = False
                return outcome
            frames[:, ~keep] = fill

        # Ultrasound: what is left is the image itself, whose speckle reads as hundreds of garbage "words"
        # (masking them would punch holes all over it, and some would always remain); burned-in text
        # there is drawn at the top of the display range, so OCR reads that layer alone.
        read = _text_layer if ultrasound else (lambda image: image)
        phi_found = 0
        for index in range(frames.shape[0]):
            image = _to_8bit(frames[index], monochrome1)
            words = _ocr_words(read(image))
            phi_found += _phi_matches(words, phi)
            layer = _bright(image) if ultrasound else None
            for _text, _conf, box in words:
                x0, y0, x1, y1 = box if layer is None else _whole_line(layer, box)
                pad = 2
                frames[index, max(y0 - pad, 0) : y1 + pad, max(x0 - pad, 0) : x1 + pad] = fill
            after = _ocr_words(read(_to_8bit(frames[index], monochrome1)))
            if any(_looks_like_text(w, ultrasound) for w in after) or _phi_matches(after, phi):
                outcome.passed = False
                outcome.reasons.append(f"text remains in frame {index + 1} after masking")
        if phi_found:
            outcome.reasons.append(f"{phi_found} burned-in words matched header PHI and were masked")
        if outcome.passed and not np.array_equal(frames, original):
            outcome.pixel_data, outcome.attributes = _native(ds, frames)
        return outcome


def _native(ds: Dataset, frames: np.ndarray) -> tuple[bytes, dict[str, Any]]:
    """Native PixelData for modified frames, and the attributes that must change with it."""
    attributes: dict[str, Any] = {}
    transfer_syntax = UID(ds.file_meta.TransferSyntaxUID) if "file_meta" in ds.__dict__ else None
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric.startswith("YBR") or (int(ds.get("SamplesPerPixel", 1)) == 3 and photometric != "RGB"):
        attributes["PhotometricInterpretation"] = "RGB"  # pydicom decoded colour to RGB
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        attributes["PlanarConfiguration"] = 0
    if transfer_syntax is None or transfer_syntax.is_compressed:
        attributes["TransferSyntaxUID"] = ExplicitVRLittleEndian
        if transfer_syntax is not None and transfer_syntax not in LOSSLESS_SYNTAXES:
            attributes["LossyImageCompression"] = "01"
    allocated = int(ds.BitsAllocated)
    dtype = {8: np.uint8, 16: np.uint16, 32: np.uint32}[allocated]
    if frames.dtype.kind == "i":
        dtype = {8: np.int8, 16: np.int16, 32: np.int32}[allocated]
    data = frames.astype(dtype).astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    if len(data) % 2:
        data += b"\x00"
    return data, attributes
