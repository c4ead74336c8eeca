"""Backbones, semantic heads and meta-architectures (registered on import): one package per
method (``cgrseg``, ``ssa``), shared pieces in ``backbone``, ``sem_seg`` and ``meta_arch``."""
from . import backbone, meta_arch, sem_seg  # noqa: F401
from . import cgrseg, multi_task, ssa  # noqa: F401
