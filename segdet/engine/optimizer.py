"""Optimizer with per-parameter groups, by one of two rules (``cfg.SOLVER.PARAMWISE_RULE``):

* ``"segdet"`` (:func:`build_param_groups`): norm layers get ``SOLVER.WEIGHT_DECAY_NORM``, other
  biases ``SOLVER.WEIGHT_DECAY_BIAS`` / ``BIAS_LR_FACTOR``, and parameters under
  ``SOLVER.HEAD_PREFIXES`` ``SOLVER.HEAD_LR_MULTIPLIER``, the multiplier and the decay rule
  independent of each other;
* ``"mmcv"`` (:func:`build_mmcv_param_groups`): mmcv 1.x ``DefaultOptimizerConstructor`` with
  ``paramwise_cfg=dict(custom_keys=...)`` (the official CGRSeg / SSA recipe), keys from
  ``SOLVER.PARAMWISE_CUSTOM_KEYS``.
"""
import logging
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn

from detectron2.solver.build import maybe_add_gradient_clipping, reduce_param_groups

__all__ = ["build_param_groups", "build_mmcv_param_groups", "build_optimizer", "NORM_TYPES",
           "PARAMWISE_RULES"]

logger = logging.getLogger(__name__)

NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)
PARAMWISE_RULES = ("segdet", "mmcv")


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
    independent, unlike mmcv's matching-key rule of :func:`build_mmcv_param_groups`). Shared
    parameters appear once.
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


def _check_custom_keys(custom_keys: Sequence) -> List[Tuple[str, float, float]]:
    """``SOLVER.PARAMWISE_CUSTOM_KEYS`` as a list of (key, lr_mult, decay_mult); one clear error
    for a malformed entry."""
    out, seen = [], set()
    for entry in custom_keys:
        ok = (isinstance(entry, (tuple, list)) and len(entry) == 3 and isinstance(entry[0], str) and entry[0]
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in entry[1:]))
        if not ok:
            raise ValueError(f"SOLVER.PARAMWISE_CUSTOM_KEYS: expected entries (key, lr_mult, decay_mult) with a "
                             f"non-empty key and multipliers >= 0, got {entry!r}")
        if entry[0] in seen:
            raise ValueError(f"SOLVER.PARAMWISE_CUSTOM_KEYS: key {entry[0]!r} is listed twice")
        seen.add(entry[0])
        out.append((entry[0], float(entry[1]), float(entry[2])))
    return out


def build_mmcv_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    custom_keys: Sequence[Tuple[str, float, float]],
) -> List[Dict[str, Any]]:
    """One group per trainable parameter (named by ``param_names``), by mmcv 1.x's
    ``DefaultOptimizerConstructor`` with ``paramwise_cfg=dict(custom_keys=...)`` and no other
    paramwise option, as the official CGRSeg / SSA configs use it.

    ``custom_keys``: (key, lr_mult, decay_mult) triples. A parameter whose dotted name contains a
    key as a substring gets ``base_lr * lr_mult`` and ``weight_decay * decay_mult`` from exactly
    one key: of the matching keys, the longest, and among equally long ones the alphabetically
    first (mmcv sorts the keys so; the order of the list does not matter). A parameter that
    matches no key gets ``base_lr`` and ``weight_decay``, norm layers and biases included. E.g.
    the official (("head", 10, 1), ("norm", 1, 0)): every ``sem_seg_head.*`` parameter, its norms
    included, and the backbone's ``talking_head*`` convolutions get lr x10 with decay; backbone
    parameters named ``*norm*`` get no decay; the other backbone BatchNorms keep it. Keys are
    matched against the names of ``model.named_parameters()``; a top-level parameter ``w`` is
    matched as ``".w"``, as mmcv does. Shared parameters appear once.
    """
    keys = _check_custom_keys(custom_keys)
    mults = {k: (lr_mult, decay_mult) for k, lr_mult, decay_mult in keys}
    ordered = sorted(sorted(mults), key=len, reverse=True)
    groups, seen = [], set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        full = name if "." in name else "." + name
        lr, decay = base_lr, weight_decay
        key = next((k for k in ordered if k in full), None)
        if key is not None:
            lr, decay = base_lr * mults[key][0], weight_decay * mults[key][1]
        groups.append({"params": [param], "lr": lr, "weight_decay": decay, "param_names": [name]})
    return groups


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW (``cfg.SOLVER.OPTIMIZER``) over the parameter groups of
    ``cfg.SOLVER.PARAMWISE_RULE`` (:func:`build_param_groups` or :func:`build_mmcv_param_groups`), merged into one
    group per distinct (lr, weight decay) like detectron2's ``reduce_param_groups`` so that the
    multi-tensor and fused kernels run once per group, not once per parameter; with
    detectron2's optional gradient clipping (``cfg.SOLVER.CLIP_GRADIENTS``); PyTorch's fused
    kernel when ``cfg.SOLVER.FUSED`` and this torch build and device have one."""
    s = cfg.SOLVER
    rule = s.get("PARAMWISE_RULE", "segdet")
    if rule == "mmcv":
        groups = build_mmcv_param_groups(model, base_lr=s.BASE_LR, weight_decay=s.WEIGHT_DECAY,
                                         custom_keys=s.PARAMWISE_CUSTOM_KEYS)
    elif rule == "segdet":
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
    else:
        raise ValueError(f"SOLVER.PARAMWISE_RULE must be one of {list(PARAMWISE_RULES)}, got {rule!r}")
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
