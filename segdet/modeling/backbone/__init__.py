"""Backbones registered in detectron2's BACKBONE_REGISTRY."""
from . import mobilenet_v2  # noqa: F401
from . import efficientformer_v2  # noqa: F401
