"""A MONAI bundle directory installed by an administrator, pinned by SHA-256 and loaded offline.

A bundle is code: ConfigParser evaluates its `$` expressions. So only a directory an administrator
installed is loaded, its digest is checked against the pinned value before any config is parsed, only
the items the pipeline needs are parsed (never `scripts.*` inferers or handlers), the bundle folder is not
put on sys.path, weights are read with `torch.load(weights_only=True)`, and nothing is ever downloaded
(monai.bundle.load/download are not used).

Digest: SHA-256 over a manifest of "<sha256 of file>  <relative path>" lines, sorted by path, covering
every file under configs/ and models/model.pt. docs/ is not pinned (prose, not behaviour).

Overrides are the administrator's settings for a bundle, applied to its config like `monai.bundle run
--key value` (e.g. `whether_raw_luna16=true` for the Model Zoo lung nodule detector): the bundle's files
stay as published, and the overrides are part of what a result is idempotent on (`Bundle.identity`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from triage import torchvision_free
from triage.bundle_transforms import BundleConfigError, BundleTransforms
from triage.spec import TriageSpec

REQUIRED = ("configs/metadata.json", "configs/inference.json", "models/model.pt")


class BundleError(BundleConfigError):
    """The bundle directory is missing, incomplete or its configs cannot be used."""


class BundleIntegrityError(BundleError):
    """The bundle's files do not match the pinned SHA-256: refuse to run it."""


def pinned_files(root: Path) -> list[Path]:
    configs = sorted(p for p in (root / "configs").rglob("*") if p.is_file())
    return [*configs, root / "models" / "model.pt"]


def bundle_digest(root: Path) -> str:
    manifest = "".join(
        f"{_sha256(path)}  {path.relative_to(root).as_posix()}\n"
        for path in sorted(pinned_files(root), key=lambda p: p.relative_to(root).as_posix())
    )
    return hashlib.sha256(manifest.encode()).hexdigest()


@dataclass(frozen=True)
class Bundle:
    root: Path
    digest: str
    metadata: dict[str, Any]
    inference: dict[str, Any] = field(repr=False)
    spec: TriageSpec
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        """The digest, extended by the overrides when there are any: what a result was made with."""
        if not self.overrides:
            return self.digest
        settings = json.dumps(self.overrides, sort_keys=True)
        return hashlib.sha256(f"{self.digest}\n{settings}".encode()).hexdigest()

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or self.root.name)

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "0"))

    def parser(self, device: torch.device) -> ConfigParser:
        """A fresh parser over inference.json with this bundle's root and the chosen device."""
        parser = ConfigParser()
        parser.read_config(self.root / "configs" / "inference.json")
        parser.read_meta(self.root / "configs" / "metadata.json")
        parser["bundle_root"] = str(self.root)
        for key, value in self.overrides.items():
            parser[key] = value
        parser["device"] = f"$torch.device('{device}')"
        return parser

    def transforms(self, device: torch.device) -> BundleTransforms:
        """The bundle's own pre- and post-processing (triage.bundle_transforms)."""
        return BundleTransforms.from_parser(self.parser(device), self.root.name)

    def network(self, device: torch.device, parser: ConfigParser | None = None) -> torch.nn.Module:
        """`network_def` with the bundle's weights, in eval mode on `device`."""
        parser = parser or self.parser(device)
        try:
            network: torch.nn.Module = parser.get_parsed_content("network_def")
        except Exception as error:  # a broken config is an installation problem, not a crash
            raise BundleError(f"bundle {self.root.name}: cannot build network_def: {error}") from error
        try:  # weights_only: tensors and plain containers only, never arbitrary pickled objects
            state = torch.load(self.root / "models" / "model.pt", map_location="cpu", weights_only=True)
        except Exception as error:
            raise BundleError(
                f"bundle {self.root.name}: models/model.pt is not a plain state dict: {error}"
            ) from error
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]  # checkpoints saved as {"model": state_dict, ...}
        try:
            network.load_state_dict(state)
        except RuntimeError as error:
            raise BundleError(f"bundle {self.root.name}: weights do not fit network_def: {error}") from error
        return network.to(device).eval()

    def detector(self, device: torch.device) -> Any:
        """For detection bundles (Model Zoo `lung_nodule_ct_detection` layout): the configured
        RetinaNetDetector around the loaded network, with the bundle's `detector_ops` applied."""
        torchvision_free.install()
        parser = self.parser(device)
        parser["network"] = "@network_def"  # the instance we load weights into (cached by the parser)
        network = self.network(device, parser)
        detector = parser.get_parsed_content("detector")
        if "detector_ops" in parser:
            parser.get_parsed_content("detector_ops")
        detector.network = network  # in case the parser rebuilt network_def while resolving
        return detector.eval()


def load_bundle(
    root: Path | str, expected_sha256: str | None = None, overrides: Mapping[str, Any] | None = None
) -> Bundle:
    """Verify and read a bundle. With `expected_sha256` the digest must match; weights whose SHA-256 the
    metadata records (training.model_sha256) must match it in any case. `overrides`: config ids (MONAI's
    `::` separated) and the values to give them."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise BundleError(f"bundle directory {root} does not exist")
    if missing := [p for p in REQUIRED if not (root / p).is_file()]:
        raise BundleError(f"bundle {root.name} lacks {', '.join(missing)}; nothing is downloaded")
    digest = bundle_digest(root)
    if expected_sha256 is not None and digest != expected_sha256.strip().lower():
        raise BundleIntegrityError(
            f"bundle {root.name}: SHA-256 {digest} does not match the pinned {expected_sha256}; refusing to load"
        )
    try:
        metadata = json.loads((root / "configs" / "metadata.json").read_text())
        inference = json.loads((root / "configs" / "inference.json").read_text())
    except (OSError, ValueError) as error:
        raise BundleError(f"bundle {root.name}: unreadable config: {error}") from error
    recorded = (metadata.get("training") or {}).get("model_sha256")
    if recorded and recorded != _sha256(root / "models" / "model.pt"):
        raise BundleIntegrityError(
            f"bundle {root.name}: models/model.pt does not match the SHA-256 recorded in metadata.json"
        )
    try:
        spec = TriageSpec.from_configs(metadata, _overridden(inference, overrides or {}))
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise BundleError(f"bundle {root.name}: invalid triage settings: {error}") from error
    return Bundle(root, digest, metadata, inference, spec, dict(overrides or {}))


def _overridden(inference: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """inference.json as the parser sees it with `overrides` set (MONAI's `::` ids), so that the settings
    read from it (window size, overlap, spacing) follow an administrator's overrides as the transforms do."""
    if not overrides:
        return inference
    parser = ConfigParser(copy.deepcopy(inference))
    for key, value in overrides.items():
        parser[key] = value
    configured = parser.get()
    return configured if isinstance(configured, dict) else inference


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
