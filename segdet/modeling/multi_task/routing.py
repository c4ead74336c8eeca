"""Per-image task routing for the multi-task model.

A training batch may mix images that carry boxes (``"instances"``), a label map (``"sem_seg"``)
or both. Each branch sees only the images that carry its labels. When no image of the batch
carries them, the branch runs once on the first image's features with a stand-in target and its
losses are multiplied by 0: the loss is exactly 0, every parameter the branch uses gets a zero
gradient (so DDP needs no ``find_unused_parameters``), every process makes the same collective
calls (SyncBN in a head), and the loss names are the same on every process and iteration
(detectron2 averages the loss dicts of all processes by name).
"""
from typing import Dict, List, Sequence

import torch

from detectron2.structures import Boxes, ImageList, Instances

__all__ = ["images_with", "select_images", "select_features", "stand_in_instances", "stand_in_sem_seg",
           "zeroed"]


def images_with(batched_inputs: Sequence[Dict], key: str) -> List[int]:
    """Indices of the inputs that carry ``key`` ("instances" or "sem_seg")."""
    return [i for i, x in enumerate(batched_inputs) if key in x]


def select_images(images: ImageList, index: Sequence[int]) -> ImageList:
    """The padded batch restricted to ``index`` (same padded size)."""
    if list(index) == list(range(len(images))):
        return images
    return ImageList(images.tensor[list(index)], [images.image_sizes[i] for i in index])


def select_features(features: Dict[str, torch.Tensor], index: Sequence[int], batch_size: int
                    ) -> Dict[str, torch.Tensor]:
    """{name: (N, C, H, W)} -> {name: (len(index), C, H, W)}; no copy when ``index`` is all."""
    if list(index) == list(range(batch_size)):
        return features
    return {name: f[list(index)] for name, f in features.items()}


def stand_in_instances(image_size, device) -> Instances:
    """Boxes for an image without any: one box over its top-left quarter, class 0."""
    h, w = image_size
    out = Instances(image_size)
    out.gt_boxes = Boxes(torch.tensor([[0.0, 0.0, w / 2.0, h / 2.0]], device=device))
    out.gt_classes = torch.zeros(1, dtype=torch.int64, device=device)
    return out


def stand_in_sem_seg(padded_size, image_size, ignore_value: int, device) -> torch.Tensor:
    """A (1, H, W) label map for an image without one: class 0 inside the image, ignore in the
    padding."""
    target = torch.full((1, *padded_size), ignore_value, dtype=torch.int64, device=device)
    target[:, : image_size[0], : image_size[1]] = 0
    return target


def zeroed(losses: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Each loss times 0 (exact zeros with zero gradients; the values must be finite)."""
    return {name: value * 0.0 for name, value in losses.items()}
