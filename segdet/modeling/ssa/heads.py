"""Semantic heads with the SSA classifier (spec cgrseg_ssa.md B.2, B.6, B.7), registered in
detectron2's SEM_SEG_HEADS_REGISTRY. An SSA head composes, as Mask2Former's heads do:

* a base **decoder**, whose feature function gives S_f (B, C, h, w) at stride ``common_stride``;
* its **coarse classifier** ``Conv2d(C, K, 1)`` (weight S) and the dropout before it;
* the :class:`~.classifier.SSAClassifier` ``ssa`` (student and GT-guided teacher prototypes);
* an :class:`~.criterion.SSACriterion` ``criterion``, built in ``from_config`` from
  ``MODEL.SSA.LOSS_WEIGHTS`` etc.

Heads:

* ``"CGRSegSSAHead"``: :class:`~..cgrseg.head.CGRSegHead` without its DPG head (as the paper
  does); S_f = ``linear_fuse(decoder.decode_features(x))`` (stride 8), M = ``conv_seg(dropout(S_f))``.
* ``"SemSegFPNSSAHead"``: detectron2's ``SemSegFPNHead`` (:class:`SemSegFPNDecoder`); S_f is the
  sum of the scale heads (stride ``common_stride``) and ``predictor`` is the coarse classifier. A
  ``Dropout2d(MODEL.SSA.DROPOUT)`` (default 0.1, mmseg heads' value; 0 = none) is added before
  it, since the FPN head has none.
* ``"DeepLabV3PlusSSAHead"``: detectron2's ``DeepLabV3PlusHead`` (``detectron2.projects.deeplab``)
  with global ASPP image pooling (:class:`DeepLabV3PlusGlobalPoolHead`, also registered as a
  plain head); S_f is the last decoder stage's output (its fuse convs on the lowest-stride
  feature: stride ``common_stride``, CONVS_DIM channels), the input of ``predictor``, the coarse
  classifier. The official SSA code has no DeepLabV3+ variant; as in its seven heads, S_f is the
  last feature before the classifier, and ``Dropout2d(MODEL.SSA.DROPOUT)`` (mmseg's
  ``dropout_ratio`` 0.1) precedes the classifier, as for the FPN head.

State-dict keys: the decoder's sub-modules are registered on the SSA head itself (under the base
head's own names: ``trans``, ``SIM``, ..., ``conv_seg``; ``p2``, ..., ``predictor``;
``decoder.<feature>.*``, ``predictor``), and the base head itself is the plain reference
``base_head`` (also ``decoder`` for the CGRSeg and FPN heads; DeepLabV3PlusHead's own ``decoder``
is its ModuleDict of stages), not a sub-module. The keys are thus the base head's keys plus
``ssa.*``, the names of the official checkpoints (``decode_head.X -> sem_seg_head.X``), and a
trained base head initialises an SSA head.

``forward(features, targets=None)``:
  * training -> ``(None, criterion(O, teacher, M, targets))``: the eight weighted terms of
    :func:`~.losses.ssa_losses` (without the teacher branch only ``loss_sem_seg``,
    ``loss_ssa_coarse_ce``, ``loss_ssa_dice``);
  * inference -> ``(O (B, K, H, W) upsampled bilinearly by the feature stride, {})``; the teacher
    branch is never evaluated.

The final logits O at the feature stride go through ``logits_tap`` (an ``nn.Identity``), the tap
for logit distillation (DSD's CSD: ``"sem_seg_head.logits_tap"``).

Teacher branch (``ssa.gt_center_*``, training only): absent when built with ``with_teacher=False``
(``MODEL.SSA.WITH_TEACHER False``) or after :meth:`SSAHead.drop_teacher`; such a head ignores
``gt_*`` keys of loaded weights. :func:`strip_ssa_teacher` removes them from a state dict (export).
"""
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead
from detectron2.projects.deeplab.semantic_seg import DeepLabV3PlusHead  # registers "DeepLabV3PlusHead"

