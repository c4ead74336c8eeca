"""DistillationModel: a student trained with one or more frozen teachers through named feature
taps (the teachers, and which images each one sees: :mod:`segdet.distill.routing`)."""
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
from .routing import TEACHER_TASKS, Teacher, select_batch, teacher_spec, with_stand_in_labels
from .taps import FeatureRecorder
from .teacher import build_teacher

__all__ = ["DistillationModel", "Teacher", "student_config", "TEACHER_TASKS"]


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

    Several teachers (``teachers``, ``DISTILL.TEACHERS``): each has its own config, weights, taps,
    losses and task. A teacher with a task (e.g. a detector for a multi-task student) runs on the
    images carrying that task's labels, and its losses receive the student's taps of those images
    only (:func:`~segdet.distill.routing.select_batch`). When no image of the batch carries
    them, the teacher and its losses run on the first image with stand-in labels and the losses
    are multiplied by 0 (zero gradients, the same loss names and collectives on every process, as
    the multi-task student does). :class:`~segdet.engine.distill_timer.DistillTimer` logs each teacher's forward time as
    ``distill_teacher_<name>_ms``.
    """

    @configurable
    def __init__(
        self,
        *,
        student: nn.Module,
        teacher: Optional[nn.Module] = None,
        losses: Mapping[str, DistillLoss],
        loss_weights: Optional[Mapping[str, float]] = None,
        warmup_iters: int = 0,
        flip_teacher_channels: bool = False,
        teacher_cfg=None,
        teachers: Optional[Sequence[Teacher]] = None,
    ):
        """
        Args:
            student: the model being trained.
            teacher: a trained model; it is frozen here (or give ``teachers``).
            losses: {name: DistillLoss} built for this student/teacher pair (with ``teachers``:
                all teachers' losses, each named in one teacher's ``losses``).
            loss_weights: {name: weight} multiplying each loss's terms (default 1).
            warmup_iters: distillation weights ramp linearly from 0 over these iterations.
            flip_teacher_channels: the teacher expects the other channel order (RGB vs BGR).
            teacher_cfg: the teacher's config (kept for its evaluation).
            teachers: several teachers (:class:`Teacher`), instead of ``teacher``.
        """
        super().__init__()
        if (teacher is None) == (teachers is None):
            raise ValueError("give either teacher or teachers")
        if teachers is None:
            teachers = [Teacher("teacher", teacher, teacher_cfg, list(losses), "", flip_teacher_channels)]
        self.student = student
        self._teachers = list(teachers)  # a plain list keeps them out of the module tree
        self.distill_losses = nn.ModuleDict(dict(losses))
        owned = [n for t in self._teachers for n in t.losses]
        if sorted(owned) != sorted(losses):
            raise ValueError(f"each loss must belong to exactly one teacher: losses {sorted(losses)}, "
                             f"teachers' {sorted(owned)}")
        self.loss_weights = {name: 1.0 for name in losses}
        self.loss_weights.update(loss_weights or {})
        unknown = set(self.loss_weights) - set(losses)
        if unknown:
            raise ValueError(f"loss weights given for unknown losses {sorted(unknown)}")
        self.warmup_iters = warmup_iters

        def taps(side, names, inputs):
            return [n for name in names for n in getattr(losses[name], side) if losses[name].record_inputs == inputs]

        every = list(losses)
        self._student_recorders = [
            FeatureRecorder(student, taps("student_taps", every, False), owner="student"),
            FeatureRecorder(student, taps("student_taps", every, True), record_inputs=True, owner="student")]
        for t in self._teachers:
            t.attach({False: taps("teacher_taps", t.losses, False), True: taps("teacher_taps", t.losses, True)})
        # public switch: False skips the distillation losses (teacher and student still run)
        self.distill_losses_enabled = True

    @classmethod
    def from_config(cls, cfg):
        d = cfg.DISTILL
        student = build_model(student_config(cfg))
        if len(d.TEACHERS):
            specs = [(name, teacher_spec(name, node)) for name, node in d.TEACHERS.items()]
        else:
            specs = [("teacher", {"CONFIG_FILE": d.TEACHER.CONFIG_FILE, "WEIGHTS": d.TEACHER.WEIGHTS,
                                  "OPTS": d.TEACHER.OPTS, "LOSSES": d.LOSSES, "LOSS_WEIGHTS": d.LOSS_WEIGHTS,
                                  "TASK": ""})]
        teachers, losses, weights = [], {}, {}
        for name, spec in specs:
            model, teacher_cfg, names = cls._build_teacher(cfg, student, name, spec, losses, weights,
                                                           single=not len(d.TEACHERS))
            teachers.append(Teacher(name, model, teacher_cfg, names, spec["TASK"],
                                    flip_channels=cfg.INPUT.FORMAT != teacher_cfg.INPUT.FORMAT))
        return {
            "student": student,
            "teachers": teachers,
            "losses": losses,
            "loss_weights": weights or None,
            "warmup_iters": d.WARMUP_ITERS,
        }

    @staticmethod
    def _build_teacher(cfg, student, name: str, spec: Dict, losses: Dict, weights: Dict, single: bool):
        """Build one teacher and its losses (added to ``losses`` / ``weights``); returns the
        teacher, its config and its loss names."""
        from segdet.utils.config_io import load_config
        from segdet.utils.errors import ConfigError

        key = "DISTILL" if single else f"DISTILL.TEACHERS.{name}"
        teacher_key = "DISTILL.TEACHER" if single else key
        teacher_cfg = load_config(spec["CONFIG_FILE"], list(spec["OPTS"]) + ["MODEL.DEVICE", cfg.MODEL.DEVICE])
        teacher, teacher_cfg = build_teacher(teacher_cfg, spec["WEIGHTS"], trust_pickle=cfg.MODEL.TRUST_PICKLE,
                                             key=f"{teacher_key}.WEIGHTS", name=name)
        if spec["LOSS_WEIGHTS"] and len(spec["LOSS_WEIGHTS"]) != len(spec["LOSSES"]):
            raise ConfigError(f"{key}.LOSS_WEIGHTS has {len(spec['LOSS_WEIGHTS'])} values for "
                              f"{len(spec['LOSSES'])} {key}.LOSSES {list(spec['LOSSES'])}")
        names = []
        for i, loss_name in enumerate(spec["LOSSES"]):
            try:
                loss_cls = DISTILL_LOSS_REGISTRY.get(loss_name)
            except KeyError:
                raise ConfigError(f"{key}.LOSSES: unknown loss {loss_name!r}; registered: "
                                  f"{sorted(k for k, _ in DISTILL_LOSS_REGISTRY)}") from None
            full = loss_name.lower() if single else f"{name}_{loss_name}".lower()
            losses[full] = loss_cls(cfg, student, teacher)
            if spec["LOSS_WEIGHTS"]:
                weights[full] = spec["LOSS_WEIGHTS"][i]
            names.append(full)
        return teacher, teacher_cfg, names

    @property
    def teachers(self) -> List[Teacher]:
        """Every teacher, in config order."""
        return list(self._teachers)

    @property
    def teacher(self) -> nn.Module:
        """The (first) teacher's model."""
        return self._teachers[0].model

    @property
    def teacher_cfg(self):
        return self._teachers[0].cfg

    @property
    def flip_teacher_channels(self) -> bool:
        return self._teachers[0].flip_channels

    @property
    def teacher_backbone_only(self) -> bool:
        return self._teachers[0].backbone_only

    @property
    def device(self) -> torch.device:
        return next(self.student.parameters()).device

    def train(self, mode: bool = True) -> "DistillationModel":
        super().train(mode)
        for t in self._teachers:
            t.model.eval()
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
        routes = self._routes(batched_inputs)
        with record_function("distill/teacher"):
            teacher_feats = {t.name: self._run_teacher(t, [batched_inputs[i] for i in routes[t.name][0]])
                             for t in self._teachers}
        with record_function("distill/student"):
            student_feats, losses = self._run_student(batched_inputs)
        if not self.distill_losses_enabled:
            return losses
        with record_function("distill/losses"):
            factor = self._warmup_factor()
            for t in self._teachers:
                index, absent = routes[t.name]
                inputs = [batched_inputs[i] for i in index]
                if absent:
                    inputs = [with_stand_in_labels(x, TEACHER_TASKS[t.task]) for x in inputs]
                for name in t.losses:
                    loss = self.distill_losses[name]
                    terms = loss(
                        {n: select_batch(student_feats[n], index, len(batched_inputs)) for n in loss.student_taps},
                        {n: teacher_feats[t.name][n] for n in loss.teacher_taps},
                        inputs,
                    )
                    scale = self.loss_weights[name] * factor * (0.0 if absent else 1.0)
                    for term, value in terms.items():
                        losses[f"loss_distill_{term}"] = value * scale
        return losses

    def _routes(self, batched_inputs: List[Dict]) -> Dict[str, tuple]:
        """{teacher name: (indices of the images it sees, absent)}; a teacher none of whose images
        is in the batch gets the first image, with ``absent`` True (its losses count 0)."""
        routes = {}
        for t in self._teachers:
            index = t.images(batched_inputs)
            routes[t.name] = (index or [0], not index)
        return routes

    def _warmup_factor(self) -> float:
        it = _current_iter()
        if not self.warmup_iters or it is None:
            return 1.0
        return min(1.0, (it + 1) / self.warmup_iters)

    @torch.no_grad()
    def _run_teacher(self, t: Teacher, batched_inputs: List[Dict]) -> Dict:
        """Run teacher ``t`` on ``batched_inputs``; its recorded taps."""
        teacher = t.model
        for r in t.recorders:
            r.__enter__()
        inputs = batched_inputs
        if t.flip_channels:
            inputs = [{**x, "image": x["image"].flip(0)} for x in batched_inputs]
        if t.backbone_only:
            images = [(x["image"].to(teacher.pixel_mean.device) - teacher.pixel_mean) / teacher.pixel_std
                      for x in inputs]
            images = ImageList.from_tensors(images, teacher.backbone.size_divisibility,
                                            padding_constraints=teacher.backbone.padding_constraints)
            teacher.backbone(images.tensor)
        else:
            teacher(inputs)
        return self._collect(t.recorders, f"teacher {t.name}" if len(self._teachers) > 1 else "teacher")

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
