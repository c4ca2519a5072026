"""The triage pipeline: one series in, findings + priority + SR + SEG out, or a precise reason why not.

    pipeline = TriagePipeline.from_bundle(Path(bundle_dir), expected_sha256=..., device=None)
    if pipeline.selects(datasets):
        outcome = pipeline.run_many([datasets])[0]   # a TriageResult or a TriageFailure

`run_many` decodes each queued series and runs the bundle's own preprocessing (triage.bundle_transforms),
runs inference for up to `max_batch` series in one batched pass (their sliding windows share forward
passes), applies the bundle's post-processing, drops small findings that are not blob-shaped when the
bundle asks for it (triage.shape), keeps findings in the lung fields (triage.lungs), then encodes each
result. A series that fails is reported as a TriageFailure and never stops the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from pydicom.dataset import Dataset

from imaging.errors import ArchiveError
from triage.bundle import Bundle, load_bundle
from triage.findings import Finding, findings_from_boxes, findings_from_probability
from triage.inference import DetectionRunner, SegmentationRunner, select_device
from triage.lungs import LungField, lung_field
from triage.masks import label_map
from triage.priority import Priority, priority_of
from triage.results import Producer, build_seg, build_sr
from triage.selection import SelectionDecision, SelectionRules
from triage.shape import keep_blobs
from triage.spec import TriageSpec
from triage.volume import LPS_TO_RAS, Volume, build_volume

__all__ = ["Finding", "Priority", "TriageFailure", "TriagePipeline", "TriageResult"]

log = logging.getLogger(__name__)


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
    lungs_found: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "SeriesInstanceUID": self.series_instance_uid,
            "status": "done",
            "priority": str(self.priority),
            "findings": [f.as_json() for f in self.findings],
            "lung_field": "found" if self.lungs_found else "not found: findings not restricted to the lungs",
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
class TriageFailure:
    """A series the pipeline could not triage. `reason` is precise and PHI-free; `retryable` says whether
    running again may help (resources, a device error) or not (the series itself is unusable)."""

    series_instance_uid: str
    reason: str
    retryable: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"SeriesInstanceUID": self.series_instance_uid, "status": "failed", "error": self.reason}


Outcome = TriageResult | TriageFailure


@dataclass
class _Prepared:
    volume: Volume
    image: MetaTensor
    affine_lps: np.ndarray
    lungs: LungField
    timings: dict[str, float] = field(default_factory=dict)


def describe(error: BaseException) -> tuple[str, bool]:
    """(reason, retryable) for an error raised while triaging one series. The archive's own errors carry
    PHI-free messages; anything else is reported by type only (its message could quote data)."""
    if isinstance(error, ArchiveError):
        return str(error), False
    if isinstance(error, torch.cuda.OutOfMemoryError | MemoryError):
        return f"out of memory ({type(error).__name__})", True
    if isinstance(error, OSError):
        return f"I/O error ({type(error).__name__})", True
    return f"internal error ({type(error).__name__}); see the server log", True


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
        self.producer = Producer(bundle.name, bundle.version, bundle.identity)
        self.transforms = bundle.transforms(device)
        self._runner: SegmentationRunner | DetectionRunner
        if self.spec.output == "detection":
            parser = bundle.parser(device)
            force = bool(parser.get_parsed_content("force_sliding_window", default=False))
            self._runner = DetectionRunner(bundle.detector(device), self.spec, device, amp, force)
        else:
            self._runner = SegmentationRunner(bundle.network(device), self.spec, device, amp)

    @classmethod
    def from_bundle(
        cls,
        bundle_dir: Path | str,
        expected_sha256: str | None = None,
        device: str | torch.device | None = None,
        overrides: dict[str, Any] | None = None,
        **options: Any,
    ) -> TriagePipeline:
        """Verify (SHA-256 pin) and load a locally installed bundle; device: CUDA when present, else CPU."""
        return cls(load_bundle(bundle_dir, expected_sha256, overrides), select_device(device), **options)

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
        """One series; raises the failure's error (for callers that want exceptions)."""
        outcome = self.run_many([datasets])[0]
        if isinstance(outcome, TriageFailure):
            raise TriageError(outcome.reason)
        return outcome

    def run_many(self, series: Sequence[Sequence[Dataset]]) -> list[Outcome]:
        """One outcome per series, in order: a result, or a failure with its reason."""
        outcomes: list[Outcome] = []
        for start in range(0, len(series), self.max_batch):
            batch: list[Outcome | _Prepared] = [
                self._guard(self._prepare, d) for d in series[start : start + self.max_batch]
            ]
            ready = [p for p in batch if isinstance(p, _Prepared)]
            inferred = self._infer_guarded(ready)
            for item in batch:
                if isinstance(item, _Prepared):
                    found = inferred[id(item)]
                    outcomes.append(
                        found if isinstance(found, TriageFailure) else self._guard(self._encode, item, *found)
                    )
                else:
                    outcomes.append(item)
        return outcomes

    def analyse(
        self, volume: Volume, levels: Sequence[tuple[float | None, float | None]] = ((None, None),)
    ) -> list[list[Finding]]:
        """Findings for an already built volume, without DICOM output (evaluation, benchmarks): one list
        per (probability threshold, min score) level, None meaning the bundle's. Inference runs once; lower
        levels give the low-confidence candidates a FROC curve needs."""
        prepared = self._prepare_volume(volume, {})
        output = self._runner([prepared.image])[0]
        return [self._findings(prepared, output, threshold, min_score)[0] for threshold, min_score in levels]

    def _guard(self, step: Any, item: Any, *args: Any) -> Any:
        try:
            return step(item, *args)
        except Exception as error:
            reason, retryable = describe(error)
            if not isinstance(error, ArchiveError):
                log.warning("triage step %s failed: %s", step.__name__, type(error).__name__, exc_info=True)
            return TriageFailure(_series_uid(item), reason, retryable)

    def _infer_guarded(self, ready: list[_Prepared]) -> dict[int, Any]:
        """Inference for the batch; when the batch fails, each series alone, so one cannot sink the rest."""
        if not ready:
            return {}
        try:
            found, probabilities = self._infer(ready)
            return {id(p): (f, q) for p, f, q in zip(ready, found, probabilities, strict=True)}
        except Exception as error:
            if len(ready) > 1:
                results: dict[int, Any] = {}
                for item in ready:
                    results.update(self._infer_guarded([item]))
                return results
            reason, retryable = describe(error)
            if not isinstance(error, ArchiveError):
                log.warning("triage inference failed: %s", type(error).__name__, exc_info=True)
            return {id(ready[0]): TriageFailure(_series_uid(ready[0]), reason, retryable)}

    def _prepare(self, datasets: Sequence[Dataset]) -> _Prepared:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        volume = build_volume(datasets)
        timings["decode"] = time.perf_counter() - started
        return self._prepare_volume(volume, timings)

    def _prepare_volume(self, volume: Volume, timings: dict[str, float]) -> _Prepared:
        started = time.perf_counter()
        image = self.transforms.preprocess(volume, self.device)
        affine = LPS_TO_RAS @ np.asarray(image.affine.cpu(), float)
        _synchronise(self.device)
        timings["preprocess"] = time.perf_counter() - started
        started = time.perf_counter()
        lungs = lung_field(volume, self.device) if self.spec.lung_mask else lung_field_none()
        timings["lung_field"] = time.perf_counter() - started
        return _Prepared(volume, image, affine, lungs, timings)

    def _infer(self, prepared: Sequence[_Prepared]) -> tuple[list[list[Finding]], list[torch.Tensor | None]]:
        started = time.perf_counter()
        outputs: Sequence[Any] = self._runner([p.image for p in prepared])
        _synchronise(self.device)
        share = (time.perf_counter() - started) / max(len(prepared), 1)
        all_findings: list[list[Finding]] = []
        probabilities: list[torch.Tensor | None] = []
        for item, output in zip(prepared, outputs, strict=True):
            item.timings["inference"] = share
            started = time.perf_counter()
            findings, probability = self._findings(item, output, None, None)
            item.timings["postprocess"] = time.perf_counter() - started
            all_findings.append(findings)
            probabilities.append(probability)
        return all_findings, probabilities

    def _findings(
        self, item: _Prepared, output: Any, threshold: float | None, min_score: float | None
    ) -> tuple[list[Finding], torch.Tensor | None]:
        """The bundle's post-processing on one output, findings from it, kept in the lung field."""
        spec = self.spec
        min_score = spec.min_score if min_score is None else min_score
        threshold = spec.probability_threshold if threshold is None else threshold
        probability = None
        if isinstance(output, torch.Tensor):
            prediction = MetaTensor(output, affine=item.image.affine)
            processed = torch.as_tensor(self.transforms.postprocess({"pred": prediction}, item.image)["pred"])
            probability = (processed[0] if processed.shape[0] == 1 else processed[1]).float()
            findings = findings_from_probability(
                probability,
                item.affine_lps,
                threshold=threshold,
                min_score=min_score,
                min_diameter_mm=spec.min_diameter_mm,
            )
            if spec.min_blobness > 0:
                findings = keep_blobs(
                    findings, item.image, item.affine_lps, spec.min_blobness, spec.blob_below_mm
                )
        else:
            findings = self._box_findings(output, item, min_score)
        if spec.lung_mask:
            findings = item.lungs.keep(findings, spec.lung_margin_mm)
        return findings, probability

    def _box_findings(
        self, prediction: dict[str, torch.Tensor], item: _Prepared, min_score: float
    ) -> list[Finding]:
        detector = self._runner.detector  # type: ignore[union-attr]
        box_key = getattr(detector, "target_box_key", "boxes")
        score_key = getattr(detector, "pred_score_key", "labels_scores")
        processed = self.transforms.postprocess(prediction, item.image)
        mode, frame = self.transforms.box_convention()
        findings = findings_from_boxes(
            torch.as_tensor(processed[box_key]),
            torch.as_tensor(processed[score_key]),
            item.affine_lps,
            mode=mode,
            frame=frame,
            min_score=min_score,
        )
        return [f for f in findings if f.diameter_mm >= self.spec.min_diameter_mm]

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
            bundle_digest=self.bundle.identity,
            lungs_found=item.lungs.found or not self.spec.lung_mask,
        )


class TriageError(ArchiveError):
    """Raised by `TriagePipeline.run` for a series that could not be triaged (the failure's reason)."""


def lung_field_none() -> LungField:
    return LungField(torch.zeros((0, 3)), 0.0, 0.0)


def _series_uid(item: Any) -> str:
    if isinstance(item, _Prepared):
        return str(item.volume.datasets[0].SeriesInstanceUID)
    for ds in item if isinstance(item, Sequence) else ():
        uid = getattr(ds, "SeriesInstanceUID", None)
        if uid:
            return str(uid)
    return ""


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
