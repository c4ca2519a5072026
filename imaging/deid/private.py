"""Retain Safe Private: private elements kept only when a safe-private dictionary entry names them.

An entry is resolved through the block's Private Creator, never by a fixed element number: vendors
reserve blocks (gggg,0010-00FF) at run time, so (0019,100C) and (0019,110C) may be the same attribute.
Entries are a reviewed subset of PS3.15 Table E.3.10-1 (diffusion parameters that research needs) and
only numeric or coded values are kept, so a misplaced text element can never leak.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

# (Private Creator, group, element offset in the block): attribute name
SAFE_PRIVATE: dict[tuple[str, int, int], str] = {
    ("SIEMENS MR HEADER", 0x0019, 0x0B): "SliceMeasurementDuration",
    ("SIEMENS MR HEADER", 0x0019, 0x0C): "B_value",
    ("SIEMENS MR HEADER", 0x0019, 0x0D): "DiffusionDirectionality",
    ("SIEMENS MR HEADER", 0x0019, 0x0E): "DiffusionGradientDirection",
    ("SIEMENS MR HEADER", 0x0019, 0x27): "B_matrix",
    ("GEMS_PARM_01", 0x0043, 0x39): "Slop_int_6...slop_int_9 (b-value)",
    ("Philips Imaging DD 001", 0x2001, 0x03): "Diffusion B-Factor",
    ("Philips MR Imaging DD 001", 0x2005, 0xB0): "Diffusion Direction RL",
    ("Philips MR Imaging DD 001", 0x2005, 0xB1): "Diffusion Direction AP",
    ("Philips MR Imaging DD 001", 0x2005, 0xB2): "Diffusion Direction FH",
}
SAFE_VRS = frozenset({"FD", "FL", "DS", "IS", "SL", "SS", "UL", "US", "SV", "UV", "CS"})


def creator_of(ds: Dataset, tag: int) -> str | None:
    """The Private Creator of private data element `tag` in `ds`, or None."""
    group, element = tag >> 16, tag & 0xFFFF
    creator_tag = (group << 16) | (element >> 8)
    if element < 0x1000 or creator_tag not in ds:
        return None
    value = ds[creator_tag].value
    return value.strip() if isinstance(value, str) else None


def is_safe_private(ds: Dataset, tag: int, vr: str) -> bool:
    """Whether private element `tag` of `ds` is named by SAFE_PRIVATE (and has a safe VR)."""
    if vr not in SAFE_VRS:
        return False
    creator = creator_of(ds, tag)
    return creator is not None and (creator, tag >> 16, tag & 0xFF) in SAFE_PRIVATE
