"""The lung fields of a chest CT, to keep a nodule detector's findings where nodules are.

Air inside the body: the volume is averaged down to about 2.5 mm voxels, voxels under -400 HU are air,
and the 26-connected air components that touch the in-plane border of the field of view (air around the
patient, and the padding outside the reconstruction circle) are dropped. What remains and is large (the
lungs, joined or not by the airways) is the lung field; small pockets (bowel and stomach gas) are not.
A finding is kept when its centre lies within its radius plus a margin of the lung field: nodules inside
the lung, on the pleura or on a vessel all touch lung air, while chest-wall, mediastinal and abdominal
structures lie farther out. When no lung field is found (a chest CT cut off at the lungs, another body
part) findings are not restricted, and the result says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from triage.findings import Finding, label_components
from triage.volume import Volume

AIR_HU = -400.0
VOXEL_MM = 2.5
MIN_LUNG_ML = 50.0
MIN_FRACTION_OF_LARGEST = 0.15


@dataclass
class LungField:
    points_lps: torch.Tensor  # (N, 3) centres of the lung-field voxels, mm
    voxel_mm: float  # the largest edge of those voxels
    volume_ml: float

    @property
    def found(self) -> bool:
        return self.points_lps.shape[0] > 0

    def distance_mm(self, position: Sequence[float], search_mm: float) -> float:
        """Distance from `position` to the nearest lung-field voxel centre (inf beyond `search_mm`)."""
        point = torch.as_tensor(position, dtype=self.points_lps.dtype, device=self.points_lps.device)
        near = self.points_lps[(self.points_lps - point).abs().amax(dim=1) <= search_mm]
        if near.shape[0] == 0:
            return float("inf")
        return float(torch.linalg.norm(near - point, dim=1).min())

    def keep(self, findings: Sequence[Finding], margin_mm: float) -> list[Finding]:
        """Findings whose centre lies within radius + margin (+ half a voxel diagonal) of the lung field."""
        if not self.found:
            return list(findings)
        slack = margin_mm + self.voxel_mm * 3**0.5 / 2
        return [
            f
            for f in findings
            if self.distance_mm(f.position_lps, f.diameter_mm / 2 + slack + 1) <= f.diameter_mm / 2 + slack
        ]


def lung_field(volume: Volume, device: torch.device | str = "cpu") -> LungField:
    spacing = np.asarray(volume.spacing_mm)
    factors = [max(1, round(VOXEL_MM / s)) for s in spacing]
    hu = torch.from_numpy(volume.hu).to(device)[None, None]
    pooled = F.avg_pool3d(hu, kernel_size=factors, stride=factors)[0, 0] if max(factors) > 1 else hu[0, 0]
    air = pooled < AIR_HU
    if not bool(air.any()):
        return _empty(device)
    # Components are found on a grid twice as coarse (labelling is iterative: 8 times fewer voxels and half
    # the path lengths), then the lung field is the fine air inside (one coarse voxel around) them.
    coarse_air = F.avg_pool3d(air[None, None].float(), 2, stride=2, ceil_mode=True)[0, 0] > 0.5
    labels, count = label_components(coarse_air)
    faces = [labels[0], labels[-1], labels[:, 0], labels[:, -1]]
    outside = torch.unique(torch.cat([face.flatten() for face in faces]))
    sizes = torch.bincount(labels.flatten(), minlength=count + 1).double()
    sizes[0] = 0
    sizes[outside] = 0
    coarse = spacing * np.asarray(factors)
    voxel_ml = float(np.prod(coarse)) / 1000
    largest = float(sizes.max())
    keep = (sizes * 8 * voxel_ml >= MIN_LUNG_ML) & (sizes >= MIN_FRACTION_OF_LARGEST * largest)
    if not bool(keep.any()):
        return _empty(device)
    near = F.max_pool3d(keep[labels][None, None].float(), 3, stride=1, padding=1)[0, 0]
    near = near.repeat_interleave(2, 0).repeat_interleave(2, 1).repeat_interleave(2, 2)
    mask = air & (near[: air.shape[0], : air.shape[1], : air.shape[2]] > 0)
    index = mask.nonzero().double()
    # Centre of coarse voxel n covers fine voxels [n f, (n + 1) f): fine index n f + (f - 1) / 2.
    fine = index * torch.as_tensor(factors, dtype=torch.float64, device=index.device) + torch.as_tensor(
        [(f - 1) / 2 for f in factors], dtype=torch.float64, device=index.device
    )
    affine = torch.as_tensor(volume.affine_lps, dtype=torch.float64, device=index.device)
    points = fine @ affine[:3, :3].T + affine[:3, 3]
    return LungField(points.float(), float(coarse.max()), float(mask.sum()) * voxel_ml)


def _empty(device: torch.device | str) -> LungField:
    return LungField(torch.zeros((0, 3), device=device), VOXEL_MM, 0.0)
