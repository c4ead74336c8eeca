"""The teachers of a :class:`~segdet.distill.model.DistillationModel` and the images each one sees.

A :class:`Teacher` is one frozen model with its taps, losses and task; a teacher with a task
("detection", "sem_seg") sees only the images of a batch that carry that task's labels
(:data:`TEACHER_TASKS`). :func:`select_batch` restricts the student's recorded taps to those
images, :func:`with_stand_in_labels` gives an image stand-in labels when none of the batch carries
them (its losses are then multiplied by 0), and :func:`teacher_spec` reads one
``DISTILL.TEACHERS.<name>`` entry.
"""
from typing import Any, Dict, List, Mapping, Sequence

import torch
from torch import nn

from .taps import FeatureRecorder
from .teacher import freeze

__all__ = ["TEACHER_TASKS", "Teacher", "select_batch", "with_stand_in_labels", "teacher_spec"]

#: a teacher's TASK: "" (every image) or the label an image must carry for the teacher to see it
TEACHER_TASKS = {"": None, "detection": "instances", "sem_seg": "sem_seg"}


def _in_backbone(name: str) -> bool:
    return name == "backbone" or name.startswith("backbone.")


def select_batch(value: Any, index: Sequence[int], batch_size: int) -> Any:
    """A recorded tap restricted to the images ``index`` of a batch of ``batch_size``: tensors whose
    first dimension is the whole batch are indexed (recursively through dicts, lists and tuples);
    anything else, e.g. the output of a multi-task student's branch, which ran on those images
    only, is kept as it is. ``index`` is a strict subset whenever its length differs from
    ``batch_size``, so the rule is unambiguous."""
    if len(index) == batch_size:
        return value
    if isinstance(value, torch.Tensor):
        return value[list(index)] if value.dim() and value.shape[0] == batch_size else value
    if isinstance(value, dict):
        return {k: select_batch(v, index, batch_size) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(select_batch(v, index, batch_size) for v in value)
    return value


def with_stand_in_labels(x: Dict, label_key: str) -> Dict:
    """A copy of input ``x`` carrying stand-in labels of ``label_key`` (the multi-task model's),
    for losses computed only to be multiplied by 0."""
    from segdet.modeling.multi_task.routing import stand_in_instances

    image = x["image"]
    if label_key == "instances":
        return {**x, "instances": stand_in_instances(tuple(image.shape[-2:]), image.device)}
    return {**x, "sem_seg": torch.zeros(image.shape[-2:], dtype=torch.int64, device=image.device)}


class Teacher:
    """One frozen teacher of a :class:`DistillationModel` (a plain object: never in the module
    tree, so not in ``state_dict``, ``parameters()``, DDP or ``train()``).

    Attributes:
        name: its name (``DISTILL.TEACHERS.<name>``; "teacher" for ``DISTILL.TEACHER``).
        model: the frozen model; ``cfg``: its config.
        losses: names of its losses in ``DistillationModel.distill_losses``.
        task: "" (all images), "detection" or "sem_seg" (only images carrying those labels).
        flip_channels: it expects the other channel order (RGB vs BGR) than the student.
    """

    def __init__(self, name: str, model: nn.Module, cfg=None, losses: Sequence[str] = (), task: str = "",
                 flip_channels: bool = False):
        if task not in TEACHER_TASKS:
            raise ValueError(f"teacher {name!r}: TASK must be one of {sorted(TEACHER_TASKS)}, got {task!r}")
        self.name, self.model, self.cfg = name, freeze(model), cfg
        self.losses, self.task, self.flip_channels = list(losses), task, flip_channels
        self.recorders: List[FeatureRecorder] = []
        self.backbone_only = False

    def attach(self, taps_by_kind: Mapping[bool, Sequence[str]]) -> None:
        """Record the named modules ({record_inputs: names}) in every forward."""
        self.recorders = [FeatureRecorder(self.model, taps_by_kind[False], owner=f"teacher {self.name}"),
                          FeatureRecorder(self.model, taps_by_kind[True], record_inputs=True,
                                          owner=f"teacher {self.name}")]
        self.backbone_only = all(_in_backbone(n) for r in self.recorders for n in r.names)

    def images(self, batched_inputs: Sequence[Dict]) -> List[int]:
        """Indices of the inputs this teacher sees."""
        key = TEACHER_TASKS[self.task]
        return [i for i, x in enumerate(batched_inputs) if key is None or key in x]


def teacher_spec(name: str, node) -> Dict:
    """The keys of ``DISTILL.TEACHERS.<name>`` with their defaults (the config loader has checked
    the key names); an unknown task or an empty loss list is refused."""
    from segdet.config import TEACHER_ENTRY_DEFAULTS
    from segdet.utils.errors import ConfigError

    spec = {**TEACHER_ENTRY_DEFAULTS, **node}
    if spec["TASK"] not in TEACHER_TASKS:
        raise ConfigError(f"DISTILL.TEACHERS.{name}.TASK must be one of {sorted(TEACHER_TASKS)}, got {spec['TASK']!r}")
    if not spec["LOSSES"]:
        raise ConfigError(f"DISTILL.TEACHERS.{name}.LOSSES is empty: name this teacher's losses, e.g. ['DRKD']")
    return spec
