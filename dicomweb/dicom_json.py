"""DICOM JSON (PS3.18 Annex F).

Two producers:
* `element()` builds one attribute from an index column value (QIDO answers are built from columns, not
  pydicom Datasets: a study search page must cost microseconds per row); `element_encoder(vr)` writes
  the same attribute straight as JSON text (`dumps(element(vr, v))` without the dict) and
  `column_encoder(vr)` a whole column of them, for QIDO pages;
* `instance_metadata()` turns an instance's cached, compressed DICOM JSON into the served form by putting
  the instance's bulk data URL in place of the cache's placeholders — on the bytes, without re-parsing.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterable
from functools import lru_cache
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from imaging.index.extract import BULK_PREFIX

MEDIA_TYPE = "application/dicom+json"
# The placeholder as it appears in the cached JSON text (json.dumps escapes the NUL character).
_PLACEHOLDER = json.dumps(BULK_PREFIX)[1:-1].encode()
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
# VRs whose value is one string even when it contains a backslash.
_SINGLE_VALUED = {"LT", "ST", "UT", "UR", "UC"}
_NUMBER_VRS = {"IS", "SL", "SS", "UL", "US", "SV", "UV"}
_FLOAT_VRS = {"DS", "FL", "FD"}
# VRs whose values are strings in DICOM JSON (PS3.18 F.2.3), besides PN.
_STRING_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}


class UnknownAttribute(ValueError):
    pass


@lru_cache(maxsize=4096)
def resolve(name: str) -> tuple[int, str]:
    """A keyword or an 8-digit hex tag → (tag, keyword). Raises UnknownAttribute."""
    name = name.strip()
    if _TAG.match(name):
        tag = int(name, 16)
        keyword = keyword_for_tag(tag)
        if not keyword:
            raise UnknownAttribute(f"unknown attribute {name.upper()}")
        return tag, keyword
    found = tag_for_keyword(name)
    if found is None:
        shown = name if len(name) <= 64 and name.isascii() and name.isprintable() else "(unprintable)"
        raise UnknownAttribute(f"unknown attribute {shown}")
    return int(found), name


@lru_cache(maxsize=4096)
def vr_of(tag: int) -> str:
    vr = dictionary_VR(tag)
    return vr.split(" or ")[0] if " or " in vr else vr


def tag_key(tag: int) -> str:
    return f"{tag:08X}"


def _pn(value: str) -> dict[str, str]:
    groups = value.split("=")
    out = {}
    for name, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False):
        if group:
            out[name] = group
    return out


def element(vr: str, value: Any) -> dict[str, Any]:
    """One DICOM JSON attribute from a (column) value; None/"" → no Value."""
    if value is None or value == "" or value == []:
        return {"vr": vr}
    if isinstance(value, str):
        values: list[Any] = [value] if vr in _SINGLE_VALUED else value.split("\\")
    elif isinstance(value, list | tuple):
        values = list(value)
    else:
        values = [value]
    if vr == "PN":
        values = [_pn(str(v)) if v else None for v in values]
    elif vr in _NUMBER_VRS:
        converted: list[Any] = []
        for v in values:
            try:
                converted.append(int(v))
            except (TypeError, ValueError):
                converted.append(None)
        values = converted
    elif vr in _FLOAT_VRS:
        converted = []
        for v in values:
            try:
                f = float(v)
                converted.append(int(f) if f.is_integer() and vr == "DS" else f)
            except (TypeError, ValueError):
                converted.append(None)
        values = converted
    else:
        values = [v if v != "" else None for v in values]
    return {"vr": vr, "Value": values}


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def dumps_text(obj: Any) -> str:
    """`dumps` as text (the response is encoded once, after its parts are joined)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# A JSON string literal exactly as `dumps` writes it (ensure_ascii=False: non-ASCII kept, UTF-8 at the end).
json_string: Callable[[str], str] = encode_basestring
_PN_NAMES = tuple(json_string(name) + ":" for name in ("Alphabetic", "Ideographic", "Phonetic"))


def _pn_json(value: str) -> str:
    """`dumps_text(_pn(value))`."""
    return (
        "{"
        + ",".join([name + json_string(g) for name, g in zip(_PN_NAMES, value.split("="), strict=False) if g])
        + "}"
    )


@lru_cache(maxsize=1024)
def element_encoder(vr: str, key: str | None = None) -> Callable[[Any], str]:
    """A function writing `element(vr, value)` as JSON text, byte for byte what `dumps_text` gives; with
    `key`, the object member `"key":element` (the text `dumps_text` writes for it inside an object).

    Column values (str, int, None) take the direct paths; anything else goes through `element` itself.
    """
    member = "" if key is None else json_string(key) + ":"
    empty = member + '{"vr":' + json_string(vr) + "}"
    head = member + '{"vr":' + json_string(vr) + ',"Value":['

    def generic(value: Any) -> str:
        return member + dumps_text(element(vr, value))

    if vr == "PN":

        def person_name(value: Any) -> str:
            if value.__class__ is str:
                if not value:
                    return empty
                return head + ",".join([_pn_json(v) if v else "null" for v in value.split("\\")]) + "]}"
            return empty if value is None else generic(value)

        return person_name
    if vr in _NUMBER_VRS:

        def number(value: Any) -> str:
            if value.__class__ is int:
                return head + int.__repr__(value) + "]}"
            return empty if value is None else generic(value)

        return number
    if vr in _FLOAT_VRS or vr not in _STRING_VRS:
        return generic
    if vr in _SINGLE_VALUED:

        def single(value: Any) -> str:
            if value.__class__ is str:
                return head + json_string(value) + "]}" if value else empty
            return empty if value is None else generic(value)

        return single

    def text(value: Any) -> str:
        if value.__class__ is str:
            if not value:
                return empty
            if "\\" not in value:
                return head + json_string(value) + "]}"
            return head + ",".join([json_string(v) if v else "null" for v in value.split("\\")]) + "]}"
        return empty if value is None else generic(value)

    return text


@lru_cache(maxsize=1024)
def column_encoder(vr: str, key: str | None = None) -> Callable[[Iterable[Any]], list[str]]:
    """`element_encoder(vr, key)` over a column of values (a QIDO page is written column by column)."""
    encode = element_encoder(vr, key)
    return lambda values: [encode(v) for v in values]


def instance_metadata(compressed: bytes, bulk_base: str) -> bytes:
    """The served DICOM JSON object of an instance: cache entry with `bulk_base + "/" + tag` URLs."""
    text = zlib.decompress(compressed)
    if _PLACEHOLDER in text:
        text = text.replace(_PLACEHOLDER, json.dumps(bulk_base + "/")[1:-1].encode())
    return text


def json_array(items: Iterable[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def cached_dict(compressed: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(zlib.decompress(compressed))
    return result
