"""Pascal-Context-59 semantic segmentation (PASCAL VOC 2010 images, 59 classes + background).

Registers ``pascal_context_59_sem_seg_train`` (4,996 images) and ``pascal_context_59_sem_seg_val``
(5,104) on import, reading, under ``$DETECTRON2_DATASETS`` (default ``./datasets``)::

    VOCdevkit/VOC2010/
      JPEGImages/*.jpg                                  # VOCtrainval_03-May-2010.tar
      SegmentationClassContext/*.png                     # 0 = background, 1..59 = classes
      ImageSets/SegmentationContext/{train,val}.txt      # one image stem per line

Which layout, and why: the official Pascal-Context release has no label images, only
``trainval_merged.json`` (459 labels, read through the Detail API), so some pass must write the
59-class PNGs once. The layout above is the one mmseg's converter
(``tools/dataset_converters/pascal_context.py``, ``_mapping`` of the 60 kept ids) writes; it is
the layout every mmseg-based Pascal-Context result (CGRSeg's included) uses. From there nothing
else is converted: mmseg's ``PascalContextDataset59`` reads these files with
``reduce_zero_label=True``, and so does this dataset (metadata ``reduce_zero_label``, applied
by :func:`segdet.data.io.read_sem_seg_label`): background 0 -> ignore 255, k -> k-1 for the 59
classes.
Registration does not touch the disk; the split files are read when the dataset is first loaded.
"""
import os
from typing import Dict, List

from .splits import register_sem_seg_splits

__all__ = ["PASCAL_CONTEXT_59_CLASSES", "load_pascal_context_59", "pascal_context_root",
           "register_pascal_context_59"]

# Class i is label value i+1 in SegmentationClassContext (mmseg's PascalContextDataset59.CLASSES).
PASCAL_CONTEXT_59_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow",
    "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground",
    "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform",
    "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa",
    "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)

_SPLITS = ("train", "val")


def pascal_context_root() -> str:
    """``$DETECTRON2_DATASETS/VOCdevkit/VOC2010`` (default ``datasets/VOCdevkit/VOC2010``)."""
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "VOCdevkit", "VOC2010")


def load_pascal_context_59(root: str, split: str) -> List[Dict]:
    """Dataset dicts ``{"file_name", "sem_seg_file_name", "image_id", "reduce_zero_label"}`` of
    the images listed in ``root/ImageSets/SegmentationContext/<split>.txt``, in file order.

    Raises:
        KeyError: unknown split.
        FileNotFoundError: the split file is missing or empty, or a listed image or label is
            missing (names the count and the first missing file).
    """
    if split not in _SPLITS:
        raise KeyError(f"Pascal-Context split must be one of {list(_SPLITS)}, got {split!r}")
    split_file = os.path.join(root, "ImageSets", "SegmentationContext", f"{split}.txt")
    if not os.path.isfile(split_file):
        raise FileNotFoundError(
            f"Pascal-Context split file not found: {split_file}. Expected VOCdevkit/VOC2010/"
            "{JPEGImages,SegmentationClassContext,ImageSets/SegmentationContext} as mmseg's "
            "tools/dataset_converters/pascal_context.py writes them, under $DETECTRON2_DATASETS "
            f"(DETECTRON2_DATASETS={os.environ.get('DETECTRON2_DATASETS', '<unset: datasets>')})"
        )
    with open(split_file) as f:
        stems = [line.strip() for line in f if line.strip()]
    if not stems:
        raise FileNotFoundError(f"Pascal-Context split file {split_file} lists no image")
    records = [{"file_name": os.path.join(root, "JPEGImages", f"{s}.jpg"),
                "sem_seg_file_name": os.path.join(root, "SegmentationClassContext", f"{s}.png"),
                "image_id": s, "reduce_zero_label": True} for s in stems]
    for key in ("file_name", "sem_seg_file_name"):
        missing = [r[key] for r in records if not os.path.isfile(r[key])]
        if missing:
            raise FileNotFoundError(
                f"Pascal-Context {split}: {len(missing)} of the {len(records)} files listed in "
                f"{split_file} are missing, e.g. {missing[0]}")
    return records


def register_pascal_context_59() -> None:
    """Register both splits (idempotent; touches no file: the root is resolved at load time)."""
    register_sem_seg_splits("pascal_context_59_sem_seg_{split}", _SPLITS,
                            lambda split: load_pascal_context_59(pascal_context_root(), split),
                            stuff_classes=list(PASCAL_CONTEXT_59_CLASSES), reduce_zero_label=True)


register_pascal_context_59()
