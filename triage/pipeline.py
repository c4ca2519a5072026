"""The triage pipeline: one series in, findings + priority + SR + SEG out.

    pipeline = TriagePipeline.from_bundle(Path(bundle_dir), expected_sha256=..., device=None)
    if pipeline.selects(datasets):
        result = pipeline.run(datasets)

`run_many` decodes and preprocesses each queued series, runs inference for up to `max_batch` series in
one batched pass (their sliding windows share forward passes), then encodes each result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydicom.dataset import Dataset

from triage.bundle import Bundle, load_bundle
from triage.findings import Finding, findings_from_boxes, findings_from_probability
from triage.inference import DetectionRunner, SegmentationRunner, select_device
from triage.masks import label_map
from triage.priority import Priority, priority_of
from triage.results import Producer, build_seg, build_sr
from triage.selection import SelectionDecision, SelectionRules
from triage.spec import TriageSpec
from triage.volume import Volume, build_volume, model_input

__all__ = ["Finding", "Priority", "TriagePipeline", "TriageResult"]


@dataclass
class TriageResult:
    series_instance_uid: str
    findings: list[Finding]
    priority: Priority
    sr: Dataset
    seg: Dataset | None
    timings: dict[str, float]  # seconds: decode, preprocess, inference (batch share), postprocess, encode
    bundle_version: str
    bundle_name: str = ""
    bundle_digest: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "SeriesInstanceUID": self.series_instance_uid,
            "priority": str(self.priority),
            "findings": [f.as_json() for f in self.findings],
            "bundle": {
                "name": self.bundle_name,
                "version": self.bundle_version,
                "sha256": self.bundle_digest,
            },
            "SR": {
                "SeriesInstanceUID": str(self.sr.SeriesInstanceUID),
                "SOPInstanceUID": str(self.sr.SOPInstanceUID),
            },
            "SEG": None
            if self.seg is None
            else {
                "SeriesInstanceUID": str(self.seg.SeriesInstanceUID),
                "SOPInstanceUID": str(self.seg.SOPInstanceUID),
            },
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


@dataclass
class _Prepared:
    volume: Volume
    image: torch.Tensor
    affine_lps: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


class TriagePipeline:
    def __init__(
        self,
        bundle: Bundle,
        device: torch.device,
        *,
        amp: bool = True,
        max_batch: int = 4,
        selection: SelectionRules | None = None,
    ) -> None:
        self.bundle = bundle
        self.device = device
        self.max_batch = max(1, max_batch)
        self.selection = selection or bundle.spec.selection
        self.producer = Producer(bundle.name, bundle.version, bundle.digest)
        self._runner: SegmentationRunner | DetectionRunner
        if self.spec.output == "detection":
            self._runner = DetectionRunner(bundle.detector(device), self.spec, device, amp)
        else:
            self._runner = SegmentationRunner(bundle.network(device), self.spec, device, amp)

    @classmethod
    def from_bundle(
        cls,
        bundle_dir: Path | str,
        expected_sha256: str | None = None,
        device: str | torch.device | None = None,
        **options: Any,
    ) -> TriagePipeline:
        """Verify (SHA-256 pin) and load a locally installed bundle; device: CUDA when present, else CPU."""
        return cls(load_bundle(bundle_dir, expected_sha256), select_device(device), **options)

    @property
    def spec(self) -> TriageSpec:
        return self.bundle.spec

    @property
    def bundle_version(self) -> str:
        return self.bundle.version

    def selection_decision(self, datasets: Sequence[Dataset]) -> SelectionDecision:
        return self.selection.evaluate(datasets)

    def selects(self, datasets: Sequence[Dataset]) -> bool:
        return self.selection.evaluate(datasets).selected

    def run(self, datasets: Sequence[Dataset]) -> TriageResult:
        return self.run_many([datasets])[0]

    def run_many(self, series: Sequence[Sequence[Dataset]]) -> list[TriageResult]:
        results: list[TriageResult] = []
        for start in range(0, len(series), self.max_batch):
            prepared = [self._prepare(datasets) for datasets in series[start : start + self.max_batch]]
            for item, findings, probability in zip(prepared, *self._infer(prepared), strict=True):
                results.append(self._encode(item, findings, probability))
        return results

    def analyse(self, volume: Volume) -> list[Finding]:
        """Findings for an already built volume, without DICOM output (evaluation, benchmarks)."""
        prepared = self._prepare_volume(volume, {})
        return self._infer([prepared])[0][0]

    def _prepare(self, datasets: Sequence[Dataset]) -> _Prepared:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        volume = build_volume(datasets)
        timings["decode"] = time.perf_counter() - started
        return self._prepare_volume(volume, timings)

    def _prepare_volume(self, volume: Volume, timings: dict[str, float]) -> _Prepared:
        started = time.perf_counter()
        image, affine = model_input(volume, self.spec, self.device)
        _synchronise(self.device)
        timings["preprocess"] = time.perf_counter() - started
        return _Prepared(volume, image, affine, timings)

    def _infer(self, prepared: Sequence[_Prepared]) -> tuple[list[list[Finding]], list[torch.Tensor | None]]:
        started = time.perf_counter()
        outputs: Sequence[Any] = self._runner([p.image for p in prepared])
        _synchronise(self.device)
        share = (time.perf_counter() - started) / max(len(prepared), 1)
        spec = self.spec
        all_findings: list[list[Finding]] = []
        probabilities: list[torch.Tensor | None] = []
        for item, output in zip(prepared, outputs, strict=True):
            item.timings["inference"] = share
            started = time.perf_counter()
            if isinstance(output, torch.Tensor):
                findings = findings_from_probability(
                    output,
                    item.affine_lps,
                    threshold=spec.probability_threshold,
                    min_score=spec.min_score,
                    min_diameter_mm=spec.min_diameter_mm,
                )
                probabilities.append(output)
            else:
                boxes, scores = output
                findings = [
                    f
                    for f in findings_from_boxes(boxes, scores, item.affine_lps, min_score=spec.min_score)
                    if f.diameter_mm >= spec.min_diameter_mm
                ]
                probabilities.append(None)
            item.timings["postprocess"] = time.perf_counter() - started
            all_findings.append(findings)
        return all_findings, probabilities

    def _encode(
        self, item: _Prepared, findings: list[Finding], probability: torch.Tensor | None
    ) -> TriageResult:
        started = time.perf_counter()
        labels = label_map(
            findings, item.volume, probability, item.affine_lps, self.spec.probability_threshold
        )
        sr = build_sr(findings, item.volume, self.producer)
        seg = build_seg(labels, findings, item.volume, self.producer)
        item.timings["encode"] = time.perf_counter() - started
        return TriageResult(
            series_instance_uid=str(item.volume.datasets[0].SeriesInstanceUID),
            findings=findings,
            priority=priority_of(findings),
            sr=sr,
            seg=seg,
            timings=item.timings,
            bundle_version=self.bundle.version,
            bundle_name=self.bundle.name,
            bundle_digest=self.bundle.digest,
        )


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
