"""Turn a C-FIND / C-MOVE / C-GET Identifier into matching keys and return keys."""

from __future__ import annotations

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
            continue  # sequence keys are returned; matching inside sequences is not supported
        value = elem.value
        if value is None:
            text = ""
        elif isinstance(value, MultiValue | list):
            text = "\\".join(str(v) for v in value)
        else:
            text = str(value)
        matching[keyword] = text
    return matching, returned
