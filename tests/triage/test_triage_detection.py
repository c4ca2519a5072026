"""Detection-style bundles (the Model Zoo `lung_nodule_ct_detection` layout: RetinaNet via
monai.apps.detection, RetinaNetDetector, detector_ops): plumbing only, with a small randomly
initialised RetinaNet built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from pydicom.dataset import Dataset

from triage import torchvision_free
from triage.pipeline import TriagePipeline

INFERENCE = {
    "imports": ["$import glob", "$import os"],
    "bundle_root": "./",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "amp": True,
    "infer_patch_size": [64, 64, 40],
    "anchor_generator": {
        "_target_": "monai.apps.detection.utils.anchor_utils.AnchorGeneratorWithAnchorShape",
        "feature_map_scales": [1, 2, 4],
        "base_anchor_shapes": [[6, 8, 4], [8, 6, 5], [10, 10, 6]],
    },
    # Model Zoo: resnet50; here a narrow ResNet so the test stays fast.
    "backbone": "$monai.networks.nets.resnet.ResNet(block='basic', layers=[1, 1, 1, 1], block_inplanes=[8, 16, 32, 64],"
    " spatial_dims=3, n_input_channels=1, conv1_t_stride=[2, 2, 1], conv1_t_size=[7, 7, 7])",
    "feature_extractor": "$monai.apps.detection.networks.retinanet_network.resnet_fpn_feature_extractor(@backbone,3,False,[1,2],None)",
    "network_def": {
        "_target_": "RetinaNet",
        "spatial_dims": 3,
        "num_classes": 1,
        "num_anchors": 3,
        "feature_extractor": "@feature_extractor",
        "size_divisible": [16, 16, 8],
    },
    "network": "$@network_def.to(@device)",
    "detector": {
        "_target_": "RetinaNetDetector",
        "network": "@network",
        "anchor_generator": "@anchor_generator",
        "debug": False,
    },
    "detector_ops": [
        "$@detector.set_target_keys(box_key='box', label_key='label')",
        "$@detector.set_box_selector_parameters(score_thresh=0.0,topk_candidates_per_level=100,nms_thresh=0.22,detections_per_img=5)",
        "$@detector.set_sliding_window_inferer(roi_size=@infer_patch_size,overlap=0.25,sw_batch_size=1,mode='constant',device='cpu')",
    ],
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            # Model Zoo: 0.703 x 0.703 x 1.25 mm; coarse here so one window covers the test volume.
            {"_target_": "Spacingd", "keys": "image", "pixdim": [7.0, 7.0, 6.25]},
            {
                "_target_": "ScaleIntensityRanged",
                "keys": "image",
                "a_min": -1024.0,
                "a_max": 300.0,
                "b_min": 0.0,
                "b_max": 1.0,
                "clip": True,
            },
            {"_target_": "EnsureTyped", "keys": "image"},
        ],
    },
    # Never parsed by the pipeline: it would import the bundle's own scripts.
    "inferer": {"_target_": "scripts.detection_inferer.RetinaNetInferer", "detector": "@detector"},
}


@pytest.fixture(scope="module")
def detection_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("retinanet_bundle")
    (root / "configs").mkdir()
    (root / "models").mkdir()
    (root / "docs").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(INFERENCE))
    metadata = {
        "version": "0.0.1-test",
        "name": "random RetinaNet (test)",
        # Plumbing: keep every box the random network proposes.
        "triage": {"min_score": 0.0, "min_diameter_mm": 0.0},
    }
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata))
    (root / "docs" / "README.md").write_text("test bundle")
    torch.manual_seed(0)
    torchvision_free.install()
    parser = ConfigParser()
    parser.read_config(root / "configs" / "inference.json")
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
    return root


@pytest.fixture(scope="module")
def detection_pipeline(detection_bundle: Path) -> TriagePipeline:
    return TriagePipeline.from_bundle(detection_bundle, device="cpu")


def test_detection_bundle_is_read_like_the_model_zoo_one(
    detection_pipeline: TriagePipeline, detection_bundle: Path
) -> None:
    pipeline = detection_pipeline
    spec = pipeline.spec
    assert spec.output == "detection"
    assert (spec.axcodes, spec.pixdim, spec.a_min, spec.a_max) == ("RAS", (7.0, 7.0, 6.25), -1024.0, 300.0)
    assert spec.roi_size == (64, 64, 40)
    detector = pipeline._runner.detector  # type: ignore[union-attr]
    assert detector.target_box_key == "box" and detector.inferer is not None  # detector_ops applied
    saved = torch.load(detection_bundle / "models" / "model.pt", weights_only=True)
    for name, tensor in detector.network.state_dict().items():
        assert torch.equal(tensor, saved[name]), name  # the weights file, not a fresh initialisation


def test_detection_boxes_become_findings_sr_and_seg(
    detection_bundle: Path, nodule_series: list[Dataset]
) -> None:
    pipeline = TriagePipeline.from_bundle(detection_bundle, device="cpu")
    result = pipeline.run(nodule_series)
    assert 1 <= len(result.findings) <= 5
    xs = [float(ds.ImagePositionPatient[0]) for ds in nodule_series]
    zs = [float(ds.ImagePositionPatient[2]) for ds in nodule_series]
    extent = 256 * 1.4
    for finding in result.findings:
        x, _, z = finding.position_lps
        assert min(xs) - 10 <= x <= min(xs) + extent + 10 and min(zs) - 10 <= z <= max(zs) + 10
        assert finding.diameter_mm > 0 and 0 <= finding.score <= 1
    assert result.findings == sorted(result.findings, key=lambda f: -f.score)
    assert result.sr.StudyInstanceUID == nodule_series[0].StudyInstanceUID
    assert result.seg is not None
    assert 1 <= len(result.seg.SegmentSequence) <= len(result.findings)
    assert result.bundle_version == "0.0.1-test"
    assert np.isfinite(result.timings["inference"])
