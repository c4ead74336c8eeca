"""Start-up check that the model's NUM_CLASSES matches the classes of the training datasets.

Without it a mismatch is found only after training (detection: an AssertionError in the COCO
evaluator at the final evaluation; segmentation: labels outside the head, or classes never
predicted). Checked against each ``DATASETS.TRAIN`` dataset's metadata: ``thing_classes`` for
detectors, ``stuff_classes`` for semantic segmentors; a dataset without that list is skipped.
"""
from typing import Optional

from detectron2.data import MetadataCatalog

from segdet.utils.errors import ConfigError

__all__ = ["num_classes_key", "check_num_classes"]


def _architecture(cfg) -> str:
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "DistillationModel":  # the student is what trains on the data
        arch = cfg.DISTILL.STUDENT_META_ARCHITECTURE
    return arch


def num_classes_key(cfg) -> Optional[tuple]:
    """(config key, metadata field) the model's class count is checked by, or None."""
    arch = _architecture(cfg)
    if arch == "MultiTaskModel":  # checked per training set, with the set's task's mapper name
        if cfg.INPUT.DATASET_MAPPER_NAME == "sem_seg":
            return "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "stuff_classes"
        if cfg.INPUT.DATASET_MAPPER_NAME != "default" or not cfg.MODEL.MULTI_TASK.DETECTOR:
            return None
        arch = cfg.MODEL.MULTI_TASK.DETECTOR
    if "SemanticSegmentor" in arch or (cfg.INPUT.DATASET_MAPPER_NAME == "sem_seg" and "RCNN" not in arch):
        return "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "stuff_classes"
    if arch == "RetinaNet":
        return "MODEL.RETINANET.NUM_CLASSES", "thing_classes"
    if "RCNN" in arch and cfg.MODEL.ROI_HEADS.NAME:
        return "MODEL.ROI_HEADS.NUM_CLASSES", "thing_classes"
    return None


def _listing(classes, limit: int = 6) -> str:
    shown = ", ".join(str(c) for c in classes[:limit])
    return shown + (f", ... ({len(classes)} in all)" if len(classes) > limit else "")


def check_num_classes(cfg) -> None:
    """Raise a :class:`ConfigError` naming the key, both numbers and the dataset when the model's
    NUM_CLASSES differs from the number of classes of a ``DATASETS.TRAIN`` dataset."""
    found = num_classes_key(cfg)
    if found is None:
        return
    key, field = found
    node = cfg
    for part in key.split("."):
        node = node[part]
    num_classes = int(node)
    names = [cfg.DATASETS.TRAIN] if isinstance(cfg.DATASETS.TRAIN, str) else list(cfg.DATASETS.TRAIN)
    for name in names:
        classes = MetadataCatalog.get(name).get(field, None)
        if classes is None or len(classes) == num_classes:
            continue
        raise ConfigError(
            f"{key} is {num_classes} but DATASETS.TRAIN dataset {name!r} has {len(classes)} classes "
            f"({field}: {_listing(list(classes))}); set {key} {len(classes)}")
