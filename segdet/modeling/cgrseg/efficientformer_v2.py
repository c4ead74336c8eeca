"""EfficientFormerV2 (S0 / S1 / S2 / L) as a Detectron2 backbone (the CGRSeg encoders).

Outputs ``res2..res5`` at strides 4/8/16/32 (raw stage outputs, no extra norm). Any input size
works: every stride-2 layer rounds up (ceil), and the relative-position biases (tables built for a
``bias_resolution`` input, 512 by default, gathered into (heads, Nq, Nk)) are bicubically resized
along their flattened query and key axes to the actual token counts, as the official code does. The
parameter names match the official segmentation checkpoints (``patch_embed.*``, ``network.*``).
"""
import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from .efficientformer_v2_blocks import FFN, AttnDownsample, AttnFFN, ConvDownsample, make_stem

__all__ = ["EfficientFormerV2Arch", "EFFICIENTFORMER_V2_ARCHS", "EfficientFormerV2",
           "build_efficientformer_v2_backbone"]

# Input size the ImageNet tables (unused buffers ``attention_biases``) were built for.
IMAGENET_RESOLUTION = 224


@dataclass(frozen=True)
class EfficientFormerV2Arch:
    """depths / widths per stage, number of AttnFFN blocks at the end of stages 3 and 4,
    default stochastic depth, and the MLP expansion ratio of every block."""

    depths: Tuple[int, int, int, int]
    widths: Tuple[int, int, int, int]
    vit_num: int
    drop_path_rate: float
    mlp_ratios: Tuple[Tuple[int, ...], ...]


