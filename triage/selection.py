"""Series-selection rules in front of a model: which series a bundle is run on.

Rules are data (a bundle ships them in metadata.json under "triage" -> "selection"; a site may override
them) and are evaluated on the attributes of a series' instances, pixel data not needed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

Instance = Mapping[str, Any] | Any  # a pydicom Dataset or a mapping of DICOM keywords to values


class SelectionRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    modalities: list[str] = Field(default_factory=lambda: ["CT"])
    # Empty means any. A series without BodyPartExamined passes unless require_body_part is set:
    # many scanners leave it empty.
    body_parts: list[str] = Field(default_factory=lambda: ["CHEST", "LUNG", "THORAX", "CHEST_ABDOMEN"])
    require_body_part: bool = False
    axial_only: bool = True
    axial_tolerance: float = 0.95  # |slice normal . z| at least this (about 18 degrees of tilt)
    slice_thickness_mm: tuple[float, float] = (0.5, 5.0)
    image_type_include: list[str] = Field(default_factory=lambda: ["ORIGINAL"])
    image_type_exclude: list[str] = Field(default_factory=lambda: ["LOCALIZER"])
    description_include: list[str] = Field(default_factory=list)  # regexes; one must match if any given
    description_exclude: list[str] = Field(
        default_factory=lambda: [r"(?i)\b(scout|topogram|localizer|surview|mip|minip|dose|report)\b"]
    )
    min_slices: int = 30

    @field_validator("description_include", "description_exclude")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as error:  # not a ValueError: pydantic would not report it as invalid input
                raise ValueError(f"invalid regex {pattern!r}: {error}") from error
        return patterns

    def evaluate(self, instances: Sequence[Instance]) -> SelectionDecision:
        """Decide on one series; the decision carries every rule that failed (for logs, no PHI)."""
        if not instances:
            return SelectionDecision(False, ("empty series",))
        first = instances[0]
        failed: list[str] = []
        modality = str(_get(first, "Modality") or "").upper()
        if self.modalities and modality not in {m.upper() for m in self.modalities}:
            failed.append(f"modality {modality or '(none)'} not in {self.modalities}")
        body_part = str(_get(first, "BodyPartExamined") or "").upper()
        if (
            self.body_parts
            and (body_part or self.require_body_part)
            and body_part not in {b.upper() for b in self.body_parts}
        ):
            failed.append(f"body part {body_part or '(none)'} not in {self.body_parts}")
        if self.axial_only and not _is_axial(first, self.axial_tolerance):
            failed.append("not axial")
        thickness = _get(first, "SliceThickness")
        low, high = self.slice_thickness_mm
        if thickness in (None, "") or not low <= float(thickness) <= high:
            failed.append(f"slice thickness {thickness} outside [{low}, {high}] mm")
        image_type = {str(v).upper() for v in (_get(first, "ImageType") or [])}
        if missing := [v for v in self.image_type_include if v.upper() not in image_type]:
            failed.append(f"image type lacks {missing}")
        if present := [v for v in self.image_type_exclude if v.upper() in image_type]:
            failed.append(f"image type has {present}")
        description = str(_get(first, "SeriesDescription") or "")
        if self.description_include and not any(re.search(p, description) for p in self.description_include):
            failed.append("series description matches no include pattern")
        if any(re.search(p, description) for p in self.description_exclude):
            failed.append("series description matches an exclude pattern")
        slices = sum(int(_get(i, "NumberOfFrames") or 1) for i in instances)
        if slices < self.min_slices:
            failed.append(f"{slices} slices < {self.min_slices}")
        return SelectionDecision(not failed, tuple(failed))


@dataclass(frozen=True)
class SelectionDecision:
    selected: bool
    reasons: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.selected


# Attributes a multi-frame (Enhanced CT) instance keeps in its functional groups, and the macro holding each.
FUNCTIONAL_GROUPS = {
    "ImageOrientationPatient": "PlaneOrientationSequence",
    "SliceThickness": "PixelMeasuresSequence",
    "PixelSpacing": "PixelMeasuresSequence",
}


def _get(instance: Instance, keyword: str) -> Any:
    if isinstance(instance, Mapping):
        return instance.get(keyword)
    value = getattr(instance, keyword, None)
    if value is None and keyword in FUNCTIONAL_GROUPS:
        macro = FUNCTIONAL_GROUPS[keyword]
        for holder in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            groups = getattr(instance, holder, None)
            item = groups[0] if groups else None
            if item is not None and getattr(item, macro, None):
                found = getattr(item[macro].value[0], keyword, None)
                if found is not None:
                    return found
    return value


def _is_axial(instance: Instance, tolerance: float) -> bool:
    iop = _get(instance, "ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return False
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    return bool(abs(normal[2]) >= tolerance * np.linalg.norm(normal))
