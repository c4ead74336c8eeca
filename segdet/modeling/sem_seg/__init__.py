"""Semantic-segmentation heads registered in detectron2's SEM_SEG_HEADS_REGISTRY."""
