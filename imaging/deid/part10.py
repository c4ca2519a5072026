"""Part 10 bytes of a de-identified dataset, written directly (the same bytes as pydicom's dcmwrite).

Most of an output is raw elements shared unparsed with its source: in Explicit VR Little Endian
(and the encapsulated syntaxes, whose dataset is encoded the same way) they are written as header +
the bytes read, and new values of the common kinds (ASCII strings, numbers, bytes, sequences) are
encoded here; anything else (other character sets, ambiguous VRs, other transfer syntaxes, deferred
values) goes through pydicom's own element writer, or its whole-file writer. About ten times faster
than dcmwrite for an image, which is most of the time of de-identifying one (tests/deid/test_part10.py
checks the bytes are pydicom's).
"""

from __future__ import annotations

import io
import struct
from typing import Any, BinaryIO, cast

from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_sequence
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian

from imaging.deid.raw import text as raw_text

_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_BYTES_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_ITEM = b"\xfe\xff\x00\xe0"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_ITEM_DELIMITER = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
SpecificCharacterSet = 0x00080005
FileMetaInformationGroupLength = 0x00020000
TransferSyntaxUID = 0x00020010
_UNDEFINED = 0xFFFFFFFF
PREAMBLE = b"\x00" * 128 + b"DICM"


class NotFast(Exception):
    """This dataset (or element) is written by pydicom instead."""


def _header(tag: int, vr: str, length: int) -> bytes:
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), 0, length)
    if length > 0xFFFF:
        raise NotFast  # pydicom writes such a value as UN
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)


def _text(value: object) -> str | None:
    """The value of a string element as written, or None when it needs pydicom's formatting."""
    if value is None:
        return ""
    if isinstance(value, str):  # str, or a str subclass such as UID
        return str(getattr(value, "original_string", value))
    if isinstance(value, MultiValue | list) and all(type(v) is str for v in value):
        return "\\".join(value)  # type: ignore[arg-type]
    return None


def _value(elem: DataElement) -> bytes | None:
    """Encoded value of a new element, or None when pydicom must encode it."""
    vr, value = elem.VR, elem.value
    if vr in _TEXT_VRS:
        text = _text(value)
        if text is None or not text.isascii():
            return None
        data = text.encode("ascii")
        if len(data) % 2:
            data += b"\x00" if vr == "UI" else b" "
        return data
    if vr in _NUMBER_FORMATS:
        if value is None:
            return b""
        values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
        return struct.pack(f"<{len(values)}{_NUMBER_FORMATS[vr]}", *values)
    if vr in _BYTES_VRS and isinstance(value, bytes):
        return value + b"\x00" if len(value) % 2 else value
    if value is None and vr in _BYTES_VRS:
        return b""
    return None


def _element(elem: DataElement | RawDataElement, out: list[bytes], encodings: list[str]) -> None:
    tag = elem.tag
    if isinstance(elem, RawDataElement):
        vr, value = elem.VR, elem.value
        if vr is None or value is None or len(vr) != 2 or (vr == "SQ" and elem.length == _UNDEFINED):
            raise NotFast
        if elem.length == _UNDEFINED:  # encapsulated pixel data: items as read, then the delimiter
            out += (_header(tag, vr, _UNDEFINED), value, _SEQUENCE_DELIMITER)
        else:
            out += (_header(tag, vr, len(value)), value)
        return
    if elem.VR == "SQ":
        items: list[bytes] = []
        for item in elem.value or ():
            body = _dataset(item, encodings)
            if getattr(item, "is_undefined_length_sequence_item", False):
                items += (_ITEM, b"\xff\xff\xff\xff", body, _ITEM_DELIMITER)
            else:
                items += (_ITEM, struct.pack("<I", len(body)), body)
        content = b"".join(items)
        if elem.is_undefined_length:
            out += (_header(tag, "SQ", _UNDEFINED), content, _SEQUENCE_DELIMITER)
        else:
            out += (_header(tag, "SQ", len(content)), content)
        return
    value_bytes = _value(elem)
    if value_bytes is not None and elem.is_undefined_length:  # encapsulated pixel data
        out += (_header(tag, elem.VR, _UNDEFINED), value_bytes, _SEQUENCE_DELIMITER)
        return
    if value_bytes is None:
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, False
        write_data_element(buffer, elem, encodings)
        out.append(buffer.getvalue())
        return
    out += (_header(tag, elem.VR, len(value_bytes)), value_bytes)


def raw_sequence(elem: DataElement) -> RawDataElement:
    """A sequence as a raw element (Explicit VR Little Endian, defined lengths): immutable, so one
    can be shared by many datasets; pydicom parses it when it is read."""
    out: list[bytes] = []
    _element(elem, out, ["iso8859"])
    data = b"".join(out)[12:]  # the value, after the SQ header
    return RawDataElement(BaseTag(elem.tag), "SQ", len(data), data, 0, False, True)


def _dataset(ds: Dataset, encodings: list[str], skip: int = -1) -> bytes:
    if ds.original_encoding not in ((False, True), (None, None)):
        raise NotFast  # raw values in another encoding
    items = ds._dict
    if SpecificCharacterSet in items:  # an item may declare its own (pydicom's rule too)
        encodings = convert_encodings(ds.SpecificCharacterSet or "ISO_IR 6")
    out: list[bytes] = []
    for tag in sorted(items):
        if tag != skip:
            _element(items[tag], out, encodings)
    return b"".join(out)


