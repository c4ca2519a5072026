"""Raw (unparsed) string elements of Explicit VR Little Endian data: read and made without pydicom's
parsing, so the common actions (map a UID, shift a date, empty or dummy a value) cost microseconds.

Only ASCII values are handled here (None otherwise: the caller parses the element the usual way).
"""

from __future__ import annotations

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UT"}
)


def values(raw: RawDataElement) -> list[str] | None:
    """The values of a raw string element, or None when it is not plain ASCII."""
    data = raw.value
    if data is None or not data.isascii():
        return None
    text = data.decode("ascii").rstrip("\x00 ")
    return text.split("\\") if text else []


def make(tag: int, vr: str, items: list[str]) -> RawDataElement:
    """A raw element holding `items` (ASCII), padded as PS3.5 says (UI with NUL, text with space)."""
    data = "\\".join(items).encode("ascii")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return RawDataElement(BaseTag(tag), vr, len(data), data, 0, False, True)


def text(ds: Dataset, tag: int) -> str:
    """str() of the value of `tag` in `ds` ('' when absent), read from the raw bytes when they are a
    single ASCII value (as pydicom would give it), else through pydicom."""
    found = ds._dict.get(tag)  # type: ignore[call-overload]
    if found is None:
        return ""
    if type(found) is RawDataElement and found.value is not None and found.VR in STRING_VRS:
        data = found.value
        if data.isascii() and b"\\" not in data:
            return data.decode("ascii").rstrip("\x00 ")
    value = ds[tag].value
    return "" if value is None else str(value)


def texts(ds: Dataset, tag: int) -> list[str]:
    """The values of `tag` in `ds` as strings ([] when absent), from the raw bytes when ASCII."""
    found = ds._dict.get(tag)  # type: ignore[call-overload]
    if found is None:
        return []
    if type(found) is RawDataElement and found.VR in STRING_VRS:
        items = values(found)
        if items is not None:
            return [item.strip() for item in items]
    value = ds[tag].value
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value]
    return [] if value is None else [str(value)]


def unsigned(ds: Dataset, tag: int) -> int | None:
    """A US/UL value of `ds` (None when absent or empty), from the raw bytes when it has them."""
    found = ds._dict.get(tag)  # type: ignore[call-overload]
    if found is None:
        return None
    if type(found) is RawDataElement and found.VR in ("US", "UL") and found.value and found.is_little_endian:
        return int.from_bytes(found.value[: 2 if found.VR == "US" else 4], "little")
    value = ds[tag].value
    return None if value is None or value == "" else int(value)
