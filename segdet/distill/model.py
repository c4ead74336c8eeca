"""DistillationModel: a student trained with a frozen teacher through named feature taps."""
import logging
import time
from typing import Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.structures import ImageList
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import log_every_n_seconds

from .losses import DISTILL_LOSS_REGISTRY, DistillLoss
from .taps import FeatureRecorder
from .teacher import build_teacher, freeze

__all__ = ["DistillationModel"]

logger = logging.getLogger(__name__)


def _in_backbone(name: str) -> bool:
    return name == "backbone" or name.startswith("backbone.")


def _current_iter() -> Optional[int]:
    try:
        return get_event_storage().iter
    except AssertionError:  # no EventStorage outside training
        return None


@META_ARCH_REGISTRY.register()
class DistillationModel(nn.Module):
    """Wraps one student and one frozen teacher (any detectron2 / segdet meta-architectures).

    Training forward:
      1. the teacher runs under ``no_grad`` on the same (resized, flipped) images, with its own
         channel order and pixel normalisation; only its backbone runs when every teacher tap
         lies in the backbone;
      2. the student runs normally and returns its own losses;
      3. each distillation loss receives the recorded taps and returns named terms, reported as
         ``loss_distill_<term>`` after the configured weight and linear warm-up.
    Evaluation forward is the student alone.

    The teacher is held outside the module tree: it is not in ``state_dict`` (so neither in
    training checkpoints nor in the exported student), not in ``parameters()`` (so neither in
    the optimizer nor in DDP), and ``train()`` never reaches it.
    """

    @configurable
    def __init__(
        self,
        *,
        student: nn.Module,
        teacher: nn.Module,
        losses: Mapping[str, DistillLoss],
        loss_weights: Optional[Mapping[str, float]] = None,
        warmup_iters: int = 0,
        flip_teacher_channels: bool = False,
        teacher_cfg=None,
    ):
        """
        Args:
            student: the model being trained.
            teacher: a trained model; it is frozen here.
            losses: {name: DistillLoss} built for this student/teacher pair.
            loss_weights: {name: weight} multiplying each loss's terms (default 1).
            warmup_iters: distillation weights ramp linearly from 0 over these iterations.
            flip_teacher_channels: the teacher expects the other channel order (RGB vs BGR).
            teacher_cfg: the teacher's config (kept for its evaluation).
        """
        super().__init__()
        self.student = student
        self._teacher = [freeze(teacher)]  # a list keeps it out of the module tree
        self.teacher_cfg = teacher_cfg
        self.distill_losses = nn.ModuleDict(dict(losses))
        self.loss_weights = {name: 1.0 for name in losses}
        self.loss_weights.update(loss_weights or {})
        unknown = set(self.loss_weights) - set(losses)
        if unknown:
            raise ValueError(f"loss weights given for unknown losses {sorted(unknown)}")
        self.warmup_iters = warmup_iters
        self.flip_teacher_channels = flip_teacher_channels

        taps = lambda side, inputs: [  # noqa: E731
            n for loss in losses.values() if loss.record_inputs == inputs for n in getattr(loss, side)]
        self._student_recorders = [
            FeatureRecorder(student, taps("student_taps", False), owner="student"),
            FeatureRecorder(student, taps("student_taps", True), record_inputs=True, owner="student")]
        self._teacher_recorders = [
            FeatureRecorder(teacher, taps("teacher_taps", False), owner="teacher"),
            FeatureRecorder(teacher, taps("teacher_taps", True), record_inputs=True, owner="teacher")]
        teacher_taps = [n for r in self._teacher_recorders for n in r.names]
        self.teacher_backbone_only = all(_in_backbone(n) for n in teacher_taps)
        self._timings: Dict[str, List[float]] = {"teacher": [], "student": [], "losses": []}

    @classmethod
    def from_config(cls, cfg):
        from segdet.utils.config_io import load_config
        from segdet.utils.errors import ConfigError

        d = cfg.DISTILL
        if d.STUDENT_META_ARCHITECTURE == "DistillationModel":
            raise ConfigError("DISTILL.STUDENT_META_ARCHITECTURE must name the student's own "
                              "meta-architecture, not DistillationModel")
        student_cfg = cfg.clone()
        student_cfg.defrost()
        student_cfg.MODEL.META_ARCHITECTURE = d.STUDENT_META_ARCHITECTURE
        student = build_model(student_cfg)

        teacher_cfg = load_config(d.TEACHER.CONFIG_FILE, list(d.TEACHER.OPTS) + ["MODEL.DEVICE", cfg.MODEL.DEVICE])
        teacher, teacher_cfg = build_teacher(teacher_cfg, d.TEACHER.WEIGHTS, trust_pickle=cfg.MODEL.TRUST_PICKLE)

        if d.LOSS_WEIGHTS and len(d.LOSS_WEIGHTS) != len(d.LOSSES):
            raise ConfigError(f"DISTILL.LOSS_WEIGHTS has {len(d.LOSS_WEIGHTS)} values for "
                              f"{len(d.LOSSES)} DISTILL.LOSSES {list(d.LOSSES)}")
        losses = {}
        for name in d.LOSSES:
            try:
                loss_cls = DISTILL_LOSS_REGISTRY.get(name)
            except KeyError:
                raise ConfigError(f"DISTILL.LOSSES: unknown loss {name!r}; registered: "
                                  f"{sorted(k for k, _ in DISTILL_LOSS_REGISTRY)}") from None
            losses[name.lower()] = loss_cls(cfg, student, teacher)
        weights = dict(zip([n.lower() for n in d.LOSSES], d.LOSS_WEIGHTS)) if d.LOSS_WEIGHTS else None
        return {
            "student": student,
            "teacher": teacher,
            "losses": losses,
            "loss_weights": weights,
            "warmup_iters": d.WARMUP_ITERS,
            "flip_teacher_channels": cfg.INPUT.FORMAT != teacher_cfg.INPUT.FORMAT,
            "teacher_cfg": teacher_cfg,
        }

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    @property
    def device(self) -> torch.device:
        return next(self.student.parameters()).device

    def train(self, mode: bool = True) -> "DistillationModel":
        super().train(mode)
        self.teacher.eval()
        return self

    def export_student_state_dict(self) -> Dict[str, torch.Tensor]:
        """The student's weights alone, loadable with the student's own config."""
        return self.student.state_dict()

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.student(batched_inputs)
        t0 = time.perf_counter()
        teacher_feats = self._run_teacher(batched_inputs)
        t1 = time.perf_counter()
        student_feats, losses = self._run_student(batched_inputs)
        t2 = time.perf_counter()
        factor = self._warmup_factor()
        for name, loss in self.distill_losses.items():
            terms = loss(
                {n: student_feats[n] for n in loss.student_taps},
                {n: teacher_feats[n] for n in loss.teacher_taps},
                batched_inputs,
            )
            for term, value in terms.items():
                losses[f"loss_distill_{term}"] = value * (self.loss_weights[name] * factor)
        t3 = time.perf_counter()
        self._record_timings(t1 - t0, t2 - t1, t3 - t2)
        return losses

    def _warmup_factor(self) -> float:
        it = _current_iter()
        if not self.warmup_iters or it is None:
            return 1.0
        return min(1.0, (it + 1) / self.warmup_iters)

    def _teacher_inputs(self, batched_inputs: List[Dict]) -> List[Dict]:
        if not self.flip_teacher_channels:
            return batched_inputs
        return [{**x, "image": x["image"].flip(0)} for x in batched_inputs]

    @torch.no_grad()
    def _run_teacher(self, batched_inputs: List[Dict]) -> Dict:
        teacher = self.teacher
        for r in self._teacher_recorders:
            r.__enter__()
        inputs = self._teacher_inputs(batched_inputs)
        if self.teacher_backbone_only:
            images = [(x["image"].to(teacher.pixel_mean.device) - teacher.pixel_mean) / teacher.pixel_std
                      for x in inputs]
            images = ImageList.from_tensors(images, teacher.backbone.size_divisibility,
                                            padding_constraints=teacher.backbone.padding_constraints)
            teacher.backbone(images.tensor)
        else:
            teacher(inputs)
        return self._collect(self._teacher_recorders, "teacher")

    def _run_student(self, batched_inputs: List[Dict]):
        for r in self._student_recorders:
            r.__enter__()
        losses = self.student(batched_inputs)
        return self._collect(self._student_recorders, "student"), dict(losses)

    @staticmethod
    def _collect(recorders: Sequence[FeatureRecorder], side: str) -> Dict:
        feats = {}
        for r in recorders:
            missing = r.missing()
            if missing:
                raise RuntimeError(f"{side} taps {missing} recorded nothing: these modules did not run "
                                   "in the forward pass")
            feats.update(r.outputs)
        return feats

    def _record_timings(self, teacher_s: float, student_s: float, losses_s: float) -> None:
        try:
            storage = get_event_storage()
        except AssertionError:
            return
        storage.put_scalars(distill_teacher_ms=teacher_s * 1e3, distill_student_ms=student_s * 1e3,
                            distill_losses_ms=losses_s * 1e3, smoothing_hint=True)
        for key, value in zip(("teacher", "student", "losses"), (teacher_s, student_s, losses_s)):
            self._timings[key] = (self._timings[key] + [value])[-20:]
        mean = {k: 1e3 * sum(v) / len(v) for k, v in self._timings.items()}
        total = sum(mean.values())
        log_every_n_seconds(
            logging.INFO,
            f"distillation cost per step (mean of last {len(self._timings['teacher'])}): teacher forward "
            f"{mean['teacher']:.0f} ms ({100 * mean['teacher'] / total:.0f}%), student forward "
            f"{mean['student']:.0f} ms, distillation losses {mean['losses']:.0f} ms "
            f"({100 * mean['losses'] / total:.0f}%)",
            n=30, name=__name__,
        )
