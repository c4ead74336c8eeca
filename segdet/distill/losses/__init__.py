"""The distillation-loss interface, its registry and the generic losses (the methods' own losses
live with their method: ``segdet.distill.drkd``, ``segdet.distill.dsd``)."""
from .base import DistillLoss
from . import feature_mse  # noqa: F401
from .registry import DISTILL_LOSS_REGISTRY

__all__ = ["DISTILL_LOSS_REGISTRY", "DistillLoss"]