from ..backbone.features import check_in_features
from ..cgrseg.head import CGRSegHead
from .classifier import TEACHER_MODULES, SSAClassifier
from .criterion import SSACriterion, global_num_masks

__all__ = [
    "SSAHead",
    "CGRSegSSAHead",
    "SemSegFPNSSAHead",
    "SemSegFPNDecoder",
    "DeepLabV3PlusSSAHead",
    "DeepLabV3PlusGlobalPoolHead",
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


class SemSegFPNDecoder(SemSegFPNHead):
    """Detectron2's ``SemSegFPNHead`` (same arguments, modules and behaviour) with its feature
    part exposed: ``decode_features(features)`` -> Σ_i scale_heads[i](features[f_i]),
    (B, CONVS_DIM, H/s, W/s) with s = ``common_stride``, the input of ``predictor``."""

    def decode_features(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        x = None
        for i, f in enumerate(self.in_features):
            y = self.scale_heads[i](features[f])
            x = y if x is None else x + y
        return x


class SSAHead(nn.Module):
    """decoder -> S_f -> coarse classifier M -> SSA classifier O (+ teacher) -> criterion.

    Subclasses (the registered heads) build the parts and may override :meth:`ssa_feature`
    (default: ``decoder.decode_features``).
    """

    def __init__(self, decoder: nn.Module, *, classifier: str, ssa: SSAClassifier, criterion: SSACriterion,
                 dropout: Optional[nn.Module] = None):
        """
        Args:
            decoder: the base head, with ``decode_features``, ``common_stride`` and ``ignore_value``;
                its sub-modules become this head's (same names), except its ``logits_tap``. Kept
                as the plain reference ``base_head`` (and ``decoder``, unless the base head has
                a sub-module of that name).
            classifier: the name of the decoder's ``Conv2d(C, K, 1)`` coarse classifier.
            ssa: the SSA classifier for C channels and K classes.
            criterion: the training losses; its ``ignore_index`` must be the decoder's ``ignore_value``.
            dropout: the module before the coarse classifier, if the decoder has no ``dropout``.
        """
        super().__init__()
        if criterion.ignore_index != decoder.ignore_value:
            raise ValueError(f"SSA head: criterion.ignore_index={criterion.ignore_index} differs from the "
                             f"head's ignore_value={decoder.ignore_value}")
        self.replace_decoder(decoder)
        if dropout is not None:
            self.dropout = dropout
        self.classifier_name = classifier
        self.common_stride, self.ignore_value = decoder.common_stride, decoder.ignore_value
        self.ssa = ssa
        self.logits_tap = nn.Identity()
        self.criterion = criterion
        self._register_load_state_dict_pre_hook(self._skip_teacher_keys)

    def replace_decoder(self, decoder: nn.Module) -> None:
        """Make ``decoder`` the base head (e.g. its fused inference version): a reference, not a
        sub-module; its sub-modules are registered on this head under their own names."""
        object.__setattr__(self, "base_head", decoder)
        if "decoder" not in dict(decoder.named_children()):  # DeepLabV3PlusHead has a ``decoder`` ModuleDict
            object.__setattr__(self, "decoder", decoder)  # the name the CGRSeg / FPN SSA heads use
        for name, module in decoder.named_children():
            if name != "logits_tap":
                setattr(self, name, module)

    @property
    def classifier(self) -> nn.Conv2d:
        """The coarse classifier ``Conv2d(C, K, 1)``; its weight is the prototype basis S."""
        return getattr(self, self.classifier_name)

    def train(self, mode: bool = True) -> "SSAHead":
        self.base_head.train(mode)  # not a sub-module; a fused one refuses training
        return super().train(mode)

    # ----------------------------------------------------------------------------- teacher
    @property
    def with_teacher(self) -> bool:
        return self.ssa.with_teacher

    def drop_teacher(self) -> "SSAHead":
        """Delete the SSA teacher branch (inference / export); returns self."""
        self.ssa.drop_teacher()
        return self

    def _skip_teacher_keys(self, state_dict, prefix, *args) -> None:
        """Load-state-dict pre-hook: without a teacher branch, drop its keys from the input."""
        if not self.with_teacher:
            for key in [k for k in state_dict if k.startswith(prefix) and is_ssa_teacher_key(k[len(prefix):])]:
                del state_dict[key]

    # ----------------------------------------------------------------------------- forward
    def ssa_feature(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """S_f (B, C, h, w), the classifier's input."""
        return self.base_head.decode_features(features)

    def ssa_outputs(self, features: Dict[str, torch.Tensor]
                    ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """Feature, coarse mask and student classifier outputs.

        Returns:
            feat S_f (B, C, h, w); coarse mask M = classifier(dropout(S_f)) (B, K, h, w); the dict of
            :meth:`SSAClassifier.forward` whose ``logits`` O (B, K, h, w) went through ``logits_tap``.
        """
        feat = self.ssa_feature(features)
        coarse = self.classifier(self.dropout(feat))
        out = self.ssa(feat, coarse, self.classifier.weight)
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
        teacher = None
        if self.with_teacher:
            teacher = self.ssa.teacher_forward(feat, out["pos_feat"], self.classifier.weight, targets)
        return None, self.criterion(out, teacher, coarse, targets)


def _ssa_from_config(cfg) -> Dict[str, Any]:
    """The SSA arguments common to both heads: criterion, temperature, with_teacher."""
    return {"criterion": SSACriterion.from_config(cfg), "temperature": cfg.MODEL.SSA.TEMPERATURE,
            "with_teacher": cfg.MODEL.SSA.WITH_TEACHER}


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"MODEL.SSA.DROPOUT must be in [0, 1), got {dropout}")


def _predictor_ssa_parts(decoder: nn.Module, num_classes: int, dropout: float, criterion: Optional["SSACriterion"],
                         temperature: float, with_teacher: bool) -> Dict:
    """:class:`SSAHead`'s parts for a base head whose ``predictor`` conv is the coarse classifier:
    the SSA classifier on the predictor's input, the criterion (default: ignoring the head's
    ignore value) and a Dropout2d before the coarse classifier (0 = none)."""
    ssa = SSAClassifier(decoder.predictor.in_channels, num_classes, temperature=temperature,
                        with_teacher=with_teacher, ignore_index=decoder.ignore_value)
    criterion = criterion if criterion is not None else SSACriterion(ignore_index=decoder.ignore_value)
    return {"classifier": "predictor", "ssa": ssa, "criterion": criterion,
            "dropout": nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()}


@SEM_SEG_HEADS_REGISTRY.register()
class CGRSegSSAHead(SSAHead):
    """CGRSeg head (no DPG) + SSA classifier. S_f = linear_fuse(decoder.decode_features(x)),
    (B, C, H/8, W/8); M = conv_seg(dropout(S_f)).

    Parameters: the CGRSeg head without ``lgc`` plus ``ssa.*`` (C=256, K=150: 303,616 inference +
    262,656 teacher). Built from ``MODEL.CGRSEG.*`` (``USE_DPG`` must be False) and ``MODEL.SSA.*``.
    """

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, num_classes: int,
                 criterion: Optional[SSACriterion] = None, temperature: float = 15.0, with_teacher: bool = True,
                 **cgrseg_args):
        """
        Args:
            input_shape, num_classes, **cgrseg_args: :class:`CGRSegHead`'s arguments (``use_dpg``
                must be False or absent; its loss settings are unused).
            criterion: the losses; default ``SSACriterion(ignore_index=ignore_value)``.
            temperature, with_teacher: :class:`SSAClassifier`'s.
        """
        if cgrseg_args.pop("use_dpg", False):
            raise ValueError("CGRSegSSAHead: the DPG head is removed with SSA (use_dpg must be False)")
        decoder = CGRSegHead(input_shape, num_classes=num_classes, use_dpg=False, **cgrseg_args)
        ssa = SSAClassifier(decoder.channels, num_classes, temperature=temperature, with_teacher=with_teacher,
                            ignore_index=decoder.ignore_value)
        criterion = criterion if criterion is not None else SSACriterion(ignore_index=decoder.ignore_value)
        super().__init__(decoder, classifier="conv_seg", ssa=ssa, criterion=criterion)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        if cfg.MODEL.CGRSEG.USE_DPG:
            raise ValueError("SEM_SEG_HEAD.NAME 'CGRSegSSAHead' replaces the DPG head by SSA: set "
                             "MODEL.CGRSEG.USE_DPG False (as CGRSeg-{B,L}-SSA.yaml do)")
        ret = CGRSegHead.from_config(cfg, input_shape)
        for key in ("loss_weight", "avg_non_ignore"):  # the criterion's
            ret.pop(key)
        ret.update(_ssa_from_config(cfg))
        return ret

    def ssa_feature(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """S_f = linear_fuse(decode_features(features)): (B, C, H/8, W/8)."""
        return self.linear_fuse(self.base_head.decode_features(features))


@SEM_SEG_HEADS_REGISTRY.register()
class SemSegFPNSSAHead(SSAHead):
    """Detectron2's Semantic-FPN head + SSA classifier. S_f = Σ scale_heads (B, CONVS_DIM, H/s, W/s)
    with s = ``COMMON_STRIDE``; ``predictor`` is the coarse classifier; ``dropout`` =
    Dropout2d(``MODEL.SSA.DROPOUT``) (Identity for 0). State-dict keys of the base head are kept,
    so a trained ``SemSegFPNHead`` initialises it (``ssa.*`` then start fresh).
    """

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, num_classes: int, dropout: float = 0.1,
                 criterion: Optional[SSACriterion] = None, temperature: float = 15.0, with_teacher: bool = True,
                 **fpn_args):
        """
        Args:
            input_shape, num_classes, **fpn_args: ``SemSegFPNHead``'s arguments (its loss settings
                are unused).
            dropout: Dropout2d probability before the coarse classifier (0 = none).
            criterion: the losses; default ``SSACriterion(ignore_index=ignore_value)``.
            temperature, with_teacher: :class:`SSAClassifier`'s.
        """
        _check_dropout(dropout)
        decoder = SemSegFPNDecoder(input_shape, num_classes=num_classes, **fpn_args)
        super().__init__(decoder, **_predictor_ssa_parts(decoder, num_classes, dropout, criterion, temperature,
                                                         with_teacher))

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        check_in_features("MODEL.SEM_SEG_HEAD.IN_FEATURES", cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES, input_shape)
        ret = SemSegFPNHead.from_config(cfg, input_shape)
        ret.pop("loss_weight")  # the criterion's
        ret["dropout"] = cfg.MODEL.SSA.DROPOUT
        ret.update(_ssa_from_config(cfg))
        return ret


@SEM_SEG_HEADS_REGISTRY.register()
class DeepLabV3PlusGlobalPoolHead(DeepLabV3PlusHead):
    """Detectron2's ``DeepLabV3PlusHead`` (same arguments, modules, state-dict keys, losses and
    outputs) whose ASPP image pooling is global at any input size (``train_size=None``: mmseg's
    ASPP, as in the heads the official SSA code wraps). Detectron2's ``from_config`` instead pools
    over the training crop's grid when ``INPUT.CROP.ENABLED``, which refuses every input whose
    stride-s map is not a multiple of that grid (whole-image test, other input sizes); and
    segdet's ``INPUT.CROP.SIZE`` loads as floats (its default's type), which ``AvgPool2d`` refuses.

    ``decode_features(features)`` -> the last decoder stage's output, (B, decoder_channels[0],
    H/s, W/s) with s the stride of the first (lowest-stride) feature: the input of ``predictor``.
    """

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = DeepLabV3PlusHead.from_config(cfg, input_shape)
        ret["train_size"] = None  # global image pooling
        return ret

    def decode_features(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        y = None
        for f in self.in_features[::-1]:  # ASPP on the highest-stride feature, then top-down
            proj = self.decoder[f]["project_conv"](features[f])
            if self.decoder[f]["fuse_conv"] is None:
                y = proj
            else:
                y = F.interpolate(y, size=proj.shape[2:], mode="bilinear", align_corners=False)
                y = self.decoder[f]["fuse_conv"](torch.cat([proj, y], dim=1))
        return y


@SEM_SEG_HEADS_REGISTRY.register()
class DeepLabV3PlusSSAHead(SSAHead):
    """Detectron2's DeepLabV3+ head (global ASPP image pooling: :class:`DeepLabV3PlusGlobalPoolHead`)
    + SSA classifier. S_f = the last decoder stage's output
    (B, CONVS_DIM, H/s, W/s), s = ``COMMON_STRIDE`` (the low-level feature's stride); ``predictor``
    is the coarse classifier; ``dropout`` = Dropout2d(``MODEL.SSA.DROPOUT``) (Identity for 0).
    State-dict keys of the base head are kept (``decoder.<feature>.project_conv / fuse_conv``,
    ``predictor``), so a trained ``DeepLabV3PlusHead`` initialises it (``ssa.*`` then start fresh).
    Built from ``MODEL.SEM_SEG_HEAD.*`` (DeepLab keys; ``LOSS_TYPE`` must be "cross_entropy": the
    SSA criterion gives the losses) and ``MODEL.SSA.*``.

    Parameters: the base head plus ``ssa.*`` (the street sample, C=64, K=3: 17,344 inference +
    16,512 teacher).
    """

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, num_classes: int, dropout: float = 0.1,
                 criterion: Optional[SSACriterion] = None, temperature: float = 15.0, with_teacher: bool = True,
                 **deeplab_args):
        """
        Args:
            input_shape, num_classes, **deeplab_args: ``DeepLabV3PlusHead``'s arguments (its loss
                settings are unused).
            dropout: Dropout2d probability before the coarse classifier (0 = none).
            criterion: the losses; default ``SSACriterion(ignore_index=ignore_value)``.
            temperature, with_teacher: :class:`SSAClassifier`'s.
        """
        _check_dropout(dropout)
        decoder = DeepLabV3PlusGlobalPoolHead(input_shape, num_classes=num_classes, **deeplab_args)
        super().__init__(decoder, **_predictor_ssa_parts(decoder, num_classes, dropout, criterion, temperature,
                                                         with_teacher))

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        check_in_features("MODEL.SEM_SEG_HEAD.IN_FEATURES", head.IN_FEATURES, input_shape)
        if len(head.IN_FEATURES) < 2 or len(head.PROJECT_CHANNELS) != len(head.IN_FEATURES) - 1:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS: expected one entry per low-level feature "
                             f"(IN_FEATURES {list(head.IN_FEATURES)} minus the ASPP input), got "
                             f"{list(head.PROJECT_CHANNELS)}")
        if head.LOSS_TYPE != "cross_entropy":
            raise ValueError(f"MODEL.SEM_SEG_HEAD.LOSS_TYPE: the SSA criterion computes the losses of "
                             f"'DeepLabV3PlusSSAHead', set it to 'cross_entropy' (got {head.LOSS_TYPE!r})")
        ret = DeepLabV3PlusGlobalPoolHead.from_config(cfg, input_shape)
        for key in ("loss_weight", "loss_type"):  # the criterion's
            ret.pop(key)
        ret["dropout"] = cfg.MODEL.SSA.DROPOUT
        ret.update(_ssa_from_config(cfg))
        return ret
