"""DSD losses for segmentors, registered as ``"PSD"`` and ``"CSD"``.

Neither owns parameters; both read the outputs of named modules recorded by the distillation
model. Use them together (``DISTILL.LOSSES: ("PSD", "CSD")``) for the full DSD objective.

Tap outputs:
  * PSD layer taps may output a tensor (B, C, H, W), a dict of tensors (e.g. a whole backbone
    ``{"res2": ..., "res5": ...}``) or a list/tuple of tensors. A dict contributes its tensor values
    ordered by spatial area, largest first (i.e. shallow to deep), insertion order among equal
    areas; a list/tuple keeps its order. The flattened maps of all taps, in tap order, form the
    layer sequence; student and teacher must give the same number of maps.
  * Logits taps must output a (B, K, h, w) tensor, the logits before upsampling.

Normalisation (``DISTILL.DSD.NORMALIZATION``): ``"official"`` uses the terms as defined (means
over the batch: batch-size invariant); ``"scale_aware"`` also makes them independent of the map
size relative to ``DISTILL.DSD.REF_MAP_SIZE`` (see :func:`~.functional.psd_size_factor` and
:func:`~.functional.csd_size_factor`), equal to ``"official"`` at that size.

Padding: maps are used as recorded. With fixed-size training crops (the usual segmentation
recipe) there is no padding; variable-size batches would mix padded pixels into the maps.
"""
from typing import Any, Dict, List, Sequence

import torch
from torch import nn

from detectron2.config import configurable

from ..taps import resolve_module
from ..losses.base import DistillLoss
from .functional import (
    CSD_FORMS,
    NORMALIZATIONS,
    PAIRS,
    csd_loss,
    csd_size_factor,
    psd_loss,
    psd_size_factor,
)
from ..losses.registry import DISTILL_LOSS_REGISTRY

__all__ = ["PSD", "CSD", "flatten_tap_maps", "PSD_RESIZE_MODES"]

PSD_RESIZE_MODES = ("student_logits", "largest")


def flatten_tap_maps(value: Any, name: str, side: str) -> List[torch.Tensor]:
    """The (B, C, H, W) maps of one tap output (see the module docstring for the order).

    Raises:
        ValueError: naming the tap when the output is not a 4-D tensor, a dict or a list of them.
    """
    if isinstance(value, torch.Tensor):
        if value.dim() != 4:
            raise ValueError(f"DSD: {side} tap {name!r} output has shape {tuple(value.shape)}; "
                             "expected a (B, C, H, W) feature map")
        return [value]
    if isinstance(value, dict):
        items = list(value.values())
        for v in items:
            if not isinstance(v, torch.Tensor) or v.dim() != 4:
                raise ValueError(f"DSD: {side} tap {name!r} outputs a dict whose values must all be "
                                 f"(B, C, H, W) tensors; got keys {list(value)}")
        return sorted(items, key=lambda t: -t.shape[-2] * t.shape[-1])  # stable sort
    if isinstance(value, (list, tuple)):
        return [m for v in value for m in flatten_tap_maps(v, name, side)]
    raise ValueError(f"DSD: {side} tap {name!r} output is a {type(value).__name__}; expected a "
                     "(B, C, H, W) tensor, a dict of them or a list of them")


def _logits(value: Any, name: str, side: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() != 4:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"DSD: {side} logits tap {name!r} must output (B, K, h, w) logits, got {shape}; "
                         "set DISTILL.DSD.STUDENT_LOGITS / TEACHER_LOGITS to the classifier module")
    return value


def _check_taps(model: nn.Module, names: Sequence[str], side: str) -> None:
    for n in names:
        resolve_module(model, n, side)


def _check_normalization(normalization: str, ref_map_size: Sequence[int]) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"DISTILL.DSD.NORMALIZATION must be one of {NORMALIZATIONS}, got {normalization!r}")
    if len(ref_map_size) != 2 or min(ref_map_size) <= 0:
        raise ValueError(f"DISTILL.DSD.REF_MAP_SIZE must be a map size (h, w) > 0, got {tuple(ref_map_size)}")


