"""SSACriterion: the SSA training losses of a head as one object (spec cgrseg_ssa.md B.6), built
from ``cfg.MODEL.SSA`` by :meth:`SSACriterion.from_config` (as Mask2Former's ``SetCriterion`` is
built in its head's ``from_config``).

``criterion(student_out, teacher_out, coarse_logits, targets)`` -> {loss name: weighted scalar};
the terms and their names are those of :func:`~.losses.ssa_losses`. The Dice normaliser is
all-reduced over processes here (:func:`global_num_masks`).
"""
from typing import Dict, Mapping, Optional

import torch
from torch import nn

from detectron2.utils import comm

from .losses import DEFAULT_SSA_LOSS_WEIGHTS, count_masks, ssa_losses

__all__ = ["SSACriterion", "global_num_masks"]


def global_num_masks(targets: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Dice normaliser: the number of (image, present class) pairs, summed over all processes and
    divided by the world size (as the official code), at least 1.

    Args:
        targets: (B, H, W) labels of this process.
    Returns:
        float scalar tensor on ``targets.device``. Every process must call this (collective).
    """
    n = count_masks(targets, num_classes, ignore_index)
    world = comm.get_world_size()
    if world > 1:
        torch.distributed.all_reduce(n)
        n = n / world
    return n.clamp(min=1.0)


class SSACriterion(nn.Module):
    """The eight weighted SSA loss terms (no parameters, no buffers: no state-dict keys).

    Attributes:
        weights: {key of :data:`~.losses.DEFAULT_SSA_LOSS_WEIGHTS`: weight}, defaults filled in.
        ignore_index, avg_non_ignore: label to ignore; the main CE's reduction.
        relation_temperature, kd_smoothness, edge_size, border: see :func:`~.losses.ssa_losses`.
    """

    def __init__(self, *, weights: Optional[Mapping[str, float]] = None, ignore_index: int = 255,
                 avg_non_ignore: bool = True, relation_temperature: float = 15.0, kd_smoothness: float = 0.5,
                 edge_size: int = 3, border: int = 6):
        """
        Raises:
            KeyError: a weight key not in :data:`~.losses.DEFAULT_SSA_LOSS_WEIGHTS` (named as the
                ``MODEL.SSA.LOSS_WEIGHTS`` key).
        """
        super().__init__()
        unknown = set(weights or {}) - set(DEFAULT_SSA_LOSS_WEIGHTS)
        if unknown:
            raise KeyError(f"MODEL.SSA.LOSS_WEIGHTS: unknown key(s) {sorted(k.upper() for k in unknown)}; "
                           f"valid: {sorted(k.upper() for k in DEFAULT_SSA_LOSS_WEIGHTS)}")
        self.weights: Dict[str, float] = {**DEFAULT_SSA_LOSS_WEIGHTS, **{k: float(v) for k, v in (weights or {}).items()}}
        self.ignore_index, self.avg_non_ignore = int(ignore_index), bool(avg_non_ignore)
        self.relation_temperature, self.kd_smoothness = float(relation_temperature), float(kd_smoothness)
        self.edge_size, self.border = int(edge_size), int(border)

    @classmethod
    def from_config(cls, cfg) -> "SSACriterion":
        """From ``MODEL.SSA.{LOSS_WEIGHTS, RELATION_TEMPERATURE, KD_SMOOTHNESS, EDGE_SIZE, BORDER}``
        and ``MODEL.SEM_SEG_HEAD.{IGNORE_VALUE, LOSS_AVG_NON_IGNORE}``.

        Raises:
            ValueError: ``MODEL.SEM_SEG_HEAD.LOSS_WEIGHT`` is not 1 (the main CE's weight is
                ``MODEL.SSA.LOSS_WEIGHTS.CE``).
        """
        s, h = cfg.MODEL.SSA, cfg.MODEL.SEM_SEG_HEAD
        if h.LOSS_WEIGHT != 1.0:
            raise ValueError("SSA heads weight every term with MODEL.SSA.LOSS_WEIGHTS (the main CE: "
                             "MODEL.SSA.LOSS_WEIGHTS.CE); MODEL.SEM_SEG_HEAD.LOSS_WEIGHT must stay 1.0, got "
                             f"{h.LOSS_WEIGHT}")
        return cls(weights={k.lower(): float(v) for k, v in s.LOSS_WEIGHTS.items()}, ignore_index=h.IGNORE_VALUE,
                   avg_non_ignore=h.LOSS_AVG_NON_IGNORE, relation_temperature=s.RELATION_TEMPERATURE,
                   kd_smoothness=s.KD_SMOOTHNESS, edge_size=s.EDGE_SIZE, border=s.BORDER)

    def forward(self, student_out: Mapping[str, torch.Tensor], teacher_out: Optional[Mapping[str, torch.Tensor]],
                coarse_logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            student_out: :meth:`~.classifier.SSAClassifier.forward`'s dict (O (B, K, h, w), Sp, Pp).
            teacher_out: :meth:`~.classifier.SSAClassifier.teacher_forward`'s dict, or None (no
                teacher branch: only the CE, coarse-CE and Dice terms).
            coarse_logits: (B, K, h, w) the coarse mask M.
            targets: (B, H, W) labels.
        Returns:
            {name in :data:`~.losses.SSA_LOSS_NAMES`: weighted scalar}; zero-weight terms absent.
        """
        w = self.weights
        num_masks = None
        if w["dice"] != 0 or (teacher_out is not None and w["teacher_dice"] != 0):
            num_masks = global_num_masks(targets, student_out["logits"].shape[1], self.ignore_index)
        return ssa_losses(student_out, teacher_out, coarse_logits, targets, weights=w,
                          ignore_index=self.ignore_index, avg_non_ignore=self.avg_non_ignore,
                          smoothness=self.kd_smoothness, edge_size=self.edge_size, border=self.border,
                          relation_temperature=self.relation_temperature, num_masks=num_masks)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, ignore_index={self.ignore_index}, avg_non_ignore={self.avg_non_ignore}"