def encode(ds: Dataset) -> bytes:
    """The Part 10 file of `ds` (with its file_meta), as pydicom's dcmwrite(enforce_file_format) writes
    it; the preamble is always zeros (a source's preamble can hold anything, e.g. a TIFF header)."""
    meta = ds.file_meta
    transfer_syntax = UID(raw_text(meta, TransferSyntaxUID))  # read raw: leaves the element as it is
    if transfer_syntax == ExplicitVRLittleEndian or transfer_syntax.is_encapsulated:
        try:
            body = _dataset(ds, ["iso8859"])
            meta_body = _dataset(meta, ["iso8859"], skip=FileMetaInformationGroupLength)
            group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(meta_body))
            return PREAMBLE + group_length + meta_body + body
        except NotFast:
            pass
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write(ds: Dataset, stream: BinaryIO) -> None:
    stream.write(encode(ds))


# --- reading -----------------------------------------------------------------------------------------

_VRS = frozenset(
    vr.encode("ascii")
    for vr in [
        "AE",
        "AS",
        "AT",
        "CS",
        "DA",
        "DS",
        "DT",
        "FD",
        "FL",
        "IS",
        "LO",
        "LT",
        "OB",
        "OD",
        "OF",
        "OL",
        "OV",
        "OW",
        "PN",
        "SH",
        "SL",
        "SQ",
        "SS",
        "ST",
        "SV",
        "TM",
        "UC",
        "UI",
        "UL",
        "UN",
        "UR",
        "US",
        "UT",
        "UV",
    ]
)
_META_HEADER = b"\x02\x00\x00\x00UL\x04\x00"


def _elements(data: bytes, position: int, end: int, encodings: list[str]) -> dict[BaseTag, Any] | None:
    """The elements of one Explicit VR Little Endian dataset level as dcmread gives them (raw
    elements; undefined-length sequences parsed, as pydicom does), or None when in doubt."""
    found: dict[BaseTag, Any] = {}
    while position < end:
        if position + 8 > end:
            return None
        group, element = struct.unpack_from("<HH", data, position)
        vr = data[position + 4 : position + 6]
        if group == 0xFFFE or vr not in _VRS:
            return None  # a stray item/delimiter or an implicit VR element: pydicom's reader decides
        tag = BaseTag(group << 16 | element)
        if vr.decode("ascii") in _LONG_VRS:
            (length,) = struct.unpack_from("<I", data, position + 8)
            start = position + 12
        else:
            (length,) = struct.unpack_from("<H", data, position + 6)
            start = position + 8
        name = vr.decode("ascii")
        if length == _UNDEFINED:
            if name == "SQ":
                stream = DicomBytesIO(data)
                stream.is_little_endian, stream.is_implicit_VR = True, False
                stream.seek(start)
                sequence = read_sequence(cast(BinaryIO, stream), False, True, _UNDEFINED, encodings)
                found[tag] = DataElement(tag, "SQ", sequence, start, is_undefined_length=True)
                position = stream.tell()
                continue
            if name not in ("OB", "OW"):
                return None
            stop = _after_items(data, start, end)  # encapsulated pixel data: items, then the delimiter
            if stop is None:
                return None
            found[tag] = RawDataElement(tag, name, length, data[start:stop], start, False, True)
            position = stop + 8
            continue
        if start + length > end:
            return None
        found[tag] = RawDataElement(tag, name, length, data[start : start + length], start, False, True)
        if tag == SpecificCharacterSet:
            encodings = convert_encodings(
                [v.strip() for v in data[start : start + length].decode("ascii", "replace").split("\\")]
            )
        position = start + length
    return found


def _after_items(data: bytes, position: int, end: int) -> int | None:
    """Where the Sequence Delimitation Item after the (defined-length) items at `position` starts."""
    while position + 8 <= end:
        tag, length = struct.unpack_from("<II", data, position)
        if tag == 0xE0DDFFFE:
            return position
        if tag != 0xE000FFFE or length == _UNDEFINED:
            return None
        position += 8 + length
    return None


def read(data: bytes) -> Dataset | None:
    """The dataset (with file_meta) of a Part 10 file in Explicit VR Little Endian or an
    encapsulated syntax, as pydicom's dcmread gives it but parsed directly; None for anything else
    (the caller then reads it with dcmread)."""
    if len(data) < 144 or data[128:132] != b"DICM" or data[132:140] != _META_HEADER:
        return None
    (group_length,) = struct.unpack_from("<I", data, 140)
    meta_end = 144 + group_length
    meta_elements = _elements(data, 132, meta_end, ["iso8859"])
    if meta_elements is None or TransferSyntaxUID not in meta_elements:
        return None
    syntax = UID(meta_elements[BaseTag(TransferSyntaxUID)].value.decode("ascii", "replace").rstrip("\x00 "))
    if syntax != ExplicitVRLittleEndian and not syntax.is_encapsulated:
        return None
    elements = _elements(data, meta_end, len(data), ["iso8859"])
    if elements is None:
        return None
    meta = FileMetaDataset()
    meta._dict.update(meta_elements)
    meta.set_original_encoding(False, True, "iso8859")
    ds = Dataset(elements)
    ds.file_meta = meta
    ds.set_original_encoding(False, True, ds._character_set)
    return ds
