"""Backbones registered in detectron2's BACKBONE_REGISTRY (EfficientFormerV2 lives with CGRSeg,
``segdet.modeling.cgrseg``)."""
from . import mobilenet_v2  # noqa: F401
