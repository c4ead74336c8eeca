"""Datasets declared in a config (``DATASETS.DECLARE``) or with the Python helpers of the same
shape: no registration script for the two common layouts.

In yaml, one entry per dataset name, then use the names in ``DATASETS.TRAIN`` / ``TEST``::

    DATASETS:
      DECLARE:
        roads_train:
          TYPE: "sem_seg_folder"        # an image folder + a label-PNG folder
          IMAGE_ROOT: "data/roads/images/train"
          LABEL_ROOT: "data/roads/labels/train"   # <image stem><LABEL_EXT> per image
          CLASSES: ["background", "road"]
          IGNORE_LABEL: 255             # optional (255)
          REDUCE_ZERO_LABEL: False      # optional: label 0 = ignore, 1..K -> 0..K-1
          LABEL_EXT: ".png"             # optional
        cars_train:
          TYPE: "coco_json"             # a COCO instances json + its image folder
          JSON: "data/cars/train.json"
          IMAGE_ROOT: "data/cars/images"
          CLASSES: ["car"]              # optional: checked against the json's categories
        roads_cv:
          TYPE: "folds"                 # cross-validation folds of registered sets
          SOURCES: ["roads_train", "roads_val"]
          NUM_FOLDS: 5                  # roads_cv_fold{0..4}_{train,val}
      TRAIN: ("roads_train",)

Relative paths are relative to the working directory. Every key and path is checked when the
config is loaded (one :class:`ConfigError` line naming the key and the path); the files are read
when the dataset is first loaded. Images of any format segdet reads (:mod:`segdet.data.io`).
"""
import os
from typing import Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from segdet.utils.errors import ConfigError

from .folders import IMAGE_EXTENSIONS, pair_images_with_labels
from .folds import register_folds

__all__ = ["register_sem_seg_folder", "register_coco_json", "register_declared_datasets"]

_KEYS = {
    "sem_seg_folder": ({"TYPE", "IMAGE_ROOT", "LABEL_ROOT", "CLASSES"},
                       {"IGNORE_LABEL", "REDUCE_ZERO_LABEL", "LABEL_EXT", "COLORS"}),
    "coco_json": ({"TYPE", "JSON", "IMAGE_ROOT"}, {"CLASSES"}),
    "folds": ({"TYPE", "SOURCES", "NUM_FOLDS"}, set()),
}


def register_sem_seg_folder(name: str, image_root: str, label_root: str, classes: Sequence[str],
                            ignore_label: int = 255, reduce_zero_label: bool = False,
                            label_ext: str = ".png", colors: Optional[Sequence[Sequence[int]]] = None) -> None:
    """Register ``name``: every image of ``image_root`` with the label map
    ``label_root/<stem><label_ext>`` (class ids, ``ignore_label`` = not scored); evaluated
    with mIoU. ``reduce_zero_label``: the labels' 0 is ignored and 1..K are the K classes."""
    image_root, label_root = os.path.abspath(image_root), os.path.abspath(label_root)
    DatasetCatalog.register(name, lambda: pair_images_with_labels(
        image_root, label_root, IMAGE_EXTENSIONS, label_ext, f"dataset {name!r}"))
    meta = dict(stuff_classes=list(classes), ignore_label=int(ignore_label),
                reduce_zero_label=bool(reduce_zero_label), evaluator_type="sem_seg",
                image_root=image_root, sem_seg_root=label_root)
    if colors:
        meta["stuff_colors"] = [[int(v) for v in c] for c in colors]
    MetadataCatalog.get(name).set(**meta)


def _coco_records(name: str, json_file: str, image_root: str, classes: Optional[Sequence[str]]) -> List[Dict]:
    from detectron2.data.datasets import load_coco_json

    dicts = load_coco_json(json_file, image_root, name)
    found = list(MetadataCatalog.get(name).thing_classes)
    if classes and list(classes) != found:
        raise ValueError(f"dataset {name!r}: CLASSES {list(classes)} but {json_file} has categories {found}")
    return dicts


def register_coco_json(name: str, json_file: str, image_root: str,
                       classes: Optional[Sequence[str]] = None) -> None:
    """Register ``name``: a COCO instances json and its image folder, evaluated with COCO AP.
    ``classes``, if given, must equal the json's category names in id order."""
    json_file, image_root = os.path.abspath(json_file), os.path.abspath(image_root)
    DatasetCatalog.register(name, lambda: _coco_records(name, json_file, image_root, classes))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco")
    if classes:
        MetadataCatalog.get(name).set(thing_classes=list(classes))


