"""EfficientFormerV2's 4D attention (stride 1, and the stride-2 "downsampling" attention).

Relative-position biases: every attention holds a learnable table ``attention_biases_seg``
(heads, R*R) built for a fixed token grid (R x R keys, from ``bias_resolution``, 512 px by
default), gathered through the index buffer ``attention_bias_idxs_seg`` into a (heads, Nq, Nk)
bias and, for another token grid, bicubically resized along the flattened (Nq, Nk) axes (the
official behaviour). The ImageNet tables ``attention_biases`` / ``attention_bias_idxs`` are kept as unused
buffers only so that official segmentation checkpoints load 1:1.
"""
import math
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from .efficientformer_v2_layers import NormLayer, conv_bn

__all__ = ["relative_position_index", "relative_bias", "Attention4D", "LGQuery", "Attention4DDownsample"]


def relative_position_index(resolution: int, query_stride: int = 1) -> torch.Tensor:
    """Index (Nq, Nk) into a (heads, R*R) bias table for R x R keys and queries taken every
    ``query_stride`` keys (ceil(R / stride) per side): ``|s*qy - ky| * R + |s*qx - kx|`` with
    s = ceil(R / ceil(R / stride)), the official offset numbering (first-seen order, row-major).
    """
    r = int(resolution)
    rq = math.ceil(r / query_stride)
    step = math.ceil(r / rq)
    k = torch.arange(r)
    q = torch.arange(rq) * step
    dy = (q.view(-1, 1) - k.view(1, -1)).abs()  # (rq, r)
    # (rq, rq, r, r) -> (Nq, Nk)
    idx = dy.view(rq, 1, r, 1) * r + dy.view(1, rq, 1, r)
    return idx.reshape(rq * rq, r * r)



class _RelativeBias(nn.Module):
    """Seg bias table + index and the unused ImageNet buffers, shared by both attentions."""

    def _init_heads(self, num_heads: int, key_dim: int, attn_ratio: int) -> int:
        """Head sizes: d = attn_ratio·key_dim value channels per head, dh = d·heads in all, the
        attention scale key_dim^-1/2; returns heads·key_dim, the query/key channels."""
        self.num_heads, self.key_dim = num_heads, key_dim
        self.scale = key_dim ** -0.5
        self.d = attn_ratio * key_dim
        self.dh = self.d * num_heads
        return key_dim * num_heads

    def _init_biases(self, num_heads: int, resolution: int, imagenet_resolution: int,
                     query_stride: int) -> None:
        seg_idx = relative_position_index(resolution, query_stride)
        self.attention_biases_seg = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        self.register_buffer("attention_bias_idxs_seg", seg_idx)
        # Unused: the ImageNet tables, kept for 1:1 loading of official checkpoints.
        self.register_buffer("attention_biases",
                             torch.zeros(num_heads, imagenet_resolution * imagenet_resolution))
        self.register_buffer("attention_bias_idxs",
                             relative_position_index(imagenet_resolution, query_stride))

    def attention_bias(self, nq: int, nk: int) -> torch.Tensor:
        """Bias (1, heads, nq, nk) for nq queries and nk keys."""
        return relative_bias(self.attention_biases_seg, self.attention_bias_idxs_seg, nq, nk)


def relative_bias(table: torch.Tensor, index: torch.Tensor, nq: int, nk: int) -> torch.Tensor:
    """The (1, heads, nq, nk) bias of a (heads, R*R) table gathered through its (Nq, Nk) index,
    bicubically resized along the flattened (Nq, Nk) axes for another token grid (the official
    behaviour)."""
    bias = table[:, index].unsqueeze(0)
    if bias.shape[-2:] != (nq, nk):
        bias = F.interpolate(bias, size=(nq, nk), mode="bicubic", align_corners=False)
    return bias


