"""Fused inference versions of the EfficientFormerV2 blocks (CGRSeg's backbone), and their fusers.

What each replacement folds (all exact up to float rounding, in eval mode):

* every conv + BatchNorm pair into one conv; conv + BN + GELU into a :class:`~.ops.ConvGELU`;
* the attention scale ``key_dim^-1/2`` into the query conv;
* the layer scales into the last conv of their branch;
* the relative-position bias gathered (and resized) once per token grid instead of every call.

The stride-2 attention upsamples its 1024-channel map in channels-last layout and the talking
heads run as batched matrix products (:mod:`.ops`).
"""
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..modeling.cgrseg.efficientformer_v2 import EfficientFormerV2
from ..modeling.cgrseg.efficientformer_v2_attention import Attention4D, Attention4DDownsample, LGQuery, relative_bias
from ..modeling.cgrseg.efficientformer_v2_blocks import FFN, AttnDownsample, AttnFFN, ConvDownsample, Mlp
from .fold import fold_conv_bn, fold_seq, scale_conv_output
from .fuse import FusedModule, fuse_module, register_fuser
from .ops import gelu_, is_tracing, mix_heads, upsample_channels_last, with_gelu

__all__ = ["FusedMlp", "FusedFFN", "FusedAttnFFN", "FusedAttention4D", "FusedLGQuery",
           "FusedAttention4DDownsample", "FusedAttnDownsample", "CachedRelativeBias"]


def _scaled(conv: nn.Conv2d, scale: Optional[torch.Tensor]) -> nn.Conv2d:
    return conv if scale is None else scale_conv_output(conv, scale)


class CachedRelativeBias(nn.Module):
    """A frozen copy of an attention's relative-position bias: ``forward(nq, nk)`` -> (1, heads,
    nq, nk), computed once per (nq, nk, device, dtype) and reused (recomputed while traced, so
    that an exported graph holds the computation, not a constant of one grid)."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        self.register_buffer("table", attn.attention_biases_seg.detach().clone())
        self.register_buffer("index", attn.attention_bias_idxs_seg.clone())
        self._cache: Dict[Tuple, torch.Tensor] = {}

    def _apply(self, *args, **kwargs):
        self._cache = {}
        return super()._apply(*args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._cache = {}
        return super()._load_from_state_dict(*args, **kwargs)

    def forward(self, nq: int, nk: int) -> torch.Tensor:
        if is_tracing():
            return relative_bias(self.table, self.index, nq, nk)
        key = (nq, nk, self.table.device, self.table.dtype)
        bias = self._cache.get(key)
        if bias is None:
            with torch.no_grad():
                bias = relative_bias(self.table, self.index, nq, nk)
            self._cache[key] = bias
        return bias


class FusedMlp(FusedModule):
    """:class:`Mlp` as ConvGELU (fc1 + norm1) -> ConvGELU (mid + mid_norm) -> conv (fc2 + norm2,
    times an optional per-channel output scale)."""

    def __init__(self, mlp: Mlp, out_scale: Optional[torch.Tensor] = None):
        super().__init__()
        self.fc1 = with_gelu(fold_conv_bn(mlp.fc1, mlp.norm1))
        self.mid = with_gelu(fold_conv_bn(mlp.mid, mlp.mid_norm))
        self.fc2 = _scaled(fold_conv_bn(mlp.fc2, mlp.norm2), out_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.mid(self.fc1(x)))


class FusedFFN(FusedModule):
    """:class:`FFN` in eval: ``x + Mlp(x)`` with the layer scale folded into the MLP."""

    def __init__(self, ffn: FFN):
        super().__init__()
        self.mlp = FusedMlp(ffn.mlp, ffn.layer_scale_2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x).add_(x)


class FusedAttention4D(FusedModule):
    """:class:`Attention4D` with its BatchNorms, attention scale and an optional output scale
    folded into the convolutions."""

    def __init__(self, attn: Attention4D, out_scale: Optional[torch.Tensor] = None):
        super().__init__()
        self.num_heads, self.key_dim, self.d, self.dh = attn.num_heads, attn.key_dim, attn.d, attn.dh
        self.stride_conv = fold_seq(attn.stride_conv) if attn.stride_conv is not None else None
        q = fold_seq(attn.q)
        self.q = scale_conv_output(q, torch.full((q.out_channels,), attn.scale))
        self.k, self.v, self.v_local = fold_seq(attn.k), fold_seq(attn.v), fold_seq(attn.v_local)
        self.talking_head1, self.talking_head2 = attn.talking_head1, attn.talking_head2
        self.proj = _scaled(fold_conv_bn(attn.proj[1], attn.proj[2]), out_scale)  # after a GELU
        self.bias = CachedRelativeBias(attn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        h, w = x.shape[-2:]
        n = h * w
        q = self.q(x).reshape(B, self.num_heads, self.key_dim, n).transpose(-2, -1)
        k = self.k(x).reshape(B, self.num_heads, self.key_dim, n)
        v = self.v(x)
        v_local = self.v_local(v)
        attn = torch.matmul(q, k).add_(self.bias(n, n))
        attn = mix_heads(self.talking_head1, attn).softmax(dim=-1)
        attn = mix_heads(self.talking_head2, attn)
        out = torch.matmul(v.reshape(B, self.num_heads, self.d, n), attn.transpose(-2, -1))
        out = v_local.add_(out.reshape(B, self.dh, h, w))
        if self.stride_conv is not None:
            out = upsample_channels_last(out, (H, W))
        return self.proj(gelu_(out))


class FusedAttnFFN(FusedModule):
    """:class:`AttnFFN` in eval, both layer scales folded into the last convs of their branch."""

    def __init__(self, block: AttnFFN):
        super().__init__()
        self.token_mixer = FusedAttention4D(block.token_mixer, block.layer_scale_1)
        self.mlp = FusedMlp(block.mlp, block.layer_scale_2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x).add_(x)
        return self.mlp(x).add_(x)


class FusedLGQuery(FusedModule):
    """:class:`LGQuery` with its projection's BatchNorm and a per-channel scale folded."""

    def __init__(self, query: LGQuery, out_scale: Optional[torch.Tensor] = None):
        super().__init__()
        self.pool, self.local = query.pool, query.local
        self.proj = _scaled(fold_seq(query.proj), out_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.local(x) + self.pool(x))


