"""Parse received bytes once: the attributes the index keeps, the metadata cache entry, pixel offsets."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from io import SEEK_END, BytesIO
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from imaging.errors import ArchiveError, CannotUnderstand, DataSetMismatch
from imaging.index import json_model
from imaging.index.attributes import INSTANCE_KEYS, PATIENT_KEYS, SERIES_KEYS, STUDY_KEYS

PIXEL_DATA = 0x7FE00010
# Values above this size are not put in the metadata cache but referenced by BulkDataURI.
BULK_THRESHOLD = 1024
# Placeholder written into cached JSON; replaced by the instance's URL when served.
BULK_PREFIX = "\u0000bulk/"
UID_CHARS = set("0123456789.")


@dataclass
class ParsedInstance:
    dataset: Dataset  # without deferred bulk values
    transfer_syntax: str
    attributes: dict[str, Any]  # keyword -> index value, all levels
    metadata_json: bytes  # zlib-compressed DICOM JSON object
    pixel_offset: int | None = None
    pixel_length: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.attributes["SOPInstanceUID"])


def valid_uid(value: object) -> bool:
    s = str(value)
    return 0 < len(s) <= 64 and set(s) <= UID_CHARS and not s.startswith(".") and ".." not in s


def index_value(ds: Dataset, keyword: str) -> Any:
    """The value an index column holds: strings joined with backslash, integers for IS/US."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None if keyword in _INTEGER_KEYS else ""
    value = list(value) if isinstance(value, MultiValue | list) else [value]
    return _column_value(keyword, value)


def _column_value(keyword: str, values: list[Any]) -> Any:
    if keyword in _INTEGER_KEYS:
        try:
            return int(values[0]) if len(values) == 1 else None
        except (TypeError, ValueError):
            return None
    return "\\".join(str(v) for v in values)


