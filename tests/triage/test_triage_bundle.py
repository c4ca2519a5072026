"""Bundle loading: checksum pinning, refusal of tampered or incomplete bundles, weights_only loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from triage.bundle import BundleError, BundleIntegrityError, bundle_digest, load_bundle


@pytest.fixture
def bundle_copy(reference_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(reference_bundle, tmp_path / "bundle"))


def test_reference_bundle_loads_with_its_pin_and_builds_the_network(reference_bundle: Path) -> None:
    digest = bundle_digest(reference_bundle)
    bundle = load_bundle(reference_bundle, expected_sha256=digest)
    assert bundle.digest == digest and len(digest) == 64
    assert bundle.spec.output == "segmentation"
    assert bundle.spec.pixdim == (2.0, 2.0, 2.0) and bundle.spec.axcodes == "LPS"
    network = bundle.network(torch.device("cpu"))
    assert not network.training
    with torch.no_grad():
        assert network(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 1, 32, 32, 32)
    assert (reference_bundle / "models" / "model.pt").stat().st_size <= 4 * 1024 * 1024
    assert bundle.metadata["training"]["seed"] == 20240315


def test_overrides_reach_the_settings_read_from_inference_json(reference_bundle: Path) -> None:
    # The window size and overlap come from inference.json: an administrator's override must change them
    # as it changes the parsed transforms, not only the result's identity.
    plain = load_bundle(reference_bundle)
    tuned = load_bundle(
        reference_bundle, overrides={"inferer::overlap": 0.5, "inferer::roi_size": [64, 64, 64]}
    )
    assert (plain.spec.overlap, plain.spec.roi_size) == (0.0, (96, 96, 96))
    assert (tuned.spec.overlap, tuned.spec.roi_size) == (0.5, (64, 64, 64))
    assert tuned.identity != plain.identity
    assert (
        json.loads((reference_bundle / "configs" / "inference.json").read_text())["inferer"]["overlap"] == 0.0
    )
    with pytest.raises(BundleError, match="invalid triage settings"):
        load_bundle(reference_bundle, overrides={"no_such_section::overlap": 0.5})


def test_wrong_pin_refuses_to_load(reference_bundle: Path) -> None:
    with pytest.raises(BundleIntegrityError, match="refusing to load"):
        load_bundle(reference_bundle, expected_sha256="0" * 64)


def test_tampered_config_changes_the_digest(bundle_copy: Path) -> None:
    pinned = bundle_digest(bundle_copy)
    inference = bundle_copy / "configs" / "inference.json"
    config = json.loads(inference.read_text())
    config["inferer"]["overlap"] = 0.5
    inference.write_text(json.dumps(config))
    with pytest.raises(BundleIntegrityError):
        load_bundle(bundle_copy, expected_sha256=pinned)


def test_replaced_weights_are_refused_even_without_a_pin(bundle_copy: Path) -> None:
    weights = bundle_copy / "models" / "model.pt"
    state = torch.load(weights, weights_only=True)
    torch.save({k: torch.zeros_like(v) for k, v in state.items()}, weights)
    with pytest.raises(BundleIntegrityError, match=r"model\.pt"):
        load_bundle(bundle_copy)


def test_docs_are_not_pinned(bundle_copy: Path) -> None:
    pinned = bundle_digest(bundle_copy)
    (bundle_copy / "docs" / "README.md").write_text("edited")
    assert load_bundle(bundle_copy, expected_sha256=pinned).digest == pinned


def test_incomplete_bundle_is_refused_and_nothing_is_downloaded(bundle_copy: Path) -> None:
    (bundle_copy / "models" / "model.pt").unlink()
    with pytest.raises(BundleError, match=r"lacks models/model\.pt"):
        load_bundle(bundle_copy)
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(bundle_copy / "missing")


class NotAWeight:
    """Pickled by reference: a weights_only load must refuse it instead of importing and building it."""


def test_pickled_objects_in_weights_are_refused(bundle_copy: Path) -> None:
    weights = bundle_copy / "models" / "model.pt"
    torch.save({"payload": NotAWeight()}, weights)
    metadata_path = bundle_copy / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["training"].pop("model_sha256")
    metadata_path.write_text(json.dumps(metadata))
    bundle = load_bundle(bundle_copy)
    with pytest.raises(BundleError, match="not a plain state dict"):
        bundle.network(torch.device("cpu"))
