"""Semantic-segmentation dataset mapper with mmseg's ADE20K pipeline.

Input dataset dicts (detectron2 format)::

    {"file_name": str, "sem_seg_file_name": str, "image_id": str | int,
     "height": int, "width": int,         # optional: filled in (and checked) from the image
     "reduce_zero_label": bool}           # optional: overrides the dataset metadata's value

Training output: ``{"image": (C, H', W') uint8 tensor, "sem_seg": (H', W') int64 tensor, ...}``
after resize-by-ratio, cat-max crop, flip and photometric distortion. Crops smaller than the crop
size are not padded here: the segmentor pads the batch (images with 0 after normalisation,
labels with its ignore value). Test output: the image keep-ratio resized into
``INPUT.SEM_SEG.TEST_RESIZE_SCALE`` and no label; ``"height"``/``"width"`` stay the original size, so
the segmentor returns logits at the original resolution, where the evaluator reads the label.
"""
import copy
import os
from typing import Dict, List, Optional

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from segdet.data.io import CorruptImageError, metadata_label_lookup, read_image_checked, read_sem_seg_label
from segdet.data.transforms import PhotometricDistortion, RandomCropCatMax, ResizeByRatio

__all__ = ["SemSegDatasetMapper", "build_sem_seg_augmentations", "check_label_values"]


def build_sem_seg_augmentations(cfg, is_train: bool, ignore_label: int) -> List[T.Augmentation]:
    """The augmentation list described by ``cfg.INPUT.SEM_SEG`` and ``cfg.INPUT.CROP``
    (detectron2's crop keys: a crop only with ``INPUT.CROP.ENABLED``, of any detectron2
    ``INPUT.CROP.TYPE``, retried by ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA``)."""
    s = cfg.INPUT.SEM_SEG
    if not is_train:
        return [ResizeByRatio(s.TEST_RESIZE_SCALE, ratio_range=None)]
    augs: List[T.Augmentation] = [ResizeByRatio(s.RESIZE_SCALE, s.RESIZE_RATIO_RANGE)]
    crop = cfg.INPUT.CROP
    if crop.ENABLED:
        augs.append(RandomCropCatMax(crop.SIZE, crop.SINGLE_CATEGORY_MAX_AREA, ignore_label=ignore_label,
                                     crop_type=crop.TYPE))
    if s.FLIP_PROB > 0:
        augs.append(T.RandomFlip(prob=s.FLIP_PROB, horizontal=True, vertical=False))
    if s.PHOTOMETRIC_DISTORTION:
        augs.append(PhotometricDistortion(image_format=cfg.INPUT.FORMAT))
    return augs


