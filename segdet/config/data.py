"""Keys of the data pipeline: ``INPUT.*`` (which dataset mapper, the semantic-segmentation
training and test resize / crop / flip / photometric pipeline) and ``DATASETS.DECLARE`` (datasets
declared in the config)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_input_config", "add_datasets_config"]


def add_input_config(cfg: CN) -> None:
    # Which dataset mapper the trainer uses: "default" (detectron2's DatasetMapper, detection)
    # or "sem_seg" (segdet's semantic-segmentation mapper with the mmseg-style pipeline).
    cfg.INPUT.DATASET_MAPPER_NAME = "default"
    # The sem_seg mapper's random crop is detectron2's INPUT.CROP (ENABLED, TYPE, SIZE; mmseg's
    # recipe: ENABLED True, TYPE "absolute", SIZE (512, 512) as (h, w)), retried (up to 10
    # times) while one class covers SINGLE_CATEGORY_MAX_AREA or more of the crop's valid pixels
    # (DeepLab's key and default; mmseg's cat_max_ratio, 0.75 in its ADE20K recipe). 1.0
    # disables the check.
    if "SINGLE_CATEGORY_MAX_AREA" not in cfg.INPUT.CROP:  # add_deeplab_config may have added it
        cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Semantic-segmentation training pipeline (mmseg's ADE20K recipe by default).
    cfg.INPUT.SEM_SEG = CN()
    # mmseg's keep-ratio resize: into (long, short) = RESIZE_SCALE * r, r ~ U[RESIZE_RATIO_RANGE]
    # (before the crop).
    cfg.INPUT.SEM_SEG.RESIZE_SCALE = (2048, 512)
    cfg.INPUT.SEM_SEG.RESIZE_RATIO_RANGE = (0.5, 2.0)
    cfg.INPUT.SEM_SEG.FLIP_PROB = 0.5
    # mmseg PhotoMetricDistortion (brightness ±32, contrast/saturation [0.5,1.5], hue ±18).
    cfg.INPUT.SEM_SEG.PHOTOMETRIC_DISTORTION = True
    # Test-time resize: keep-ratio into TEST_RESIZE_SCALE (long, short), then the segmentor pads
    # to its size divisibility.
    cfg.INPUT.SEM_SEG.TEST_RESIZE_SCALE = (2048, 512)


def add_datasets_config(cfg: CN) -> None:
    # Datasets declared in the config (no Python): name -> {TYPE: "sem_seg_folder" | "coco_json",
    # ...}; registered when the config is loaded (segdet/data/datasets/declared.py has the keys).
    cfg.DATASETS.DECLARE = CN(new_allowed=True)
