"""A bundle's own pre- and post-processing from its inference.json, run unmodified.

The pipeline has the series in memory (decoded DICOM), so the bundle's image loader (`LoadImage(d)`, which
would read files with ITK, nibabel or pydicom) is the one step it replaces: it hands the next transform
what MONAI's readers give, a channel-less MetaTensor in HU with a RAS affine (as ITKReader and
PydicomReader do with their default `affine_lps_to_ras=True`) and the readers' meta keys. Every other
transform is the bundle's, built by MONAI's ConfigParser from the bundle's config with its `_disabled_`
flags, in the bundle's order. Post-processing steps that write files or invert transforms
(`SaveImage(d)`, `Invert(d)`) are not run: the pipeline writes DICOM and maps coordinates through affines.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.bundle.utils import ID_SEP_KEY
from monai.data import MetaTensor
from monai.transforms import apply_transform
from monai.utils import MetaKeys, SpaceKeys

from imaging.errors import ArchiveError
from triage.volume import LPS_TO_RAS, Volume

LOADERS = {"LoadImage", "LoadImaged"}
NOT_RUN = {"SaveImage", "SaveImaged", "Invert", "Invertd"}
RESAMPLERS = ("Spacing", "Spacingd", "AreaSpacing", "AreaSpacingd")


class BundleConfigError(ArchiveError):
    """The bundle's pre- or post-processing cannot be built or run on DICOM series."""


def _name(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1] if isinstance(target, str) else ""


@dataclass
class BundleTransforms:
    image_key: str
    preprocessing: list[Callable[..., Any]]
    postprocessing: list[Callable[..., Any]]

    @classmethod
    def from_parser(cls, parser: ConfigParser, bundle_name: str) -> BundleTransforms:
        image_key, preprocessing = _parse(parser, "preprocessing", bundle_name)
        if not any(type(t).__name__ in RESAMPLERS for t in preprocessing):
            # Native DICOM series come in any voxel size: a model trained at one spacing needs resampling.
            raise BundleConfigError(
                f"bundle {bundle_name}: no enabled Spacing(d) transform in its preprocessing; it would see "
                "each series at its native voxel size (a bundle that resamples only for raw input, such as "
                "lung_nodule_ct_detection, needs an override, e.g. whether_raw_luna16=true)"
            )
        _, postprocessing = _parse(parser, "postprocessing", bundle_name)
        return cls(image_key, preprocessing, postprocessing)

    def preprocess(self, volume: Volume, device: torch.device) -> MetaTensor:
        """The bundle's model input for `volume`: (C, X, Y, Z) on `device`, with its (RAS) affine."""
        affine = torch.as_tensor(LPS_TO_RAS @ volume.affine_lps, dtype=torch.float64)
        image = MetaTensor(torch.from_numpy(volume.hu).to(device), affine=affine)
        image.meta.update(
            {
                MetaKeys.ORIGINAL_AFFINE: affine.clone(),
                MetaKeys.SPATIAL_SHAPE: np.asarray(volume.hu.shape),
                MetaKeys.ORIGINAL_CHANNEL_DIM: "no_channel",
                MetaKeys.SPACE: SpaceKeys.RAS,
                "filename_or_obj": str(volume.frames[0].dataset.SeriesInstanceUID) if volume.frames else "",
            }
        )
        data = self._run(self.preprocessing, {self.image_key: image})
        result = data[self.image_key]
        if not isinstance(result, MetaTensor) or result.ndim != 4:
            raise BundleConfigError("the bundle's preprocessing did not produce a (C, X, Y, Z) image")
        return result.to(device)  # type: ignore[return-value]  # .to keeps the MetaTensor

    def postprocess(self, prediction: Mapping[Any, Any], image: MetaTensor) -> dict[Hashable, Any]:
        """The bundle's post-processing on one prediction, with the model input beside it (box transforms
        read its affine and size, as the Model Zoo detection bundle's handlers pass it)."""
        return self._run(self.postprocessing, {**prediction, self.image_key: image})

    def box_convention(self) -> tuple[str, str]:
        """(box mode, coordinate frame) of boxes after the post-processing: the detector's "xyzxyz" voxel
        boxes, as changed by ConvertBoxMode(d) and AffineBoxToWorldCoordinate(d) ("lps" when that
        transform converts the RAS affine back to LPS, as the Model Zoo bundle does, else "ras")."""
        mode, frame = "xyzxyz", "voxel"
        for transform in self.postprocessing:
            name = type(transform).__name__
            if name in {"ConvertBoxModed", "ConvertBoxMode"}:
                converter = getattr(transform, "converter", transform)
                mode = str(getattr(converter, "dst_mode", mode))
            elif name in {"AffineBoxToWorldCoordinated", "AffineBoxToWorldCoordinate"}:
                frame = "lps" if getattr(transform, "affine_lps_to_ras", False) else "ras"
        return mode, frame

    @staticmethod
    def _run(transforms: list[Callable[..., Any]], data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        for transform in transforms:
            data = apply_transform(transform, data)  # type: ignore[assignment]  # a dict in, a dict out
        return data


def _parse(parser: ConfigParser, section: str, bundle_name: str) -> tuple[str, list[Callable[..., Any]]]:
    """(image key, the enabled transforms of `section` except loaders and NOT_RUN)."""
    if section not in parser:
        return "image", []
    config = parser[section]
    if isinstance(config, Mapping) and _name(config.get("_target_")) == "Compose":
        items, prefix = config.get("transforms", []), f"{section}{ID_SEP_KEY}transforms"
    elif isinstance(config, list):
        items, prefix = config, section
    else:
        raise BundleConfigError(f"bundle {bundle_name}: {section} is not a Compose of transforms")
    image_key = "image"
    transforms = []
    for index, item in enumerate(items):
        item_id = f"{prefix}{ID_SEP_KEY}{index}"
        name = _name(item.get("_target_")) if isinstance(item, Mapping) else ""
        try:
            if name in LOADERS or name in NOT_RUN:
                if name in LOADERS and not parser.get_parsed_content(
                    f"{item_id}{ID_SEP_KEY}_disabled_", default=False
                ):
                    keys = parser.get_parsed_content(f"{item_id}{ID_SEP_KEY}keys")
                    image_key = str(keys if isinstance(keys, str) else keys[0])
                continue
            transform = parser.get_parsed_content(item_id)
        except Exception as error:  # a config MONAI cannot build is an installation problem
            raise BundleConfigError(
                f"bundle {bundle_name}: cannot build {section} item {index} ({name}): {error}"
            ) from error
        if transform is not None:  # None: disabled by its `_disabled_` flag
            transforms.append(transform)
    return image_key, transforms
