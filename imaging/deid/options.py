"""Profile and options of PS3.15 Annex E, with their CID 7050 codes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class DeidOption(StrEnum):
    """The Annex E options this engine implements (values are the standard's option names)."""

    RETAIN_SAFE_PRIVATE = "Retain Safe Private"
    RETAIN_UIDS = "Retain UIDs"
    RETAIN_DEVICE_IDENTITY = "Retain Device Identity"
    RETAIN_INSTITUTION_IDENTITY = "Retain Institution Identity"
    RETAIN_PATIENT_CHARACTERISTICS = "Retain Patient Characteristics"
    RETAIN_LONGITUDINAL_FULL_DATES = "Retain Longitudinal Temporal Information Full Dates"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "Retain Longitudinal Temporal Information Modified Dates"
    CLEAN_DESCRIPTORS = "Clean Descriptors"
    CLEAN_STRUCTURED_CONTENT = "Clean Structured Content"
    CLEAN_GRAPHICS = "Clean Graphics"
    CLEAN_PIXEL_DATA = "Clean Pixel Data"


# Table E.1-1 option column of each option (Clean Pixel Data has no column: it acts on pixels).
OPTION_COLUMN: dict[DeidOption, str] = {
    DeidOption.RETAIN_SAFE_PRIVATE: "rtnSafePrivOpt",
    DeidOption.RETAIN_UIDS: "rtnUIDsOpt",
    DeidOption.RETAIN_DEVICE_IDENTITY: "rtnDevIdOpt",
    DeidOption.RETAIN_INSTITUTION_IDENTITY: "rtnInstIdOpt",
    DeidOption.RETAIN_PATIENT_CHARACTERISTICS: "rtnPatCharsOpt",
    DeidOption.RETAIN_LONGITUDINAL_FULL_DATES: "rtnLongFullDatesOpt",
    DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES: "rtnLongModifDatesOpt",
    DeidOption.CLEAN_DESCRIPTORS: "cleanDescOpt",
    DeidOption.CLEAN_STRUCTURED_CONTENT: "cleanStructContOpt",
    DeidOption.CLEAN_GRAPHICS: "cleanGraphOpt",
}

# CID 7050 (scheme DCM) code of the profile and of each option.
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODE: dict[DeidOption, tuple[str, str]] = {
    DeidOption.CLEAN_PIXEL_DATA: ("113101", "Clean Pixel Data Option"),
    DeidOption.CLEAN_GRAPHICS: ("113103", "Clean Graphics Option"),
    DeidOption.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    DeidOption.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    DeidOption.RETAIN_LONGITUDINAL_FULL_DATES: (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    DeidOption.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    DeidOption.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    DeidOption.RETAIN_UIDS: ("113110", "Retain UIDs Option"),
    DeidOption.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    DeidOption.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
}

# The archive's default for research sharing: intervals kept by one keyed date shift per patient, and
# burned-in text looked for (and masked or quarantined) on the images at risk of carrying it.
DEFAULT_OPTIONS = frozenset({DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES, DeidOption.CLEAN_PIXEL_DATA})


def _normalise(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def parse_option(text: str) -> DeidOption:
    """An option from its member name or standard name, in any case, with or without separators."""
    wanted = _normalise(text.removesuffix(" Option").removesuffix("-option"))
    for option in DeidOption:
        if wanted in (_normalise(option.name), _normalise(option.value)):
            return option
    raise ValueError(f"unknown de-identification option {text!r}")


@dataclass(frozen=True)
class DeidProfile:
    """Basic Application Level Confidentiality Profile plus a set of options."""

    options: frozenset[DeidOption] = field(default=DEFAULT_OPTIONS)

    def __post_init__(self) -> None:
        both = {DeidOption.RETAIN_LONGITUDINAL_FULL_DATES, DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES}
        if both <= self.options:
            raise ValueError("the Full Dates and Modified Dates options exclude each other")
        object.__setattr__(self, "options", frozenset(DeidOption(o) for o in self.options))

    def has(self, option: DeidOption) -> bool:
        return option in self.options

    @property
    def signature(self) -> str:
        """A short stable name of profile + options (part of the idempotence seal)."""
        codes = sorted(OPTION_CODE[o][0][-2:] for o in self.options)
        return "113100" + ("+" + ".".join(codes) if codes else "")
