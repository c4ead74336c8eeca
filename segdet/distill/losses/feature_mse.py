"""Feature imitation (FitNets-style): MSE between adapted student and teacher tap outputs."""
from typing import Dict, List, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable

from ..taps import build_adapter, resolve_module
from .base import DistillLoss
from .registry import DISTILL_LOSS_REGISTRY

__all__ = ["feature_mse", "FeatureMSE"]


def feature_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between (B, C, H, W) maps; the teacher map is resized (bilinear) to
    the student's spatial size when they differ."""
    if teacher.shape[-2:] != student.shape[-2:]:
        teacher = F.interpolate(teacher, size=student.shape[-2:], mode="bilinear", align_corners=False)
    return F.mse_loss(student, teacher)


def _channels(model: nn.Module, name: str, owner: str) -> int:
    """Output channels of the tapped module: its last conv/linear/norm layer's width."""
    module = resolve_module(model, name, owner)
    for sub in reversed(list(module.modules())):
        for attr in ("out_channels", "num_features", "out_features"):
            if isinstance(getattr(sub, attr, None), int):
                return getattr(sub, attr)
    raise ValueError(f"cannot infer the output channels of {owner} module {name!r}; "
                     "tap a module that ends in a conv, norm or linear layer")


@DISTILL_LOSS_REGISTRY.register()
class FeatureMSE(DistillLoss):
    """Σ over tap pairs of MSE(adapter_i(student_tap_i), teacher_tap_i); a 1×1 conv adapter is
    built where the channel counts differ. Returns ``{"feature_mse": ...}``."""

    @configurable
    def __init__(self, *, student_taps: Sequence[str], teacher_taps: Sequence[str],
                 student_channels: Sequence[int], teacher_channels: Sequence[int]):
        super().__init__()
        if len(student_taps) != len(teacher_taps) or not student_taps:
            raise ValueError("DISTILL.FEATURE_MSE: STUDENT_TAPS and TEACHER_TAPS must be non-empty "
                             f"lists of equal length, got {list(student_taps)} and {list(teacher_taps)}")
        self.student_taps, self.teacher_taps = tuple(student_taps), tuple(teacher_taps)
        self.adapters = nn.ModuleList(
            build_adapter(s, t) for s, t in zip(student_channels, teacher_channels))

    @classmethod
    def from_config(cls, cfg, student: nn.Module, teacher: nn.Module):
        c = cfg.DISTILL.FEATURE_MSE
        return {
            "student_taps": c.STUDENT_TAPS,
            "teacher_taps": c.TEACHER_TAPS,
            "student_channels": [_channels(student, n, "student") for n in c.STUDENT_TAPS],
            "teacher_channels": [_channels(teacher, n, "teacher") for n in c.TEACHER_TAPS],
        }

    def forward(self, student_feats: Dict, teacher_feats: Dict, batched_inputs: List[Dict]):
        total = sum(
            feature_mse(adapter(student_feats[s]), teacher_feats[t])
            for adapter, s, t in zip(self.adapters, self.student_taps, self.teacher_taps)
        )
        return {"feature_mse": total}
