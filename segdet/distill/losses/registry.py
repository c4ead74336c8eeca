"""Registry of distillation losses.

An entry is a :class:`~segdet.distill.losses.base.DistillLoss` subclass, built as
``cls(cfg, student, teacher)`` through ``@configurable`` / ``from_config``. Losses are named in
``cfg.DISTILL.LOSSES``.
"""
from detectron2.utils.registry import Registry

DISTILL_LOSS_REGISTRY = Registry("DISTILL_LOSS")
DISTILL_LOSS_REGISTRY.__doc__ = __doc__

__all__ = ["DISTILL_LOSS_REGISTRY"]
