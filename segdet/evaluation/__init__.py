"""Evaluators (semantic-segmentation mIoU) and evaluation helpers."""
from .visualization import PredictionOverlayWriter  # noqa: F401
