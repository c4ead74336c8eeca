"""Semantic heads with the SSA classifier (spec cgrseg_ssa.md B.2, B.6, B.7), registered in
detectron2's SEM_SEG_HEADS_REGISTRY:

* ``"CGRSegSSAHead"``: :class:`~.cgrseg.CGRSegHead` without its DPG head (as the paper does);
  the classifier feature is ``linear_fuse(decode_features(x))`` (stride 8), the coarse mask
  ``conv_seg(dropout(feat))``.
* ``"SemSegFPNSSAHead"``: detectron2's ``SemSegFPNHead``; the feature is the sum of the scale
  heads (stride ``common_stride``) before ``predictor``, which serves as ``conv_seg``. A
  ``Dropout2d(MODEL.SSA.DROPOUT)`` (default 0.1, mmseg heads' value; 0 = none) is added before
  the coarse classifier, since the FPN head has none.

The SSA logic lives once in :class:`SSAHeadBase`; a head supplies ``ssa_feature(features)``,
``classifier`` (its ``Conv2d(C, K, 1)``) and ``dropout``.

``forward(features, targets=None)``:
  * training -> ``(None, losses)``: the eight terms of :func:`~.losses.ssa_losses`, each under
    its own name (``loss_sem_seg``, ``loss_ssa_coarse_ce``, ``loss_ssa_teacher_ce``,
    ``loss_ssa_response_kd``, ``loss_ssa_dice``, ``loss_ssa_teacher_dice``,
    ``loss_ssa_semantic_kd``, ``loss_ssa_spatial_kd``), weighted by ``MODEL.SSA.LOSS_WEIGHTS``
    (without the teacher branch only the first, second and fifth);
  * inference -> ``(O (B, K, H, W) upsampled bilinearly by the feature stride, {})``; the teacher
    branch is never evaluated.

The final logits O at the feature stride also go through ``logits_tap`` (an ``nn.Identity``), the
tap for logit distillation (DSD's CSD: ``"sem_seg_head.logits_tap"``).

Teacher branch (``ssa.gt_center_*``, training only): absent when the head is built with
``with_teacher=False`` (``MODEL.SSA.WITH_TEACHER False``) or after :meth:`SSAHeadBase.drop_teacher`;
such a head ignores ``gt_*`` keys of loaded weights. :func:`strip_ssa_teacher` removes them from
a state dict (for export).
"""
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead
from detectron2.utils import comm

from ..cgrseg.head import CGRSegHead
from .classifier import TEACHER_MODULES, SSAClassifier
from .losses import DEFAULT_SSA_LOSS_WEIGHTS, count_masks, ssa_losses

__all__ = [
    "SSAHeadBase",
    "CGRSegSSAHead",
    "SemSegFPNSSAHead",
    "ssa_config_args",
    "is_ssa_teacher_key",
    "strip_ssa_teacher",
    "global_num_masks",
]


def is_ssa_teacher_key(key: str) -> bool:
    """True for a state-dict key of the SSA teacher branch: one of its dotted components is a
    teacher module name (``gt_center_content_proj``, ``gt_center_pos_proj``, ``gt_center_proj``),
    e.g. ``sem_seg_head.ssa.gt_center_proj.weight`` or the official ``decode_head.gt_center_proj.weight``."""
    return any(part in TEACHER_MODULES for part in key.split("."))


