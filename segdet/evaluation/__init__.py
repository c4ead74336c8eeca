"""Evaluators (semantic-segmentation mIoU) and evaluation helpers."""
from .visualization import PredictionOverlayWriter  # noqa: F401
from .sem_seg_evaluation import SegdetSemSegEvaluator  # noqa: F401
