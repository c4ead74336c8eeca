"""EfficientFormerV2's 4D attention (stride 1, and the stride-2 "downsampling" attention).

Relative-position biases: every attention holds a learnable table ``attention_biases_seg``
(heads, R*R) built for a fixed token grid (R x R keys, from ``bias_resolution``, 512 px by
default), gathered through the index buffer ``attention_bias_idxs_seg`` into a (heads, Nq, Nk)
bias and, for another token grid, bicubically resized along the flattened (Nq, Nk) axes (the
official behaviour). In eval mode the gathered/resized bias is cached per (Nq, Nk); the cache is
dropped on ``train()``, on ``load_state_dict`` and whenever the table or index is modified in
place. The ImageNet tables ``attention_biases`` / ``attention_bias_idxs`` are kept as unused
buffers only so that official segmentation checkpoints load 1:1.
"""
import math
from typing import Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..fusion import InferenceFusable, fold_conv_bn, scale_conv_output
from .efficientformer_v2_layers import NormLayer, conv_bn, fold_seq, gelu_, upsample_channels_last

__all__ = ["relative_position_index", "Attention4D", "LGQuery", "Attention4DDownsample"]


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



def _mix_heads(conv: nn.Conv2d, attn: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv across the head axis of attn (B, heads, Nq, Nk) as one batched matmul
    (same result as ``conv(attn)``; an order of magnitude faster on CPU than a conv with so
    few channels and so many pixels)."""
    b, h = attn.shape[:2]
    out = torch.baddbmm(conv.bias.view(1, h, 1), conv.weight.view(1, h, h).expand(b, h, h),
                        attn.reshape(b, h, -1))
    return out.view(attn.shape)


class _RelativeBiasMixin(InferenceFusable):
    """Seg bias table + index, the unused ImageNet buffers, and the per-grid eval cache."""

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
        self._bias_cache: Dict[Tuple, torch.Tensor] = {}
        self._bias_cache_version: Tuple = ()

    def clear_bias_cache(self) -> None:
        self._bias_cache = {}

    def train(self, mode: bool = True):
        self.clear_bias_cache()
        return super().train(mode)

    def _apply(self, *args, **kwargs):
        self.clear_bias_cache()
        return super()._apply(*args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self.clear_bias_cache()
        return super()._load_from_state_dict(*args, **kwargs)

    def _compute_bias(self, nq: int, nk: int) -> torch.Tensor:
        table = self.attention_biases_seg[:, self.attention_bias_idxs_seg].unsqueeze(0)
        if table.shape[-2:] != (nq, nk):
            table = F.interpolate(table, size=(nq, nk), mode="bicubic", align_corners=False)
        return table

    def attention_bias(self, nq: int, nk: int) -> torch.Tensor:
        """Bias (1, heads, nq, nk) for nq queries and nk keys (cached in eval mode unless a
        gradient to the table is needed, or the forward is traced by torch.export / compile:
        then the bias is part of the graph)."""
        table = self.attention_biases_seg
        if self.training or (torch.is_grad_enabled() and table.requires_grad) or torch.compiler.is_compiling():
            return self._compute_bias(nq, nk)
        idx = self.attention_bias_idxs_seg
        if table.is_inference() or idx.is_inference():
            # Tensors created under torch.inference_mode (e.g. a model deep-copied there) track
            # no version counter: key the cache on the storage only.
            version = (None, None, table.data_ptr(), idx.data_ptr())
        else:
            version = (table._version, idx._version, table.data_ptr(), idx.data_ptr())
        if version != self._bias_cache_version:
            self._bias_cache = {}
            self._bias_cache_version = version
        key = (nq, nk, table.device, table.dtype)
        bias = self._bias_cache.get(key)
        if bias is None:
            with torch.no_grad():
                bias = self._compute_bias(nq, nk)
            self._bias_cache[key] = bias
        return bias


class Attention4D(_RelativeBiasMixin):
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
        fused = self._fused_for_inference  # eval-only: scale folded into q, BNs into convs
        B, _, H, W = x.shape
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        h, w = x.shape[-2:]
        n = h * w
        q = self.q(x).reshape(B, self.num_heads, self.key_dim, n).transpose(-2, -1)
        k = self.k(x).reshape(B, self.num_heads, self.key_dim, n)
        v = self.v(x)
        v_local = self.v_local(v)
        attn = torch.matmul(q, k)
        if not fused:
            attn = attn.mul_(self.scale)
        attn = attn.add_(self.attention_bias(n, n))
        attn = _mix_heads(self.talking_head1, attn).softmax(dim=-1)
        attn = _mix_heads(self.talking_head2, attn)  # (B, heads, n, n)
        # (B, heads, d, n) @ (B, heads, n, n)^T -> (B, heads, d, n): no transpose of the output.
        out = torch.matmul(v.reshape(B, self.num_heads, self.d, n), attn.transpose(-2, -1))
        out = out.reshape(B, self.dh, h, w)
        out = v_local.add_(out) if fused else out + v_local
        if self.stride_conv is not None:
            if fused:
                out = upsample_channels_last(out, (H, W))
            else:
                out = F.interpolate(out, size=(H, W), mode="bilinear", align_corners=False)
        return self.proj[1](gelu_(out)) if fused else self.proj(out)

    def _fuse_for_inference(self) -> None:
        if self.stride_conv is not None:
            self.stride_conv = fold_seq(self.stride_conv)
        # softmax(q^T k * scale): the scale goes into the query conv.
        self.q = scale_conv_output(fold_seq(self.q), torch.full((self.q[0].out_channels,), self.scale))
        self.k, self.v, self.v_local = fold_seq(self.k), fold_seq(self.v), fold_seq(self.v_local)
        self.proj = nn.Sequential(self.proj[0], fold_conv_bn(self.proj[1], self.proj[2]))

    def scale_output_(self, scale: torch.Tensor) -> None:
        """Fold a per-channel output scale (a layer scale) into the projection (fused only)."""
        if not self._fused_for_inference:
            raise RuntimeError("Attention4D.scale_output_: fuse_for_inference() first")
        self.proj[1] = scale_conv_output(self.proj[1], scale)


class LGQuery(InferenceFusable):
    """Local-global query: depthwise 3x3 stride-2 conv + stride-2 subsampling, then 1x1 conv +
    norm. (B, C, H, W) -> (B, C_out, ceil(H/2), ceil(W/2))."""

    def __init__(self, in_dim: int, out_dim: int, norm: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.pool = nn.AvgPool2d(1, 2, 0)
        self.local = nn.Sequential(nn.Conv2d(in_dim, in_dim, 3, stride=2, padding=1, groups=in_dim))
        self.proj = conv_bn(in_dim, out_dim, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.local(x) + self.pool(x))

    def _fuse_for_inference(self) -> None:
        self.proj = fold_seq(self.proj)

    def scale_output_(self, scale: torch.Tensor) -> None:
        """Fold a per-channel output scale into the (fused) projection."""
        if not self._fused_for_inference:
            raise RuntimeError("LGQuery.scale_output_: fuse_for_inference() first")
        self.proj = scale_conv_output(self.proj, scale)


class Attention4DDownsample(_RelativeBiasMixin):
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

    def _fuse_for_inference(self) -> None:
        self.q.fuse_for_inference()
        self.q.scale_output_(torch.full((self.q.proj.out_channels,), self.scale))
        self.k, self.v, self.v_local = fold_seq(self.k), fold_seq(self.v), fold_seq(self.v_local)
        self.proj = nn.Sequential(self.proj[0], fold_conv_bn(self.proj[1], self.proj[2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self._fused_for_inference  # eval-only: scale folded into q, BNs into convs
        B, _, H, W = x.shape
        q = self.q(x)
        h, w = q.shape[-2:]
        nq, nk = h * w, H * W
        q = q.reshape(B, self.num_heads, self.key_dim, nq).transpose(-2, -1)
        k = self.k(x).reshape(B, self.num_heads, self.key_dim, nk)
        v = self.v(x)
        v_local = self.v_local(v)
        attn = torch.matmul(q, k)
        if not fused:
            attn = attn.mul_(self.scale)
        attn = attn.add_(self.attention_bias(nq, nk)).softmax(dim=-1)
        out = torch.matmul(v.reshape(B, self.num_heads, self.d, nk), attn.transpose(-2, -1))
        if fused:
            return self.proj[1](gelu_(v_local.add_(out.view(B, self.dh, h, w))))
        return self.proj(out.reshape(B, self.dh, h, w) + v_local)
