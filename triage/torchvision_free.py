"""The two torchvision pieces MONAI's RetinaNet feature extractor uses, for installs without torchvision.

MONAI builds the Model Zoo detector's ResNet-FPN (`resnet_fpn_feature_extractor`, `BackboneWithFPN`) with
torchvision's `IntermediateLayerGetter` and `_validate_trainable_layers`. torchvision wheels pin one torch
release, so installing it next to a given torch build can replace torch. These equivalents keep torchvision's
module names, hence the same state-dict keys: Model Zoo weights load unchanged. Installed into MONAI only
when torchvision is absent.
"""

from __future__ import annotations

import importlib.util
import types
from collections import OrderedDict

from torch import Tensor, nn


class IntermediateLayerGetter(nn.ModuleDict):
    """Runs a model's children in order up to the last requested one, returning the requested outputs."""

    def __init__(self, model: nn.Module, return_layers: dict[str, str]) -> None:
        if not set(return_layers).issubset(name for name, _ in model.named_children()):
            raise ValueError("return_layers are not present in model")
        wanted = dict(return_layers)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for name, module in model.named_children():
            layers[name] = module
            wanted.pop(name, None)
            if not wanted:
                break
        super().__init__(layers)
        self.return_layers = dict(return_layers)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = OrderedDict()
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


def validate_trainable_layers(
    is_trained: bool, trainable_backbone_layers: int | None, max_value: int, default_value: int
) -> int:
    if not is_trained:
        return max_value  # nothing pretrained: every layer trains (torchvision does the same)
    if trainable_backbone_layers is None:
        return default_value
    if not 0 <= trainable_backbone_layers <= max_value:
        raise ValueError(f"trainable_backbone_layers should be in [0, {max_value}]")
    return trainable_backbone_layers


def install() -> None:
    """Point MONAI's optional torchvision imports at the equivalents above when torchvision is missing."""
    if importlib.util.find_spec("torchvision") is not None:
        return
    from monai.apps.detection.networks import retinanet_network
    from monai.networks.blocks import backbone_fpn_utils

    utils = types.SimpleNamespace(IntermediateLayerGetter=IntermediateLayerGetter)
    backbone_fpn_utils.torchvision_models = types.SimpleNamespace(_utils=utils)  # type: ignore[attr-defined]
    retinanet_network._validate_trainable_layers = validate_trainable_layers  # type: ignore[attr-defined]