_INDEX_TAGS = {
    k: int(tag_for_keyword(k) or 0) for k in PATIENT_KEYS + STUDY_KEYS + SERIES_KEYS + INSTANCE_KEYS
}
_INTEGER_KEYS = {"SeriesNumber", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames"}
_MAX_LEN = {"PatientBirthDate": 8, "StudyDate": 8, "SeriesDate": 8, "ContentDate": 8}


def parse(data: bytes | BinaryIO) -> ParsedInstance:
    """Parse a Part 10 stream (with file meta): bytes, or a seekable binary file whose position 0 is the
    stream's first byte (an upload of any size: bulk values are skipped, never read). Raises
    CannotUnderstand / DataSetMismatch."""
    if isinstance(data, bytes):
        fp: BinaryIO = BytesIO(data)
        size, head = len(data), data
    else:
        fp = data
        size = fp.seek(0, SEEK_END)
        fp.seek(0)
        head = fp.read(HEAD_BYTES)
    try:
        deflated = b"1.2.840.10008.1.2.1.99" in head[:1024]
        usual = None if deflated else _read_usual(head, size, fp)
        ds: Dataset
        if usual is None:
            fp.seek(0)
            ds = dcmread(fp, defer_size=None if deflated else BULK_THRESHOLD, force=False)
            transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
        else:
            ds, transfer_syntax = usual
        if not deflated:
            _check_complete(ds, size, fp.tell())
        bulk, pixel_offset, pixel_length = _take_bulk(ds, fp, transfer_syntax)
        body, values = json_model.encode(ds, BULK_THRESHOLD, _bulk_uri)
        attributes: dict[str, Any] = {}
        for keyword, tag in _INDEX_TAGS.items():
            if tag in values:
                attributes[keyword] = _column_value(keyword, values[tag])
            else:  # not decoded by json_model (or absent): pydicom's value
                attributes[keyword] = index_value(ds, keyword)
    except ArchiveError:
        raise
    except Exception as exc:  # pydicom raises assorted errors on hostile input
        raise CannotUnderstand(f"data set cannot be parsed: {type(exc).__name__}") from None

    for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not valid_uid(attributes[keyword]):
            raise DataSetMismatch(f"missing or invalid {keyword}")
    # Warnings answer 0xB000 (coercion): only where the index holds a value other than the one received.
    warnings = []
    for keyword, limit in _MAX_LEN.items():
        if len(attributes[keyword]) > limit:
            attributes[keyword] = ""
            warnings.append(f"{keyword} not a valid date; not indexed")

    if pixel_offset is not None and pixel_length is None:
        pixel_length = size - pixel_offset  # encapsulated: items up to the sequence delimiter
    for bulk_tag, vr in bulk.items():
        body[f"{bulk_tag:08X}"] = {"vr": vr, "BulkDataURI": f"{BULK_PREFIX}{bulk_tag:08X}"}
    text = json.dumps(dict(sorted(body.items())), separators=(",", ":"), ensure_ascii=False)
    return ParsedInstance(
        dataset=ds,
        transfer_syntax=transfer_syntax,
        attributes=attributes,
        metadata_json=zlib.compress(text.encode(), 1),
        pixel_offset=pixel_offset,
        pixel_length=pixel_length,
        warnings=warnings,
    )


# The File Meta Information is read from the first bytes of a file source (a group this long is absurd).
HEAD_BYTES = 64 * 1024
_META_START = 128 + 4 + 12  # preamble, "DICM", (0002,0000) UL 4
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def _read_usual(head: bytes, size: int, fp: BinaryIO) -> tuple[Dataset, str] | None:
    """The data set and transfer syntax of a Part 10 stream with the usual File Meta Information (preamble, group length first, a
    transfer syntax pydicom knows, not deflated), its large values deferred; None for anything else, which
    dcmread reads. The meta group is walked here instead of built into a pydicom FileMetaDataset: half of
    dcmread's time for a CT slice. `head`: the stream's first bytes; `fp`: the whole stream."""
    data = head
    if len(data) < _META_START or data[128:132] != b"DICM" or data[132:140] != b"\x02\x00\x00\x00UL\x04\x00":
        return None
    (length,) = struct.unpack_from("<I", data, 140)
    end = _META_START + length
    if end > len(data) or end > size:
        return None
    transfer_syntax = None
    offset = _META_START
    try:
        while offset < end:  # explicit VR little endian, group 0002 only
            group, element, vr = struct.unpack_from("<HH2s", data, offset)
            if group != 2:
                return None
            if vr in _LONG_VRS:
                (size_,) = struct.unpack_from("<I", data, offset + 8)
                offset += 12
            else:
                (size_,) = struct.unpack_from("<H", data, offset + 6)
                offset += 8
            if element == 0x10:
                transfer_syntax = UID(data[offset : offset + size_].decode("ascii").rstrip("\x00 "))
            offset += size_
    except (struct.error, UnicodeDecodeError):
        return None
    if offset != end or transfer_syntax is None or not transfer_syntax.is_transfer_syntax:
        return None
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        return None
    fp.seek(end)  # value positions (value_tell) stay offsets into the stream
    ds = read_dataset(
        fp, transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian, defer_size=BULK_THRESHOLD
    )
    return ds, str(transfer_syntax)


def _take_bulk(
    ds: Dataset, fp: BinaryIO, transfer_syntax: str
) -> tuple[dict[int, str], int | None, int | None]:
    """Take the bulk values (deferred, not read) out of `ds`: {tag: VR} for their BulkDataURIs in the metadata
    cache, and the pixel data's byte range in the stream (its length None when encapsulated)."""
    bulk: dict[int, str] = {}
    pixel_offset = pixel_length = None
    for tag in list(ds._dict):
        raw = ds._dict[tag]
        if isinstance(raw, RawDataElement) and raw.value is None and _is_sequence(raw):
            # A sequence is never bulk data (PS3.18 Annex F): give pydicom its bytes to parse; large values
            # inside its items become BulkDataURIs through to_json_dict.
            fp.seek(raw.value_tell)
            ds._dict[tag] = raw._replace(value=fp.read(raw.length))
            continue
        if isinstance(raw, RawDataElement) and (raw.value is None or tag == PIXEL_DATA):
            bulk[tag] = raw.VR or "OB"
            if tag == PIXEL_DATA and transfer_syntax != DeflatedExplicitVRLittleEndian:
                pixel_offset = raw.value_tell
                pixel_length = None if raw.length == 0xFFFFFFFF else raw.length
            del ds[tag]
    if PIXEL_DATA not in bulk and PIXEL_DATA in ds:
        bulk[PIXEL_DATA] = ds[PIXEL_DATA].VR
        del ds[PIXEL_DATA]
    return bulk, pixel_offset, pixel_length


def _check_complete(ds: Dataset, size: int, position: int) -> None:
    """pydicom stops quietly at a truncated element header and does not read deferred values: a data set
    cut short would parse. The last top-level element must end exactly where the stream ends.
    `position`: where reading stopped (after a deferred undefined-length value: past its delimiter)."""
    if not ds._dict:
        raise CannotUnderstand("empty data set")
    if 0x00280010 in ds._dict and not any(t in ds._dict for t in (0x7FE00008, 0x7FE00009, PIXEL_DATA)):
        raise CannotUnderstand("image data set without pixel data: truncated")
    last = ds._dict[max(ds._dict)]
    if not isinstance(last, RawDataElement):
        return  # a parsed sequence: pydicom raised already if an item was cut
    if last.length != 0xFFFFFFFF:
        end = last.value_tell + last.length
    elif last.value is not None:  # encapsulated / undefined length: value up to the Sequence Delimiter
        end = last.value_tell + len(last.value) + 8
    else:  # deferred: pydicom walked its items up to the delimiter
        end = position
    if end != size:
        raise CannotUnderstand("data set truncated or followed by unparsable bytes")


def _is_sequence(raw: RawDataElement) -> bool:
    if raw.VR is not None:
        return bool(raw.VR == "SQ")
    try:  # implicit VR: the dictionary's
        return bool(dictionary_VR(raw.tag) == "SQ")
    except KeyError:
        return False


def _bulk_uri(elem: Any) -> str:
    return f"{BULK_PREFIX}{int(elem.tag):08X}"


def metadata_dict(compressed: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(zlib.decompress(compressed))
    return result
