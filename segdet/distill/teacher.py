"""Building and freezing a teacher model from its own config and weights."""
import logging
import os
from typing import Tuple

from torch import nn

from detectron2.config import CfgNode
from detectron2.modeling import build_model

from segdet.engine.checkpoint_io import SafeCheckpointer

__all__ = ["build_teacher", "load_weights_strict", "freeze"]

logger = logging.getLogger(__name__)


def load_weights_strict(model: nn.Module, path: str, what: str = "teacher", trust_pickle: bool = False,
                        key: str = "DISTILL.TEACHER.WEIGHTS") -> None:
    """Load ``path`` (detectron2 ``.pth``, a plain state dict, or with ``trust_pickle`` a ``.pkl``)
    into ``model`` and fail unless every parameter and buffer was loaded with the right shape.

    Args:
        what: the model's role in messages ("teacher", "student").
        key: the config key that named ``path``, for messages.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: naming the missing, unexpected and shape-mismatched keys; a pickled file
            without ``trust_pickle`` (UnsafeCheckpointError); an empty, truncated or corrupt file
            (CorruptCheckpointError).
    """
    if not path:
        raise ValueError(f"{key} is empty: the {what} must be trained weights "
                         "(an untrained teacher only adds noise)")
    if "://" not in path and not os.path.isfile(path):
        raise FileNotFoundError(f"{key}: no file at {path}")
    checkpointer = SafeCheckpointer(model, trust_pickle=trust_pickle, strict=True, what=key, model_name=what)
    checkpointer.load(path)
    logger.info(f"Loaded {what} weights from {path} (all {len(model.state_dict())} tensors matched)")


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` for every parameter."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_teacher(teacher_cfg: CfgNode, weights: str, trust_pickle: bool = False,
                  key: str = "DISTILL.TEACHER.WEIGHTS", name: str = "teacher") -> Tuple[nn.Module, CfgNode]:
    """Build the teacher from its own config, load ``weights`` strictly (plain unpickling only
    with ``trust_pickle``: the student config's ``MODEL.TRUST_PICKLE``) and freeze it.

    Args:
        key: the config key that named ``weights``, for messages; name: the teacher's name."""
    teacher = build_model(teacher_cfg)
    what = "teacher" if name == "teacher" else f"teacher {name}"
    load_weights_strict(teacher, weights, what=what, trust_pickle=trust_pickle, key=key)
    n = sum(p.numel() for p in teacher.parameters())
    logger.info(f"{what[0].upper() + what[1:]} {teacher_cfg.MODEL.META_ARCHITECTURE}: {n / 1e6:.3f} M parameters, "
                "frozen (eval mode, no gradients, not in the optimizer, DDP or student checkpoints)")
    return freeze(teacher), teacher_cfg
