"""The generated Table E.1-1: every action has a handler, and the committed table is up to date."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from imaging.deid import Deidentifier, DeidOption, DeidProfile, generate_table, table
from imaging.deid.actions import TABLE_ACTIONS, all_row_actions, compile_profile
from imaging.deid.options import OPTION_COLUMN
from tests.deid.conftest import KEY

STANDARD_DIR = Path(__file__).resolve().parents[3] / "shared" / "standard"


def test_every_row_action_has_a_handler() -> None:
    assert all_row_actions() <= TABLE_ACTIONS, all_row_actions() - TABLE_ACTIONS


def test_every_row_is_compiled_under_every_option() -> None:
    for option in [None, *DeidOption]:
        profile = DeidProfile(options=frozenset() if option is None else frozenset({option}))
        compiled = compile_profile(profile)
        for tag in table.ATTRIBUTES:
            assert compiled.actions[tag] in TABLE_ACTIONS, (hex(tag), option)


_VALUES: dict[str, object] = {
    "UI": "1.2.3.5",
    "DA": "20240101",
    "DT": "20240101101010",
    "TM": "101010",
    "AS": "050Y",
    "DS": "1.5",
    "IS": "7",
    "AE": "STATIONAE",
    "CS": "VALUE",
    "UR": "http://example.invalid/x",
    "AT": 0x00100010,
}


def _every_row() -> Dataset:
    """One dataset holding every public Table E.1-1 attribute pydicom knows, with a valid value."""
    ds = Dataset()
    for tag in table.ATTRIBUTES:
        if tag >> 16 in (0x0000, 0x0002) or not dictionary_has_tag(tag):
            continue
        vr = dictionary_VR(tag).split(" or ")[0]
        if vr == "SQ":
            item = Dataset()
            item.CodeValue = "1"
            ds.add_new(tag, vr, [item])
        elif vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
            ds.add_new(tag, vr, 1)
        elif vr.startswith("O") or vr == "UN":
            ds.add_new(tag, vr, b"\x00\x01")
        else:
            ds.add_new(tag, vr, _VALUES.get(vr, "TEXT ZQXROW"))
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    return ds


@pytest.mark.parametrize("option", [None, *DeidOption], ids=lambda o: "basic" if o is None else o.name)
def test_the_engine_applies_every_row_under_every_option(option: DeidOption | None) -> None:
    """Every row's compiled action runs through its handler (a missing handler quarantines)."""
    profile = DeidProfile(options=frozenset() if option is None else frozenset({option}))
    result = Deidentifier(key=KEY, profile=profile).deidentify(_every_row())
    assert not result.quarantined, result.reasons
    assert result.dataset is not None
    assert all("ZQXROW" not in str(e.value) for e in result.dataset.iterall() if e.VR != "SQ") or (
        option is not None and option.name.startswith("RETAIN")
    )


def test_the_options_of_the_new_2026c_rows_were_chosen() -> None:
    """Each row new in 2026c carries a reviewed option choice (or a reviewed absence of one)."""
    assert len(generate_table.NEW_ROW_OPTIONS) + len(generate_table.NEW_ROWS_WITHOUT_OPTION) == 38
    columns = set(OPTION_COLUMN.values())
    for options in generate_table.NEW_ROW_OPTIONS.values():
        assert options and set(options) <= columns


def test_dates_rows_follow_the_dates_options_only() -> None:
    """Date of Last Calibration is also kept by Retain Device Identity; the dates options decide."""
    tag = 0x00181200
    for extra, expected in [(set(), "X"), ({DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES}, "C")]:
        profile = DeidProfile(options=frozenset({DeidOption.RETAIN_DEVICE_IDENTITY, *extra}))
        assert compile_profile(profile).actions[tag] == expected


def test_table_records_its_editions() -> None:
    assert table.EDITION == "2026c" and table.OPTION_EDITION == "2024b"
    assert len(table.ATTRIBUTES) >= 651 and len(table.REPEATING) == 3


@pytest.mark.skipif(not STANDARD_DIR.is_dir(), reason="../shared/standard is not present")
def test_committed_table_equals_generator_output() -> None:
    committed = Path(table.__file__).read_text()
    assert generate_table.build(STANDARD_DIR) == committed, "run python -m imaging.deid.generate_table"


def test_all_option_pairs_compile() -> None:
    """Any combination of two options compiles (Full + Modified dates excluded by design)."""
    for a, b in itertools.combinations(DeidOption, 2):
        dates = {DeidOption.RETAIN_LONGITUDINAL_FULL_DATES, DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES}
        if {a, b} == dates:
            with pytest.raises(ValueError):
                DeidProfile(options=frozenset({a, b}))
            continue
        compile_profile(DeidProfile(options=frozenset({a, b})))
