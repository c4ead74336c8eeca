"""Semantic-segmentation heads registered in detectron2's SEM_SEG_HEADS_REGISTRY."""
from . import cgrseg  # noqa: F401
from . import ssa  # noqa: F401
from . import ssa_head  # noqa: F401
