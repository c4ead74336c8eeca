"""Torchvision's MobileNetV2 as a Detectron2 backbone, optionally under an FPN.

A light ImageNet-initialised backbone for CPU-sized experiments (the embedded sample data).
Outputs ``m2..m5`` at strides 4/8/16/32 with 24/32/96/320 channels (the last inverted-residual
block of each resolution; the final 1×1 1280-channel conv is not built).
"""
import logging
import os
from typing import Dict, Sequence

import torch
import torchvision
from torch import nn

from detectron2.config import configurable
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7

__all__ = [
    "MobileNetV2Backbone",
    "build_mobilenet_v2_backbone",
    "build_mobilenet_v2_fpn_backbone",
    "build_retinanet_mobilenet_v2_fpn_backbone",
    "resolve_weights_path",
]

# name -> (index of the last torchvision `features` block of that stage, stride, channels)
logger = logging.getLogger(__name__)

_STAGES = {"m2": (3, 4, 24), "m3": (6, 8, 32), "m4": (13, 16, 96), "m5": (17, 32, 320)}


def resolve_weights_path(path: str) -> str:
    """Find a weights file given as an absolute path, relative to the working directory, or
    relative to ``$DETECTRON2_DATASETS`` (default ``./datasets``), where
    ``tools/prepare_sample_data.py`` puts the sample pretrained weights."""
    candidates = [path]
    if not os.path.isabs(path):
        candidates.append(os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), path))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"MODEL.MOBILENET_V2.WEIGHTS: no file at {' or '.join(repr(c) for c in candidates)}. "
        "The sample ImageNet weights are created by `python tools/prepare_sample_data.py`; "
        "set the key to '' for a randomly initialised backbone."
    )


class MobileNetV2Backbone(Backbone):
    """MobileNetV2 feature extractor (width 1.0) returning the requested stages."""

    @configurable
    def __init__(self, *, out_features: Sequence[str] = ("m2", "m3", "m4", "m5"),
                 weights: str = "", norm: str = "FrozenBN", freeze_at: int = 0):
        """
        Args:
            out_features: subset of ``m2, m3, m4, m5``.
            weights: torchvision ``mobilenet_v2`` ImageNet state dict ("" = random init).
            norm: "FrozenBN" (ImageNet statistics kept) or "BN".
            freeze_at: freeze the stem and the first ``freeze_at`` stages (0 = train all).
        """
        super().__init__()
        unknown = set(out_features) - set(_STAGES)
        if unknown:
            raise ValueError(f"MODEL.MOBILENET_V2.OUT_FEATURES: unknown {sorted(unknown)}, "
                             f"expected a subset of {list(_STAGES)}")
        if norm not in ("FrozenBN", "BN"):
            raise ValueError(f"MODEL.MOBILENET_V2.NORM must be 'FrozenBN' or 'BN', got {norm!r}")
        net = torchvision.models.mobilenet_v2(weights=None)
        if weights:
            path = resolve_weights_path(weights)
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
            logger.info(f"MODEL.MOBILENET_V2.WEIGHTS: loaded {len(state)} tensors from {path} into the backbone")
        last = max(_STAGES[name][0] for name in out_features)
        self.features = net.features[: last + 1]
        if norm == "FrozenBN":
            self.features = FrozenBatchNorm2d.convert_frozen_batchnorm(self.features)
        self._out_features = list(out_features)
        self._out_feature_strides = {n: _STAGES[n][1] for n in out_features}
        self._out_feature_channels = {n: _STAGES[n][2] for n in out_features}
        self._taps = {_STAGES[n][0]: n for n in out_features}
        if freeze_at > 0:
            stop = sorted(v[0] for v in _STAGES.values())[freeze_at - 1]
            for block in self.features[: stop + 1]:
                for p in block.parameters():
                    p.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec = None):
        c = cfg.MODEL.MOBILENET_V2
        return {"out_features": c.OUT_FEATURES, "weights": c.WEIGHTS, "norm": c.NORM,
                "freeze_at": c.FREEZE_AT}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: (B, 3, H, W) -> {name: (B, C_name, H/stride, W/stride)}."""
        outputs = {}
        for index, block in enumerate(self.features):
            x = block(x)
            if index in self._taps:
                outputs[self._taps[index]] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {n: ShapeSpec(channels=self._out_feature_channels[n],
                             stride=self._out_feature_strides[n]) for n in self._out_features}


@BACKBONE_REGISTRY.register()
def build_mobilenet_v2_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    return MobileNetV2Backbone(cfg, input_shape)


@BACKBONE_REGISTRY.register()
def build_mobilenet_v2_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """MobileNetV2 + FPN with P6 by max-pool (Faster R-CNN: p2..p6)."""
    return FPN(
        bottom_up=MobileNetV2Backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_retinanet_mobilenet_v2_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """MobileNetV2 + FPN with P6/P7 from P5 (RetinaNet: p3..p7)."""
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(
        bottom_up=MobileNetV2Backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(out_channels, out_channels, in_feature="p5"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
