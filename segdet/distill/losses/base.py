"""The interface every distillation loss implements.

A loss module says which named modules of the student and of the teacher it needs (``taps``:
dotted module names such as ``"backbone"`` or ``"sem_seg_head.conv_seg"``); the
:class:`~segdet.distill.model.DistillationModel` records those modules' outputs with forward hooks
and calls the loss with them. Losses that own parameters (adapters, GloRe units, ...) are
sub-modules of the distillation model: they are trained with the student, saved in training
checkpoints, and left out of the exported student.
"""
from typing import Any, Dict, List, Sequence

import torch
from torch import nn

__all__ = ["DistillLoss"]


class DistillLoss(nn.Module):
    """Base class of registered distillation losses.

    Subclasses are built through ``@configurable`` with
    ``from_config(cls, cfg, student: nn.Module, teacher: nn.Module)``: the two built models are
    passed so that channels and strides can be read from e.g. ``student.backbone.output_shape()``.

    Attributes:
        student_taps / teacher_taps: dotted module names whose outputs ``forward`` receives.
        record_inputs: if True, a tap records the module's first positional *input* instead of
            its output.
    """

    student_taps: Sequence[str] = ()
    teacher_taps: Sequence[str] = ()
    record_inputs: bool = False

    def forward(
        self,
        student_feats: Dict[str, Any],
        teacher_feats: Dict[str, Any],
        batched_inputs: List[Dict[str, Any]],
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            student_feats / teacher_feats: {tap name: recorded output} (a tensor, or whatever the
                module returns, e.g. a dict of FPN levels for ``"backbone"``). Teacher values
                carry no gradient.
            batched_inputs: the detectron2 list[dict] the models received (``instances`` hold GT
                boxes in the transformed image frame; ``sem_seg`` the transformed label map).

        Returns:
            {term name: scalar tensor}. Each term already carries the method's own per-term
            weight; the distillation model multiplies by the configured loss weight and warm-up
            factor and reports it as ``loss_distill_<term name>``.
        """
        raise NotImplementedError
