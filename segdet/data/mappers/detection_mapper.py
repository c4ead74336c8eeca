"""Detectron2's detection mapper with errors that name the offending image or annotation."""
import copy
import math
import os
from typing import Dict

import numpy as np
import torch

from detectron2.data import DatasetMapper
from detectron2.data import transforms as T
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode

from segdet.data.io import CorruptImageError, read_image_checked, read_sem_seg_label

__all__ = ["DetectionDatasetMapper", "check_boxes"]

_XYWH_MODES = (BoxMode.XYWH_ABS, BoxMode.XYWH_REL, BoxMode.XYWHA_ABS)


def check_boxes(dataset_dict: Dict) -> None:
    """Raise :class:`CorruptImageError` for a non-crowd annotation whose ``bbox`` is not finite
    or has a negative width/height (XYWH: ``w < 0`` or ``h < 0``; XYXY: ``x1 < x0`` or
    ``y1 < y0``). The transforms would otherwise silently mirror such a box into a valid one.
    Zero-area boxes pass: detectron2 drops them after the transforms (``filter_empty_instances``).
    """
    for i, anno in enumerate(dataset_dict.get("annotations") or ()):
        if anno.get("iscrowd", 0) or "bbox" not in anno:
            continue
        box, mode = list(anno["bbox"]), BoxMode(anno.get("bbox_mode", BoxMode.XYXY_ABS))
        problem = None
        if len(box) < 4 or not all(isinstance(v, (int, float, np.number)) and math.isfinite(v) for v in box):
            problem = "expected 4 finite numbers"
        elif mode in _XYWH_MODES and (box[2] < 0 or box[3] < 0):
            problem = "negative width or height; expected w >= 0 and h >= 0"
        elif mode not in _XYWH_MODES and (box[2] < box[0] or box[3] < box[1]):
            problem = "x1 < x0 or y1 < y0; expected x0 <= x1 and y0 <= y1"
        if problem:
            ident = f" (id {anno['id']})" if "id" in anno else ""
            raise CorruptImageError(
                f"image {dataset_dict.get('file_name', '<no file_name>')}: annotation {i}{ident} has "
                f"bbox {box} in {mode.name}: {problem}"
            )


class DetectionDatasetMapper(DatasetMapper):
    """:class:`detectron2.data.DatasetMapper`, except that

    - a missing or unreadable image raises an error naming the file instead of a bare
      PIL/OpenCV traceback;
    - images are read with :func:`segdet.data.io.read_image_checked` (16/32-bit grayscale
      images scaled to 8 bits instead of clipped to white), ``sem_seg_file_name`` labels with
      :func:`segdet.data.io.read_sem_seg_label` (class ids kept as they are);
    - in training, a box with a negative width/height is an error (:func:`check_boxes`).
    """

    def __call__(self, dataset_dict):
        path = dataset_dict.get("file_name", "<no file_name>")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image file not found: {path}")
        if self.is_train:
            check_boxes(dataset_dict)
        try:
            return self._map(dataset_dict)
        except (OSError, SyntaxError) as e:  # PIL's decode errors
            raise CorruptImageError(f"cannot read image {path}: {e}") from e

    def _map(self, dataset_dict):
        # DatasetMapper.__call__ with segdet's readers.
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image_checked(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        sem_seg_gt = None
        if "sem_seg_file_name" in dataset_dict:
            sem_seg_gt = read_sem_seg_label(dataset_dict.pop("sem_seg_file_name"))

        aug_input = T.AugInput(image, sem_seg=sem_seg_gt)
        transforms = self.augmentations(aug_input)
        image, sem_seg_gt = aug_input.image, aug_input.sem_seg
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg_gt is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg_gt.astype("long"))
        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("sem_seg_file_name", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict
