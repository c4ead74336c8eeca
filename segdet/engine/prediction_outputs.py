"""What ``tools/predict.py`` writes for a prediction: overlays, label and colour maps, COCO records.

Every function takes the model's output dict for one image (:class:`segdet.engine.predictor.Predictor`):
``"instances"`` (boxes, scores, classes) and/or ``"sem_seg"`` (K, H, W) scores.
"""
from typing import Dict, List

import numpy as np

from detectron2.data.catalog import Metadata
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, Visualizer

__all__ = ["drawing_metadata", "draw_overlay", "label_map_in_dataset_ids", "color_map_with_legend",
           "coco_records"]


def _class_names(metadata, key: str, count: int) -> List[str]:
    names = list(getattr(metadata, key, None) or [])
    return names + [f"class {k}" for k in range(len(names), count)]


def drawing_metadata(metadata, num_classes: int) -> Metadata:
    """A copy of a dataset's ``metadata`` with a name and a fixed colour (RGB 0-255) for every
    one of ``num_classes`` classes, so that class maps are drawn in the same colours from run to
    run (detectron2's ``Visualizer`` draws classes without ``stuff_colors`` in random colours; its
    box colours stay its own)."""
    palette = (colormap(rgb=True, maximum=255).astype(int)).tolist()
    stuff_colors = list(getattr(metadata, "stuff_colors", None) or [])
    stuff_colors += [palette[k % len(palette)] for k in range(len(stuff_colors), num_classes)]
    fields = {k: v for k, v in metadata.as_dict().items() if k != "name"} if hasattr(metadata, "as_dict") else {}
    fields.update(stuff_classes=_class_names(metadata, "stuff_classes", num_classes),
                  stuff_colors=[tuple(int(c) for c in color) for color in stuff_colors[:max(num_classes, 1)]],
                  thing_classes=_class_names(metadata, "thing_classes", num_classes))
    return Metadata(name=getattr(metadata, "name", "predict"), **fields)


def draw_overlay(image: np.ndarray, output: Dict, metadata: Metadata, score_threshold: float = 0.0) -> np.ndarray:
    """The (H, W, 3) uint8 RGB ``image`` with the semantic argmax map (half transparent) and the
    detected boxes of score >= ``score_threshold`` drawn on it."""
    vis = Visualizer(image, metadata, instance_mode=ColorMode.IMAGE)
    if "sem_seg" in output:
        vis.draw_sem_seg(output["sem_seg"].argmax(dim=0).numpy(), alpha=0.5)
    if "instances" in output:
        instances = output["instances"]
        vis.draw_instance_predictions(instances[instances.scores >= score_threshold])
    return vis.output.get_image()


def label_map_in_dataset_ids(sem_seg, metadata) -> np.ndarray:
    """The argmax of ``sem_seg`` (K, H, W) as the dataset's own label values: class k is k + 1
    for a ``reduce_zero_label`` dataset, ``stuff_dataset_id_to_contiguous_id``'s inverse where the
    dataset has one, else k. uint8 when every value fits, else uint16."""
    classes = sem_seg.argmax(dim=0).numpy().astype(np.int64)
    to_dataset = getattr(metadata, "stuff_dataset_id_to_contiguous_id", None)
    if getattr(metadata, "reduce_zero_label", False):
        ids = classes + 1
    elif to_dataset:
        ignore = int(getattr(metadata, "ignore_label", 255))
        lookup = np.full(max(sem_seg.shape[0], max(to_dataset.values()) + 1), ignore, dtype=np.int64)
        for dataset_id, contiguous in to_dataset.items():
            lookup[contiguous] = dataset_id
        ids = lookup[classes]  # a class the mapping does not name: the ignore value
    else:
        ids = classes
    return ids.astype(np.uint8 if ids.max(initial=0) < 256 else np.uint16)


def color_map_with_legend(sem_seg, metadata: Metadata, row_height: int = 20) -> np.ndarray:
    """The argmax of ``sem_seg`` (K, H, W) in the classes' colours, with a legend on the right:
    a swatch and the name of every class present, the largest first. (H', W + legend, 3) uint8."""
    from PIL import Image, ImageDraw

    classes = sem_seg.argmax(dim=0).numpy()
    colors = np.asarray(metadata.stuff_colors, dtype=np.uint8)
    painted = colors[classes]
    counts = np.bincount(classes.ravel(), minlength=len(colors))
    present = [k for k in np.argsort(-counts, kind="stable") if counts[k] > 0]
    names = [metadata.stuff_classes[k] for k in present]
    legend_width = 16 + row_height + 7 * max(len(n) for n in names)
    height = max(painted.shape[0], row_height * len(present) + 8)
    canvas = Image.new("RGB", (painted.shape[1] + legend_width, height), (255, 255, 255))
    canvas.paste(Image.fromarray(painted), (0, 0))
    draw = ImageDraw.Draw(canvas)
    left = painted.shape[1] + 8
    for row, (k, name) in enumerate(zip(present, names)):
        top = 4 + row * row_height
        draw.rectangle([left, top, left + row_height - 4, top + row_height - 4], fill=tuple(int(c) for c in colors[k]),
                       outline=(0, 0, 0))
        draw.text((left + row_height + 2, top + 2), name, fill=(0, 0, 0))
    return np.asarray(canvas)


def coco_records(instances, image_id: int, file_name: str, metadata) -> List[Dict]:
    """detectron2's COCO results records (``image_id``, ``category_id``, ``bbox`` XYWH, ``score``)
    of one image's ``instances``, with the dataset's category ids (the inverse of
    ``thing_dataset_id_to_contiguous_id`` where the dataset has one) and the image's ``file_name``."""
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json

    records = instances_to_coco_json(instances, image_id)
    to_dataset = getattr(metadata, "thing_dataset_id_to_contiguous_id", None)
    from_contiguous = {v: k for k, v in to_dataset.items()} if to_dataset else {}
    for record in records:
        record["category_id"] = from_contiguous.get(record["category_id"], record["category_id"])
        record["file_name"] = file_name
    return records
