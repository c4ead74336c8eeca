"""Building blocks of EfficientFormerV2 (segmentation "feat" variant).

Module and parameter names follow the official checkpoints, so official state dicts map 1:1
(``mlp.fc1``, ``token_mixer.q.0``, ``attention_biases_seg``, ...).

The attentions are in :mod:`.efficientformer_v2_attention`, the small shared layers in
:mod:`.efficientformer_v2_layers`.

Inference fusion (``fuse_for_inference()``, eval only, in place, idempotent; see
:mod:`segdet.modeling.fusion`): every conv + BatchNorm pair becomes one conv, the attention
scale is folded into the query conv and the layer scales into the last conv of their branch;
the stride-2 attention upsamples its 1024-channel map in channels-last layout (the NCHW
bilinear kernel is an order of magnitude slower for many channels on few pixels). A fused
block refuses ``train()``.
"""
from typing import Optional

import torch
from torch import nn

from ..fusion import InferenceFusable, fold_conv_bn, scale_conv_output, with_gelu
from .efficientformer_v2_attention import Attention4D, Attention4DDownsample
from .efficientformer_v2_layers import DropPath, NormLayer

__all__ = ["Mlp", "FFN", "AttnFFN", "ConvDownsample", "AttnDownsample", "make_stem", "fuse_stem"]


class Mlp(InferenceFusable):
    """1x1 conv (C -> hidden) + norm + GELU, depthwise 3x3 + norm + GELU, 1x1 conv + norm.

    (B, C, H, W) -> (B, C_out, H, W).
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: Optional[int] = None,
                 norm: NormLayer = nn.BatchNorm2d):
        super().__init__()
        out_features = out_features or in_features
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1)
        self.norm1 = norm(hidden_features)
        self.mid = nn.Conv2d(hidden_features, hidden_features, 3, padding=1, groups=hidden_features)
        self.mid_norm = norm(hidden_features)
        self.fc2 = nn.Conv2d(hidden_features, out_features, 1)
        self.norm2 = norm(out_features)
        self.act = nn.GELU()
        for conv in (self.fc1, self.fc2):
            nn.init.trunc_normal_(conv.weight, std=0.02, a=-2.0, b=2.0)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused_for_inference:  # fc1 and mid are ConvGELUs
            return self.fc2(self.mid(self.fc1(x)))
        x = self.act(self.norm1(self.fc1(x)))
        x = self.act(self.mid_norm(self.mid(x)))
        return self.norm2(self.fc2(x))

    def _fuse_for_inference(self) -> None:
        self.fc1, self.norm1 = with_gelu(fold_conv_bn(self.fc1, self.norm1)), nn.Identity()
        self.mid, self.mid_norm = with_gelu(fold_conv_bn(self.mid, self.mid_norm)), nn.Identity()
        self.act = nn.Identity()
        self.fc2, self.norm2 = fold_conv_bn(self.fc2, self.norm2), nn.Identity()

    def scale_output_(self, scale: torch.Tensor) -> None:
        """Fold a per-channel output scale (a layer scale) into ``fc2`` (fused modules only)."""
        if not self._fused_for_inference:
            raise RuntimeError("Mlp.scale_output_: fuse_for_inference() first")
        self.fc2 = scale_conv_output(self.fc2, scale)


class FFN(InferenceFusable):
    """``x + ls2 * DropPath(Mlp(x))``; (B, C, H, W) -> same."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float = 0.0,
                 layer_scale_init: float = 1e-5, norm: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.mlp = Mlp(dim, int(dim * mlp_ratio), norm=norm)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale_2 = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused_for_inference:  # layer scale folded into mlp.fc2, no drop path in eval
            return self.mlp(x).add_(x)
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))

    def _fuse_for_inference(self) -> None:
        self.mlp.fuse_for_inference()
        self.mlp.scale_output_(self.layer_scale_2)


class AttnFFN(InferenceFusable):
    """``x + ls1 * DP(Attention4D(x))`` then ``x + ls2 * DP(Mlp(x))``; (B, C, H, W) -> same."""

    def __init__(self, dim: int, mlp_ratio: float, resolution: int, imagenet_resolution: int,
                 stride: Optional[int] = None, drop_path: float = 0.0, layer_scale_init: float = 1e-5,
                 norm: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.token_mixer = Attention4D(dim, resolution, imagenet_resolution, stride=stride, norm=norm)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), norm=norm)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale_1 = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init)))
        self.layer_scale_2 = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused_for_inference:  # layer scales folded into the last convs
            x = self.token_mixer(x).add_(x)
            return self.mlp(x).add_(x)
        x = x + self.drop_path(self.layer_scale_1 * self.token_mixer(x))
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))

    def _fuse_for_inference(self) -> None:
        self.token_mixer.fuse_for_inference()
        self.token_mixer.scale_output_(self.layer_scale_1)
        self.mlp.fuse_for_inference()
        self.mlp.scale_output_(self.layer_scale_2)


class ConvDownsample(InferenceFusable):
    """Conv 3x3 stride 2 + norm: (B, C_in, H, W) -> (B, C_out, ceil(H/2), ceil(W/2))."""

    def __init__(self, in_chans: int, embed_dim: int, norm: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, 3, stride=2, padding=1)
        self.norm = norm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))

    def _fuse_for_inference(self) -> None:
        self.proj, self.norm = fold_conv_bn(self.proj, self.norm), nn.Identity()


class AttnDownsample(InferenceFusable):
    """The "asub" embedding: conv 3x3 stride 2 + norm, plus :class:`Attention4DDownsample`.
    (B, C_in, H, W) -> (B, C_out, ceil(H/2), ceil(W/2))."""

    def __init__(self, in_chans: int, embed_dim: int, resolution: int, imagenet_resolution: int,
                 norm: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.attn = Attention4DDownsample(in_chans, embed_dim, resolution, imagenet_resolution, norm=norm)
        self.conv = nn.Conv2d(in_chans, embed_dim, 3, stride=2, padding=1)
        self.bn = norm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x) + self.bn(self.conv(x))

    def _fuse_for_inference(self) -> None:
        self.attn.fuse_for_inference()
        self.conv, self.bn = fold_conv_bn(self.conv, self.bn), nn.Identity()


def fuse_stem(stem: nn.Sequential) -> None:
    """Fold the two conv + norm (+ GELU) triples of a :func:`make_stem` stem into
    :class:`ConvGELU` modules, in place (idempotent; state-dict keys unchanged)."""
    for i in (0, 3):
        if not isinstance(stem[i + 1], nn.Identity):
            stem[i] = with_gelu(fold_conv_bn(stem[i], stem[i + 1]))
            stem[i + 1], stem[i + 2] = nn.Identity(), nn.Identity()


def make_stem(in_chans: int, out_chans: int, norm: NormLayer = nn.BatchNorm2d) -> nn.Sequential:
    """Two conv 3x3 stride 2 + norm + GELU: (B, 3, H, W) -> (B, C0, ceil(H/4), ceil(W/4))."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans // 2, 3, stride=2, padding=1),
        norm(out_chans // 2),
        nn.GELU(),
        nn.Conv2d(out_chans // 2, out_chans, 3, stride=2, padding=1),
        norm(out_chans),
        nn.GELU(),
    )
