"""DRKD: Dual Relation Knowledge Distillation for detectors.

Three terms on the FPN outputs of student and teacher:
  * pixel-wise relation: a GloRe unit per level on each side, a 1×1 adapter on the student side,
    un-squared L2 distance;
  * instance-wise relation: GT boxes RoIAligned (each image's boxes from its own image) on the
    instance levels, an instance relation module per level on each side, a 1×1 adapter on the
    student side, L2 distance per image;
  * instance feature imitation ("fore", two-stage only): L2 distance between the adapted student
    and the teacher RoI features.

Normalisation (``normalization``):
  * ``"official"``: the DRKD code's un-squared L2 norms, made batch-size invariant:
    equal to the official value at ``ref_images_per_device`` images per device. They grow as the
    square root of the element count, so the official weights mean what they mean only at COCO
    scale.
  * ``"scale_aware"``: each un-squared norm divided by sqrt(its element count / the element count
    at the reference shape), i.e. sqrt(reference count) × the root mean square of the
    difference. Reference: a padded ``ref_input_size`` (H, W) input, ``ref_images_per_device``
    images, ``ref_channels`` channels, so a stride-s level has ⌈H/s⌉×⌈W/s⌉ positions; instance
    terms: the image's own M_b instances × ``ref_channels`` × 3×3 (the instance count is content,
    not size: it does not change with the input size, and keeping it makes the two forms equal on
    every batch at the reference shape). At the reference shape the two forms are equal exactly.

Every module here is trainable (the teacher-side GloRe and relation modules too, as in the
official code) unless ``freeze_teacher_side``.
"""
from typing import Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.utils.events import get_event_storage

from ..taps import resolve_module
from ..losses.base import DistillLoss
from .functional import (
    NORMALIZATIONS,
    REF_ROI_SIZE,
    batch_normalized_l2,
    filter_seed,
    per_image_l2,
    reference_level_size,
    roi_align_stacked,
    size_factor,
)
from . import fast as fast_ops
from .glore import GloReUnit
from ..losses.registry import DISTILL_LOSS_REGISTRY
from .relation import RELATION_FILTERS, InstanceRelation

__all__ = ["DRKD", "DRKDLoss"]


def _current_iteration() -> int:
    """The trainer's iteration from the active EventStorage, or 0 outside training."""
    try:
        return int(get_event_storage().iter)
    except AssertionError:
        return 0


def _backbone_shapes(model: nn.Module, tap: str, side: str) -> Dict:
    module = resolve_module(model, tap, side)
    if not hasattr(module, "output_shape"):
        raise ValueError(f"DISTILL.DRKD: the {side} tap {tap!r} has no output_shape(); DRKD needs "
                         "a detectron2 Backbone (e.g. the FPN 'backbone') that outputs named levels")
    return dict(module.output_shape())


