"""Multi-scale + flip test-time augmentation of a semantic segmentor (mmseg's MultiScaleFlipAug
with ``aug_test``), as a wrapper in the style of detectron2's ``GeneralizedRCNNWithTTA``.

For an input image of original size ``H × W`` and every ratio ``r`` of ``TEST.SEM_SEG.AUG_RATIOS``,
the image is keep-ratio resized into ``INPUT.SEM_SEG.TEST_RESIZE_SCALE × r`` (mmseg's
``img_ratios``: the same integer target sizes), and with ``TEST.AUG.FLIP`` also flipped
horizontally. The wrapped segmentor runs each augmented image in its own ``TEST.SEM_SEG.MODE``
("whole" or "slide", at every scale) and returns logits resized to ``H × W``; their softmax,
flipped back where the input was flipped, is averaged over all augmentations. The output
``"sem_seg"`` is that mean probability map (K, H, W): its argmax is the prediction, as for logits.

:func:`test_with_tta` feeds the images at their original size, so each scale is one resize of
the original, as in mmseg. An input already resized (the single-scale test loader's) is resized
again from its own pixels; ratio 1 then reproduces the single-scale input exactly.

Which keys: detectron2's ``TEST.AUG.ENABLED`` and ``TEST.AUG.FLIP`` keep their meaning here;
its ``MIN_SIZES``/``MAX_SIZE`` (absolute shortest-edge sizes of detection) are not used, the
scales being ratios of the segmentation test size as in mmseg (``TEST.SEM_SEG.AUG_RATIOS``).

Each process augments only its own images; no communication happens here (the evaluator sums
its confusion matrices across processes as without augmentation).
"""
import logging
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from segdet.data.transforms import Cv2ResizeTransform, ResizeByRatio

__all__ = ["SemanticSegmentorWithTTA", "tta_enabled", "test_with_tta"]

logger = logging.getLogger(__name__)


def tta_enabled(cfg) -> bool:
    """True for a semantic-segmentation config (``INPUT.DATASET_MAPPER_NAME`` "sem_seg") with
    ``TEST.AUG.ENABLED``."""
    return bool(cfg.TEST.AUG.ENABLED) and cfg.INPUT.DATASET_MAPPER_NAME == "sem_seg"


class SemanticSegmentorWithTTA(nn.Module):
    """Wraps a segmentor (e.g. :class:`SegdetSemanticSegmentor`, or its DDP wrapper) whose
    inference takes ``[{"image": (C, h, w) uint8, "height", "width"}]`` and returns
    ``[{"sem_seg": (K, height, width) logits}]``; see the module docstring."""

    def __init__(self, cfg, model: nn.Module, ratios: Optional[Sequence[float]] = None,
                 flip: Optional[bool] = None, test_scale: Optional[Sequence[int]] = None):
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        self.model = model
        self.ratios = tuple(float(r) for r in (cfg.TEST.SEM_SEG.AUG_RATIOS if ratios is None else ratios))
        if not self.ratios or min(self.ratios) <= 0:
            raise ValueError(f"TEST.SEM_SEG.AUG_RATIOS must be positive ratios, got {self.ratios}")
        self.flip = bool(cfg.TEST.AUG.FLIP if flip is None else flip)
        self.resize = ResizeByRatio(cfg.INPUT.SEM_SEG.TEST_RESIZE_SCALE if test_scale is None else test_scale,
                                    ratio_range=None)

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        """One ``{"sem_seg": (K, height, width) mean softmax}`` per input."""
        return [self._inference_one(x) for x in batched_inputs]

    def augmented_sizes(self, height: int, width: int) -> List[tuple]:
        """The (h, w) the model sees at each ratio for an ``height × width`` original."""
        return [self.resize.output_size(height, width, r) for r in self.ratios]

    def _inference_one(self, x: Dict) -> Dict:
        image = x["image"]
        height, width = int(x.get("height", image.shape[-2])), int(x.get("width", image.shape[-1]))
        total, count = None, 0
        for size in self.augmented_sizes(height, width):
            scaled = _resize_image(image, size)
            images = [scaled, scaled.flip(-1)] if self.flip else [scaled]
            outputs = self.model([{"image": im, "height": height, "width": width} for im in images])
            for flipped, out in zip((False, True), outputs):
                prob = out["sem_seg"].softmax(dim=0)
                prob = prob.flip(-1) if flipped else prob
                total = prob if total is None else total + prob
                count += 1
        return {"sem_seg": total / count}


def _resize_image(image: torch.Tensor, size) -> torch.Tensor:
    """(C, h, w) uint8 -> (C, size[0], size[1]) with the mapper's resize (OpenCV bilinear); the
    image itself when it already has that size."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    hwc = np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
    out = Cv2ResizeTransform(hwc.shape[0], hwc.shape[1], size[0], size[1]).apply_image(hwc)
    out = out[:, :, None] if out.ndim == 2 else out
    return torch.as_tensor(np.ascontiguousarray(out.transpose(2, 0, 1)))


def build_tta_test_loader(cfg, dataset_name: str):
    """The test loader of ``dataset_name`` with images at their original size (the sem_seg
    mapper without its test resize), so every scale is resized once from the original as in
    mmseg, not from the single-scale test image."""
    from detectron2.data import build_detection_test_loader

    from segdet.data.checks import dataset_dicts_for_testing
    from segdet.data.mappers.sem_seg_mapper import SemSegDatasetMapper

    return build_detection_test_loader(dataset=dataset_dicts_for_testing(cfg, dataset_name),
                                       mapper=SemSegDatasetMapper(cfg, False, augmentations=[]),
                                       num_workers=cfg.DATALOADER.NUM_WORKERS)


def test_with_tta(trainer_cls, cfg, model: nn.Module, evaluators=None):
    """``DefaultTrainer.test`` with ``model`` wrapped in :class:`SemanticSegmentorWithTTA` and the
    loaders of :func:`build_tta_test_loader`; evaluators from ``trainer_cls.build_evaluator``
    unless given (one per ``DATASETS.TEST`` entry). Same return value as ``DefaultTrainer.test``."""
    from detectron2.evaluation import DatasetEvaluator, inference_on_dataset, print_csv_format
    from detectron2.utils import comm

    if isinstance(evaluators, DatasetEvaluator):
        evaluators = [evaluators]
    if evaluators is not None and len(evaluators) != len(cfg.DATASETS.TEST):
        raise ValueError(f"{len(evaluators)} evaluators for {len(cfg.DATASETS.TEST)} DATASETS.TEST sets")
    wrapped = SemanticSegmentorWithTTA(cfg, model)
    logger.info(f"Test-time augmentation: ratios {wrapped.ratios} of {wrapped.resize.scale}, "
                f"flip {wrapped.flip}, {cfg.TEST.SEM_SEG.MODE} inference")
    results = OrderedDict()
    for idx, name in enumerate(cfg.DATASETS.TEST):
        evaluator = evaluators[idx] if evaluators is not None else trainer_cls.build_evaluator(cfg, name)
        results[name] = inference_on_dataset(wrapped, build_tta_test_loader(cfg, name), evaluator)
        if comm.is_main_process():
            logger.info(f"Evaluation results for {name} (multi-scale{' + flip' if wrapped.flip else ''}) "
                        "in csv format:")
            print_csv_format(results[name])
    return list(results.values())[0] if len(results) == 1 else results
