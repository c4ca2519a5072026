"""Model outputs -> findings in patient coordinates.

Two adapters, one result type: segmentation-style output (a probability map: connected components of
the thresholded map become findings) and detection-style output (boxes with scores, as MONAI's
RetinaNetDetector and the Model Zoo `lung_nodule_ct_detection` bundle produce). Positions are LPS mm
(DICOM patient coordinates), diameters the equivalent-sphere diameter in mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.data.box_utils import convert_box_mode


@dataclass(frozen=True)
class Finding:
    position_lps: tuple[float, float, float]  # centroid, mm
    diameter_mm: float  # diameter of the sphere of the same volume
    score: float  # model confidence in [0, 1]
    volume_mm3: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "position_lps": [round(v, 2) for v in self.position_lps],
            "diameter_mm": round(self.diameter_mm, 2),
            "score": round(self.score, 4),
            "volume_mm3": round(self.volume_mm3, 1),
        }


def label_components(mask: torch.Tensor, max_iterations: int = 10_000) -> tuple[torch.Tensor, int]:
    """26-connected component labels (1..N, 0 background) of a 3D boolean mask, on the mask's device.

    Each foreground voxel starts with a unique id (its linear index + 1) and repeatedly takes the
    largest id among its neighbours; after each step every voxel also takes the label of the voxel its
    label names (pointer jumping, as in union-find), which stays inside the component and makes long
    components converge in a logarithmic number of steps. Needs neither scipy nor a GPU library."""
    # Ids travel through max_pool3d as floats: float32 holds integers exactly only up to 2**24.
    dtype = torch.float32 if mask.numel() < 2**24 else torch.float64
    ids = torch.arange(1, mask.numel() + 1, device=mask.device, dtype=dtype).reshape(mask.shape)
    labels = torch.where(mask, ids, torch.zeros_like(ids))[None, None]
    foreground = mask[None, None]
    for _ in range(max_iterations):
        grown = torch.where(foreground, F.max_pool3d(labels, 3, stride=1, padding=1), labels)
        flat = grown.flatten()
        jumped = torch.where(flat > 0, flat[(flat.long() - 1).clamp_min(0)], flat)
        grown = torch.maximum(grown, jumped.reshape(grown.shape))
        if torch.equal(grown, labels):
            break
        labels = grown
    flat = labels[0, 0].long()
    unique, inverse = torch.unique(flat, return_inverse=True)
    dense = inverse if unique[0] == 0 else inverse + 1  # keep 0 for background
    return dense.reshape(mask.shape), int((unique > 0).sum())


def findings_from_probability(
    probability: torch.Tensor,
    affine_lps: np.ndarray,
    *,
    threshold: float = 0.5,
    min_score: float = 0.5,
    min_diameter_mm: float = 0.0,
) -> list[Finding]:
    """Findings from a (X, Y, Z) probability map on a grid with `affine_lps`.

    Volume = sum of probabilities over the component times the voxel volume: a model trained on
    partial-volume (fractional) targets estimates sub-voxel sizes this way. Score = the component's
    peak probability. Centroid = probability-weighted. Sorted by score, highest first."""
    mask = probability >= threshold
    if not bool(mask.any()):
        return []
    # Work on the bounding box of the foreground only: findings are small and sparse.
    foreground = mask.nonzero()
    lo, hi = foreground.min(0).values, foreground.max(0).values + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    labels, count = label_components(mask[box])
    voxel_mm3 = float(abs(np.linalg.det(affine_lps[:3, :3])))
    inside = labels > 0
    component = labels[inside]
    p = probability[box][inside].float()
    coordinates = inside.nonzero().T.float() + lo[:, None].float()
    mass = torch.zeros(count + 1, device=p.device).index_add_(0, component, p)
    peak = torch.zeros(count + 1, device=p.device).scatter_reduce_(0, component, p, reduce="amax")
    weighted = torch.zeros(3, count + 1, device=p.device).index_add_(1, component, coordinates * p)
    centres = (weighted / mass.clamp_min(1e-6)).T.cpu().numpy()
    findings = []
    for n in range(1, count + 1):
        volume = float(mass[n]) * voxel_mm3
        diameter = (6 * volume / math.pi) ** (1 / 3)
        if float(peak[n]) < min_score or diameter < min_diameter_mm:
            continue
        centre = (affine_lps @ np.append(centres[n], 1.0))[:3]
        findings.append(Finding(_tuple(centre), diameter, float(peak[n]), volume))
    return sorted(findings, key=lambda f: -f.score)


def findings_from_boxes(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    affine_lps: np.ndarray,
    *,
    mode: str = "xyzxyz",
    frame: str = "voxel",
    min_score: float = 0.5,
) -> list[Finding]:
    """Findings from (N, 6) boxes in box `mode` (MONAI's: "xyzxyz", "cccwhd", "xxyyzz") and coordinate
    `frame`: "voxel" (indices of the grid with `affine_lps`), "lps" or "ras" (world mm, as the Model Zoo
    detection bundle's AffineBoxToWorldCoordinated leaves them).

    Diameter: geometric mean of the box's three extents in mm (the box is the nodule's bounding box);
    volume: the inscribed ellipsoid."""
    if len(boxes) == 0:
        return []
    converted = convert_box_mode(torch.as_tensor(boxes).float().cpu(), src_mode=mode, dst_mode="xyzxyz")
    corners = np.asarray(torch.as_tensor(converted))
    lo, hi = corners[:, :3], corners[:, 3:]
    centres = (lo + hi) / 2
    if frame == "voxel":
        # Box coordinates map through the affine as voxel indices (as AffineBoxToWorldCoordinated does).
        extents = np.abs(hi - lo) * np.linalg.norm(affine_lps[:3, :3], axis=0)
        centres = centres @ affine_lps[:3, :3].T + affine_lps[:3, 3]
    elif frame in ("lps", "ras"):
        extents = np.abs(hi - lo)
        if frame == "ras":
            centres = centres * np.array([-1.0, -1.0, 1.0])
    else:
        raise ValueError(f"unknown box coordinate frame {frame!r}")
    findings = []
    for centre, extent, score in zip(centres, extents, scores.float().cpu().numpy(), strict=True):
        if float(score) < min_score:
            continue
        volume = math.pi / 6 * float(np.prod(extent))
        findings.append(Finding(_tuple(centre), float(np.prod(extent) ** (1 / 3)), float(score), volume))
    return sorted(findings, key=lambda f: -f.score)


def _tuple(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))
