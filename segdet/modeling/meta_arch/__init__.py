"""Meta-architectures registered in detectron2's META_ARCH_REGISTRY."""
from .semantic_segmentor import SegdetSemanticSegmentor

__all__ = ["SegdetSemanticSegmentor"]
