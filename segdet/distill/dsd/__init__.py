"""DSD: pixel-wise (PSD) and category-wise (CSD) similarity distillation for segmentors.
Importing registers the ``PSD`` and ``CSD`` losses in DISTILL_LOSS_REGISTRY.

  loss.py        the PSD and CSD modules (taps, resizing, weights)
  functional.py  the terms as pure functions of tensors
"""
from . import loss  # noqa: F401
