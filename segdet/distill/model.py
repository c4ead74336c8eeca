"""DistillationModel: a student trained with a frozen teacher through named feature taps."""
import contextlib
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import torch
from torch import nn
from torch.profiler import record_function

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.structures import ImageList
from detectron2.utils.events import get_event_storage

from .losses import DISTILL_LOSS_REGISTRY, DistillLoss
from .taps import FeatureRecorder
from .teacher import build_teacher, freeze

__all__ = ["DistillationModel", "student_config"]


def _in_backbone(name: str) -> bool:
    return name == "backbone" or name.startswith("backbone.")


def _current_iter() -> Optional[int]:
    try:
        return get_event_storage().iter
    except AssertionError:  # no EventStorage outside training
        return None


def student_config(cfg):
    """A copy of the distillation config ``cfg`` that builds the student alone
    (``MODEL.META_ARCHITECTURE = DISTILL.STUDENT_META_ARCHITECTURE``; left unfrozen)."""
    from segdet.utils.errors import ConfigError

    name = cfg.DISTILL.STUDENT_META_ARCHITECTURE
    if name == "DistillationModel":
        raise ConfigError("DISTILL.STUDENT_META_ARCHITECTURE must name the student's own "
                          "meta-architecture, not DistillationModel")
    student_cfg = cfg.clone()
    student_cfg.defrost()
    student_cfg.MODEL.META_ARCHITECTURE = name
    return student_cfg


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

    The three parts run in ``torch.profiler.record_function`` scopes "distill/teacher",
    "distill/student" and "distill/losses" (free when no profiler runs); their wall-clock times
    are measured from outside by :class:`segdet.engine.distill_timer.DistillTimer`.
    :meth:`without_distill_losses` (or ``distill_losses_enabled = False``) skips step 3, e.g. to
    measure what the losses cost a training step.

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
        # public switch: False skips the distillation losses (teacher and student still run)
        self.distill_losses_enabled = True

    @classmethod
    def from_config(cls, cfg):
        from segdet.utils.config_io import load_config
        from segdet.utils.errors import ConfigError

        d = cfg.DISTILL
        student = build_model(student_config(cfg))

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

    @contextlib.contextmanager
    def without_distill_losses(self) -> Iterator["DistillationModel"]:
        """Within the block, training forwards run the teacher and the student (taps recorded)
        but not the distillation losses: the returned dict holds the student's losses alone."""
        previous, self.distill_losses_enabled = self.distill_losses_enabled, False
        try:
            yield self
        finally:
            self.distill_losses_enabled = previous

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: detectron2's list of dicts, "image" (C, H, W) in the student's format.
        Returns:
            training: {loss name: scalar}, the student's and ``loss_distill_<term>``; evaluation:
            the student's outputs.
        """
        if not self.training:
            return self.student(batched_inputs)
        with record_function("distill/teacher"):
            teacher_feats = self._run_teacher(batched_inputs)
        with record_function("distill/student"):
            student_feats, losses = self._run_student(batched_inputs)
        if not self.distill_losses_enabled:
            return losses
        with record_function("distill/losses"):
            factor = self._warmup_factor()
            for name, loss in self.distill_losses.items():
                terms = loss(
                    {n: student_feats[n] for n in loss.student_taps},
                    {n: teacher_feats[n] for n in loss.teacher_taps},
                    batched_inputs,
                )
                for term, value in terms.items():
                    losses[f"loss_distill_{term}"] = value * (self.loss_weights[name] * factor)
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
