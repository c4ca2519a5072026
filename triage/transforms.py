"""MONAI transforms the reference bundle names in its inference.json (`_target_: triage.transforms...`).

`AreaSpacingd` resamples to a target voxel size like `Spacingd`, but averages over the area each output
voxel covers along the axes that are down-sampled (linear interpolation along the others). A native CT
at 0.7 mm brought to 2 mm then keeps small nodules' partial volume and averages the noise down, where
Spacingd's bilinear sampling would pick single noisy voxels between them. Works on axis-aligned grids
(after `Orientationd`); the affine keeps each voxel centre's world position exact.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform


class AreaSpacing(Transform):
    def __init__(self, pixdim: Sequence[float]) -> None:
        self.pixdim = np.asarray(pixdim, float)

    def __call__(self, image: torch.Tensor) -> MetaTensor:
        """image: (C, X, Y, Z) MetaTensor with its affine. Returns the resampled MetaTensor."""
        meta = image if isinstance(image, MetaTensor) else MetaTensor(image)
        affine = np.asarray(meta.affine, float)
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        shape = np.asarray(meta.shape[1:])
        size = np.maximum(np.rint(shape * spacing / self.pixdim), 1).astype(int)
        data = meta.as_tensor().float()[None]
        down = np.minimum(size, shape)
        if np.any(down < shape):
            data = F.interpolate(data, size=tuple(int(v) for v in down), mode="area")
        if np.any(size > down):
            data = F.interpolate(
                data, size=tuple(int(v) for v in size), mode="trilinear", align_corners=False
            )
        # Output voxel i covers input voxels [i * f, (i + 1) * f): its centre is input index (i + 0.5) f - 0.5.
        factor = shape / size
        scale = np.eye(4)
        scale[:3, :3] = np.diag(factor)
        scale[:3, 3] = (factor - 1) / 2
        out = MetaTensor(data[0], meta={k: v for k, v in meta.meta.items() if k != "affine"})
        out.affine = torch.as_tensor(affine @ scale)
        out.meta["spatial_shape"] = size
        return out


class AreaSpacingd(MapTransform):
    def __init__(
        self, keys: KeysCollection, pixdim: Sequence[float], allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = AreaSpacing(pixdim)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d
