"""COCO-Stuff-164k semantic segmentation (171 classes: 80 things + 91 stuff), raw official maps.

Registers ``coco_stuff_164k_sem_seg_train`` (118,287 images) and ``coco_stuff_164k_sem_seg_val``
(5,000) on import, reading the official archives as extracted under ``$DETECTRON2_DATASETS``
(default ``./datasets``), in the COCO folder detectron2's builtin COCO sets use::

    coco/
      train2017/*.jpg, val2017/*.jpg          # COCO 2017 images (train2017.zip, val2017.zip)
      stuffthingmaps/{train2017,val2017}/*.png  # stuffthingmaps_trainval2017.zip, unzipped here

The label PNGs hold the COCO category id minus 1 (0..181) and 255 for unlabelled pixels. Of
the 182 ids, 171 are used (the 11 thing ids COCO never annotated are absent). mmseg's converter
(``tools/dataset_converters/coco_stuff164k.py``, ``clsID_to_trID``) rewrites every file into
``*_labelTrainIds.png`` with the used ids renumbered 0..170 in id order; here the same
renumbering is the dataset's ``label_map`` metadata ({file value: class id}), applied when a
label file is read (:func:`segdet.data.io.read_sem_seg_label`, by the sem_seg mapper and the
evaluator), so no conversion pass and no second copy of the labels is needed. Values outside
the table's keys (255, the unused ids) become the ignore value 255.

Already converted ``*_labelTrainIds.png`` files must not be read with this table; declare them
as a ``sem_seg_folder`` set instead (their values are already the class ids).
Registration does not touch the disk; the folders are listed when the dataset is first loaded.
Download: http://images.cocodataset.org/zips/{train2017,val2017}.zip and
http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/stuffthingmaps_trainval2017.zip
"""
import os
from typing import Dict, List

from .folders import pair_images_with_labels
from .splits import register_sem_seg_splits

__all__ = ["COCO_STUFF_171_CLASSES", "COCO_STUFF_LABEL_MAP", "COCO_STUFF_UNUSED_VALUES", "coco_root",
           "load_coco_stuff_164k", "register_coco_stuff_164k"]

# File values (COCO category id - 1) of the 11 unused thing ids: 12 street sign, 26 hat, 29 shoe,
# 30 eye glasses, 45 plate, 66 mirror, 68 window, 69 desk, 71 door, 83 blender, 91 hair brush.
COCO_STUFF_UNUSED_VALUES = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)

#: {file value: class id}: the 171 used values 0..181, renumbered 0..170 in order (mmseg's
#: clsID_to_trID, e.g. 12 -> 11, 26 -> 24, 91 -> 80, 181 -> 170).
COCO_STUFF_LABEL_MAP: Dict[int, int] = {
    value: class_id for class_id, value in
    enumerate(v for v in range(182) if v not in COCO_STUFF_UNUSED_VALUES)
}

# Class i is the i-th used category in id order (mmseg's COCOStuffDataset.CLASSES).
COCO_STUFF_171_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush", "banner", "blanket",
    "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard",
    "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble", "floor-other",
    "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit",
    "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light",
    "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)

_SPLITS = {"train": "train2017", "val": "val2017"}


def coco_root() -> str:
    """``$DETECTRON2_DATASETS/coco`` (default ``datasets/coco``)."""
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "coco")


def load_coco_stuff_164k(root: str, split: str) -> List[Dict]:
    """Dataset dicts ``{"file_name", "sem_seg_file_name", "image_id"}`` of one split (``"train"``
    or ``"val"``) of ``root`` = ``.../coco``, sorted by name (the label mapping is the dataset's
    ``label_map`` metadata, applied on read).

    Raises:
        KeyError: unknown split.
        FileNotFoundError: a folder of the layout is missing, or an image has no label map.
    """
    if split not in _SPLITS:
        raise KeyError(f"COCO-Stuff split must be one of {sorted(_SPLITS)}, got {split!r}")
    image_dir = os.path.join(root, _SPLITS[split])
    label_dir = os.path.join(root, "stuffthingmaps", _SPLITS[split])
    for folder in (image_dir, label_dir):
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"COCO-Stuff folder not found: {folder}. Expected $DETECTRON2_DATASETS/coco/"
                "{train2017,val2017} (COCO images) and $DETECTRON2_DATASETS/coco/stuffthingmaps/"
                "{train2017,val2017} (stuffthingmaps_trainval2017.zip unzipped there) "
                f"(DETECTRON2_DATASETS={os.environ.get('DETECTRON2_DATASETS', '<unset: datasets>')})"
            )
    return pair_images_with_labels(image_dir, label_dir, (".jpg",), ".png", "COCO-Stuff-164k")


def register_coco_stuff_164k() -> None:
    """Register both splits (idempotent; touches no file: the root is resolved at load time)."""
    # label_map: file value -> class id, applied on read; its inverse gives predictions back as
    # file values (tools/predict.py's label PNGs)
    register_sem_seg_splits("coco_stuff_164k_sem_seg_{split}", _SPLITS,
                            lambda split: load_coco_stuff_164k(coco_root(), split),
                            stuff_classes=list(COCO_STUFF_171_CLASSES), label_map=dict(COCO_STUFF_LABEL_MAP),
                            stuff_dataset_id_to_contiguous_id=dict(COCO_STUFF_LABEL_MAP))


register_coco_stuff_164k()