@DISTILL_LOSS_REGISTRY.register()
class DRKD(DistillLoss):
    """Registered as ``"DRKD"`` (``cfg.DISTILL.LOSSES``).

    ``forward(student_feats, teacher_feats, batched_inputs)`` reads the FPN dicts
    ``student_feats[student_tap]`` / ``teacher_feats[teacher_tap]`` ({level: (B, C, H, W)}, equal
    sizes on both sides) and the GT boxes ``batched_inputs[b]["instances"].gt_boxes.tensor``
    (M_b, 4) and returns, each already multiplied by its weight (a term whose weight is 0 is
    neither built nor returned), with r = ref_images_per_device / B:

      * ``"drkd_pixel"`` = w_pixel · Σ_l c_l · sqrt(r · Σ_b ‖A_l(G^s_l(S_l))_b − G^t_l(T_l)_b‖²)
      * ``"drkd_inst"``  = w_inst · r · Σ_{l ∈ inst_levels} c'_l Σ_{b: M_b>0} ‖A'_l(z^s_lb) − z^t_lb‖
      * ``"drkd_fore"``  = w_fore · r · Σ_{l ∈ inst_levels} c'_l Σ_{b: M_b>0} ‖A''_l(X^s_lb) − X^t_lb‖

    where X_{l,b} = RoIAlign(F_l[b], boxes_b) (M_b, C, k, k) and z = InstanceRelation(X). Images
    without boxes contribute 0; a batch without any box returns 0·Σ(parameters) so that every
    parameter still takes part in the graph (DDP). The size factors are 1 for ``"official"``;
    for ``"scale_aware"``, with the level's teacher channels C, map H×W and reference map
    H_l×W_l = ⌈H_ref/s⌉×⌈W_ref/s⌉:
    c_l = sqrt(C_ref·H_l·W_l / (C·H·W)) and c'_l = sqrt(C_ref·3·3 / (C·k·k)).
    """

    @configurable
    def __init__(
        self,
        *,
        levels: Sequence[str],
        glore_mid: Sequence[int],
        strides: Mapping[str, int],
        student_channels: Mapping[str, int],
        teacher_channels: Mapping[str, int],
        inst_levels: Sequence[str] = ("p2", "p3"),
        roi_size: int = 3,
        relation_filter: str = "random_fc",
        w_pixel: float = 1e-3,
        w_inst: float = 4e-3,
        w_fore: float = 2.4e-3,
        ref_images_per_device: float = 2,
        glore_zero_init_bn: bool = False,
        glore_normalize: bool = False,
        freeze_teacher_side: bool = False,
        seed: int = 0,
        student_tap: str = "backbone",
        teacher_tap: str = "backbone",
        normalization: str = "official",
        ref_input_size: Sequence[int] = (800, 1216),
        ref_channels: int = 256,
        fast: bool = False,
    ):
        """
        Args:
            levels: FPN levels of the pixel-wise term, e.g. ("p2", ..., "p6").
            glore_mid: GloRe nodes per entry of ``levels`` (64, 64, 256, 256, 256).
            strides / student_channels / teacher_channels: {level: value} for every level used.
            inst_levels: levels of the instance terms (the two finest).
            roi_size: k of the k×k RoIAlign.
            relation_filter: "random_fc", "learned" or "none" (see :class:`InstanceRelation`).
            w_pixel / w_inst / w_fore: term weights (0 disables a term).
            ref_images_per_device: images per device at which the normalised terms equal the
                official (un-normalised) ones.
            glore_zero_init_bn / glore_normalize: see :class:`GloReUnit`.
            freeze_teacher_side: teacher-side GloRe and relation modules get requires_grad=False
                (their BN still uses batch statistics).
            seed: seed of the "random_fc" filter, drawn per (seed, iteration, level, image).
            student_tap / teacher_tap: module names whose output is the FPN dict.
            normalization: "official" or "scale_aware" (see the module docstring).
            ref_input_size / ref_channels: the reference shape of "scale_aware", with
                ``ref_images_per_device``: padded input (H, W) and FPN channels.
            fast: the drop-ins of :mod:`segdet.distill.drkd.fast` (same parameters, values and
                gradients) for the GloRe units, the pixel adapters and the L2 norms.
        """
        super().__init__()
        levels, inst_levels = list(levels), list(inst_levels)
        if len(glore_mid) != len(levels):
            raise ValueError(f"DISTILL.DRKD.GLORE_MID has {len(glore_mid)} values for "
                             f"{len(levels)} DISTILL.DRKD.LEVELS {levels}")
        if relation_filter not in RELATION_FILTERS:
            raise ValueError(f"DISTILL.DRKD.RELATION_FILTER must be one of {RELATION_FILTERS}, "
                             f"got {relation_filter!r}")
        for name, value in (("W_PIXEL", w_pixel), ("W_INST", w_inst), ("W_FORE", w_fore)):
            if value < 0:
                raise ValueError(f"DISTILL.DRKD.{name} must be >= 0, got {value}")
        if ref_images_per_device <= 0:
            raise ValueError(f"DISTILL.DRKD.REF_IMAGES_PER_DEVICE must be > 0, got {ref_images_per_device}")
        if roi_size < 1:
            raise ValueError(f"DISTILL.DRKD.ROI_SIZE must be >= 1, got {roi_size}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"DISTILL.DRKD.NORMALIZATION must be one of {NORMALIZATIONS}, "
                             f"got {normalization!r}")
        if len(ref_input_size) != 2 or min(ref_input_size) <= 0:
            raise ValueError("DISTILL.DRKD.REF_INPUT_SIZE must be a padded input size (H, W) > 0, "
                             f"got {tuple(ref_input_size)}")
        if ref_channels <= 0:
            raise ValueError(f"DISTILL.DRKD.REF_CHANNELS must be > 0, got {ref_channels}")
        for level in dict.fromkeys(levels + inst_levels):
            for what, table in (("strides", strides), ("student_channels", student_channels),
                                ("teacher_channels", teacher_channels)):
                if level not in table:
                    raise KeyError(f"DRKD: level {level!r} missing from {what} (has {sorted(table)})")

        self.student_taps, self.teacher_taps = (student_tap,), (teacher_tap,)
        self.student_tap, self.teacher_tap = student_tap, teacher_tap
        self.levels = levels if w_pixel > 0 else []
        self.inst_levels = inst_levels if (w_inst > 0 or w_fore > 0) else []
        self.strides = {k: int(strides[k]) for k in dict.fromkeys(levels + inst_levels)}
        self.roi_size = int(roi_size)
        self.relation_filter = relation_filter
        self.w_pixel, self.w_inst, self.w_fore = float(w_pixel), float(w_inst), float(w_fore)
        self.ref_images = float(ref_images_per_device)
        self.seed = int(seed)
        self.normalization = normalization
        self.ref_input_size = (int(ref_input_size[0]), int(ref_input_size[1]))
        self.ref_channels = int(ref_channels)

        glore = dict(zero_init_bn=glore_zero_init_bn, normalize=glore_normalize)
        mids = dict(zip(levels, glore_mid))
        cs, ct = student_channels, teacher_channels
        self.fast = bool(fast)
        unit = fast_ops.FastGloReUnit if fast else GloReUnit
        conv = fast_ops.BmmConv1x1 if fast else (lambda c_in, c_out: nn.Conv2d(c_in, c_out, 1))
        self.l2_norm = fast_ops.l2_norm if fast else torch.linalg.vector_norm
        self.student_glore = nn.ModuleDict({l: unit(cs[l], mids[l], **glore) for l in self.levels})
        self.teacher_glore = nn.ModuleDict({l: unit(ct[l], mids[l], **glore) for l in self.levels})
        self.pixel_adapters = nn.ModuleDict({l: conv(cs[l], ct[l]) for l in self.levels})

        k2 = self.roi_size ** 2
        inst = self.inst_levels if w_inst > 0 else []
        fore = self.inst_levels if w_fore > 0 else []
        self.student_relation = nn.ModuleDict(
            {l: InstanceRelation(cs[l] * k2, relation_filter) for l in inst})
        self.teacher_relation = nn.ModuleDict(
            {l: InstanceRelation(ct[l] * k2, relation_filter) for l in inst})
        self.relation_adapters = nn.ModuleDict({l: nn.Conv2d(cs[l], ct[l], 1) for l in inst})
        self.fore_adapters = nn.ModuleDict({l: nn.Conv2d(cs[l], ct[l], 1) for l in fore})

        if freeze_teacher_side:
            for module in (self.teacher_glore, self.teacher_relation):
                module.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg, student: nn.Module, teacher: nn.Module):
        c = cfg.DISTILL.DRKD
        shapes = {"student": _backbone_shapes(student, c.STUDENT_TAP, "student"),
                  "teacher": _backbone_shapes(teacher, c.TEACHER_TAP, "teacher")}
        for key in ("LEVELS", "INST_LEVELS"):
            for side, shape in shapes.items():
                missing = [l for l in c.get(key) if l not in shape]
                if missing:
                    raise KeyError(f"DISTILL.DRKD.{key}: level(s) {missing} are not outputs of the "
                                   f"{side} backbone; available: {sorted(shape)}")
        used = list(dict.fromkeys(list(c.LEVELS) + list(c.INST_LEVELS)))
        for level in used:
            s_stride, t_stride = shapes["student"][level].stride, shapes["teacher"][level].stride
            if s_stride != t_stride:
                raise ValueError(f"DISTILL.DRKD: level {level!r} has stride {s_stride} in the student "
                                 f"but {t_stride} in the teacher; DRKD needs equal feature sizes")
        return {
            "levels": c.LEVELS,
            "glore_mid": c.GLORE_MID,
            "strides": {l: shapes["student"][l].stride for l in used},
            "student_channels": {l: shapes["student"][l].channels for l in used},
            "teacher_channels": {l: shapes["teacher"][l].channels for l in used},
            "inst_levels": c.INST_LEVELS,
            "roi_size": c.ROI_SIZE,
            "relation_filter": c.RELATION_FILTER,
            "w_pixel": c.W_PIXEL,
            "w_inst": c.W_INST,
            "w_fore": c.W_FORE,
            "ref_images_per_device": c.REF_IMAGES_PER_DEVICE,
            "glore_zero_init_bn": c.GLORE_ZERO_INIT_BN,
            "glore_normalize": c.GLORE_NORMALIZE,
            "freeze_teacher_side": c.FREEZE_TEACHER_SIDE,
            "seed": c.SEED,
            "student_tap": c.STUDENT_TAP,
            "teacher_tap": c.TEACHER_TAP,
            "normalization": c.NORMALIZATION,
            "ref_input_size": c.REF_INPUT_SIZE,
            "ref_channels": c.REF_CHANNELS,
            "fast": c.FAST,
        }

    # ------------------------------------------------------------------ forward
    def forward(self, student_feats: Dict, teacher_feats: Dict,
                batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        needed = list(dict.fromkeys(self.levels + self.inst_levels))
        s = self._fpn(student_feats, self.student_tap, "student", needed)
        t = self._fpn(teacher_feats, self.teacher_tap, "teacher", needed)
        num_images = len(batched_inputs)
        for level in needed:
            if s[level].shape[0] != num_images or s[level].shape[-2:] != t[level].shape[-2:] \
                    or t[level].shape[0] != num_images:
                raise ValueError(
                    f"DRKD: level {level!r} has student shape {tuple(s[level].shape)} and teacher shape "
                    f"{tuple(t[level].shape)} for {num_images} images; both sides need the same "
                    "batch size and spatial size")
        out = {}
        if self.levels:
            out["drkd_pixel"] = self.w_pixel * self.pixel_loss(s, t)
        if self.inst_levels:
            inst, fore = self.instance_losses(s, t, self._gt_boxes(batched_inputs, s[needed[0]]))
            if inst is not None:
                out["drkd_inst"] = self.w_inst * inst
            if fore is not None:
                out["drkd_fore"] = self.w_fore * fore
        return out

    def pixel_loss(self, s: Mapping[str, torch.Tensor], t: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Σ_l c_l·sqrt(r·Σ_b ‖A_l(G^s_l(s_l))_b − G^t_l(t_l)_b‖²) (unweighted)."""
        total = 0.0
        for level in self.levels:
            student = self.pixel_adapters[level](self.student_glore[level](s[level]))
            teacher = self.teacher_glore[level](t[level].detach())
            term = batch_normalized_l2(student - teacher, self.ref_images, self.l2_norm)
            if self.normalization == "scale_aware":
                term = term * self.pixel_size_factor(level, teacher.shape)
            total = total + term
        return total

    def pixel_size_factor(self, level: str, shape: Sequence[int]) -> float:
        """c_l = sqrt(C_ref·H_l·W_l / (C·H·W)) for a level's (B, C, H, W) difference; the batch
        size is handled by r."""
        ref_h, ref_w = reference_level_size(self.ref_input_size, self.strides[level])
        _, c, h, w = shape
        return size_factor(c * h * w, self.ref_channels * ref_h * ref_w)

    def instance_size_factor(self, channels: int) -> float:
        """c' = sqrt(C_ref·3·3 / (C·k·k)) for RoI features of C channels (1 for "official"); the
        image's instance count M_b is in both counts and cancels."""
        if self.normalization != "scale_aware":
            return 1.0
        k2 = self.roi_size ** 2
        return size_factor(channels * k2, self.ref_channels * REF_ROI_SIZE ** 2)

    def instance_losses(self, s: Mapping[str, torch.Tensor], t: Mapping[str, torch.Tensor],
                        boxes: Sequence[torch.Tensor]):
        """(inst, fore), unweighted; None for a disabled term.

        Args:
            s, t: {level: (B, C, H, W)}.
            boxes: B tensors (M_b, 4) in input-image pixels.
        """
        num_images = len(boxes)
        counts = [int(b.shape[0]) for b in boxes]
        iteration = _current_iteration() if self.relation_filter == "random_fc" else 0
        inst_diffs, fore_diffs, inst_scales, fore_scales = [], [], [], []
        for level_index, level in enumerate(self.inst_levels):
            if sum(counts) == 0:
                break
            stride = self.strides[level]
            # every image's instances stacked: one call per module and level, not per image
            xs = roi_align_stacked(s[level], boxes, self.roi_size, stride)             # (K, C, k, k)
            xt = roi_align_stacked(t[level].detach(), boxes, self.roi_size, stride)
            if level in self.student_relation:
                seeds = [filter_seed(self.seed, iteration, level_index, b) for b in range(num_images)]
                zs, _ = self.student_relation[level](xs, self._generators(seeds), counts)
                zt, _ = self.teacher_relation[level](xt, self._generators(seeds), counts)
                diff = self.relation_adapters[level](zs) - zt
                per_image = [d for d in diff.split(counts) if d.shape[0]]
                inst_diffs.extend(per_image)
                inst_scales.extend([self.instance_size_factor(diff.shape[1])] * len(per_image))
            if level in self.fore_adapters:
                diff = self.fore_adapters[level](xs) - xt
                per_image = [d for d in diff.split(counts) if d.shape[0]]
                fore_diffs.extend(per_image)
                fore_scales.extend([self.instance_size_factor(diff.shape[1])] * len(per_image))
        inst = fore = None
        like = s[self.inst_levels[0]]
        if self.normalization == "official":   # the official sums, unchanged
            inst_scales = fore_scales = None
        if len(self.student_relation):
            inst = (per_image_l2(inst_diffs, num_images, self.ref_images, inst_scales, self.l2_norm)
                    if inst_diffs else
                    self._zero_touching(like, self.student_relation, self.teacher_relation,
                                        self.relation_adapters))
        if len(self.fore_adapters):
            fore = (per_image_l2(fore_diffs, num_images, self.ref_images, fore_scales, self.l2_norm)
                    if fore_diffs else
                    self._zero_touching(like, self.fore_adapters))
        return inst, fore

    # ------------------------------------------------------------------ helpers
    def _generators(self, seeds: Sequence[int]) -> Optional[List[torch.Generator]]:
        """One CPU generator per image for the "random_fc" filter (None for the others)."""
        if self.relation_filter != "random_fc":
            return None
        return [torch.Generator().manual_seed(seed) for seed in seeds]

    @staticmethod
    def _zero_touching(like: torch.Tensor, *modules: nn.Module) -> torch.Tensor:
        """0·Σ(trainable parameters), a scalar like ``like``: a zero loss through which every
        parameter gets a (zero) gradient, so DDP sees them used."""
        total = like.new_zeros(())
        for module in modules:
            for param in module.parameters():
                if param.requires_grad:
                    total = total + param.sum() * 0.0
        return total

    @staticmethod
    def _fpn(feats: Mapping, tap: str, side: str, levels: Sequence[str]) -> Mapping[str, torch.Tensor]:
        if tap not in feats:
            raise KeyError(f"DRKD: no {side} features recorded for tap {tap!r} (got {sorted(feats)})")
        value = feats[tap]
        if not isinstance(value, Mapping):
            raise ValueError(f"DRKD: the {side} tap {tap!r} must output a dict of FPN levels, "
                             f"got {type(value).__name__}")
        missing = [l for l in levels if l not in value]
        if missing:
            raise KeyError(f"DRKD: {side} features lack level(s) {missing}; available: {sorted(value)}")
        return value

    @staticmethod
    def _gt_boxes(batched_inputs: List[Dict], like: torch.Tensor) -> List[torch.Tensor]:
        boxes = []
        for i, x in enumerate(batched_inputs):
            if "instances" not in x:
                raise KeyError(f"DRKD: batched_inputs[{i}] has no 'instances' (GT boxes are needed "
                               "for the instance terms)")
            boxes.append(x["instances"].gt_boxes.tensor.to(device=like.device, dtype=like.dtype))
        return boxes


DRKDLoss = DRKD  # an alias: the class under its descriptive name
