"""Compile Table E.1-1 + a profile into one tag -> action dict (the engine's hot-path lookup).

Every public dictionary attribute gets an action, so one dict lookup decides each element:
- listed in Table E.1-1: the Basic Profile action, overridden by the selected options' column
  (K wins over C when two selected options disagree);
- not listed: kept, unless its VR can carry identity: PN -> X/Z/D, DA/DT -> DATE (shifted, kept or
  removed as the dates options say), UI -> U (registered UIDs survive U), LT/ST/UT -> DESC (removed or
  cleaned as the Clean Descriptors option says).
Tags absent from the dict (unknown public tags, group lengths, retired repeating groups) are removed.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom._dicom_dict import DicomDictionary  # the public dictionary (re-exported by datadict)

from imaging.deid.options import OPTION_COLUMN, DeidOption, DeidProfile
from imaging.deid.table import ATTRIBUTES, PRIVATE, REPEATING

# Codes of Table E.1-1, plus two of our own for unlisted attributes.
TABLE_ACTIONS = frozenset({"X", "Z", "D", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"})
UNLISTED_ACTIONS = frozenset({"DATE", "DESC"})


_DATE_COLUMNS = frozenset({"rtnLongFullDatesOpt", "rtnLongModifDatesOpt"})


def row_action(basic: str, options: dict[str, str], profile: DeidProfile) -> str:
    """Action of one table row under `profile`.

    A row with dates columns (e.g. Date of Last Calibration, also kept by Retain Device Identity) is
    governed by the dates options alone: another option's K must not let a full date through.
    """
    columns = {col for o in profile.options if (col := OPTION_COLUMN.get(o)) and col in options}
    if _DATE_COLUMNS & options.keys():
        columns &= _DATE_COLUMNS
    selected = {options[col] for col in columns}
    if "K" in selected:
        return "K"
    if "C" in selected:
        return "C"
    return basic


def _unlisted_action(vr: str, profile: DeidProfile) -> str:
    if vr == "PN":
        return "X/Z/D"
    if vr in ("DA", "DT"):
        return "DATE"
    if vr == "UI":
        return "K" if profile.has(DeidOption.RETAIN_UIDS) else "U"
    if vr in ("LT", "ST", "UT"):
        return "DESC"
    return "K"


@dataclass(frozen=True)
class CompiledProfile:
    """Per-profile lookups, built once per Deidentifier."""

    actions: dict[int, str]  # tag -> action code
    basic: dict[int, str]  # tag -> Basic Profile action (fallback when C cannot apply to a VR)
    overlay_action: str  # for (60xx,eeee): X or C
    curve_action: str  # for (50xx,eeee): X or C
    private_action: str  # for odd groups: X or C


def compile_profile(profile: DeidProfile) -> CompiledProfile:
    actions: dict[int, str] = {}
    for tag, (vr, _vm, _name, _retired, keyword) in DicomDictionary.items():
        if keyword and tag >> 16 != 0x0002:
            actions[tag] = _unlisted_action(vr, profile)
    basic: dict[int, str] = {}
    for tag, (_name, row_basic, options) in ATTRIBUTES.items():
        actions[tag] = row_action(row_basic, options, profile)
        basic[tag] = row_basic
    repeating = {mask_tag: row_action(b, o, profile) for mask_tag, _mask, _n, b, o in REPEATING}
    return CompiledProfile(
        actions=actions,
        basic=basic,
        overlay_action="C" if "C" in (repeating[0x60003000], repeating[0x60004000]) else "X",
        curve_action=repeating[0x50000000],
        private_action=row_action(PRIVATE[0], PRIVATE[1], profile),
    )


def all_row_actions() -> set[str]:
    """Every action code any table row can take under any option (for the handler coverage test)."""
    codes = {PRIVATE[0], *PRIVATE[1].values()}
    for _name, b, options in ATTRIBUTES.values():
        codes.add(b)
        codes.update(options.values())
    for _tag, _mask, _name, b, options in REPEATING:
        codes.add(b)
        codes.update(options.values())
    return codes
