"""Names, paths and classes of the embedded sample datasets (no disk access, no heavy imports).

This is what the library needs at run time to register the sample data; the data itself is
built by the tool ``python tools/prepare_sample_data.py`` (package ``tools/sample_data``), whose
``layout`` module writes this same layout (``tests/data/test_samples.py`` checks that the two
agree).

Layout of ``sample_root()`` = ``$DETECTRON2_DATASETS/segdet_samples`` (default
``datasets/segdet_samples``)::

    pretrained/mobilenet_v2-b0353104.pth
    trees/images/{train,val}/*.jpg      aerial tiles; trees/{train,val}.json (COCO boxes)
    street/{images,labels}/{train,val}/ street frames + label PNGs; street/{train,val}.json

Detection indexes are COCO instance JSON; semantic-segmentation indexes are
``{"classes": [...], "records": [{"file_name", "sem_seg_file_name", "height", "width",
"image_id"}]}`` with paths relative to the component folder. Label PNGs are uint8 class ids,
255 = ignore.
"""
import os
from typing import Dict, Optional, Tuple

import numpy as np

__all__ = [
    "PREPARE_COMMAND", "SPLITS", "IGNORE_LABEL", "TREE_CLASSES", "STREET_CLASSES",
    "DETECTION_COMPONENTS", "SEM_SEG_COMPONENTS", "sample_root", "index_path",
    "missing_data_message", "label_colors",
]

PREPARE_COMMAND = "python tools/prepare_sample_data.py"
SPLITS = ("train", "val")
IGNORE_LABEL = 255

TREE_CLASSES: Tuple[str, ...] = ("tree",)
STREET_CLASSES: Tuple[str, ...] = ("background", "car", "truck")

# component folder -> (dataset name prefix, thing classes); names "<prefix>_{train,val}".
DETECTION_COMPONENTS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "trees": ("segdet_trees", TREE_CLASSES),
}
# component folder -> (dataset name prefix, stuff classes); names "<prefix>_{train,val}".
SEM_SEG_COMPONENTS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "street": ("segdet_street_sem_seg", STREET_CLASSES),
}


def sample_root() -> str:
    """``$DETECTRON2_DATASETS/segdet_samples`` (default ``datasets/segdet_samples``), read now."""
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "segdet_samples")


def index_path(component: str, split: str, root: Optional[str] = None) -> str:
    """Index file (COCO JSON or sem-seg record list) of ``component``'s ``split``."""
    if component not in DETECTION_COMPONENTS and component not in SEM_SEG_COMPONENTS:
        raise KeyError(f"unknown sample dataset component {component!r}; expected one of "
                       f"{tuple(DETECTION_COMPONENTS) + tuple(SEM_SEG_COMPONENTS)}")
    if split not in SPLITS:
        raise KeyError(f"sample split must be one of {SPLITS}, got {split!r}")
    return os.path.join(root if root is not None else sample_root(), component, f"{split}.json")


def missing_data_message(what: str, path: str) -> str:
    """The error text used whenever a sample file is absent."""
    return (
        f"{what}: sample data file not found: {path} "
        f"(DETECTRON2_DATASETS={os.environ.get('DETECTRON2_DATASETS', '<unset: datasets>')}). "
        f"Create the sample data with `{PREPARE_COMMAND}`."
    )


def label_colors(n: int) -> np.ndarray:
    """(256, 3) uint8 palette: class 0 black, classes 1..n-1 distinct bright colours, 255 white
    (the sem-seg datasets' ``stuff_colors``; the tool's previews use the same palette)."""
    rng = np.random.default_rng(0)
    pal = rng.integers(64, 256, size=(256, 3)).astype(np.uint8)
    fixed = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)]
    for i, c in enumerate(fixed[:n]):
        pal[i] = c
    pal[255] = (255, 255, 255)
    return pal
