"""Building and freezing a teacher model from its own config and weights."""
import logging
import os
from typing import Sequence, Tuple

from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.modeling import build_model

__all__ = ["build_teacher", "load_weights_strict", "freeze"]

logger = logging.getLogger(__name__)


def _listing(keys: Sequence[str], limit: int = 20) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


class _RecordingCheckpointer(DetectionCheckpointer):
    """Keeps the incompatible keys of the last load (so the caller can fail on them)."""

    incompatible = None

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        pass  # reported as an error by load_weights_strict


def load_weights_strict(model: nn.Module, path: str, what: str = "teacher") -> None:
    """Load ``path`` (detectron2 ``.pth``/``.pkl``, or a plain state dict) into ``model`` and
    fail unless every parameter and buffer was loaded with the right shape.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: naming the missing, unexpected and shape-mismatched keys.
    """
    if not path:
        raise ValueError(f"DISTILL.TEACHER.WEIGHTS is empty: the {what} must be trained weights "
                         "(an untrained teacher only adds noise)")
    if "://" not in path and not os.path.isfile(path):
        raise FileNotFoundError(f"DISTILL.TEACHER.WEIGHTS: no file at {path}")
    checkpointer = _RecordingCheckpointer(model)
    checkpointer.load(path)
    incompatible = checkpointer.incompatible
    problems = []
    if incompatible.missing_keys:
        problems.append(f"missing keys ({len(incompatible.missing_keys)}): {_listing(incompatible.missing_keys)}")
    if incompatible.unexpected_keys:
        problems.append(f"unexpected keys ({len(incompatible.unexpected_keys)}): "
                        f"{_listing(incompatible.unexpected_keys)}")
    if incompatible.incorrect_shapes:
        shapes = [f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})" for k, a, b in incompatible.incorrect_shapes]
        problems.append(f"shape mismatches ({len(shapes)}): {_listing(shapes)}")
    if problems:
        raise ValueError(f"{what} weights {path} do not match the {what} model: " + "; ".join(problems))
    logger.info(f"Loaded {what} weights from {path} (all {len(model.state_dict())} tensors matched)")


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` for every parameter."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_teacher(teacher_cfg: CfgNode, weights: str) -> Tuple[nn.Module, CfgNode]:
    """Build the teacher from its own config, load ``weights`` strictly and freeze it."""
    teacher = build_model(teacher_cfg)
    load_weights_strict(teacher, weights)
    n = sum(p.numel() for p in teacher.parameters())
    logger.info(f"Teacher {teacher_cfg.MODEL.META_ARCHITECTURE}: {n / 1e6:.3f} M parameters, frozen "
                "(eval mode, no gradients, not in the optimizer, DDP or student checkpoints)")
    return freeze(teacher), teacher_cfg
