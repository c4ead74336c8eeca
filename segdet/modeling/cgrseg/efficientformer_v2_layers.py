"""Small layers shared by the EfficientFormerV2 blocks and attentions: stochastic depth and the
official ``Sequential(conv, norm)`` unit."""
from typing import Callable

import torch
from torch import nn

__all__ = ["NormLayer", "DropPath", "conv_bn"]

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