class Attention4D(_RelativeBias):
    """Multi-head attention on a (B, C, H, W) map with talking heads and a local value branch.

    With ``stride=2`` (stage 3) the map is first reduced by a depthwise 3x3 stride-2 conv + norm
    to (ceil(H/2), ceil(W/2)) tokens and the result upsampled back to (H, W) (bilinear). Output
    (B, C, H, W). heads=8, key_dim=32, attn_ratio=4 -> 1024 value channels.
    """

    def __init__(self, dim: int, resolution: int, imagenet_resolution: int, stride: Optional[int] = None,
                 key_dim: int = 32, num_heads: int = 8, attn_ratio: int = 4,
                 norm: NormLayer = nn.BatchNorm2d):
        super().__init__()
        nh_kd = self._init_heads(num_heads, key_dim, attn_ratio)
        if stride is not None:
            self.stride_conv = conv_bn(dim, dim, norm, kernel=3, stride=stride, groups=dim)
            resolution = math.ceil(resolution / stride)
            imagenet_resolution = math.ceil(imagenet_resolution / stride)
        else:
            self.stride_conv = None
        self.q = conv_bn(dim, nh_kd, norm)
        self.k = conv_bn(dim, nh_kd, norm)
        self.v = conv_bn(dim, self.dh, norm)
        self.v_local = conv_bn(self.dh, self.dh, norm, kernel=3, groups=self.dh)
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.proj = nn.Sequential(nn.GELU(), nn.Conv2d(self.dh, dim, 1), norm(dim))
        self._init_biases(num_heads, resolution, imagenet_resolution, query_stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        h, w = x.shape[-2:]
        n = h * w
        q = self.q(x).reshape(B, self.num_heads, self.key_dim, n).transpose(-2, -1)  # (B, heads, n, kd)
        k = self.k(x).reshape(B, self.num_heads, self.key_dim, n)  # (B, heads, kd, n)
        v = self.v(x)
        v_local = self.v_local(v)
        attn = torch.matmul(q, k) * self.scale + self.attention_bias(n, n)
        attn = self.talking_head1(attn).softmax(dim=-1)
        attn = self.talking_head2(attn)  # (B, heads, n, n)
        # (B, heads, d, n) @ (B, heads, n, n)^T -> (B, heads, d, n): no transpose of the output.
        out = torch.matmul(v.reshape(B, self.num_heads, self.d, n), attn.transpose(-2, -1))
        out = out.reshape(B, self.dh, h, w) + v_local
        if self.stride_conv is not None:
            out = F.interpolate(out, size=(H, W), mode="bilinear", align_corners=False)
        return self.proj(out)


class LGQuery(nn.Module):
    """Local-global query: depthwise 3x3 stride-2 conv + stride-2 subsampling, then 1x1 conv +
    norm. (B, C, H, W) -> (B, C_out, ceil(H/2), ceil(W/2))."""

    def __init__(self, in_dim: int, out_dim: int, norm: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.pool = nn.AvgPool2d(1, 2, 0)
        self.local = nn.Sequential(nn.Conv2d(in_dim, in_dim, 3, stride=2, padding=1, groups=in_dim))
        self.proj = conv_bn(in_dim, out_dim, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.local(x) + self.pool(x))


class Attention4DDownsample(_RelativeBias):
    """Stride-2 attention between stages 3 and 4: queries on the (ceil(H/2), ceil(W/2)) grid,
    keys/values on the full (H, W) grid. heads=8, key_dim=16, attn_ratio=4 -> 512 value
    channels; no talking heads. (B, C, H, W) -> (B, C_out, ceil(H/2), ceil(W/2))."""

    def __init__(self, dim: int, out_dim: int, resolution: int, imagenet_resolution: int,
                 key_dim: int = 16, num_heads: int = 8, attn_ratio: int = 4,
                 norm: NormLayer = nn.BatchNorm2d):
        super().__init__()
        nh_kd = self._init_heads(num_heads, key_dim, attn_ratio)
        self.q = LGQuery(dim, nh_kd, norm)
        self.k = conv_bn(dim, nh_kd, norm)
        self.v = conv_bn(dim, self.dh, norm)
        self.v_local = conv_bn(self.dh, self.dh, norm, kernel=3, stride=2, groups=self.dh)
        self.proj = nn.Sequential(nn.GELU(), nn.Conv2d(self.dh, out_dim, 1), norm(out_dim))
        self._init_biases(num_heads, resolution, imagenet_resolution, query_stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        q = self.q(x)
        h, w = q.shape[-2:]
        nq, nk = h * w, H * W
        q = q.reshape(B, self.num_heads, self.key_dim, nq).transpose(-2, -1)  # (B, heads, nq, kd)
        k = self.k(x).reshape(B, self.num_heads, self.key_dim, nk)  # (B, heads, kd, nk)
        v = self.v(x)
        v_local = self.v_local(v)
        attn = (torch.matmul(q, k) * self.scale + self.attention_bias(nq, nk)).softmax(dim=-1)
        out = torch.matmul(v.reshape(B, self.num_heads, self.d, nk), attn.transpose(-2, -1))
        return self.proj(out.reshape(B, self.dh, h, w) + v_local)
