"""Backbones, semantic heads and meta-architectures (registered on import)."""
from . import backbone, sem_seg  # noqa: F401
