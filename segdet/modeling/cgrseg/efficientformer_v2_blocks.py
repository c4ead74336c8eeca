"""Building blocks of EfficientFormerV2 (segmentation "feat" variant).

Module and parameter names follow the official checkpoints, so official state dicts map 1:1
(``mlp.fc1``, ``token_mixer.q.0``, ``attention_biases_seg``, ...).

The attentions are in :mod:`.efficientformer_v2_attention`, the small shared layers in
:mod:`.efficientformer_v2_layers`. The fused inference versions of these blocks are in
:mod:`segdet.deploy.efficientformer_v2` (applied by ``segdet.deploy.fuse_model``).
"""
from typing import Optional

import torch
from torch import nn

from .efficientformer_v2_attention import Attention4D, Attention4DDownsample
from .efficientformer_v2_layers import DropPath, NormLayer

__all__ = ["Mlp", "FFN", "AttnFFN", "ConvDownsample", "AttnDownsample", "make_stem"]


class Mlp(nn.Module):
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
        x = self.act(self.norm1(self.fc1(x)))
        x = self.act(self.mid_norm(self.mid(x)))
        return self.norm2(self.fc2(x))


class FFN(nn.Module):
    """``x + ls2 * DropPath(Mlp(x))``; (B, C, H, W) -> same."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float = 0.0,
                 layer_scale_init: float = 1e-5, norm: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.mlp = Mlp(dim, int(dim * mlp_ratio), norm=norm)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale_2 = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


class AttnFFN(nn.Module):
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
        x = x + self.drop_path(self.layer_scale_1 * self.token_mixer(x))
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


class ConvDownsample(nn.Module):
    """Conv 3x3 stride 2 + norm: (B, C_in, H, W) -> (B, C_out, ceil(H/2), ceil(W/2))."""

    def __init__(self, in_chans: int, embed_dim: int, norm: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, 3, stride=2, padding=1)
        self.norm = norm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class AttnDownsample(nn.Module):
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
