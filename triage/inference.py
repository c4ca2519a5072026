"""Running a loaded bundle: device choice, mixed precision on CUDA, sliding windows, and batching of
several queued series into one pass."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from triage.spec import TriageSpec


def select_device(requested: str | torch.device | None = None) -> torch.device:
    """The requested device, else CUDA when present, else CPU."""
    if requested is not None:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager[Any]:
    # AMP only on CUDA: on CPU bfloat16 autocast is slower for 3D convolutions and changes results.
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


@dataclass
class SegmentationRunner:
    """Sigmoid probability maps from a segmentation network, several volumes per pass."""

    network: torch.nn.Module
    spec: TriageSpec
    device: torch.device
    amp: bool = True

    @torch.inference_mode()
    def __call__(self, images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """images: (C, X, Y, Z) each, any sizes. Returns the network's (C', X, Y, Z) float32 output for each
        (the bundle's post-processing turns it into probabilities).

        Volumes of different sizes are padded with 0 (air after intensity scaling) to a common shape and
        stacked, so the sliding windows of all of them are batched together (`sw_batch_size` windows per
        forward pass across the whole batch)."""
        if not images:
            return []
        shape = [max(int(im.shape[d]) for im in images) for d in (1, 2, 3)]
        batch = torch.stack(
            [
                F.pad(_plain(im), [p for d in (3, 2, 1) for p in (0, shape[d - 1] - int(im.shape[d]))])
                for im in images
            ]
        ).to(self.device)
        # Windows never larger than the volume (rounded down to the network's multiple of 8): padding a
        # volume up to a larger window put false positives on its first and last slices.
        roi = tuple(min(r, max(8 * (n // 8), 8)) for r, n in zip(self.spec.roi_size, shape, strict=True))
        with autocast(self.device, self.amp):
            logits = sliding_window_inference(
                batch,
                roi_size=roi,
                sw_batch_size=self.spec.sw_batch_size * len(images),
                predictor=self.network,
                overlap=self.spec.overlap,
                mode=self.spec.blend_mode,
            )
        assert isinstance(logits, torch.Tensor)
        logits = _plain(logits).float()
        return [logits[n, :, : im.shape[1], : im.shape[2], : im.shape[3]] for n, im in enumerate(images)]


@dataclass
class DetectionRunner:
    """Boxes and scores from a MONAI RetinaNetDetector (Model Zoo `lung_nodule_ct_detection` layout)."""

    detector: Any
    spec: TriageSpec
    device: torch.device
    amp: bool = True
    force_sliding_window: bool = False

    @torch.inference_mode()
    def __call__(self, images: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Returns per image the detector's prediction dict (boxes in voxel indices of the input grid,
        labels, scores, under the detector's keys), for the bundle's post-processing."""
        if not images:
            return []
        # As the Model Zoo bundle's RetinaNetInferer: sliding windows only for volumes larger than one.
        inferer = getattr(self.detector, "inferer", None)
        window = (
            int(np.prod(inferer.roi_size)) if inferer is not None and hasattr(inferer, "roi_size") else None
        )
        use_inferer = self.force_sliding_window or (
            window is not None and not all(im[0].numel() < window for im in images)
        )
        with autocast(self.device, self.amp):
            outputs = self.detector([_plain(im).to(self.device) for im in images], use_inferer=use_inferer)
        return [
            {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in out.items()}
            for out in outputs
        ]


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A torch.Tensor without MONAI metadata (networks and detectors take plain tensors)."""
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor
