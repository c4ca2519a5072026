"""Compile Table E.1-1 + a profile into tag -> action dicts (the engine's hot-path lookups).

Every public dictionary attribute gets an action, so one dict lookup decides each element:
- listed in Table E.1-1: the Basic Profile action, overridden by the selected options' column
  (K wins over C when two selected options disagree), the same at every depth;
- not listed: decided by its VR and by the walk's mode, i.e. what the enclosing sequences' actions
  asked for (a mode only gets stricter going down):
  KEEP (top level; inside kept, U and referenced sequences): kept, unless its VR can carry identity:
  PN -> X/Z/D, DA/DT -> DATE (shifted, kept or removed as the dates options say), TM -> TIME (likewise),
  UI -> U (registered UIDs survive U), LT/ST/UT -> DESC (removed, or cleaned under Clean Descriptors);
  CLEAN (inside a sequence whose action is C): free text cleaned too (LO, SH, UC, AE ... -> C);
  DUMMY (inside a sequence whose action is D): every value that can carry identity becomes a dummy
  (PN and dates X/Z/D by Type); coded strings and numbers (the item's structure) are kept.
Tags absent from the dicts (unknown public tags, group lengths, retired repeating groups) are removed.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom._dicom_dict import DicomDictionary  # the public dictionary (re-exported by datadict)

from imaging.deid.options import OPTION_COLUMN, DeidOption, DeidProfile
from imaging.deid.table import ATTRIBUTES, PRIVATE, REPEATING

# Codes of Table E.1-1, plus our own for unlisted attributes.
TABLE_ACTIONS = frozenset({"X", "Z", "D", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"})
UNLISTED_ACTIONS = frozenset({"DATE", "TIME", "DESC"})

# Walk modes (see above), in order of strictness.
KEEP, CLEAN, DUMMY = 0, 1, 2
_TEXT_VRS = frozenset({"LO", "SH", "UC", "LT", "ST", "UT", "AE"})
_OPAQUE_VRS = frozenset({"UR", "OB", "OW", "OD", "OF", "OL", "OV", "UN"})


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


def _unlisted_action(vr: str, profile: DeidProfile, mode: int = KEEP) -> str:
    if vr == "PN":
        return "X/Z/D"
    if vr in ("DA", "DT"):
        return "DATE"
    if vr == "TM":
        return "TIME"
    if vr == "UI":
        return "K" if profile.has(DeidOption.RETAIN_UIDS) else "U"
    if mode == DUMMY and (vr in _TEXT_VRS or vr in _OPAQUE_VRS):
        return "D"  # present as before, so conditions on its presence still hold
    if mode == CLEAN and vr in _TEXT_VRS:
        return "C"
    if mode == CLEAN and vr in _OPAQUE_VRS:
        return "X/Z/D"
    if vr in ("LT", "ST", "UT"):
        return "DESC"
    return "K"


@dataclass(frozen=True)
class CompiledProfile:
    """Per-profile lookups, built once per Deidentifier."""

    actions: dict[int, str]  # tag -> action code, KEEP mode
    modes: tuple[dict[int, str], dict[int, str], dict[int, str]]  # the same, by mode KEEP, CLEAN, DUMMY
    basic: dict[int, str]  # tag -> Basic Profile action (fallback when C cannot apply to a VR)
    overlay_action: str  # for (60xx,eeee): X or C
    curve_action: str  # for (50xx,eeee): X or C
    private_action: str  # for odd groups: X or C
    sq_tags: frozenset[int]  # public sequence attributes (never shared raw)


def compile_profile(profile: DeidProfile) -> CompiledProfile:
    modes: tuple[dict[int, str], dict[int, str], dict[int, str]] = ({}, {}, {})
    for mode, actions in enumerate(modes):
        for tag, (vr, _vm, _name, _retired, keyword) in DicomDictionary.items():
            if keyword and tag >> 16 != 0x0002:
                actions[tag] = _unlisted_action(vr.split(" or ")[0], profile, mode)
    basic: dict[int, str] = {}
    for tag, (_name, row_basic, options) in ATTRIBUTES.items():
        action = row_action(row_basic, options, profile)
        for actions in modes:
            actions[tag] = action
        basic[tag] = row_basic
    repeating = {mask_tag: row_action(b, o, profile) for mask_tag, _mask, _n, b, o in REPEATING}
    return CompiledProfile(
        actions=modes[KEEP],
        modes=modes,
        basic=basic,
        overlay_action="C" if "C" in (repeating[0x60003000], repeating[0x60004000]) else "X",
        curve_action=repeating[0x50000000],
        private_action=row_action(PRIVATE[0], PRIVATE[1], profile),
        sq_tags=frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ"),
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
