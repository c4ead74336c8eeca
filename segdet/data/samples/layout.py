"""Where the embedded sample data lives and what it is called (no disk access, no heavy imports).

Layout of ``sample_root()`` = ``$DETECTRON2_DATASETS/segdet_samples`` (default
``datasets/segdet_samples``), each component folder written atomically with its own
``MANIFEST.json``::

    .downloads/                         pip-downloaded source archives (cache)
    pretrained/mobilenet_v2-b0353104.pth
    trees/images/{train,val}/*.jpg      aerial tiles; trees/{train,val}.json (COCO boxes)
    voc_det/images/{train,val}/*.jpg    VOC photos;   voc_det/{train,val}.json (COCO boxes)
    street/{images,labels}/{train,val}/ street frames + label PNGs; street/{train,val}.json
    nuclei/{images,labels}/{train,val}/ microscopy tiles + label PNGs; nuclei/{train,val}.json
    voc_sem_seg/{images,labels}/{train,val}/ VOC photos + label PNGs; voc_sem_seg/{train,val}.json

Detection indexes are COCO instance JSON; semantic-segmentation indexes are
``{"classes": [...], "records": [{"file_name", "sem_seg_file_name", "height", "width",
"image_id"}]}`` with paths relative to the component folder. Label PNGs are uint8 class ids,
255 = ignore.
"""
import os
from typing import Dict, Optional, Tuple

__all__ = [
    "PREPARE_COMMAND", "SPLITS", "IGNORE_LABEL", "TREE_CLASSES", "VOC_CLASSES", "STREET_CLASSES",
    "NUCLEI_CLASSES", "DETECTION_COMPONENTS", "SEM_SEG_COMPONENTS", "ALL_COMPONENTS",
    "PRETRAINED_MOBILENET_V2", "MANIFEST_NAME", "sample_root", "component_dir", "index_path",
    "missing_data_message",
]

PREPARE_COMMAND = "python tools/prepare_sample_data.py"
SPLITS = ("train", "val")
IGNORE_LABEL = 255
MANIFEST_NAME = "MANIFEST.json"
# Relative to sample_root(); the MobileNetV2 backbone resolves it against $DETECTRON2_DATASETS.
PRETRAINED_MOBILENET_V2 = os.path.join("pretrained", "mobilenet_v2-b0353104.pth")

TREE_CLASSES: Tuple[str, ...] = ("tree",)
VOC_CLASSES: Tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
STREET_CLASSES: Tuple[str, ...] = ("background", "car", "truck")
NUCLEI_CLASSES: Tuple[str, ...] = ("background", "nucleus")

# component folder -> (dataset name prefix, thing classes); names "<prefix>_{train,val}".
DETECTION_COMPONENTS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "trees": ("segdet_trees", TREE_CLASSES),
    "voc_det": ("segdet_voc_det", VOC_CLASSES),
}
# component folder -> (dataset name prefix, stuff classes); names "<prefix>_{train,val}".
SEM_SEG_COMPONENTS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "street": ("segdet_street_sem_seg", STREET_CLASSES),
    "nuclei": ("segdet_nuclei_sem_seg", NUCLEI_CLASSES),
    "voc_sem_seg": ("segdet_voc_sem_seg", ("background",) + VOC_CLASSES),
}
ALL_COMPONENTS: Tuple[str, ...] = ("pretrained",) + tuple(DETECTION_COMPONENTS) + tuple(SEM_SEG_COMPONENTS)


def sample_root() -> str:
    """``$DETECTRON2_DATASETS/segdet_samples`` (default ``datasets/segdet_samples``), read now."""
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "segdet_samples")


def component_dir(component: str, root: Optional[str] = None) -> str:
    """Folder of one component (``"trees"``, ``"street"``, ...) under ``root`` (default
    :func:`sample_root`)."""
    if component not in ALL_COMPONENTS:
        raise KeyError(f"unknown sample component {component!r}; expected one of {ALL_COMPONENTS}")
    return os.path.join(root if root is not None else sample_root(), component)


def index_path(component: str, split: str, root: Optional[str] = None) -> str:
    """Index file (COCO JSON or sem-seg record list) of ``component``'s ``split``."""
    if split not in SPLITS:
        raise KeyError(f"sample split must be one of {SPLITS}, got {split!r}")
    return os.path.join(component_dir(component, root), f"{split}.json")


def missing_data_message(what: str, path: str) -> str:
    """The error text used whenever a sample file is absent."""
    return (
        f"{what}: sample data file not found: {path} "
        f"(DETECTRON2_DATASETS={os.environ.get('DETECTRON2_DATASETS', '<unset: datasets>')}). "
        f"Create the sample data with `{PREPARE_COMMAND}` (or segdet.data.samples.ensure_samples())."
    )