@DISTILL_LOSS_REGISTRY.register()
class PSD(DistillLoss):
    """Pixel-wise similarity distillation. Returns ``{"dsd_psd": w_psd · psd_loss(...)}``.

    Every attention map (student and teacher) is resized to the spatial size of the student's
    logits tap (``resize_to="student_logits"``) or of the largest student layer map
    (``"largest"``).
    """

    @configurable
    def __init__(self, *, student_layers: Sequence[str], teacher_layers: Sequence[str],
                 pairs: str = "adjacent", resize_to: str = "student_logits",
                 student_logits: str = "sem_seg_head.conv_seg", w_psd: float = 1000.0, p: int = 2,
                 normalization: str = "official", ref_map_size: Sequence[int] = (64, 128)):
        """
        Args:
            student_layers / teacher_layers: tap names (module names), shallow to deep.
            pairs: residual pairs, ``"adjacent"`` or ``"all"``.
            resize_to: ``"student_logits"`` or ``"largest"``.
            student_logits: the student's logits tap (used only for its size).
            w_psd: weight of the term.
            p: AT exponent.
            normalization: ``"official"`` or ``"scale_aware"`` (× N / N_ref, N the positions of
                the compared maps).
            ref_map_size: (h, w) of the maps at the reference (CIRKD's 512×1024 crops at stride 8).
        """
        super().__init__()
        if not student_layers or not teacher_layers:
            raise ValueError("DISTILL.DSD.STUDENT_LAYERS and TEACHER_LAYERS must both name at least one "
                             f"module; got {list(student_layers)} and {list(teacher_layers)}")
        if pairs not in PAIRS:
            raise ValueError(f"DISTILL.DSD.PAIRS must be one of {PAIRS}, got {pairs!r}")
        if resize_to not in PSD_RESIZE_MODES:
            raise ValueError(f"DISTILL.DSD.PSD_RESIZE_TO must be one of {PSD_RESIZE_MODES}, got {resize_to!r}")
        if resize_to == "student_logits" and not student_logits:
            raise ValueError("DISTILL.DSD.PSD_RESIZE_TO='student_logits' needs DISTILL.DSD.STUDENT_LOGITS")
        self.student_layers, self.teacher_layers = tuple(student_layers), tuple(teacher_layers)
        _check_normalization(normalization, ref_map_size)
        self.pairs, self.resize_to, self.w_psd, self.p = pairs, resize_to, float(w_psd), p
        self.normalization, self.ref_map_size = normalization, tuple(int(v) for v in ref_map_size)
        self.student_logits = student_logits if resize_to == "student_logits" else ""
        extra = (self.student_logits,) if self.student_logits else ()
        self.student_taps = tuple(dict.fromkeys(self.student_layers + extra))
        self.teacher_taps = self.teacher_layers

    @classmethod
    def from_config(cls, cfg, student: nn.Module, teacher: nn.Module) -> Dict[str, Any]:
        d = cfg.DISTILL.DSD
        ret = {
            "student_layers": tuple(d.STUDENT_LAYERS),
            "teacher_layers": tuple(d.TEACHER_LAYERS),
            "pairs": d.PAIRS,
            "resize_to": d.PSD_RESIZE_TO,
            "student_logits": d.STUDENT_LOGITS,
            "w_psd": d.W_PSD,
            "normalization": d.NORMALIZATION,
            "ref_map_size": d.REF_MAP_SIZE,
        }
        _check_taps(student, ret["student_layers"], "student")
        _check_taps(teacher, ret["teacher_layers"], "teacher")
        if d.PSD_RESIZE_TO == "student_logits" and d.STUDENT_LOGITS:
            _check_taps(student, [d.STUDENT_LOGITS], "student")
        return ret

    def forward(self, student_feats: Dict[str, Any], teacher_feats: Dict[str, Any],
                batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        s_maps = [m for n in self.student_layers for m in flatten_tap_maps(student_feats[n], n, "student")]
        t_maps = [m for n in self.teacher_layers for m in flatten_tap_maps(teacher_feats[n], n, "teacher")]
        if len(s_maps) != len(t_maps):
            raise ValueError(f"DISTILL.DSD: the student layers {list(self.student_layers)} give {len(s_maps)} "
                             f"maps and the teacher layers {list(self.teacher_layers)} give {len(t_maps)}; "
                             "they must be equal")
        if self.student_logits:
            size = tuple(_logits(student_feats[self.student_logits], self.student_logits, "student").shape[-2:])
        else:   # the largest student map, as psd_loss picks it
            size = max((tuple(f.shape[-2:]) for f in s_maps), key=lambda s: s[0] * s[1])
        loss = self.w_psd * psd_loss(s_maps, t_maps, size=size, pairs=self.pairs, p=self.p)
        if self.normalization == "scale_aware":
            loss = loss * psd_size_factor(size, self.ref_map_size)
        return {"dsd_psd": loss}


@DISTILL_LOSS_REGISTRY.register()
class CSD(DistillLoss):
    """Category-wise similarity distillation. Returns ``{"dsd_csd": w_csd · csd_loss(...)}``.

    The teacher logits are resized (bilinear) to the student's logits size when they differ.
    """

    @configurable
    def __init__(self, *, student_logits: str = "sem_seg_head.conv_seg",
                 teacher_logits: str = "sem_seg_head.conv_seg", form: str = "paper", tau: float = 4.0,
                 pool: int = 2, w_csd: float = 100.0, normalization: str = "official",
                 ref_map_size: Sequence[int] = (64, 128)):
        """
        Args:
            student_logits / teacher_logits: tap names whose output is the pre-upsample logits.
            form: ``"paper"`` or ``"cirkd"`` (see :func:`~.functional.csd_similarity`).
            tau: softmax temperature.
            pool: average-pool kernel (= stride) on the logits; ≤ 1 disables it.
            w_csd: weight of the term.
            normalization: ``"official"`` or ``"scale_aware"`` (the ``"cirkd"`` form × (N'/N'_ref)²;
                the ``"paper"`` form is size invariant as it is).
            ref_map_size: (h, w) of the student logits at the reference.
        """
        super().__init__()
        if form not in CSD_FORMS:
            raise ValueError(f"DISTILL.DSD.CSD_FORM must be one of {CSD_FORMS}, got {form!r}")
        if not student_logits or not teacher_logits:
            raise ValueError("DISTILL.DSD.STUDENT_LOGITS and TEACHER_LOGITS must name the logits modules")
        if tau <= 0:
            raise ValueError(f"DISTILL.DSD.TAU must be > 0, got {tau}")
        _check_normalization(normalization, ref_map_size)
        self.form, self.tau, self.pool, self.w_csd = form, float(tau), int(pool), float(w_csd)
        self.normalization, self.ref_map_size = normalization, tuple(int(v) for v in ref_map_size)
        self.student_taps = (student_logits,)
        self.teacher_taps = (teacher_logits,)

    @classmethod
    def from_config(cls, cfg, student: nn.Module, teacher: nn.Module) -> Dict[str, Any]:
        d = cfg.DISTILL.DSD
        _check_taps(student, [d.STUDENT_LOGITS], "student")
        _check_taps(teacher, [d.TEACHER_LOGITS], "teacher")
        return {
            "student_logits": d.STUDENT_LOGITS,
            "teacher_logits": d.TEACHER_LOGITS,
            "form": d.CSD_FORM,
            "tau": d.TAU,
            "pool": d.CSD_POOL,
            "w_csd": d.W_CSD,
            "normalization": d.NORMALIZATION,
            "ref_map_size": d.REF_MAP_SIZE,
        }

    def forward(self, student_feats: Dict[str, Any], teacher_feats: Dict[str, Any],
                batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        (s_name,), (t_name,) = self.student_taps, self.teacher_taps
        s = _logits(student_feats[s_name], s_name, "student")
        t = _logits(teacher_feats[t_name], t_name, "teacher")
        loss = self.w_csd * csd_loss(s, t, form=self.form, tau=self.tau, pool=self.pool)
        if self.normalization == "scale_aware" and self.form == "cirkd":
            loss = loss * csd_size_factor(s.shape[-2:], self.ref_map_size, self.form, self.pool)
        return {"dsd_csd": loss}