class SemSegDatasetMapper:
    """Dataset dict -> model input for :class:`SegdetSemanticSegmentor` (see module docstring).

    ``reduce_zero_label`` is taken from the dict's ``"reduce_zero_label"`` key when present,
    else from the constructor (``from_config``: the metadata of the first dataset in
    ``DATASETS.TRAIN`` / ``DATASETS.TEST``). ``label_lookup`` (``from_config``: the table of the
    datasets' ``label_map`` metadata, which must then be the same for every training set) maps
    file values to class ids on read (:func:`segdet.data.io.read_sem_seg_label`).

    With ``num_classes`` (``from_config``: ``MODEL.SEM_SEG_HEAD.NUM_CLASSES``) every training
    label is checked: a value outside [0, num_classes) that is not the ignore value raises
    :class:`CorruptImageError` naming the file (the loss would fail with a bare IndexError on the
    CPU and a device-side assert on CUDA).
    """

    @configurable
    def __init__(self, is_train: bool = True, *, augmentations: List[T.Augmentation],
                 image_format: str = "RGB", ignore_label: int = 255,
                 reduce_zero_label: bool = False, num_classes: Optional[int] = None,
                 label_lookup: Optional[np.ndarray] = None):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_label = ignore_label
        self.reduce_zero_label = reduce_zero_label
        self.num_classes = num_classes
        self.label_lookup = label_lookup

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict:
        names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
        meta = MetadataCatalog.get(names[0]) if len(names) else None
        ignore_label = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        dataset_ignore = getattr(meta, "ignore_label", None) if meta is not None else None
        if dataset_ignore is not None and dataset_ignore != ignore_label:
            raise ValueError(
                f"dataset {names[0]!r} has ignore_label={dataset_ignore} but "
                f"MODEL.SEM_SEG_HEAD.IGNORE_VALUE={ignore_label}; set them equal"
            )
        lookups = [metadata_label_lookup(MetadataCatalog.get(n), ignore_label) for n in names]
        if any((a is None) != (b is None) or (a is not None and not np.array_equal(a, b))
               for a, b in zip(lookups, lookups[1:])):
            raise ValueError(f"datasets {list(names)} have different label_map metadata; the sem_seg "
                             "mapper reads every label with one table: list sets with the same one")
        return {
            "is_train": is_train,
            "label_lookup": lookups[0] if lookups else None,
            "augmentations": build_sem_seg_augmentations(cfg, is_train, ignore_label),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore_label,
            "reduce_zero_label": bool(getattr(meta, "reduce_zero_label", False)) if meta else False,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        }

    def __call__(self, dataset_dict: Dict) -> Dict:
        d = copy.deepcopy(dataset_dict)
        if "file_name" not in d:
            raise KeyError(f"dataset dict has no 'file_name' (keys: {sorted(d)})")
        image = read_image_checked(d["file_name"], format=self.image_format)
        utils.check_image_size(d, image)  # fills in / checks "height" and "width"
        d.setdefault("image_id", os.path.splitext(os.path.basename(d["file_name"]))[0])

        sem_seg: Optional[np.ndarray] = None
        if self.is_train:
            sem_seg = self._read_label(d, image.shape[:2])
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        self.augmentations(aug_input)

        d["image"] = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        if sem_seg is not None:
            d["sem_seg"] = torch.as_tensor(aug_input.sem_seg.astype(np.int64))
        return d

    def _read_label(self, d: Dict, image_hw) -> np.ndarray:
        path = d.get("sem_seg_file_name")
        if path is None:
            raise KeyError(f"dataset dict for {d['file_name']} has no 'sem_seg_file_name'")
        reduce = bool(d.get("reduce_zero_label", self.reduce_zero_label))
        label = read_sem_seg_label(path, reduce_zero_label=reduce, ignore_label=self.ignore_label,
                                   lookup=self.label_lookup)
        if label.shape != tuple(image_hw):
            raise ValueError(
                f"label {path} has size {label.shape[0]}x{label.shape[1]} but image "
                f"{d['file_name']} has {image_hw[0]}x{image_hw[1]}"
            )
        if self.num_classes is not None:
            check_label_values(label, self.num_classes, self.ignore_label, path, reduce)
        return label


def check_label_values(label: np.ndarray, num_classes: int, ignore_label: int, path: str,
                       reduced: bool = False) -> None:
    """Raise :class:`CorruptImageError` if ``label`` has a value outside [0, num_classes) other
    than ``ignore_label``. The message names the file, up to 10 bad values as they are in the
    file (``reduced``: the label went through reduce_zero_label, so file value = class id + 1)
    and the class count."""
    bad = ((label < 0) | (label >= num_classes)) & (label != ignore_label)
    if not bad.any():
        return
    values = np.unique(label[bad]).astype(np.int64) + (1 if reduced else 0)
    shown = ", ".join(str(v) for v in values[:10]) + (f", ... ({len(values)} values)" if len(values) > 10 else "")
    expected = f"1..{num_classes} (reduce_zero_label: value k is class k-1, 0 unlabelled)" if reduced else f"0..{num_classes - 1}"
    raise CorruptImageError(
        f"label {path} has value(s) {shown}; expected class ids {expected} for "
        f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes}, or the ignore value {ignore_label}"
    )
