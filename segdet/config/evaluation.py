"""Keys of evaluation: ``TEST.SEM_SEG.*`` (whole / sliding-window inference, test-time
augmentation ratios), prediction overlays (``TEST.VIS_*``) and the COCO AP implementation
(``TEST.COCO_EVAL_IMPL``)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_test_config", "add_coco_eval_config"]


def add_test_config(cfg: CN) -> None:
    cfg.TEST.SEM_SEG = CN()
    # "whole": one forward on the full (padded) image; "slide": overlapping CROP_SIZE windows
    # every STRIDE pixels, logits averaged where windows overlap.
    cfg.TEST.SEM_SEG.MODE = "whole"
    cfg.TEST.SEM_SEG.CROP_SIZE = (512, 512)
    cfg.TEST.SEM_SEG.STRIDE = (341, 341)
    # Test-time augmentation of a semantic segmentor (segdet/modeling/meta_arch/sem_seg_tta.py),
    # mmseg's MultiScaleFlipAug: detectron2's switch TEST.AUG.ENABLED and TEST.AUG.FLIP (add the
    # horizontal flip of every scale) keep their meaning; detectron2's absolute MIN_SIZES/MAX_SIZE
    # do not apply. Instead each scale is INPUT.SEM_SEG.TEST_RESIZE_SCALE x ratio (mmseg's
    # img_ratios), run in TEST.SEM_SEG.MODE; the softmax of every augmentation is averaged.
    cfg.TEST.SEM_SEG.AUG_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    # Write a prediction-overlay PNG for the first N evaluated images (0 disables).
    cfg.TEST.VIS_NUM_IMAGES = 4
    # Boxes drawn in those overlays: score >= VIS_SCORE_THRESH; when none passes, the VIS_TOPK
    # highest-scoring ones, marked as below the threshold (0: draw none).
    cfg.TEST.VIS_SCORE_THRESH = 0.5
    cfg.TEST.VIS_TOPK = 5


def add_coco_eval_config(cfg: CN) -> None:
    # What computes COCO AP (segdet/evaluation/coco_evaluation.py): "faster_coco_eval" (its C++
    # COCOeval_faster: the same numbers, faster), "pycocotools" (detectron2's evaluator as it is),
    # or "auto": faster-coco-eval when it is installed, else pycocotools.
    cfg.TEST.COCO_EVAL_IMPL = "auto"
