"""Keys of the multi-task model (``MODEL.MULTI_TASK``) and of training on sets of several tasks
(``DATALOADER.GROUP_BY_TASK``, ``DATASETS.TRAIN_SAMPLING_RATIOS``)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_multi_task_config"]


def add_multi_task_config(cfg: CN) -> None:
    # MultiTaskModel (MODEL.META_ARCHITECTURE "MultiTaskModel", segdet/modeling/multi_task/): one
    # backbone (MODEL.BACKBONE), a detection branch built from the usual MODEL.RPN / ROI_HEADS or
    # MODEL.RETINANET keys, and a semantic head from MODEL.SEM_SEG_HEAD.
    cfg.MODEL.MULTI_TASK = CN()
    # "GeneralizedRCNN" (Faster R-CNN's RPN + ROI heads), "RetinaNet", or "" (no detection branch).
    cfg.MODEL.MULTI_TASK.DETECTOR = "GeneralizedRCNN"
    # Build the semantic head (MODEL.SEM_SEG_HEAD.NAME).
    cfg.MODEL.MULTI_TASK.SEM_SEG = True
    # Each task's losses are multiplied by its weight.
    cfg.MODEL.MULTI_TASK.DETECTION_LOSS_WEIGHT = 1.0
    cfg.MODEL.MULTI_TASK.SEM_SEG_LOSS_WEIGHT = 1.0
    # Outputs computed at inference for an image of no particular dataset (tools/predict.py); the
    # images of a test set get their set's task only.
    cfg.MODEL.MULTI_TASK.TEST_TASKS = ("detection", "sem_seg")
    # Training sets of several tasks (INPUT.DATASET_MAPPER_NAME "multi_task"): each set's images go
    # through its task's mapper (by the set's evaluator_type: "sem_seg" -> the semantic mapper with
    # INPUT.SEM_SEG / INPUT.CROP; otherwise the detection mapper with INPUT.MIN_SIZE_TRAIN ..., no
    # crop), and each batch holds images of one task (and one aspect-ratio group).
    cfg.DATALOADER.GROUP_BY_TASK = True
    # Share of the training images drawn from each DATASETS.TRAIN set (one number per set, any
    # scale; () = in proportion to the sets' sizes). Any model and mapper can use it.
    cfg.DATASETS.TRAIN_SAMPLING_RATIOS = ()
