"""Registration of the embedded sample datasets (built by ``python tools/prepare_sample_data.py``).

Detection (COCO JSON, ``evaluator_type="coco"``):
    ``segdet_trees_{train,val}``   aerial tiles, 1 class "tree"
Semantic segmentation (image + uint8 label PNG, 255 = ignore, ``evaluator_type="sem_seg"``,
``reduce_zero_label=False``):
    ``segdet_street_sem_seg_{train,val}``  background / car / truck
    ``segdet_street_sem_seg_cv_fold{0..4}_{train,val}``  the same 5 frames as 5 cross-validation
        folds, each frame held out once (:mod:`.folds`): with one validation frame per split,
        the folds make every frame a held-out result

Names, paths and classes are in :mod:`.sample_layout`.

Registration reads no file. The root (``$DETECTRON2_DATASETS/segdet_samples``) is resolved when
a dataset is loaded; a missing file raises ``FileNotFoundError`` naming it and the command that
creates it. Detection loaders also set the metadata's ``json_file``/``image_root`` on first
load, so ``COCOEvaluator`` scores against the original JSON.
"""
import json
import os
from typing import Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog

from .folds import register_folds
from .sample_layout import (
    DETECTION_COMPONENTS,
    IGNORE_LABEL,
    SEM_SEG_COMPONENTS,
    SPLITS,
    index_path,
    label_colors,
    missing_data_message,
)

__all__ = ["load_sample_detection", "load_sample_sem_seg", "register_sample_datasets", "SAMPLE_FOLDS"]

# cross-validation fold families of the sample sets: name -> (sources, number of folds)
SAMPLE_FOLDS = {"segdet_street_sem_seg_cv": (("segdet_street_sem_seg_train", "segdet_street_sem_seg_val"), 5)}


def _require(path: str, dataset_name: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(missing_data_message(f"dataset {dataset_name!r}", path))
    return path


def load_sample_detection(component: str, split: str, dataset_name: str) -> List[Dict]:
    """Detectron2 detection dicts (``file_name``, ``height``, ``width``, ``image_id``,
    ``annotations`` with ``bbox`` XYWH_ABS, ``category_id`` contiguous) of a sample split.

    Raises:
        FileNotFoundError: the index JSON or an image is missing (names it and the command
            creating the data).
    """
    from detectron2.data.datasets import load_coco_json

    json_file = _require(os.path.abspath(index_path(component, split)), dataset_name)
    image_root = os.path.join(os.path.dirname(json_file), "images", split)
    dicts = load_coco_json(json_file, image_root, dataset_name)
    for d in dicts:
        _require(d["file_name"], dataset_name)
    meta = MetadataCatalog.get(dataset_name)
    if getattr(meta, "json_file", None) != json_file:  # first load, or the root moved since
        fields = {k: v for k, v in meta.as_dict().items() if k not in ("name", "json_file", "image_root")}
        MetadataCatalog.remove(dataset_name)
        MetadataCatalog.get(dataset_name).set(**fields, json_file=json_file, image_root=image_root)
    return dicts


def load_sample_sem_seg(component: str, split: str, dataset_name: str) -> List[Dict]:
    """Semantic-segmentation dicts ``{"file_name", "sem_seg_file_name", "height", "width",
    "image_id"}`` (absolute paths) of a sample split; labels are uint8 class ids, 255 = ignore.

    Raises:
        FileNotFoundError: the index JSON, an image or a label file is missing.
    """
    path = _require(os.path.abspath(index_path(component, split)), dataset_name)
    folder = os.path.dirname(path)
    with open(path) as f:
        records = json.load(f)["records"]
    out = []
    for rec in records:
        d = dict(rec)
        d["file_name"] = _require(os.path.join(folder, rec["file_name"]), dataset_name)
        d["sem_seg_file_name"] = _require(os.path.join(folder, rec["sem_seg_file_name"]), dataset_name)
        out.append(d)
    return out


def register_sample_datasets() -> None:
    """Register every sample split with its metadata (idempotent; reads no file)."""
    registered = set(DatasetCatalog.list())
    for component, (prefix, classes) in DETECTION_COMPONENTS.items():
        for split in SPLITS:
            name = f"{prefix}_{split}"
            if name in registered:
                continue
            DatasetCatalog.register(name, lambda c=component, s=split, n=name: load_sample_detection(c, s, n))
            MetadataCatalog.get(name).set(
                thing_classes=list(classes),
                thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(classes))},
                evaluator_type="coco",
            )
    for component, (prefix, classes) in SEM_SEG_COMPONENTS.items():
        colors = [[int(v) for v in c] for c in label_colors(len(classes))[:len(classes)]]
        for split in SPLITS:
            name = f"{prefix}_{split}"
            if name in registered:
                continue
            DatasetCatalog.register(name, lambda c=component, s=split, n=name: load_sample_sem_seg(c, s, n))
            MetadataCatalog.get(name).set(
                stuff_classes=list(classes),
                stuff_colors=colors,
                ignore_label=IGNORE_LABEL,
                reduce_zero_label=False,
                evaluator_type="sem_seg",
            )
    for name, (sources, num_folds) in SAMPLE_FOLDS.items():
        register_folds(name, sources, num_folds)


register_sample_datasets()
