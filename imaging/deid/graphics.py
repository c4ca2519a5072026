"""Overlays (60xx), curves (50xx) and overlay bits hidden in the unused high bits of PixelData."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from imaging.deid import raw
from imaging.deid.text import is_clean

BitsAllocated, BitsStored, HighBit = 0x00280100, 0x00280101, 0x00280102

# Text elements of an overlay / curve group: cleaned (or the group dropped) under Clean Graphics.
OVERLAY_TEXT_ELEMENTS = frozenset({0x0022, 0x1500, 0x4000})  # Description, Label, Comments
CURVE_TEXT_ELEMENTS = frozenset({0x0022, 0x2500, 0x4000})  # Description, Label, Comments(retired)


def is_overlay(group: int) -> bool:
    return 0x6000 <= group <= 0x601E and not group & 1


def is_curve(group: int) -> bool:
    return 0x5000 <= group <= 0x501E and not group & 1


def group_text_is_clean(ds: Dataset, group: int, text_elements: frozenset[int], phi: frozenset[str]) -> bool:
    """Whether every free-text element of a 50xx/60xx group is clean (else the group is dropped)."""
    for element in text_elements:
        tag = (group << 16) | element
        if tag in ds:
            value = ds[tag].value
            values = value if isinstance(value, list | tuple) else [value]
            if not all(is_clean(str(v), phi) for v in values if v is not None):
                return False
    return True


def overlay_bitmap(ds: Dataset, group: int) -> np.ndarray | None:
    """The overlay plane of `group` as a 0/1 uint8 array (first frame), or None if it has no data."""
    rows, columns = ds.get((group << 16) | 0x0010), ds.get((group << 16) | 0x0011)
    data = ds.get((group << 16) | 0x3000)
    if rows is None or columns is None or data is None or not data.value:
        return None
    count = int(rows.value) * int(columns.value)
    bits = np.unpackbits(np.frombuffer(data.value, dtype=np.uint8), bitorder="little")[:count]
    if bits.size < count:
        return None
    return bits.reshape(int(rows.value), int(columns.value))


def clear_unused_high_bits(ds: Dataset, pixel_data: bytes) -> bytes:
    """PixelData with the bits outside BitsStored cleared (retired overlays live there).

    Native (uncompressed) data only; returns the same object when there is nothing to clear, so that
    clean pixel data stays byte-identical.
    """
    allocated = raw.unsigned(ds, BitsAllocated) or 0
    stored = raw.unsigned(ds, BitsStored) or allocated
    high_bit = raw.unsigned(ds, HighBit)
    high = stored - 1 if high_bit is None else high_bit
    if allocated not in (8, 16, 32) or stored >= allocated or not pixel_data:
        return pixel_data
    dtype = np.dtype({8: "<u1", 16: "<u2", 32: "<u4"}[allocated])
    low = high - stored + 1
    if low < 0:
        return pixel_data
    mask = ((1 << stored) - 1) << low
    usable = len(pixel_data) - len(pixel_data) % (allocated // 8)
    values = np.frombuffer(pixel_data, dtype=dtype, count=usable // (allocated // 8))
    keep = np.array(mask, dtype=dtype)
    if not np.any(values & ~keep):
        return pixel_data
    cleared = bytes((values & keep).tobytes())
    return cleared + pixel_data[usable:]
