"""DICOM JSON (PS3.18 Annex F) straight from the raw elements of a parsed data set: the metadata cache entry
and the index values of every received instance.

pydicom's `Dataset.to_json_dict` builds, validates and converts a DataElement per attribute and then converts
it again to JSON: about 4 ms of CPU per CT slice under the GIL, as much as the rest of ingest's parsing. Here
the common VRs in the common character sets go from bytes to JSON values in one step, with pydicom's own
decoding rules (padding, splitting, person name groups). Anything else goes through pydicom per element, as
before: sequences, AT, UN, implicit-VR elements whose VR the dictionary cannot tell, other character sets,
values that are not valid numbers. For valid data the result equals pydicom's
(tests/index/test_json_model.py compares them on pydicom's test files). Unlike `to_json_dict` under strict
reading, a string value that breaks a VR's rules (a lowercase CS, say) is kept rather than dropped: the cache
serves what was received.
"""

from __future__ import annotations

import base64
import logging
import math
import struct
from collections.abc import Callable
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

log = logging.getLogger(__name__)

SPECIFIC_CHARACTER_SET = BaseTag(0x00080005)
# Character sets whose text decodes with one Python codec and no escape sequences; pydicom's default for
# an absent value is Latin-1 too ("iso8859").
_SINGLE_BYTE_SETS = {"", "ISO_IR 6", "ISO_IR 100"}
_UTF8_SETS = {"ISO_IR 192"}

# VRs whose text is decoded with the data set's character set (the others are always default-repertoire).
_TEXT_VRS = {"SH", "LO", "UC", "ST", "LT", "UT", "PN"}
_SPLIT_STRIPPED = {"AS", "CS", "DA", "DT", "TM", "UI"}  # rstrip the whole value, then split
_SPLIT_EACH = {"SH", "LO", "UC"}  # split, then rstrip each value
_SINGLE = {"ST", "LT", "UT"}  # never split
_BINARY_NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}
_BYTES = {"OB", "OD", "OF", "OL", "OV", "OW"}

_vr_cache: dict[int, str | None] = {}


class _Fallback(Exception):
    """This element goes through pydicom."""


def encode(
    ds: Dataset, bulk_threshold: int, bulk_uri: Callable[[Any], str]
) -> tuple[dict[str, Any], dict[int, list[Any]]]:
    """(DICOM JSON object of `ds`'s top level, {tag: values} for the elements decoded here).

    `values` holds each decoded element's values as pydicom's `str()` would show them (numbers for binary
    VRs): what the index stores. Elements sent to pydicom are not in it."""
    encoding = _encoding(ds)
    _implicit, little = ds.original_encoding
    prefix = "<" if little is not False else ">"
    out: dict[str, Any] = {}
    values: dict[int, list[Any]] = {}
    for tag, elem in ds._dict.items():
        key = f"{tag:08X}"
        if isinstance(elem, RawDataElement) and encoding is not None and elem.value is not None:
            vr = elem.VR if elem.VR is not None else _dictionary_vr(tag)
            if vr is not None:
                try:
                    out[key], decoded = _element(vr, elem.value, encoding, prefix, bulk_threshold)
                except (_Fallback, UnicodeDecodeError, ValueError, struct.error):
                    pass
                else:
                    if decoded is not None:
                        values[tag] = decoded
                    continue
        try:
            out[key] = ds[tag].to_json_dict(bulk_uri, bulk_threshold)
        except Exception as exc:  # a value pydicom cannot represent: left out of the cache, as before
            log.warning("metadata: element %s left out (%s)", key, type(exc).__name__)
    return out, values


