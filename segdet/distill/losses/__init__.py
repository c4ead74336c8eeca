"""Distillation losses: pure functions of tensors plus thin modules that own parameters."""
from .base import DistillLoss
from . import feature_mse  # noqa: F401
from . import drkd  # noqa: F401
from . import dsd  # noqa: F401
from .registry import DISTILL_LOSS_REGISTRY

__all__ = ["DISTILL_LOSS_REGISTRY", "DistillLoss"]
