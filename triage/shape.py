"""The local shape of a finding in the model's input: blob, tube or plate (Hessian eigenvalues).

A solid nodule is a bright blob: at the scale of its radius the image's Hessian has three negative
eigenvalues of similar size. A vessel is a bright tube (two negative, one near zero along its axis), the
chest wall a plate (one negative). On anatomy it was not trained on, the reference network's false
positives are mostly small vessel segments and forks; their shape tells them apart from nodules whatever
their contrast or the scanner.

`blobness` is |lambda_3| / |lambda_1| of the eigenvalues ordered by magnitude (|lambda_1| >= |lambda_2| >=
|lambda_3|) when all three are negative (a bright blob: about 1 for a sphere, near 0 for a tube), else 0.
It is measured on the preprocessed image (the model's grid) at the finding's centre, at a Gaussian scale
of the finding's radius / sqrt(3) (the scale at which a sphere's response peaks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from triage.findings import Finding

MIN_SIGMA_VOXELS = 0.7


def smooth(volume: torch.Tensor, sigma_voxels: float) -> torch.Tensor:
    """Separable Gaussian blur of a (X, Y, Z) tensor, replicate padding."""
    radius = max(1, math.ceil(3 * sigma_voxels))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=volume.device)
    kernel = torch.exp(-0.5 * (t / sigma_voxels) ** 2)
    kernel /= kernel.sum()
    out = F.pad(volume.float()[None, None], (radius,) * 6, mode="replicate")[0, 0]
    for axis in range(3):
        n = out.shape[axis] - 2 * radius
        summed = out.narrow(axis, 0, n) * kernel[0]
        for k in range(1, 2 * radius + 1):
            summed = summed + out.narrow(axis, k, n) * kernel[k]
        out = summed
    return out


def hessian_eigenvalues(
    image: torch.Tensor, index: Sequence[float], sigma_voxels: float
) -> tuple[float, float, float]:
    """Eigenvalues, largest magnitude first, of the scale-normalised Hessian (sigma^2 H) of `image`
    ((X, Y, Z) or (C, X, Y, Z), first channel) smoothed at `sigma_voxels`, at the voxel nearest `index`."""
    volume = image[0] if image.dim() == 4 else image
    centre = [min(max(round(float(v)), 0), n - 1) for v, n in zip(index, volume.shape, strict=True)]
    reach = math.ceil(3 * sigma_voxels) + 2
    lo = [max(c - reach, 0) for c in centre]
    hi = [min(c + reach + 1, n) for c, n in zip(centre, volume.shape, strict=True)]
    region = volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    if min(region.shape) < 3:
        return (0.0, 0.0, 0.0)
    f = smooth(region, sigma_voxels).cpu().double().numpy()
    c = [min(max(a - b, 1), n - 2) for a, b, n in zip(centre, lo, f.shape, strict=True)]
    x, y, z = c
    h = np.zeros((3, 3))
    for a in range(3):
        step = np.zeros(3, int)
        step[a] = 1
        plus, minus = tuple(np.add(c, step)), tuple(np.subtract(c, step))
        h[a, a] = f[plus] - 2 * f[x, y, z] + f[minus]
        for b in range(a + 1, 3):
            other = np.zeros(3, int)
            other[b] = 1
            h[a, b] = h[b, a] = (
                f[tuple(np.add(c, step + other))]
                - f[tuple(np.add(c, step - other))]
                - f[tuple(np.add(c, other - step))]
                + f[tuple(np.subtract(c, step + other))]
            ) / 4
    eigenvalues = sorted(np.linalg.eigvalsh(h * sigma_voxels**2), key=lambda v: -abs(v))
    return (float(eigenvalues[0]), float(eigenvalues[1]), float(eigenvalues[2]))


def blobness(image: torch.Tensor, index: Sequence[float], sigma_voxels: float) -> float:
    """|lambda_3| / |lambda_1| when all three eigenvalues are negative (a bright blob), else 0."""
    l1, l2, l3 = hessian_eigenvalues(image, index, sigma_voxels)
    if max(l1, l2, l3) >= 0:
        return 0.0
    return abs(l3) / abs(l1)


def finding_blobness(finding: Finding, image: torch.Tensor, affine_lps: np.ndarray) -> float:
    """Blobness of `finding` in `image` on the grid with `affine_lps` (voxel -> LPS mm), at its scale."""
    index = (np.linalg.inv(affine_lps) @ np.append(finding.position_lps, 1.0))[:3]
    voxel_mm = float(np.mean(np.linalg.norm(affine_lps[:3, :3], axis=0)))
    sigma = max(finding.diameter_mm / 2 / math.sqrt(3) / voxel_mm, MIN_SIGMA_VOXELS)
    return blobness(image, index, sigma)


def keep_blobs(
    findings: Sequence[Finding],
    image: torch.Tensor,
    affine_lps: np.ndarray,
    min_blobness: float,
    below_mm: float,
) -> list[Finding]:
    """Findings of `below_mm` or more, and smaller ones whose blobness reaches `min_blobness`."""
    return [
        f
        for f in findings
        if f.diameter_mm >= below_mm or finding_blobness(f, image, affine_lps) >= min_blobness
    ]
