"""Optimizer with per-parameter groups: a head learning-rate multiplier and norm/bias decay."""
import logging
from typing import Any, Dict, List, Sequence

import torch
from torch import nn

from detectron2.solver.build import maybe_add_gradient_clipping, reduce_param_groups

__all__ = ["build_param_groups", "build_optimizer", "NORM_TYPES"]

logger = logging.getLogger(__name__)

NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


def _matches_prefix(name: str, prefixes: Sequence[str]) -> bool:
    """True if a dotted parameter name starts with one of ``prefixes`` at a module boundary,
    e.g. ``sem_seg_head.`` matches ``sem_seg_head.conv.weight`` and
    ``student.sem_seg_head.conv.weight`` but never ``backbone.talking_head1.weight``."""
    return any(name.startswith(p) or ("." + p) in name for p in prefixes)


def build_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    weight_decay_bias: float,
    bias_lr_factor: float = 1.0,
    head_lr_multiplier: float = 1.0,
    head_prefixes: Sequence[str] = (),
) -> List[Dict[str, Any]]:
    """One group per trainable parameter, named by ``param_names`` (detectron2's convention;
    :func:`build_optimizer` merges the groups that share their hyper-parameters).

    Norm-layer parameters (BN/GN/LN/...) get ``weight_decay_norm``, other biases
    ``weight_decay_bias``; parameters under a module path in ``head_prefixes`` get
    ``base_lr * head_lr_multiplier`` (also their norms: the multiplier and the decay rule are
    independent, unlike mmcv's first-matching-key rule). Shared parameters appear once.
    """
    norm_params = set()
    for module in model.modules():
        if isinstance(module, NORM_TYPES) or type(module).__name__ == "FrozenBatchNorm2d":
            norm_params.update(id(p) for p in module.parameters(recurse=False))
    groups, seen = [], set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        lr, decay = base_lr, weight_decay
        if id(param) in norm_params:
            decay = weight_decay_norm
        elif name.endswith(".bias") or name == "bias":
            lr, decay = base_lr * bias_lr_factor, weight_decay_bias
        if head_prefixes and _matches_prefix(name, head_prefixes):
            lr *= head_lr_multiplier
        groups.append({"params": [param], "lr": lr, "weight_decay": decay, "param_names": [name]})
    return groups


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW (``cfg.SOLVER.OPTIMIZER``) over :func:`build_param_groups`, merged into one
    group per distinct (lr, weight decay) like detectron2's ``reduce_param_groups`` so that the
    multi-tensor and fused kernels run once per group, not once per parameter; with
    detectron2's optional gradient clipping (``cfg.SOLVER.CLIP_GRADIENTS``); PyTorch's fused
    kernel when ``cfg.SOLVER.FUSED`` and this torch build and device have one."""
    s = cfg.SOLVER
    weight_decay_bias = s.WEIGHT_DECAY if s.WEIGHT_DECAY_BIAS is None else s.WEIGHT_DECAY_BIAS
    groups = build_param_groups(
        model,
        base_lr=s.BASE_LR,
        weight_decay=s.WEIGHT_DECAY,
        weight_decay_norm=s.WEIGHT_DECAY_NORM,
        weight_decay_bias=weight_decay_bias,
        bias_lr_factor=s.BIAS_LR_FACTOR,
        head_lr_multiplier=s.HEAD_LR_MULTIPLIER,
        head_prefixes=s.HEAD_PREFIXES,
    )
    groups = reduce_param_groups(groups)
    name = s.OPTIMIZER.upper()
    if name == "SGD":
        cls, kwargs = torch.optim.SGD, dict(momentum=s.MOMENTUM, nesterov=s.NESTEROV)
    elif name == "ADAMW":
        cls, kwargs = torch.optim.AdamW, dict(betas=tuple(s.BETAS))
    else:
        raise ValueError(f"SOLVER.OPTIMIZER must be 'SGD' or 'ADAMW', got {s.OPTIMIZER!r}")
    cls = maybe_add_gradient_clipping(cfg, cls)
    if s.get("FUSED", False):
        try:
            return cls(groups, lr=s.BASE_LR, fused=True, **kwargs)
        except (TypeError, RuntimeError) as e:  # older torch, or a device without the kernel
            logger.info("SOLVER.FUSED: no fused %s kernel here (%s); using the default one", name, e)
    return cls(groups, lr=s.BASE_LR, **kwargs)
