"""ADE20K-150 (SceneParsing / ADEChallengeData2016) semantic segmentation.

Registers ``ade20k_150_sem_seg_train`` (20,210 images) and ``ade20k_150_sem_seg_val`` (2,000)
on import, reading the official archive as extracted, under
``$DETECTRON2_DATASETS`` (default ``./datasets``)::

    ADEChallengeData2016/
      images/{training,validation}/ADE_*.jpg
      annotations/{training,validation}/ADE_*.png   # 0 = unlabelled, 1..150 = classes

The official labels are used as they are: ``reduce_zero_label=True`` in the metadata (and in
every dataset dict) makes :func:`segdet.data.io.read_sem_seg_label` map 0 -> 255 (ignore) and
k -> k-1 on load, so no conversion script / ``annotations_detectron2`` folder is needed.
Registration does not touch the disk; the folders are listed when the dataset is first loaded.
Download: http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip
"""
import os
from typing import Dict, List

from .folders import pair_images_with_labels
from .splits import register_sem_seg_splits

__all__ = ["ADE20K_150_CLASSES", "ADE20K_DOWNLOAD_URL", "ade20k_root", "load_ade20k_150",
           "register_ade20k_150"]

ADE20K_DOWNLOAD_URL = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"

# Class i is label value i+1 in the official annotation PNGs (first name of objectInfo150).
ADE20K_150_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)

_SPLITS = {"train": "training", "val": "validation"}
_IMAGE_EXT, _LABEL_EXT = ".jpg", ".png"


def ade20k_root() -> str:
    """``$DETECTRON2_DATASETS/ADEChallengeData2016`` (default ``datasets/ADEChallengeData2016``)."""
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "ADEChallengeData2016")


def load_ade20k_150(root: str, split: str) -> List[Dict]:
    """Dataset dicts ``{"file_name", "sem_seg_file_name", "image_id", "reduce_zero_label"}`` of
    one split (``"train"`` or ``"val"``) of ``root`` = ``.../ADEChallengeData2016``, sorted by
    name. ``height``/``width`` are left to the mapper (reading 20k headers up front is slow).

    Raises:
        KeyError: unknown split.
        FileNotFoundError: a folder of the official layout is missing, or an image has no
            annotation.
    """
    if split not in _SPLITS:
        raise KeyError(f"ADE20K split must be one of {sorted(_SPLITS)}, got {split!r}")
    image_dir = os.path.join(root, "images", _SPLITS[split])
    label_dir = os.path.join(root, "annotations", _SPLITS[split])
    for folder in (image_dir, label_dir):
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"ADE20K folder not found: {folder}. Expected the official layout "
                "$DETECTRON2_DATASETS/ADEChallengeData2016/{images,annotations}/{training,validation}"
                f" (DETECTRON2_DATASETS={os.environ.get('DETECTRON2_DATASETS', '<unset: datasets>')}); "
                f"download and unzip {ADE20K_DOWNLOAD_URL} there."
            )
    records = pair_images_with_labels(image_dir, label_dir, (_IMAGE_EXT,), _LABEL_EXT, "ADE20K")
    return [{**r, "reduce_zero_label": True} for r in records]


def register_ade20k_150() -> None:
    """Register both splits (idempotent; touches no file: the root is resolved at load time)."""
    register_sem_seg_splits("ade20k_150_sem_seg_{split}", _SPLITS, lambda split: load_ade20k_150(ade20k_root(), split),
                            stuff_classes=list(ADE20K_150_CLASSES), reduce_zero_label=True)


register_ade20k_150()
