"""``fuse_model(model)``: the inference-only fast path, applied as module swaps.

A *fuser* is a function registered for a module class: it takes a module in eval mode and
returns its replacement (a :class:`FusedModule`, any standard module, or the same module with
some children replaced). :func:`fuse_model` walks the model from the root, replaces every module
that has a fuser (looked up along its class's MRO) and descends into the others' children. The
model files stay plain: one forward per module, standard ``nn`` layers; everything that is only
there for speed lives in ``segdet.deploy``.
"""
import copy
from typing import Callable, Dict, Type

from torch import nn

from .ops import ConvGELU

__all__ = ["FusedModule", "register_fuser", "fuse_module", "fuse_model", "fused_module_count"]

Fuser = Callable[[nn.Module], nn.Module]
_FUSERS: Dict[Type[nn.Module], Fuser] = {}


class FusedModule(nn.Module):
    """Base of the inference-only replacements: BatchNorms, scales and layer scales are folded
    into convolutions, so the module cannot be trained back into the original parameterisation,
    and ``train()`` raises."""

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError(
                f"{type(self).__name__} is a fused inference module (BatchNorm folded into convolutions) "
                f"and cannot be trained; train the plain model and call fuse_model() after")
        return super().train(False)


def register_fuser(*classes: Type[nn.Module]) -> Callable[[Fuser], Fuser]:
    """Decorator: ``fuser(module)`` builds the replacement of every module of these classes
    (and their subclasses, unless a subclass has its own fuser)."""
    def register(fuser: Fuser) -> Fuser:
        for cls in classes:
            if cls in _FUSERS:
                raise KeyError(f"register_fuser: {cls.__name__} already has the fuser {_FUSERS[cls].__name__}")
            _FUSERS[cls] = fuser
        return fuser
    return register


def _fuser_of(module: nn.Module):
    for cls in type(module).__mro__:
        if cls in _FUSERS:
            return _FUSERS[cls]
    return None


def fuse_module(module: nn.Module) -> nn.Module:
    """The fused replacement of ``module`` (eval mode), or ``module`` itself with its children
    fused when it has no fuser. Children are replaced in place (the module is modified)."""
    fuser = _fuser_of(module)
    if fuser is not None:
        return fuser(module)
    for name, child in list(module.named_children()):
        fused = fuse_module(child)
        if fused is not child:
            setattr(module, name, fused)
    return module


def fuse_model(model: nn.Module, *, inplace: bool = False, onednn: bool = True) -> nn.Module:
    """The model with every fusable module swapped for its fused inference replacement.

    Args:
        model: in eval mode (the fold uses BatchNorm running statistics).
        inplace: fuse ``model`` itself (its modules are replaced) instead of a deep copy.
        onednn: let :class:`~segdet.deploy.ops.ConvGELU` use oneDNN's private fused kernel on
            CPU. False keeps standard operations only (they are also used whenever the model is
            traced for export or compilation).

    Returns:
        the fused model (``model`` when ``inplace``), in eval mode; its outputs equal the plain
        model's up to float rounding, and ``train()`` raises on it. A model without fusable
        modules comes back unchanged (see :func:`fused_module_count`).
    """
    if model.training:
        raise RuntimeError(f"fuse_model: call {type(model).__name__}.eval() first; fusing folds the "
                           f"BatchNorm running statistics and is for inference only")
    if not inplace:
        model = copy.deepcopy(model)
    model = fuse_module(model)
    for module in model.modules():
        if isinstance(module, ConvGELU):
            module.use_onednn = onednn
    return model.eval()


def fused_module_count(model: nn.Module) -> int:
    """Number of :class:`FusedModule` replacements in ``model`` (0: nothing was fused)."""
    return sum(isinstance(m, FusedModule) for m in model.modules())
