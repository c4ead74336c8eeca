"""Dataset dicts for the train / test loaders, with one clear error for an empty dataset.

detectron2's ``get_detection_dataset_dicts`` asserts (a traceback, no hint) when no dataset is
named, when a dataset's loader returns no images, when filtering leaves none, or when an
annotation's ``category_id`` is outside the dataset's classes; here these are
:class:`ConfigError` naming the config key and the datasets.
"""
from typing import List, Sequence

from detectron2.data import get_detection_dataset_dicts

from segdet.utils.errors import ConfigError

__all__ = ["checked_dataset_dicts", "dataset_dicts_for_training", "dataset_dicts_for_testing"]


def checked_dataset_dicts(names: Sequence[str], key: str, **kwargs) -> List[dict]:
    """``get_detection_dataset_dicts(names, **kwargs)``, its assertions as ConfigError.

    Args:
        key: the config key the names come from (``DATASETS.TRAIN``), for the message.
    """
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ConfigError(f"{key} is empty: name at least one registered dataset")
    try:
        return get_detection_dataset_dicts(names, **kwargs)
    except AssertionError as e:
        reason = str(e) or "assertion failed"
        if kwargs.get("filter_empty") and reason.startswith("No valid data"):
            reason += (" (no image has a non-crowd annotation: DATALOADER.FILTER_EMPTY_ANNOTATIONS "
                       "drops images without one)")
        listed = ", ".join(repr(n) for n in names)
        raise ConfigError(f"{key} {listed} has no images/annotations to use: {reason}") from None


def dataset_dicts_for_training(cfg) -> List[dict]:
    """The training dicts exactly as detectron2's ``build_detection_train_loader`` loads them,
    after checking the model's NUM_CLASSES against the datasets' classes
    (:func:`segdet.data.class_checks.check_num_classes`) and that a semantic set's labels are not
    a raw 0/255 mask (:func:`segdet.data.label_checks.check_binary_ignore_labels`)."""
    from .class_checks import check_num_classes
    from .label_checks import check_binary_ignore_labels

    check_num_classes(cfg)
    dicts = checked_dataset_dicts(
        cfg.DATASETS.TRAIN, "DATASETS.TRAIN",
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0,
        proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
    )
    check_binary_ignore_labels(cfg, dicts)  # a raw 0/255 mask: 255 is the ignore value
    return dicts


def dataset_dicts_for_testing(cfg, dataset_name: str) -> List[dict]:
    """The dicts of one test dataset exactly as ``build_detection_test_loader`` loads them."""
    proposal_files = None
    if cfg.MODEL.LOAD_PROPOSALS:
        proposal_files = [cfg.DATASETS.PROPOSAL_FILES_TEST[list(cfg.DATASETS.TEST).index(dataset_name)]]
    return checked_dataset_dicts([dataset_name], "DATASETS.TEST", filter_empty=False,
                                 proposal_files=proposal_files)