def _check_path(key: str, path, want_dir: bool) -> str:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{key}: expected a path, got {path!r}")
    if not (os.path.isdir(path) if want_dir else os.path.isfile(path)):
        raise ConfigError(f"{key}: {'folder' if want_dir else 'file'} not found: {path}")
    return path


def _declare_folds(prefix: str, name: str, spec) -> List[str]:
    sources, num_folds = spec["SOURCES"], spec["NUM_FOLDS"]
    if not isinstance(sources, (list, tuple)) or not sources or not all(isinstance(s, str) for s in sources):
        raise ConfigError(f"{prefix}.SOURCES: expected a non-empty list of registered dataset names, got {sources!r}")
    if not isinstance(num_folds, int) or isinstance(num_folds, bool) or num_folds < 2:
        raise ConfigError(f"{prefix}.NUM_FOLDS: expected an integer >= 2, got {num_folds!r}")
    try:
        return register_folds(name, sources, num_folds)
    except ValueError as e:
        raise ConfigError(f"{prefix}: {e}") from None


def register_declared_datasets(cfg) -> List[str]:
    """Register every ``DATASETS.DECLARE`` entry (the same name twice with the same spec is
    fine; a name already registered otherwise is an error). Returns the names.

    Raises:
        ConfigError: an unknown TYPE, a missing or unknown key, a wrong value or a missing path,
            naming ``DATASETS.DECLARE.<name>.<KEY>``.
    """
    declared = cfg.DATASETS.get("DECLARE", {}) or {}
    names = []
    for name, spec in declared.items():
        prefix = f"DATASETS.DECLARE.{name}"
        if not hasattr(spec, "items"):
            raise ConfigError(f"{prefix}: expected a mapping with TYPE and its keys, got {spec!r}")
        kind = spec.get("TYPE")
        if kind not in _KEYS:
            raise ConfigError(f"{prefix}.TYPE: expected one of {sorted(_KEYS)}, got {kind!r}")
        required, optional = _KEYS[kind]
        missing, unknown = sorted(required - set(spec)), sorted(set(spec) - required - optional)
        if missing:
            raise ConfigError(f"{prefix}.{missing[0]}: missing (a {kind} dataset needs {sorted(required)})")
        if unknown:
            raise ConfigError(f"{prefix}.{unknown[0]}: unknown key for a {kind} dataset "
                              f"(known: {sorted(required | optional)})")
        classes = spec.get("CLASSES")
        if classes is not None and (not isinstance(classes, (list, tuple)) or not classes
                                    or not all(isinstance(c, str) for c in classes)):
            raise ConfigError(f"{prefix}.CLASSES: expected a non-empty list of class names, got {classes!r}")
        if kind == "folds":
            names += _declare_folds(prefix, name, spec)
            continue
        if name in DatasetCatalog.list():
            if MetadataCatalog.get(name).get("declared_spec") == repr(sorted(spec.items())):
                names.append(name)
                continue
            raise ConfigError(f"{prefix}: a dataset named {name!r} is already registered")
        if kind == "sem_seg_folder":
            ignore = spec.get("IGNORE_LABEL", 255)
            if not isinstance(ignore, int) or isinstance(ignore, bool) or not 0 <= ignore <= 65535:
                raise ConfigError(f"{prefix}.IGNORE_LABEL: expected an integer in [0, 65535], got {ignore!r}")
            register_sem_seg_folder(
                name, _check_path(f"{prefix}.IMAGE_ROOT", spec["IMAGE_ROOT"], True),
                _check_path(f"{prefix}.LABEL_ROOT", spec["LABEL_ROOT"], True), classes,
                ignore_label=ignore, reduce_zero_label=bool(spec.get("REDUCE_ZERO_LABEL", False)),
                label_ext=spec.get("LABEL_EXT", ".png"), colors=spec.get("COLORS"))
        else:
            register_coco_json(name, _check_path(f"{prefix}.JSON", spec["JSON"], False),
                               _check_path(f"{prefix}.IMAGE_ROOT", spec["IMAGE_ROOT"], True), classes)
        MetadataCatalog.get(name).set(declared_spec=repr(sorted(spec.items())))
        names.append(name)
    return names
