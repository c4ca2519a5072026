"""Every Table E.1-1 row gets its action at every depth (0-4), under several option sets.

One dataset per depth holds a planted value for every row that pydicom's dictionary knows, inside a
chain of kept (unlisted) sequences: ReferencedSeriesSequence > ReferencedInstanceSequence >
DerivationImageSequence > ReferencedSOPSequence. The output is checked row by row against the row's
compiled action, and every planted text token of a row that is not kept is looked for in every byte of
the written file.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from imaging.deid import Deidentifier, DeidOption, DeidProfile
from imaging.deid.actions import compile_profile
from imaging.deid.codes import DUMMY_CODE
from imaging.deid.conditions import DEPENDENTS
from imaging.deid.dates import shift_da, shift_dt
from imaging.deid.table import ATTRIBUTES
from tests.deid.checker import file_bytes
from tests.deid.conftest import KEY
from tests.deid.corpus import ROOT, Corpus, patient_module
from tests.deid.test_leaks import PROFILES

CHAIN = (
    "ReferencedSeriesSequence",
    "ReferencedInstanceSequence",
    "DerivationImageSequence",
    "ReferencedSOPSequence",
)
# Set by the engine itself at the top level (pseudonym, markers), checked elsewhere.
ENGINE_SET = frozenset({0x00100010, 0x00100020, 0x00120062, 0x00120063, 0x00120064, 0x00280303})
NUMERIC = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "DS", "IS", "AT"})
Time = 0x0040A122


@dataclass(frozen=True)
class Row:
    tag: int
    vr: str
    value: object
    tokens: tuple[str, ...]  # unique text planted with it (empty for dates, numbers, UIDs)


def _planted(i: int, tag: int) -> Row:
    vr = dictionary_VR(tag).split(" or ")[0]
    token = f"ZQXR{i:03d}"
    day = (dt.date(2024, 1, 1) + dt.timedelta(days=i)).strftime("%Y%m%d")
    if vr == "SQ":
        item = Dataset()
        if keyword_for_tag(tag).endswith("CodeSequence"):
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = token + "V", "99ZQX", token + "M"
            modifier = Dataset()
            modifier.CodeValue, modifier.CodingSchemeDesignator = token + "N", "99ZQX"
            modifier.CodeMeaning = token + "O"
            item.ModifierCodeSequence = Sequence([modifier])
            return Row(tag, vr, [item], (token + "V", token + "M", token + "N", token + "O"))
        item.Manufacturer = token + "S"
        item.OperatorsName = token + "P"
        return Row(tag, vr, [item], (token + "S", token + "P"))
    values: dict[str, object] = {
        "DA": day,
        "DT": f"{day}101010.9{i:05d}",
        "TM": f"101010.9{i:05d}",
        "UI": f"{ROOT}.77.{i}",
        "DS": f"{i}.25",
        "IS": str(9000 + i),
        "AS": f"{i % 900 + 10:03d}Y",
        "US": i,
        "SS": i,
        "UL": i,
        "FL": float(i),
        "FD": float(i),
        "OB": b"ZQ" + i.to_bytes(2, "big"),
        "UN": b"ZQ" + i.to_bytes(2, "big"),
        "UR": f"http://zqx.invalid/{token}",
    }
    if vr in values:
        return Row(tag, vr, values[vr], (token,) if vr == "UR" else ())
    return Row(tag, vr, token + ("^ZQXGIVEN" if vr == "PN" else ""), (token,))


def _rows(depth: int) -> list[Row]:
    rows = []
    for i, tag in enumerate(sorted(ATTRIBUTES)):
        if tag >> 16 in (0x0000, 0x0002) or tag >= 0xFFFA0000 or not dictionary_has_tag(tag):
            continue
        if depth == 0 and (tag in ENGINE_SET or tag == 0x00080018):  # SOPInstanceUID: the instance's
            continue
        rows.append(_planted(i, tag))
    return rows


def _dataset(rows: list[Row], depth: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"{ROOT}.78.1"
    ds.StudyInstanceUID = f"{ROOT}.78.2"
    ds.Modality = "CT"
    patient_module(Corpus(), ds)
    holder = ds
    for keyword in CHAIN[:depth]:
        item = Dataset()
        setattr(holder, keyword, Sequence([item]))
        holder = item
    for row in rows:
        holder[row.tag] = DataElement(row.tag, row.vr, row.value)
    return ds


def _holder(ds: Dataset, depth: int) -> Dataset:
    for keyword in CHAIN[:depth]:
        ds = ds[keyword].value[0]
    return ds


def _check(row: Row, out_item: Dataset, action: str, offset: int | None, data: bytes) -> str | None:
    """None if the row's output follows `action`, else what is wrong."""
    elem = out_item.get(row.tag)
    value = None if elem is None else elem.value
    keyword = keyword_for_tag(row.tag)
    dependency = DEPENDENTS.get(row.tag)
    if elem is None and dependency is not None and dependency[0] not in out_item:
        return None  # a conditional attribute whose condition the table's removal broke: pruned
    if action == "K":
        if row.vr == "SQ":
            return None if value else f"{keyword}: kept sequence lost"
        planted = DataElement(row.tag, row.vr, row.value).value
        return None if elem is not None and value == planted else f"{keyword}: K but {value!r}"
    leaked = [t for t in row.tokens if t.encode() in data]
    if row.vr == "SQ":
        if action == "U":  # references kept, their UIDs mapped (items walked with the table)
            return None if value else f"{keyword}: U sequence lost"
        if leaked:
            return f"{keyword}: {action} but {leaked} in the output"
        if value and action == "D" and keyword.endswith("CodeSequence"):
            codes = [(i.CodeValue, i.CodingSchemeDesignator, i.CodeMeaning) for i in value]
            return None if codes == [DUMMY_CODE] else f"{keyword}: D holds {codes}"
        return None
    if action == "U":
        return None if str(value).startswith("2.25.") else f"{keyword}: U but {value!r}"
    if action == "C" and (row.vr in NUMERIC or row.vr == "CS"):
        return None  # numbers kept; coded strings kept when clean
    if action == "C" and row.vr == "TM" and row.tag != Time:
        # Modified Dates: a whole-day shift keeps a dated event's time of day.
        return None if value == row.value else f"{keyword}: C time {value!r}"
    if action == "C" and row.vr in ("DA", "DT") and offset is not None:
        shift = shift_da if row.vr == "DA" else shift_dt
        expected = shift(str(row.value), offset)
        return None if value == expected else f"{keyword}: shifted {value!r}, expected {expected!r}"
    if leaked:
        return f"{keyword}: {action} but {leaked} in the output"
    if value not in (None, "", b"") and str(value) == str(row.value):
        return f"{keyword}: {action} but kept verbatim"
    return None