EFFICIENTFORMER_V2_ARCHS: Dict[str, EfficientFormerV2Arch] = {
    "S0": EfficientFormerV2Arch((2, 2, 6, 4), (32, 48, 96, 176), 2, 0.0,
                                ((4,) * 2, (4,) * 2, (4, 3, 3, 3, 4, 4), (4, 3, 3, 4))),
    "S1": EfficientFormerV2Arch((3, 3, 9, 6), (32, 48, 120, 224), 2, 0.0,
                                ((4,) * 3, (4,) * 3, (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4))),
    "S2": EfficientFormerV2Arch((4, 4, 12, 8), (32, 64, 144, 288), 4, 0.02,
                                ((4,) * 4, (4,) * 4, (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                                 (4, 4, 3, 3, 3, 3, 4, 4))),
    "L": EfficientFormerV2Arch((5, 5, 15, 10), (40, 80, 192, 384), 6, 0.1,
                               ((4,) * 5, (4,) * 5, (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                                (4, 4, 4, 3, 3, 3, 3, 4, 4, 4))),
}

_OUT_NAMES = ("res2", "res3", "res4", "res5")


def _norm_factory(norm: str):
    if norm not in ("BN", "SyncBN"):
        raise ValueError(f"MODEL.EFFICIENTFORMER_V2.NORM must be 'BN' or 'SyncBN', got {norm!r}")
    return lambda channels: get_norm(norm, channels)


class EfficientFormerV2(Backbone):
    """EfficientFormerV2 feature extractor.

    ``forward(x)``: x (B, 3, H, W) -> {"res2": (B, C0, H/4, W/4), "res3": (B, C1, H/8, W/8),
    "res4": (B, C2, H/16, W/16), "res5": (B, C3, H/32, W/32)} (sizes rounded up), restricted to
    ``out_features``.

    ``segdet.deploy.fuse_model`` swaps its blocks for fused inference versions (every conv +
    BatchNorm, the attention scales and the layer scales folded into convolutions).
    """

    @configurable
    def __init__(self, *, variant: str = "S1", out_features: Sequence[str] = _OUT_NAMES,
                 drop_path_rate: Optional[float] = None, bias_resolution: int = 512,
                 norm: str = "BN", in_channels: int = 3, layer_scale_init: float = 1e-5):
        """
        Args:
            variant: "S0", "S1", "S2" or "L".
            out_features: subset of res2..res5.
            drop_path_rate: stochastic depth at the last block (linear in the global block
                index); None = the variant's default.
            bias_resolution: input size (pixels) the attention-bias tables are built for; the
                official checkpoints use 512.
            norm: "BN" or "SyncBN" (nn.SyncBatchNorm, synchronising only under DDP; the official
                backbone converts all its BatchNorms to SyncBatchNorm).
            in_channels: input image channels.
            layer_scale_init: initial value of the layer scales.
        """
        super().__init__()
        if variant not in EFFICIENTFORMER_V2_ARCHS:
            raise ValueError(f"MODEL.EFFICIENTFORMER_V2.VARIANT must be one of "
                             f"{sorted(EFFICIENTFORMER_V2_ARCHS)}, got {variant!r}")
        unknown = [n for n in out_features if n not in _OUT_NAMES]
        if unknown or not out_features:
            raise ValueError(f"MODEL.EFFICIENTFORMER_V2.OUT_FEATURES: expected a non-empty subset of "
                             f"{list(_OUT_NAMES)}, got {list(out_features)}")
        if bias_resolution < 32:
            raise ValueError(f"MODEL.EFFICIENTFORMER_V2.BIAS_RESOLUTION must be >= 32, got {bias_resolution}")
        arch = EFFICIENTFORMER_V2_ARCHS[variant]
        self.variant = variant
        norm_layer = _norm_factory(norm)
        dpr_max = arch.drop_path_rate if drop_path_rate is None else float(drop_path_rate)
        total = sum(arch.depths)

        self.patch_embed = make_stem(in_channels, arch.widths[0], norm_layer)
        network = []
        for i, (depth, dim) in enumerate(zip(arch.depths, arch.widths)):
            res = math.ceil(bias_resolution / 2 ** (i + 2))
            res_in = math.ceil(IMAGENET_RESOLUTION / 2 ** (i + 2))
            blocks = []
            for b in range(depth):
                dpr = dpr_max * (b + sum(arch.depths[:i])) / max(total - 1, 1)
                ratio = arch.mlp_ratios[i][b]
                if i >= 2 and b > depth - 1 - arch.vit_num:
                    blocks.append(AttnFFN(dim, ratio, res, res_in, stride=2 if i == 2 else None,
                                          drop_path=dpr, layer_scale_init=layer_scale_init, norm=norm_layer))
                else:
                    blocks.append(FFN(dim, ratio, drop_path=dpr, layer_scale_init=layer_scale_init,
                                      norm=norm_layer))
            network.append(nn.Sequential(*blocks))
            if i < 3:
                if i >= 2:
                    network.append(AttnDownsample(dim, arch.widths[i + 1], res, res_in, norm_layer))
                else:
                    network.append(ConvDownsample(dim, arch.widths[i + 1], norm_layer))
        self.network = nn.ModuleList(network)

        self._out_features = [n for n in _OUT_NAMES if n in out_features]
        self._out_feature_strides = {n: 2 ** (i + 2) for i, n in enumerate(_OUT_NAMES) if n in out_features}
        self._out_feature_channels = {n: arch.widths[i] for i, n in enumerate(_OUT_NAMES) if n in out_features}
        # network index of each stage output -> name
        self._taps = {2 * i: n for i, n in enumerate(_OUT_NAMES) if n in out_features}
        self._last = max(self._taps)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        c = cfg.MODEL.EFFICIENTFORMER_V2
        return {
            "variant": c.VARIANT,
            "out_features": tuple(c.OUT_FEATURES),
            "drop_path_rate": c.DROP_PATH_RATE,
            "bias_resolution": c.BIAS_RESOLUTION,
            "norm": c.NORM,
            "in_channels": input_shape.channels,
        }

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"EfficientFormerV2 expects (B, C, H, W) input, got shape {tuple(x.shape)}")
        outputs = {}
        x = self.patch_embed(x)
        for idx, layer in enumerate(self.network):
            x = layer(x)
            name = self._taps.get(idx)
            if name is not None:
                outputs[name] = x
            if idx == self._last:
                break
        return outputs


    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
                for n in self._out_features}


@BACKBONE_REGISTRY.register()
def build_efficientformer_v2_backbone(cfg, input_shape: ShapeSpec) -> EfficientFormerV2:
    """Builder for ``MODEL.BACKBONE.NAME: "build_efficientformer_v2_backbone"``."""
    return EfficientFormerV2(cfg, input_shape)
