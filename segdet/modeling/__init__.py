"""Backbones, semantic heads and meta-architectures (registered on import)."""
from . import backbone, meta_arch, sem_seg  # noqa: F401
