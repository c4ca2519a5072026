"""Findings rasterised onto the source series' own grid (for a SEG whose frames are the source slices)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from triage.findings import Finding
from triage.volume import Volume

MAX_SEGMENTS = 255  # label map values are uint8; findings are sorted by score, the rest are dropped


def label_map(
    findings: Sequence[Finding],
    volume: Volume,
    probability: torch.Tensor | None = None,
    probability_affine_lps: np.ndarray | None = None,
    threshold: float = 0.5,
) -> np.ndarray:
    """(columns, rows, slices) uint8: finding n (1-based) where the model's probability, resampled to
    the source grid, reaches `threshold` near that finding; a sphere of the finding's diameter when there
    is no probability map (detection models) or the resampled map is empty there."""
    labels = np.zeros(volume.hu.shape, np.uint8)
    spacing = np.asarray(volume.spacing_mm)
    for n, finding in enumerate(findings[:MAX_SEGMENTS], start=1):
        radius = finding.diameter_mm / 2
        margin = radius + (
            float(np.max(np.linalg.norm(probability_affine_lps[:3, :3], axis=0)))
            if probability_affine_lps is not None
            else 1.0
        )
        centre = volume.to_index(finding.position_lps)
        lo = np.maximum(np.floor(centre - margin / spacing), 0).astype(int)
        hi = np.minimum(np.ceil(centre + margin / spacing) + 1, volume.hu.shape).astype(int)
        if np.any(hi <= lo):
            continue
        grid = np.stack(
            np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij"), -1
        )
        lps = grid @ volume.affine_lps[:3, :3].T + volume.affine_lps[:3, 3]
        distance = np.linalg.norm(lps - np.asarray(finding.position_lps), axis=-1)
        inside = distance <= max(radius, 0.5 * float(spacing.min()))
        if probability is not None and probability_affine_lps is not None:
            sampled = _sample(probability, probability_affine_lps, lps)
            near = (sampled >= threshold) & (distance <= margin)
            if near.any():
                inside = near
        region = labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        region[inside & (region == 0)] = n
    return labels


def _sample(probability: torch.Tensor, affine_lps: np.ndarray, lps: np.ndarray) -> np.ndarray:
    """Trilinear values of a (X, Y, Z) map at LPS points (..., 3); 0 outside the map."""
    index = (lps - affine_lps[:3, 3]) @ np.linalg.inv(affine_lps[:3, :3]).T
    size = np.asarray(probability.shape, float)
    normalised = index / np.maximum(size - 1, 1) * 2 - 1  # align_corners=True: -1 and 1 are voxel centres
    grid = torch.as_tensor(normalised[..., ::-1].copy(), dtype=torch.float32, device=probability.device)
    values = F.grid_sample(
        probability[None, None].float(),
        grid.reshape(1, 1, 1, -1, 3),
        align_corners=True,
        padding_mode="zeros",
    )
    return values.reshape(lps.shape[:-1]).cpu().numpy()
