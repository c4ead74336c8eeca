"""Synthetic data for tests and timing (no downloads): small datasets, a model's input batch,
random teacher weights.

Detection images are noise with a few solid rectangles (the boxes, one class "box");
segmentation images are the same scenes with a label map (background / rectangle / disk).
Both are learnable in a few dozen CPU iterations, so end-to-end tests can check that
training improves the metric. ``tools/benchmark.py`` times models on :func:`synthetic_batch`
and builds distillation models on :func:`save_random_teacher_weights`.
"""
import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = [
    "make_synthetic_detection_dataset",
    "make_synthetic_sem_seg_dataset",
    "register_synthetic_datasets",
    "synthetic_batch",
    "save_random_teacher_weights",
]

SEM_SEG_CLASSES = ("background", "rectangle", "disk")


def _scene(rng: np.random.Generator, height: int, width: int):
    image = rng.integers(0, 80, size=(height, width, 3), dtype=np.uint8)
    label = np.zeros((height, width), dtype=np.uint8)
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        h, w = int(rng.integers(height // 6, height // 2)), int(rng.integers(width // 6, width // 2))
        y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        image[y:y + h, x:x + w] = (220, 60, 60)
        label[y:y + h, x:x + w] = 1
        boxes.append([x, y, w, h])
    cy, cx, r = int(rng.integers(10, height - 10)), int(rng.integers(10, width - 10)), int(rng.integers(5, 12))
    yy, xx = np.mgrid[:height, :width]
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    image[disk] = (60, 200, 60)
    label[disk] = 2
    return image, label, boxes


def make_synthetic_detection_dataset(root: str, num_images: int = 8, size: Tuple[int, int] = (96, 128),
                                     seed: int = 0) -> Tuple[str, str]:
    """Writes ``root/images/*.png`` and ``root/annotations.json`` (COCO); returns both paths."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        image, _, boxes = _scene(rng, *size)
        name = f"{i:04d}.png"
        Image.fromarray(image).save(os.path.join(root, "images", name))
        images.append({"id": i + 1, "file_name": name, "height": size[0], "width": size[1]})
        for box in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    json_path = os.path.join(root, "annotations.json")
    with open(json_path, "w") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": [{"id": 1, "name": "box"}]}, f)
    return json_path, os.path.join(root, "images")


def make_synthetic_sem_seg_dataset(root: str, num_images: int = 8, size: Tuple[int, int] = (96, 128),
                                   seed: int = 0, ignore_border: int = 2) -> List[Dict]:
    """Writes images and uint8 label PNGs (255 on a thin border = ignore); returns dataset dicts."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    dicts = []
    for i in range(num_images):
        image, label, _ = _scene(rng, *size)
        if ignore_border:
            label[:ignore_border] = 255
        image_path = os.path.join(root, "images", f"{i:04d}.png")
        label_path = os.path.join(root, "labels", f"{i:04d}.png")
        Image.fromarray(image).save(image_path)
        Image.fromarray(label).save(label_path)
        dicts.append({"file_name": image_path, "sem_seg_file_name": label_path, "height": size[0],
                      "width": size[1], "image_id": i})
    return dicts


def register_synthetic_datasets(root: str, splits: Sequence[str] = ("train", "val")) -> None:
    """Creates (if needed) and registers ``synthetic_det_<split>`` (COCO) and
    ``synthetic_sem_seg_<split>`` under ``root``; a no-op for names already registered."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    for index, split in enumerate(splits):
        det_name, seg_name = f"synthetic_det_{split}", f"synthetic_sem_seg_{split}"
        if det_name not in DatasetCatalog.list():
            json_path, image_root = make_synthetic_detection_dataset(os.path.join(root, "det", split), seed=index)
            register_coco_instances(det_name, {}, json_path, image_root)
        if seg_name not in DatasetCatalog.list():
            dicts = make_synthetic_sem_seg_dataset(os.path.join(root, "sem_seg", split), seed=index)
            DatasetCatalog.register(seg_name, lambda d=dicts: [dict(x) for x in d])
            MetadataCatalog.get(seg_name).set(
                stuff_classes=list(SEM_SEG_CLASSES), ignore_label=255, evaluator_type="sem_seg",
                reduce_zero_label=False)


def save_random_teacher_weights(cfg, path: str, extra_opts: Sequence[str] = (), name: str = "") -> List[str]:
    """Build the teacher of a distillation config (its ``DISTILL.TEACHER.OPTS`` plus
    ``extra_opts``; with ``name``, teacher ``DISTILL.TEACHERS.<name>``) with random weights and
    save them to ``path``, so the distillation model can be built where no trained teacher exists
    (tests, timing). Returns the teacher opts used."""
    import torch
    from detectron2.modeling import build_model

    from .config_io import load_config

    node = cfg.DISTILL.TEACHERS[name] if name else cfg.DISTILL.TEACHER
    opts = list(node.OPTS) + list(extra_opts)
    teacher = build_model(load_config(node.CONFIG_FILE, opts))
    torch.save({"model": teacher.state_dict()}, path)
    return opts


def two_gt_boxes(height: int, width: int):
    """Instances of an image of ``height x width`` with two overlapping GT boxes of class 0."""
    import torch
    from detectron2.structures import Boxes, Instances

    inst = Instances((height, width))
    inst.gt_boxes = Boxes(torch.tensor([[0.08, 0.1, 0.45, 0.7], [0.4, 0.25, 0.95, 0.95]]) *
                          torch.tensor([width, height, width, height]))
    inst.gt_classes = torch.zeros(2, dtype=torch.long)
    return inst


def synthetic_batch(cfg, height: int = 128, width: int = 160, n: int = 2, seed: int = 0) -> List[Dict]:
    """A training batch for the model ``cfg`` builds: random images with two GT boxes each
    (detectors) or a random label map with an ignored top band (semantic segmentors; the
    multi-task model gets boxes and label maps in turn)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "DistillationModel":
        arch = cfg.DISTILL.STUDENT_META_ARCHITECTURE
    batch = []
    for i in range(n):
        item = {"image": torch.rand(3, height, width, generator=g) * 255, "height": height, "width": width}
        if "Semantic" in arch or (arch == "MultiTaskModel" and i % 2):  # multi-task: boxes, labels, ...
            label = torch.randint(0, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, (height, width), generator=g)
            label[: max(1, height // 16)] = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
            item["sem_seg"] = label
        else:
            item["instances"] = two_gt_boxes(height, width)
        batch.append(item)
    return batch


def synthetic_detection_input(seed: int, size: Tuple[int, int] = (96, 128)) -> Dict:
    """One training input with two GT boxes (class 0) on a random image of ``size`` (h, w)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    h, w = size
    return {"image": torch.rand(3, h, w, generator=g) * 255, "instances": two_gt_boxes(h, w)}


def synthetic_sem_seg_input(seed: int, size: Tuple[int, int] = (96, 128), num_classes: int = 3,
                            ignore_value: int = 255) -> Dict:
    """One training input with a random label map of ``size`` (h, w) whose top 4 rows are ignored."""
    import torch

    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, num_classes, size, generator=g)
    label[:4] = ignore_value
    return {"image": torch.rand(3, *size, generator=g) * 255, "sem_seg": label}
