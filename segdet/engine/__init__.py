"""Trainer, optimizer parameter groups, LR schedules and training hooks."""
from .checkpoint import AtomicCheckpointer, atomic_torch_save
from .hooks import StudentExportHook, TrainingCurvesHook
from .lr_scheduler import WarmupPolyParamScheduler, build_lr_scheduler
from .optimizer import build_optimizer, build_param_groups
from .trainer import Trainer, build_mapper

__all__ = [
    "AtomicCheckpointer", "atomic_torch_save", "TrainingCurvesHook", "StudentExportHook", "WarmupPolyParamScheduler",
    "build_lr_scheduler", "build_optimizer", "build_param_groups", "Trainer", "build_mapper",
]
