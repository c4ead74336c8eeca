"""What the sample-data tool writes and where (no disk access, no heavy imports).

Layout of ``sample_root()`` = ``$DETECTRON2_DATASETS/segdet_samples`` (default
``datasets/segdet_samples``), each component folder written atomically with its own
``MANIFEST.json``::

    .downloads/                         pip-downloaded source archives (cache)
    pretrained/mobilenet_v2-b0353104.pth
    trees/images/{train,val}/*.jpg      aerial tiles; trees/{train,val}.json (COCO boxes)
    street/{images,labels}/{train,val}/ street frames + label PNGs; street/{train,val}.json

Detection indexes are COCO instance JSON; semantic-segmentation indexes are
``{"classes": [...], "records": [{"file_name", "sem_seg_file_name", "height", "width",
"image_id"}]}`` with paths relative to the component folder. Label PNGs are uint8 class ids,
255 = ignore.

The library reads this layout through ``segdet/data/datasets/sample_layout.py`` (dataset names,
classes, paths). The constants are repeated here so that the tool runs without importing segdet
(torch, detectron2: seconds); ``tests/data/test_samples.py`` checks that both agree.
"""
import os
from typing import Dict, Optional, Tuple

__all__ = [
    "PREPARE_COMMAND", "SPLITS", "IGNORE_LABEL", "TREE_CLASSES", "STREET_CLASSES",
    "DETECTION_COMPONENTS", "SEM_SEG_COMPONENTS", "ALL_COMPONENTS", "PRETRAINED_MOBILENET_V2",
    "MANIFEST_NAME", "sample_root", "component_dir", "index_path",
]

PREPARE_COMMAND = "python tools/prepare_sample_data.py"
SPLITS = ("train", "val")
IGNORE_LABEL = 255
MANIFEST_NAME = "MANIFEST.json"
# Relative to sample_root(); the MobileNetV2 backbone resolves it against $DETECTRON2_DATASETS.
PRETRAINED_MOBILENET_V2 = os.path.join("pretrained", "mobilenet_v2-b0353104.pth")

TREE_CLASSES: Tuple[str, ...] = ("tree",)
STREET_CLASSES: Tuple[str, ...] = ("background", "car", "truck")

# component folder -> classes it holds (detection: thing classes; sem-seg: stuff classes).
DETECTION_COMPONENTS: Dict[str, Tuple[str, ...]] = {"trees": TREE_CLASSES}
SEM_SEG_COMPONENTS: Dict[str, Tuple[str, ...]] = {"street": STREET_CLASSES}
ALL_COMPONENTS: Tuple[str, ...] = ("pretrained",) + tuple(DETECTION_COMPONENTS) + tuple(SEM_SEG_COMPONENTS)


def sample_root() -> str:
    """``$DETECTRON2_DATASETS/segdet_samples`` (default ``datasets/segdet_samples``), read now."""
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "segdet_samples")


def component_dir(component: str, root: Optional[str] = None) -> str:
    """Folder of one component (``"trees"``, ``"street"``, ``"pretrained"``) under ``root``
    (default :func:`sample_root`)."""
    if component not in ALL_COMPONENTS:
        raise KeyError(f"unknown sample component {component!r}; expected one of {ALL_COMPONENTS}")
    return os.path.join(root if root is not None else sample_root(), component)


def index_path(component: str, split: str, root: Optional[str] = None) -> str:
    """Index file (COCO JSON or sem-seg record list) of ``component``'s ``split``."""
    if split not in SPLITS:
        raise KeyError(f"sample split must be one of {SPLITS}, got {split!r}")
    return os.path.join(component_dir(component, root), f"{split}.json")
