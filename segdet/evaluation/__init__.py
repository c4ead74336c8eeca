"""Evaluators (semantic-segmentation mIoU) and evaluation helpers."""