@pytest.mark.parametrize("depth", range(5))
@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_row_gets_its_action_at_every_depth(name: str, depth: int) -> None:
    profile: DeidProfile = PROFILES[name]
    rows = _rows(depth)
    source = _dataset(rows, depth)
    result = Deidentifier(key=KEY, profile=profile).deidentify(source)
    assert result.dataset is not None, result.reasons
    data = file_bytes(result.dataset)
    out_item = _holder(result.dataset, depth)
    # X/Z/U*: the engine keeps references (U), their UIDs mapped, rather than dropping Type 3 ones.
    # Retain UIDs keeps every UID, also the few U rows without an option column in the 2024b data.
    retain_uids = profile.has(DeidOption.RETAIN_UIDS)
    actions = {
        tag: "U" if a == "X/Z/U*" else ("K" if a == "U" and retain_uids else a)
        for tag, a in compile_profile(profile).actions.items()
    }
    wrong = [
        problem
        for row in rows
        if (problem := _check(row, out_item, actions[row.tag], result.date_offset_days, data)) is not None
    ]
    assert not wrong, wrong
    assert len(rows) > 600  # the walk really covered the table


def test_the_check_catches_a_kept_value() -> None:
    """The row check is not vacuous: a verbatim value under a removing action is reported."""
    row = _planted(1, 0x00081010)  # Station Name
    item = Dataset()
    item[row.tag] = DataElement(row.tag, row.vr, row.value)
    assert _check(row, item, "X", None, str(row.value).encode()) is not None
    assert _check(row, Dataset(), "X", None, b"") is None