def _encoding(ds: Dataset) -> str | None:
    """The codec for text VRs, or None when pydicom must decode (other or several character sets)."""
    elem = ds._dict.get(SPECIFIC_CHARACTER_SET)
    if elem is None:
        return "latin_1"
    value = elem.value  # pydicom has usually converted it while reading
    if isinstance(value, bytes):
        value = value.decode("latin_1")
    if not isinstance(value, str):  # several values: ISO 2022 code extensions
        return None
    value = value.strip(" \x00")
    if value in _SINGLE_BYTE_SETS:
        return "latin_1"
    if value in _UTF8_SETS:
        return "utf_8"
    return None


def _dictionary_vr(tag: int) -> str | None:
    """The dictionary's VR of an implicit-VR element, None when ambiguous, private or unknown."""
    try:
        return _vr_cache[tag]
    except KeyError:
        pass
    vr: str | None
    if tag >> 16 & 1 or tag & 0xFFFF == 0:  # private or group length: pydicom's rules
        vr = None
    else:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = None
        if vr is not None and (" " in vr or vr == "UN"):  # "US or SS", "OB or OW"...
            vr = None
    _vr_cache[tag] = vr
    return vr


def _element(
    vr: str, raw: bytes, encoding: str, prefix: str, bulk_threshold: int
) -> tuple[dict[str, Any], list[Any] | None]:
    """({"vr", "Value" | "InlineBinary" | "BulkDataURI"}, values for the index) of one raw value."""
    element: dict[str, Any] = {"vr": vr}
    if vr in _BINARY_NUMBERS:
        code = _BINARY_NUMBERS[vr]
        size = struct.calcsize(code)
        if len(raw) % size:
            raise _Fallback
        numbers = list(struct.unpack(f"{prefix}{len(raw) // size}{code}", raw))
        if numbers:
            element["Value"] = numbers
        return element, numbers
    if vr in _BYTES:
        if raw and len(raw) > (bulk_threshold // 4) * 3:
            raise _Fallback  # parse() has made large values bulk already; pydicom names the URI
        if raw:
            element["InlineBinary"] = base64.b64encode(raw).decode("ascii")
        return element, None
    texts = _texts(vr, raw, encoding)
    if texts is None:
        return element, []
    if vr == "PN":
        element["Value"] = [_person_name(t) for t in texts]
    elif vr == "IS":
        element["Value"] = [int(t) for t in texts]
    elif vr == "DS":
        numbers = [float(t) for t in texts]
        if not all(math.isfinite(n) for n in numbers):
            raise _Fallback
        element["Value"] = numbers
    else:
        element["Value"] = texts
    return element, texts


def _texts(vr: str, raw: bytes, encoding: str) -> list[str] | None:
    """The values of a string VR as pydicom decodes them; None for an empty element."""
    if vr in _SPLIT_STRIPPED:
        text = raw.decode("latin_1").rstrip(" \x00")
        return text.split("\\") if text else None
    if vr in _SPLIT_EACH:
        texts = [t.rstrip("\x00 ") for t in raw.decode(encoding).split("\\")]
        return None if texts == [""] else texts
    if vr in _SINGLE:
        text = raw.decode(encoding).rstrip("\x00 ")
        return [text] if text else None
    if vr == "PN":
        text = raw.rstrip(b"\x00 ").decode(encoding)
        return text.split("\\") if text else None
    if vr == "AE":
        texts = [t.strip() for t in raw.decode("latin_1").split("\\")]
        return None if texts == [""] else texts
    if vr == "IS":
        text = raw.decode("latin_1").rstrip(" \x00")
        return text.split("\\") if text else None
    if vr == "DS":
        text = raw.decode("latin_1").strip().rstrip(" \x00")
        return text.split("\\") if text else None
    if vr == "UR":
        text = raw.decode("latin_1").rstrip()
        return [text] if text else None
    raise _Fallback  # SQ, AT, UN and anything unexpected


def _person_name(text: str) -> dict[str, str]:
    groups = text.split("=")
    name = {"Alphabetic": groups[0]}
    if len(groups) > 1:
        name["Ideographic"] = groups[1]
    if len(groups) > 2:
        name["Phonetic"] = groups[2]
    return name
