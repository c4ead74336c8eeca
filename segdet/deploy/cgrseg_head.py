"""Fused inference versions of CGRSeg's decode head (RCA, RCM, the ConvModules, the head) and of
the SSA head built on it, and their fusers.

Folded (exact up to float rounding, eval mode): conv + BatchNorm pairs; the RCM's BatchNorm into
the following 1x1 conv and its layer scale ``gamma`` into the last one; the depthwise 1x1
``linear_fuse`` becomes a per-channel affine map. The fused head applies each top-down 1x1
conv before the bilinear upsampling rather than after (the two commute: a 1x1 conv is linear per
pixel and bilinear weights sum to 1), so it resizes C_i instead of C channels.
"""
from typing import Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..modeling.cgrseg.dpg import spatial_gather
from ..modeling.cgrseg.head import CGRSegHead, ConvNormAct, pyramid_pool
from ..modeling.cgrseg.rcm import RCA, RCM
from ..modeling.ssa.heads import SSAHead
from .fold import conv_to_channel_affine, fold_bn_into_following_conv, fold_conv_bn, scale_conv_output
from .fuse import FusedModule, fuse_module, register_fuser
from .ops import with_gelu

__all__ = ["FusedRCA", "FusedRCM", "FusedCGRSegHead"]


@register_fuser(ConvNormAct)
def _fuse_conv_norm_act(block: ConvNormAct) -> nn.Module:
    """conv + norm (+ ReLU) -> one conv (a per-channel affine map for a depthwise 1x1) (+ ReLU)."""
    conv = fold_conv_bn(block.conv, block.bn)
    if conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels:
        conv = conv_to_channel_affine(conv)
    return nn.Sequential(conv, nn.ReLU(inplace=True)) if block.activate is not None else conv


class FusedRCA(FusedModule):
    """:class:`RCA` with the BatchNorm between its strip convolutions folded into the first."""

    def __init__(self, rca: RCA):
        super().__init__()
        self.dwconv_hw = rca.dwconv_hw
        e = rca.excite
        self.excite = nn.Sequential(fold_conv_bn(e[0], e[1]), e[2], e[3], e[4])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        loc = self.dwconv_hw(x)
        context = x.mean(dim=3, keepdim=True) + x.mean(dim=2, keepdim=True)
        return self.excite(context).mul_(loc)


class FusedRCM(FusedModule):
    """:class:`RCM` as ``x + fc2(ConvGELU(RCA(x)))``: its BatchNorm folded into ``fc1`` (a 1x1
    conv without padding, so exactly) and ``gamma`` into ``fc2``."""

    def __init__(self, rcm: RCM):
        super().__init__()
        self.token_mixer = FusedRCA(rcm.token_mixer)
        self.fc1 = with_gelu(fold_bn_into_following_conv(rcm.norm, rcm.mlp.fc1))
        self.fc2 = scale_conv_output(rcm.mlp.fc2, rcm.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(self.token_mixer(x))).add_(x)


register_fuser(RCA)(FusedRCA)
register_fuser(RCM)(FusedRCM)


@register_fuser(CGRSegHead)
class FusedCGRSegHead(FusedModule):
    """:class:`CGRSegHead` for inference: fused RCMs and ConvModules, no dropout, top-down convs at
    the coarse resolution. ``forward(features)`` -> (logits (B, K, H, W) at ``common_stride`` x the
    stride-8 grid, {}); ``decode_features`` / ``classify`` / ``layers`` as the plain head's."""

    def __init__(self, head: CGRSegHead):
        super().__init__()
        self.in_features, self.in_channels = list(head.in_features), list(head.in_channels)
        self.common_stride, self.num_classes, self.channels = head.common_stride, head.num_classes, head.channels
        self.ignore_value = head.ignore_value
        self.trans = fuse_module(head.trans)
        self.SIM = fuse_module(head.SIM)
        self.meta = fuse_module(head.meta)
        self.conv = head.conv
        self.linear_fuse = fuse_module(head.linear_fuse)
        self.dropout = nn.Identity()
        self.conv_seg = head.conv_seg
        self.lgc = head.lgc
        self.logits_tap = head.logits_tap

    def decode_features(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """features -> (B, C, H/8, W/8), as :meth:`CGRSegHead.decode_features`."""
        xs = [features[f] for f in self.in_features]
        contexts = self.trans(pyramid_pool(xs)).split(self.in_channels, dim=1)
        x: Optional[torch.Tensor] = None
        for i in range(len(xs) - 1, -1, -1):
            local = xs[i]
            if x is not None:  # 1x1 conv at the coarse resolution, then upsample C_i channels
                local = local + F.interpolate(self.conv[i](x), size=local.shape[-2:], mode="bilinear",
                                              align_corners=False)
            x = self.SIM[i](self.meta[i](local), contexts[i])
        return x

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, h, w) -> logits (B, K, h, w), as :meth:`CGRSegHead.classify`."""
        coarse = self.conv_seg(self.linear_fuse(x))
        if self.lgc is None:
            return coarse
        return self.conv_seg(self.lgc(x, spatial_gather(x, coarse)) + x)

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.logits_tap(self.classify(self.decode_features(features)))

    def forward(self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        logits = self.layers(features)
        size = (logits.shape[-2] * self.common_stride, logits.shape[-1] * self.common_stride)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False), {}


@register_fuser(SSAHead)
def _fuse_ssa_head(head: SSAHead) -> SSAHead:
    """The SSA head itself, on its fused base head (the SSA classifier has nothing to fold)."""
    head.replace_decoder(fuse_module(head.base_head))
    return head
