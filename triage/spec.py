"""What the pipeline needs to know to run a bundle: output style, preprocessing, sliding window and
post-processing thresholds.

Read from the bundle's own configs so there is one source of truth: preprocessing parameters come from
the transforms listed in inference.json (Orientationd, Spacingd, ScaleIntensityRanged), the window from
its inferer / `infer_patch_size`; the optional "triage" block of metadata.json adds what MONAI bundles do
not describe (thresholds, selection rules). A Model Zoo bundle without that block gets defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from triage.selection import SelectionRules


class TriageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    output: Literal["segmentation", "detection"] = "segmentation"
    axcodes: str = "RAS"
    pixdim: tuple[float, float, float] = (1.0, 1.0, 1.0)
    a_min: float = -1024.0
    a_max: float = 300.0
    b_min: float = 0.0
    b_max: float = 1.0
    clip: bool = True
    roi_size: tuple[int, int, int] = (96, 96, 96)
    sw_batch_size: int = 2
    overlap: float = 0.25
    blend_mode: str = "gaussian"
    probability_threshold: float = 0.5  # segmentation: voxels at or above belong to a finding
    min_score: float = 0.5  # findings scoring lower are dropped
    min_diameter_mm: float = 3.0
    # Drop findings whose centre lies farther than their radius plus this margin from the lungs' air
    # (triage.lungs): a nodule detector has nothing to report in the chest wall or the abdomen.
    lung_mask: bool = True
    lung_margin_mm: float = 3.0
    # Segmentation output: drop findings under `blob_below_mm` whose shape in the model's input is not a
    # blob (triage.shape: Hessian eigenvalue ratio under `min_blobness`, i.e. a vessel or a wall); 0 = off.
    min_blobness: float = 0.0
    blob_below_mm: float = 8.0
    selection: SelectionRules = Field(default_factory=SelectionRules)

    @classmethod
    def from_configs(cls, metadata: Mapping[str, Any], inference: Mapping[str, Any]) -> TriageSpec:
        values: dict[str, Any] = {"output": "detection" if "detector" in inference else "segmentation"}
        for transform in _transforms(inference.get("preprocessing")):
            target = str(transform.get("_target_", "")).rsplit(".", 1)[-1]
            if transform.get("_disabled_") is True or target in {"LoadImaged", "LoadImage"}:
                continue
            if target in {"Orientationd", "Orientation"} and isinstance(transform.get("axcodes"), str):
                values["axcodes"] = transform["axcodes"]
            elif target in {"Spacingd", "Spacing", "AreaSpacingd", "AreaSpacing"} and _numbers(
                transform.get("pixdim"), 3
            ):
                values["pixdim"] = tuple(transform["pixdim"])
            elif target in {"ScaleIntensityRanged", "ScaleIntensityRange"}:
                for key in ("a_min", "a_max", "b_min", "b_max", "clip"):
                    if isinstance(transform.get(key), int | float | bool):
                        values[key] = transform[key]
        inferer = inference.get("inferer")
        if isinstance(inferer, Mapping) and str(inferer.get("_target_", "")).endswith("SlidingWindowInferer"):
            if _numbers(inferer.get("roi_size"), 3):
                values["roi_size"] = tuple(inferer["roi_size"])
            for key, name in (
                ("sw_batch_size", "sw_batch_size"),
                ("overlap", "overlap"),
                ("mode", "blend_mode"),
            ):
                if isinstance(inferer.get(key), int | float | str):
                    values[name] = inferer[key]
        if _numbers(inference.get("infer_patch_size"), 3):
            values["roi_size"] = tuple(inference["infer_patch_size"])
        values.update(metadata.get("triage") or {})
        return cls.model_validate(values)


def _transforms(preprocessing: Any) -> list[Mapping[str, Any]]:
    if isinstance(preprocessing, Mapping):
        preprocessing = preprocessing.get("transforms", [])
    return [t for t in preprocessing or [] if isinstance(t, Mapping)]


def _numbers(value: Any, count: int) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == count
        and all(isinstance(v, int | float) for v in value)
    )
