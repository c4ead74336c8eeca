"""Small layers shared by the EfficientFormerV2 blocks and attentions: stochastic depth, the
official ``Sequential(conv, norm)`` unit and its folding, an in-place GELU and a channels-last
bilinear resize."""
from typing import Callable, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..fusion import fold_conv_bn

__all__ = ["NormLayer", "DropPath", "conv_bn", "fold_seq", "gelu_", "upsample_channels_last"]

NormLayer = Callable[[int], nn.Module]


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval or when ``p == 0``)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def conv_bn(cin: int, cout: int, norm: NormLayer, kernel: int = 1, stride: int = 1,
             groups: int = 1) -> nn.Sequential:
    """``Sequential(Conv2d (with bias), norm)``, indices 0 / 1 as in the official code."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups),
        norm(cout),
    )


def fold_seq(seq: nn.Module) -> nn.Module:
    """``Sequential(conv, bn)`` from :func:`conv_bn` -> the folded conv (other modules as is)."""
    if isinstance(seq, nn.Sequential) and len(seq) == 2 and isinstance(seq[0], nn.Conv2d) \
            and not isinstance(seq[1], nn.Identity):
        return fold_conv_bn(seq[0], seq[1])
    return seq


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """GELU (exact, erf) in place when no gradient is recorded (x must be a temporary the caller
    owns): saves allocating, and page-faulting, a fresh output map."""
    if torch.is_grad_enabled() and x.requires_grad:
        return F.gelu(x)
    return torch.ops.aten.gelu_(x)


def upsample_channels_last(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize computed in channels-last layout (the output stays
    channels-last; the values equal the NCHW kernel's up to rounding)."""
    return F.interpolate(x.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear",
                         align_corners=False)
