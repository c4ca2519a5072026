"""The real Model Zoo `lung_nodule_ct_detection` bundle, as it ships: its own configs (taken unmodified from
the model-zoo repository and kept outside this repository, see model_zoo_source.md), with randomly
initialised weights of its architecture (RetinaNet, 3D ResNet50-FPN) since its weights are not public in
that repository. The pipeline runs its inference.json pre- and post-processing, its box format and its
coordinate conversion unmodified; the only change is an administrator's override (whether_raw_luna16)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from typer.testing import CliRunner

from tests.triage.chest_series import ChestSeries, Target
from triage import torchvision_free
from triage.bundle import bundle_digest
from triage.bundle_transforms import BundleConfigError
from triage.cli import app
from triage.findings import findings_from_boxes
from triage.pipeline import TriagePipeline
from triage.volume import build_volume

pytestmark = pytest.mark.slow

SOURCE = Path(__file__).parent / "model_zoo_source.md"
FIXTURE = Path(
    os.environ.get("IMAGING_MODEL_ZOO_FIXTURES")
    or Path(__file__).resolve().parents[2].parent
    / "shared"
    / "fixtures"
    / "model-zoo"
    / "lung_nodule_ct_detection"
)
if not (FIXTURE / "configs" / "inference.json").is_file():
    # Public data from another repository, provided beside the checkout (../shared) rather than committed.
    pytest.skip(f"Model Zoo configs not provided (see {SOURCE.name})", allow_module_level=True)
RAW_INPUT = {"whether_raw_luna16": True}  # DICOM series are raw: the bundle must resample them


@pytest.fixture(scope="module")
def zoo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lung_nodule_ct_detection")
    shutil.copytree(FIXTURE / "configs", root / "configs")
    (root / "models").mkdir()
    (root / "docs").mkdir()
    (root / "docs" / "README.md").write_text("Model Zoo configs with random weights (test)\n")
    torch.manual_seed(0)
    torchvision_free.install()
    parser = ConfigParser()
    parser.read_config(root / "configs" / "inference.json")
    network = parser.get_parsed_content("network_def")
    torch.save(network.state_dict(), root / "models" / "model.pt")
    return root


@pytest.fixture(scope="module")
def zoo_pipeline(zoo_bundle: Path) -> TriagePipeline:
    return TriagePipeline.from_bundle(
        zoo_bundle, expected_sha256=bundle_digest(zoo_bundle), device="cpu", overrides=RAW_INPUT
    )


def small_series(**changes: object) -> ChestSeries:
    # 128 x 128 at 0.7 mm (the bundle's own in-plane spacing), 48 slices: one small window of the detector.
    values: dict[str, object] = {
        "rows": 128,
        "columns": 128,
        "slices": 48,
        "pixel_mm": 0.7,
        "thickness_mm": 1.25,
        "z_top": -90.0,
        "targets": (Target((-20.0, 5.0, -120.0), 9.0, 60.0),),
    }
    values.update(changes)
    return ChestSeries(**values)  # type: ignore[arg-type]


def test_configs_are_the_published_ones() -> None:
    source = SOURCE.read_text()
    for name in ("inference.json", "metadata.json"):
        digest = hashlib.sha256((FIXTURE / "configs" / name).read_bytes()).hexdigest()
        assert digest in source, name  # unmodified since taken
    metadata = json.loads((FIXTURE / "configs" / "metadata.json").read_text())
    assert metadata["name"] == "Lung nodule CT detection" and metadata["version"] == "0.6.8"


def test_bundle_is_read_as_published(zoo_pipeline: TriagePipeline, zoo_bundle: Path) -> None:
    pipeline = zoo_pipeline
    assert pipeline.spec.output == "detection"
    assert pipeline.spec.roi_size == (512, 512, 192)  # its infer_patch_size
    names = [type(t).__name__ for t in pipeline.transforms.preprocessing]
    assert names == ["EnsureChannelFirstd", "Orientationd", "Spacingd", "ScaleIntensityRanged", "EnsureTyped"]
    post = [type(t).__name__ for t in pipeline.transforms.postprocessing]
    assert post == ["ClipBoxToImaged", "AffineBoxToWorldCoordinated", "ConvertBoxModed", "DeleteItemsd"]
    assert pipeline.transforms.box_convention() == ("cccwhd", "lps")
    detector = pipeline._runner.detector  # type: ignore[union-attr]
    assert detector.target_box_key == "box" and detector.pred_score_key == "label_scores"
    saved = torch.load(zoo_bundle / "models" / "model.pt", weights_only=True)
    for name, tensor in detector.network.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    # The overrides are part of what results are made with.
    assert pipeline.bundle.identity != pipeline.bundle.digest


def test_without_the_raw_input_override_the_bundle_is_refused(zoo_bundle: Path) -> None:
    with pytest.raises(BundleConfigError, match="whether_raw_luna16"):
        TriagePipeline.from_bundle(zoo_bundle, device="cpu")


def test_planted_target_lands_in_patient_coordinates(zoo_pipeline: TriagePipeline) -> None:
    """Through the bundle's preprocessing (Orientationd RAS, Spacingd) and post-processing (boxes to
    world coordinates, LPS, cccwhd) on a feet-first prone series with a non-zero origin: a box around the
    planted target in the model's grid comes back at the target's patient position."""
    spec = small_series(position="FFP", origin_offset=(12.0, -30.0, 250.0))
    empty = small_series(position="FFP", origin_offset=(12.0, -30.0, 250.0), targets=())
    truth = np.asarray(spec.targets[0].centre) + np.asarray(spec.origin_offset)
    images = [
        zoo_pipeline.transforms.preprocess(build_volume(s.datasets()), torch.device("cpu"))
        for s in (spec, empty)
    ]
    image = images[0]
    assert np.allclose(np.linalg.norm(np.asarray(image.affine)[:3, :3], axis=0), [0.703125, 0.703125, 1.25])
    # Same noise (same seed) in both: the difference is the target alone, wherever the grid put it.
    difference = (images[0] - images[1])[0].as_tensor()
    weights = difference.clamp_min(0)
    grid = torch.stack(torch.meshgrid(*(torch.arange(n) for n in weights.shape), indexing="ij"), -1).float()
    centre = (grid * weights[..., None]).sum((0, 1, 2)) / weights.sum()
    half = torch.tensor([6.4, 6.4, 3.6])  # a 9 mm box in voxels of the model grid
    prediction = {
        "box": torch.cat([centre - half, centre + half])[None],
        "label": torch.zeros(1, dtype=torch.long),
        "label_scores": torch.tensor([0.9]),
    }
    processed = zoo_pipeline.transforms.postprocess(prediction, image)
    mode, frame = zoo_pipeline.transforms.box_convention()
    affine_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(image.affine, float)
    [finding] = findings_from_boxes(
        processed["box"], processed["label_scores"], affine_lps, mode=mode, frame=frame
    )
    assert np.asarray(finding.position_lps) == pytest.approx(truth, abs=1.5)
    assert finding.diameter_mm == pytest.approx(9.0, rel=0.1)


def test_random_weights_run_end_to_end_with_sr_and_seg(zoo_pipeline: TriagePipeline) -> None:
    spec = small_series(position="HFDL")
    datasets = spec.datasets()
    [outcome] = zoo_pipeline.run_many([datasets])
    result = zoo_pipeline.run(datasets)
    assert outcome.as_json()["status"] == "done"
    positions = np.asarray([ds.ImagePositionPatient for ds in datasets], float)
    extent = 128 * 0.7
    for finding in result.findings:  # random weights: any boxes, but inside the scanned volume
        assert np.all(np.asarray(finding.position_lps) >= positions.min(0) - extent - 5)
        assert np.all(np.asarray(finding.position_lps) <= positions.max(0) + extent + 5)
        assert 0.0 <= finding.score <= 1.0
    assert result.sr.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert result.bundle_version == "0.6.8"


def test_cli_runs_the_pinned_bundle_with_an_override(zoo_bundle: Path, tmp_path: Path) -> None:
    for n, ds in enumerate(small_series().datasets()):
        ds.save_as(tmp_path / f"{n:03d}.dcm", enforce_file_format=True)
    pin = bundle_digest(zoo_bundle)
    args = ["run", str(tmp_path), "--bundle", str(zoo_bundle), "--sha256", pin, "--device", "cpu"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "whether_raw_luna16" in refused.output
    ran = CliRunner().invoke(app, [*args, "--override", "whether_raw_luna16=true"])
    assert ran.exit_code == 0, ran.output
    report = json.loads(ran.stdout)
    assert [r["status"] for r in report["results"]] == ["done"] and report["failed"] == 0
