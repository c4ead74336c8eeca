"""Knowledge distillation: the DistillationModel meta-architecture, feature taps and losses."""
from . import losses  # noqa: F401
from . import drkd, dsd  # noqa: F401  (register DRKD, PSD, CSD)
from .losses import DISTILL_LOSS_REGISTRY, DistillLoss
from .model import DistillationModel, student_config
from .taps import FeatureRecorder, build_adapter, resolve_module

__all__ = ["DISTILL_LOSS_REGISTRY", "DistillLoss", "DistillationModel", "FeatureRecorder",
           "build_adapter", "resolve_module", "student_config"]
