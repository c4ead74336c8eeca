"""DRKD: pixel-wise (GloRe graph) and instance-wise relation distillation for detectors.
Importing registers the ``DRKD`` loss in DISTILL_LOSS_REGISTRY.

  loss.py        the DRKD module (adapters, GloRe units, relation modules; the three terms)
  functional.py  the terms as pure functions of tensors
  glore.py       the GloRe unit (as in the paper)
  relation.py    the instance relation module and its filters
  fast.py        opt-in drop-ins (DISTILL.DRKD.FAST): a reordered GloRe unit, a bmm 1x1 conv and
                 two autograd ops with a leaner backward (same values as bmm / vector_norm)
"""
from . import loss  # noqa: F401
