"""Knowledge distillation: the DistillationModel meta-architecture, feature taps and losses."""
from . import losses  # noqa: F401
from .losses import DISTILL_LOSS_REGISTRY

__all__ = ["DISTILL_LOSS_REGISTRY"]