def strip_ssa_teacher(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """A copy of ``state_dict`` without the SSA teacher-branch keys (see :func:`is_ssa_teacher_key`);
    the result loads strictly into a model built with ``MODEL.SSA.WITH_TEACHER False``."""
    return {k: v for k, v in state_dict.items() if not is_ssa_teacher_key(k)}


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


def ssa_config_args(cfg) -> Dict[str, Any]:
    """The SSA keyword arguments of the heads' constructors, from ``cfg.MODEL.SSA``.

    Raises:
        ValueError: ``MODEL.SEM_SEG_HEAD.LOSS_WEIGHT`` is not 1 (the main CE's weight is
            ``MODEL.SSA.LOSS_WEIGHTS.CE``).
    """
    s = cfg.MODEL.SSA
    if cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT != 1.0:
        raise ValueError("SSA heads weight every term with MODEL.SSA.LOSS_WEIGHTS (the main CE: "
                         "MODEL.SSA.LOSS_WEIGHTS.CE); MODEL.SEM_SEG_HEAD.LOSS_WEIGHT must stay 1.0, got "
                         f"{cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT}")
    return {
        "temperature": s.TEMPERATURE,
        "relation_temperature": s.RELATION_TEMPERATURE,
        "kd_smoothness": s.KD_SMOOTHNESS,
        "edge_size": s.EDGE_SIZE,
        "border": s.BORDER,
        "loss_weights": {k.lower(): float(v) for k, v in s.LOSS_WEIGHTS.items()},
        "with_teacher": s.WITH_TEACHER,
        "avg_non_ignore": cfg.MODEL.SEM_SEG_HEAD.LOSS_AVG_NON_IGNORE,
    }


class SSAHeadBase:
    """Mixin holding the SSA logic of an SSA head (put it first among the bases).

    A subclass calls :meth:`_init_ssa` at the end of its ``__init__`` and provides:
      * ``ssa_feature(features) -> (B, C, h, w)``: S_f, the base head's last feature;
      * ``classifier``: the ``Conv2d(C, K, 1)`` giving the coarse mask (its weight is S);
      * ``dropout``: the module applied to S_f before ``classifier`` (Dropout2d or Identity);
      * ``common_stride`` (the stride of S_f) and ``ignore_value``.
    """

    ssa: SSAClassifier
    logits_tap: nn.Module
    common_stride: int
    ignore_value: int

    def _init_ssa(self, *, channels: int, num_classes: int, temperature: float = 15.0,
                  relation_temperature: float = 15.0, kd_smoothness: float = 0.5, edge_size: int = 3,
                  border: int = 6, loss_weights: Optional[Mapping[str, float]] = None,
                  with_teacher: bool = True, avg_non_ignore: bool = True) -> None:
        unknown = set(loss_weights or {}) - set(DEFAULT_SSA_LOSS_WEIGHTS)
        if unknown:
            raise KeyError(f"MODEL.SSA.LOSS_WEIGHTS: unknown key(s) {sorted(k.upper() for k in unknown)}; "
                           f"valid: {sorted(k.upper() for k in DEFAULT_SSA_LOSS_WEIGHTS)}")
        self.ssa = SSAClassifier(channels, num_classes, temperature=temperature, with_teacher=with_teacher,
                                 ignore_index=self.ignore_value)
        self.logits_tap = nn.Identity()
        self.relation_temperature, self.kd_smoothness = float(relation_temperature), float(kd_smoothness)
        self.edge_size, self.border = int(edge_size), int(border)
        self.loss_weights = {**DEFAULT_SSA_LOSS_WEIGHTS, **(loss_weights or {})}
        self.avg_non_ignore = avg_non_ignore
        self._register_load_state_dict_pre_hook(self._skip_teacher_keys)

    # ----------------------------------------------------------------------------- teacher
    @property
    def with_teacher(self) -> bool:
        return self.ssa.with_teacher

    def drop_teacher(self):
        """Delete the SSA teacher branch (inference / export); returns self."""
        self.ssa.drop_teacher()
        return self

    def _skip_teacher_keys(self, state_dict, prefix, *args) -> None:
        """Load-state-dict pre-hook: without a teacher branch, drop its keys from the input."""
        if not self.with_teacher:
            for key in [k for k in state_dict if k.startswith(prefix) and is_ssa_teacher_key(k[len(prefix):])]:
                del state_dict[key]

    # ----------------------------------------------------------------------------- forward
    @property
    def classifier(self) -> nn.Conv2d:
        raise NotImplementedError

    def ssa_feature(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def ssa_outputs(self, features: Dict[str, torch.Tensor]
                    ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """Feature, coarse mask and student classifier outputs.

        Returns:
            feat S_f (B, C, h, w); coarse mask M = classifier(dropout(S_f)) (B, K, h, w); the dict of
            :meth:`SSAClassifier.forward` whose ``logits`` O (B, K, h, w) went through ``logits_tap``.
        """
        feat = self.ssa_feature(features)
        conv = self.classifier
        coarse = conv(self.dropout(feat))
        out = self.ssa(feat, coarse, conv.weight)
        out["logits"] = self.logits_tap(out["logits"])
        return feat, coarse, out

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Final logits O at the feature stride: (B, K, h, w)."""
        return self.ssa_outputs(features)[2]["logits"]

    def forward(self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None
                ) -> Tuple[Optional[torch.Tensor], Dict[str, torch.Tensor]]:
        """features: the backbone's maps; targets: (B, H, W) labels (training).

        Returns:
            training: (None, {loss name: weighted scalar}); inference: (logits (B, K, h·s, w·s)
            with s = ``common_stride``, {}).
        """
        feat, coarse, out = self.ssa_outputs(features)
        logits = out["logits"]
        if not self.training:
            size = (logits.shape[-2] * self.common_stride, logits.shape[-1] * self.common_stride)
            return F.interpolate(logits, size=size, mode="bilinear", align_corners=False), {}
        if targets is None:
            raise ValueError(f"{type(self).__name__}: targets (B, H, W) are required in training mode")
        return None, self.ssa_training_losses(feat, coarse, out, targets)

    def ssa_training_losses(self, feat: torch.Tensor, coarse: torch.Tensor, out: Dict[str, torch.Tensor],
                            targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Runs the teacher branch (when built) and returns the weighted SSA losses.

        Args:
            feat: (B, C, h, w) S_f; coarse: (B, K, h, w) M; out: the student outputs;
            targets: (B, H, W) labels.
        """
        teacher = None
        if self.with_teacher:
            teacher = self.ssa.teacher_forward(feat, out["pos_feat"], self.classifier.weight, targets)
        num_masks = None
        if self.loss_weights["dice"] != 0 or (teacher is not None and self.loss_weights["teacher_dice"] != 0):
            num_masks = global_num_masks(targets, self.ssa.num_classes, self.ignore_value)
        return ssa_losses(
            out, teacher, coarse, targets,
            weights=self.loss_weights,
            ignore_index=self.ignore_value,
            avg_non_ignore=self.avg_non_ignore,
            align_corners=False,
            smoothness=self.kd_smoothness,
            edge_size=self.edge_size,
            border=self.border,
            relation_temperature=self.relation_temperature,
            num_masks=num_masks,
        )


@SEM_SEG_HEADS_REGISTRY.register()
class CGRSegSSAHead(SSAHeadBase, CGRSegHead):
    """CGRSeg head (no DPG) + SSA classifier. S_f = linear_fuse(decode_features(x)), (B, C, H/8, W/8).

    Parameters: the CGRSeg head without ``lgc`` plus ``ssa.*`` (C=256, K=150: 303,616 inference +
    262,656 teacher). Built from ``MODEL.CGRSEG.*`` (``USE_DPG`` must be False) and ``MODEL.SSA.*``.
    """

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, num_classes: int,
                 ssa_args: Optional[Mapping[str, Any]] = None, **cgrseg_args):
        """
        Args:
            input_shape, num_classes, **cgrseg_args: :class:`CGRSegHead`'s arguments (``use_dpg``
                must be False or absent).
            ssa_args: keyword arguments of :meth:`SSAHeadBase._init_ssa` (see :func:`ssa_config_args`).
        """
        if cgrseg_args.pop("use_dpg", False):
            raise ValueError("CGRSegSSAHead: the DPG head is removed with SSA (use_dpg must be False)")
        ssa_args = dict(ssa_args or {})
        avg = ssa_args.pop("avg_non_ignore", cgrseg_args.pop("avg_non_ignore", True))
        cgrseg_args.pop("loss_weight", None)
        super().__init__(input_shape, num_classes=num_classes, use_dpg=False, avg_non_ignore=avg, **cgrseg_args)
        self._init_ssa(channels=self.channels, num_classes=num_classes, avg_non_ignore=avg, **ssa_args)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        if cfg.MODEL.CGRSEG.USE_DPG:
            raise ValueError("SEM_SEG_HEAD.NAME 'CGRSegSSAHead' replaces the DPG head by SSA: set "
                             "MODEL.CGRSEG.USE_DPG False (as CGRSeg-{B,L}-SSA.yaml do)")
        ret = CGRSegHead.from_config(cfg, input_shape)
        ret.pop("loss_weight")
        ret["ssa_args"] = ssa_config_args(cfg)
        return ret

    @property
    def classifier(self) -> nn.Conv2d:
        return self.conv_seg

    def ssa_feature(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.linear_fuse(self.decode_features(features))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("CGRSegSSAHead classifies with SSA: use layers(features) or forward()")

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        raise NotImplementedError("CGRSegSSAHead: the losses come from forward() in training mode")


@SEM_SEG_HEADS_REGISTRY.register()
class SemSegFPNSSAHead(SSAHeadBase, SemSegFPNHead):
    """Detectron2's Semantic-FPN head + SSA classifier. S_f = Σ scale_heads (B, CONVS_DIM, H/s, W/s)
    with s = ``COMMON_STRIDE``; ``predictor`` is the coarse classifier; ``dropout`` =
    Dropout2d(``MODEL.SSA.DROPOUT``) (Identity for 0). State-dict keys of the base head are kept,
    so a trained ``SemSegFPNHead`` initialises it (``ssa.*`` then start fresh).
    """

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, num_classes: int, dropout: float = 0.1,
                 ssa_args: Optional[Mapping[str, Any]] = None, **fpn_args):
        """
        Args:
            input_shape, num_classes, **fpn_args: ``SemSegFPNHead``'s arguments.
            dropout: Dropout2d probability before the coarse classifier (0 = none).
            ssa_args: keyword arguments of :meth:`SSAHeadBase._init_ssa`.
        """
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MODEL.SSA.DROPOUT must be in [0, 1), got {dropout}")
        fpn_args.pop("loss_weight", None)
        super().__init__(input_shape, num_classes=num_classes, **fpn_args)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self._init_ssa(channels=self.predictor.in_channels, num_classes=num_classes, **dict(ssa_args or {}))

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = SemSegFPNHead.from_config(cfg, input_shape)
        missing = [f for f in cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES if f not in input_shape]
        if missing:
            raise KeyError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES: {missing} not produced by the backbone "
                           f"(it gives {sorted(input_shape)})")
        ret.pop("loss_weight")
        ret["dropout"] = cfg.MODEL.SSA.DROPOUT
        ret["ssa_args"] = ssa_config_args(cfg)
        return ret

    @property
    def classifier(self) -> nn.Conv2d:
        return self.predictor

    def ssa_feature(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        x = None
        for i, f in enumerate(self.in_features):
            y = self.scale_heads[i](features[f])
            x = y if x is None else x + y
        return x

    def losses(self, predictions: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        raise NotImplementedError("SemSegFPNSSAHead: the losses come from forward() in training mode")
