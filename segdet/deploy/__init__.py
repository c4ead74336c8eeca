"""Inference-only speed code, kept apart from the model files and applied as module swaps.

``fuse_model(model)`` returns the model with every module that has a fused version swapped for
it (:mod:`.fuse`); the fused modules and their fusers are in :mod:`.efficientformer_v2` and
:mod:`.cgrseg_head`, the folding helpers in :mod:`.fold` and the faster operations in :mod:`.ops`.
Tests compare every fused module and every fused model with the plain one.

    from segdet.deploy import fuse_model
    fast = fuse_model(model.eval())          # a fused copy; the plain model is untouched
"""
from .fuse import FusedModule, fuse_model, fused_module_count, fuse_module, register_fuser
from . import cgrseg_head, efficientformer_v2  # noqa: F401,E402  (they register their fusers)

__all__ = ["FusedModule", "fuse_model", "fused_module_count", "fuse_module", "register_fuser"]