class FusedAttention4DDownsample(FusedModule):
    """:class:`Attention4DDownsample` with its BatchNorms and attention scale folded."""

    def __init__(self, attn: Attention4DDownsample):
        super().__init__()
        self.num_heads, self.key_dim, self.d, self.dh = attn.num_heads, attn.key_dim, attn.d, attn.dh
        self.q = FusedLGQuery(attn.q, torch.full((attn.q.proj[0].out_channels,), attn.scale))
        self.k, self.v, self.v_local = fold_seq(attn.k), fold_seq(attn.v), fold_seq(attn.v_local)
        self.proj = fold_conv_bn(attn.proj[1], attn.proj[2])  # after a GELU
        self.bias = CachedRelativeBias(attn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        q = self.q(x)
        h, w = q.shape[-2:]
        nq, nk = h * w, H * W
        q = q.reshape(B, self.num_heads, self.key_dim, nq).transpose(-2, -1)
        k = self.k(x).reshape(B, self.num_heads, self.key_dim, nk)
        v = self.v(x)
        v_local = self.v_local(v)
        attn = torch.matmul(q, k).add_(self.bias(nq, nk)).softmax(dim=-1)
        out = torch.matmul(v.reshape(B, self.num_heads, self.d, nk), attn.transpose(-2, -1))
        return self.proj(gelu_(v_local.add_(out.reshape(B, self.dh, h, w))))


class FusedAttnDownsample(FusedModule):
    """:class:`AttnDownsample`: fused attention + the folded stride-2 conv."""

    def __init__(self, block: AttnDownsample):
        super().__init__()
        self.attn = FusedAttention4DDownsample(block.attn)
        self.conv = fold_conv_bn(block.conv, block.bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x).add_(self.conv(x))


@register_fuser(EfficientFormerV2)
def _fuse_backbone(backbone: EfficientFormerV2) -> EfficientFormerV2:
    """The backbone itself, with the stem's two conv + BN + GELU triples as ConvGELUs and every
    block swapped for its fused version."""
    stem = backbone.patch_embed
    if len(stem) == 6:  # conv, norm, GELU, conv, norm, GELU (not fused yet)
        backbone.patch_embed = nn.Sequential(with_gelu(fold_conv_bn(stem[0], stem[1])),
                                             with_gelu(fold_conv_bn(stem[3], stem[4])))
    backbone.network = fuse_module(backbone.network)
    return backbone


register_fuser(Mlp)(FusedMlp)
register_fuser(FFN)(FusedFFN)
register_fuser(AttnFFN)(FusedAttnFFN)
register_fuser(Attention4D)(FusedAttention4D)
register_fuser(Attention4DDownsample)(FusedAttention4DDownsample)
register_fuser(AttnDownsample)(FusedAttnDownsample)
register_fuser(ConvDownsample)(lambda block: fold_conv_bn(block.proj, block.norm))
