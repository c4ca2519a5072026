"""Coded entries (Code Sequence Macro items) under de-identification.

A code item's values are the code itself (CodeValue, CodingSchemeDesignator, CodeMeaning ...), which no
row of Table E.1-1 names, so a walk that only applies the table keeps them verbatim, identifying text
included (a local code for a person, an institution name as CodeMeaning). Here:
- a code of a public coding scheme that the standard's code tables hold (DCM, SCT and SRT, LN, UCUM ...,
  as pydicom ships them) is kept with its canonical CodeMeaning, so planted text in the meaning goes;
- any other code is replaced by one dummy code where its sequence is dummied or cleaned;
- a dummied code sequence (action D) holds exactly one dummy code item, whatever it held before.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import cast

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from imaging.deid import raw

CodeValue = BaseTag(0x00080100)
CodingSchemeDesignator = BaseTag(0x00080102)
CodeMeaning = BaseTag(0x00080104)
LongCodeValue = BaseTag(0x00080119)
URNCodeValue = BaseTag(0x00080120)
CODE_VALUE_TAGS = (CodeValue, LongCodeValue, URNCodeValue)
# The dummy code: a private coding scheme ('99' prefix, PS3.3 8.2) that means nothing but "removed".
DUMMY_CODE = ("ANONYMIZED", "99DEID", "ANONYMIZED")
# A UCUM unit that pydicom's tables lack is kept when it is plainly a unit: short, no word in it.
_UCUM = re.compile(r"[0-9A-Za-z%/.*^'\[\]-]{1,12}")
_LETTERS = re.compile(r"[A-Za-z]+")


def is_code_item(item: Dataset) -> bool:
    return CodeValue in item or LongCodeValue in item or URNCodeValue in item


def is_code_sequence(keyword: str, items: list[Dataset]) -> bool:
    return keyword.endswith("CodeSequence") or any(is_code_item(item) for item in items)


@lru_cache(maxsize=1)
def _known() -> dict[tuple[str, str], str]:
    """(scheme, code value) -> canonical meaning, from pydicom's copy of the standard's code tables.

    Loaded on first use (about half a second: most objects hold no code item that needs it).
    """
    from pydicom.sr._concepts_dict import concepts  # a large module: imported only when needed
    from pydicom.sr._snomed_dict import mapping

    tables = cast(dict[str, dict[str, dict[str, tuple[str, list[int]]]]], concepts)
    known: dict[tuple[str, str], str] = {}
    for scheme, by_keyword in tables.items():
        for codes in by_keyword.values():
            for value, (meaning, _cids) in codes.items():
                known[(scheme, value)] = meaning
    for srt, sct in mapping["SRT"].items():  # legacy SNOMED-RT ids of the same concepts
        sct_meaning = known.get(("SCT", sct))
        if sct_meaning is not None:
            known[("SRT", srt)] = sct_meaning
    return known


def _text(item: Dataset, tag: int) -> str:
    elem = item.get(tag)
    return "" if elem is None or elem.value is None else str(elem.value).strip()


def known_code(item: Dataset) -> tuple[str, str, str] | None:
    """(CodeValue, CodingSchemeDesignator, canonical CodeMeaning) of a code item of a public scheme that
    the standard's tables hold, or None."""
    scheme, value = _text(item, CodingSchemeDesignator), _text(item, CodeValue)
    if not scheme or not value:
        return None
    meaning = _known().get((scheme, value))
    plain_unit = scheme == "UCUM" and _UCUM.fullmatch(value) is not None
    if meaning is None and plain_unit and all(len(w) <= 4 for w in _LETTERS.findall(value)):
        meaning = value  # UCUM's print symbol is an accepted meaning for a unit
    return None if meaning is None else (value, scheme, meaning)


def set_code(item: Dataset, value: str, scheme: str, meaning: str) -> None:
    for tag, vr, text in (
        (CodeValue, "SH", value),
        (CodingSchemeDesignator, "SH", scheme),
        (CodeMeaning, "LO", meaning),
    ):
        if text.isascii() and "\\" not in text:
            item._dict[tag] = raw.make(tag, vr, [text])  # the item's own encoding: none yet, ASCII is safe
        else:
            item[tag] = DataElement(tag, vr, text)


def dummy_code_item() -> Dataset:
    item = Dataset()
    set_code(item, *DUMMY_CODE)
    return item
