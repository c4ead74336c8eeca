"""One model for detection and semantic segmentation (``MultiTaskModel``): a shared backbone, a
detection branch (Faster R-CNN or RetinaNet) and a semantic head, trained on images that carry
boxes, label maps or both."""
from .detection_branch import RCNNDetectionBranch, RetinaNetDetectionBranch, build_detection_branch
from .model import TASKS, MultiTaskModel

__all__ = ["MultiTaskModel", "TASKS", "RCNNDetectionBranch", "RetinaNetDetectionBranch", "build_detection_branch"]
