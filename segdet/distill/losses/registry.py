"""Registry of distillation losses.

An entry is a ``nn.Module`` class built as ``cls(cfg, student_shapes, teacher_shapes)`` through
``from_config`` (``@configurable``). Its ``forward(student_feats, teacher_feats, batched_inputs,
**extras)`` returns a dict of *unweighted* named scalar terms; the distillation model multiplies
them by the configured weight and schedule and reports them as ``loss_distill_<name>``.
"""
from detectron2.utils.registry import Registry

DISTILL_LOSS_REGISTRY = Registry("DISTILL_LOSS")
DISTILL_LOSS_REGISTRY.__doc__ = __doc__

__all__ = ["DISTILL_LOSS_REGISTRY"]
