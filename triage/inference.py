"""Running a loaded bundle: device choice, mixed precision on CUDA, sliding windows, and batching of
several queued series into one pass."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
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
        """images: (1, X, Y, Z) each, any sizes. Returns (X, Y, Z) float32 probabilities on the device.

        Volumes of different sizes are padded with 0 (air after intensity scaling) to a common shape and
        stacked, so the sliding windows of all of them are batched together (`sw_batch_size` windows per
        forward pass across the whole batch)."""
        if not images:
            return []
        shape = [max(int(im.shape[d]) for im in images) for d in (1, 2, 3)]
        batch = torch.stack(
            [F.pad(im, [p for d in (3, 2, 1) for p in (0, shape[d - 1] - int(im.shape[d]))]) for im in images]
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
        probabilities = torch.sigmoid(logits.float())
        return [
            probabilities[n, 0, : im.shape[1], : im.shape[2], : im.shape[3]] for n, im in enumerate(images)
        ]


@dataclass
class DetectionRunner:
    """Boxes and scores from a MONAI RetinaNetDetector (Model Zoo `lung_nodule_ct_detection` layout)."""

    detector: Any
    spec: TriageSpec
    device: torch.device
    amp: bool = True

    @torch.inference_mode()
    def __call__(self, images: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Returns per image (boxes (N, 6) xyzxyz in voxel indices of the input grid, scores (N,))."""
        if not images:
            return []
        with autocast(self.device, self.amp):
            use_inferer = getattr(self.detector, "inferer", None) is not None
            outputs = self.detector([im.to(self.device) for im in images], use_inferer=use_inferer)
        box_key = getattr(self.detector, "target_box_key", "boxes")
        score_key = getattr(self.detector, "pred_score_key", "labels_scores")
        return [(out[box_key].float().cpu(), out[score_key].float().cpu()) for out in outputs]
