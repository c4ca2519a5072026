"""Turn a C-FIND / C-MOVE / C-GET Identifier into matching keys and return keys."""

from __future__ import annotations

import fnmatch

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from imaging.index.attributes import Level

# Not attributes to match or return: they steer the query itself.
_CONTROL = {"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC", "RetrieveAETitle"}


class BadIdentifier(ValueError):
    pass


def level_of(identifier: Dataset, allowed: tuple[Level, ...]) -> Level:
    raw = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    try:
        level = Level(raw)
    except ValueError:
        raise BadIdentifier("missing or invalid QueryRetrieveLevel") from None
    if level not in allowed:
        raise BadIdentifier("QueryRetrieveLevel not valid for this information model")
    return level


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return str(value)


def keys_of(identifier: Dataset) -> tuple[dict[str, str], list[str]]:
    """(matching keys keyword -> value string, return keys in identifier order)."""
    matching: dict[str, str] = {}
    returned: list[str] = []
    for elem in identifier:
        keyword = elem.keyword
        if not keyword or keyword in _CONTROL:
            continue
        returned.append(keyword)
        if elem.VR == "SQ":
            continue  # matched by sequence_keys() against the metadata cache
        matching[keyword] = _text(elem.value)
    return matching, returned


def sequence_keys(identifier: Dataset) -> dict[str, dict[str, str]]:
    """Sequence matching keys (PS3.4 C.2.2.2.6): a sequence of one item whose non-empty item keys must all
    match one item of the stored sequence. Zero items or only empty item keys: universal (not returned)."""
    keys: dict[str, dict[str, str]] = {}
    for elem in identifier:
        if elem.VR != "SQ" or not elem.keyword or not elem.value:
            continue
        item_keys = {
            e.keyword: _text(e.value)
            for e in elem.value[0]
            if e.keyword and e.VR != "SQ" and _text(e.value) not in ("", "*")
        }
        if item_keys:
            keys[elem.keyword] = item_keys
    return keys


def _value_matches(stored: list[object], key: str, vr: str) -> bool:
    """Single value, list (backslash), wildcard; person names ignore case (PS3.4 C.2.2.2.1)."""

    def norm(v: object) -> str:
        if isinstance(v, dict):  # DICOM JSON person name
            v = v.get("Alphabetic", "")
        s = str(v).strip()
        return s.lower() if vr == "PN" else s

    values = [norm(v) for v in stored] or [""]
    for option in key.split("\\"):
        option = norm(option)
        if "*" in option or "?" in option:
            if any(fnmatch.fnmatchcase(v, option.replace("[", "[[]")) for v in values):
                return True
        elif option in values:
            return True
    return False


def sequence_matches(metadata: dict[str, object], keys: dict[str, dict[str, str]]) -> bool:
    """Whether the DICOM JSON `metadata` of an entity satisfies every sequence matching key."""
    for seq_keyword, item_keys in keys.items():
        element = metadata.get(f"{tag_for_keyword(seq_keyword):08X}")
        items = element.get("Value", []) if isinstance(element, dict) else []
        found = False
        for item in items:
            ok = True
            for keyword, key in item_keys.items():
                tag = tag_for_keyword(keyword)
                if tag is None:
                    continue
                attr = item.get(f"{tag:08X}", {})
                if not _value_matches(attr.get("Value", []), key, dictionary_VR(tag)):
                    ok = False
                    break
            if ok:
                found = True
                break
        if not found:
            return False
    return True
