"""Inference on images that are not in a dataset: any segdet / detectron2 model from its config.

:class:`Predictor` is detectron2's ``DefaultPredictor`` for segdet: it builds the model of a
config (the student alone for a ``DistillationModel`` config), loads ``MODEL.WEIGHTS``
strictly, applies the config's test-time resize (the dataset mapper's, so predictions match
what evaluation sees) and returns the model's outputs at each image's own size. Unlike
``DefaultPredictor`` it takes a batch of images, in RGB order.
"""
import logging
from typing import Dict, List, Sequence

import numpy as np
import torch

from detectron2.data import transforms as T
from detectron2.modeling import build_model

from ..deploy import fuse_model, fused_module_count
from .checkpoint_io import SafeCheckpointer

__all__ = ["Predictor", "StudentWeightsCheckpointer", "inference_config"]

logger = logging.getLogger(__name__)

_STUDENT_PREFIX = "student."


def inference_config(cfg):
    """The config whose model is run at inference: ``cfg`` itself, or for a distillation config
    the student's (:func:`segdet.distill.student_config`), frozen."""
    if cfg.MODEL.META_ARCHITECTURE == "DistillationModel":
        from segdet.distill import student_config

        cfg = student_config(cfg)
    else:
        cfg = cfg.clone()
    cfg.freeze()
    return cfg


class StudentWeightsCheckpointer(SafeCheckpointer):
    """:class:`SafeCheckpointer` for a student model that also reads the checkpoints of a whole
    ``DistillationModel`` run (``model_final.pth``): their ``student.*`` weights are loaded, the
    distillation modules' weights dropped. A student's own file (``model_student_final.pth``)
    loads as it is."""

    def _load_file(self, filename: str):
        checkpoint = super()._load_file(filename)
        weights = checkpoint.get("model", {})
        if any(k.startswith(_STUDENT_PREFIX) for k in weights):
            checkpoint["model"] = {k[len(_STUDENT_PREFIX):]: v for k, v in weights.items()
                                   if k.startswith(_STUDENT_PREFIX)}
            logger.info(f"{filename}: a distillation checkpoint; loading its student weights")
        return checkpoint


class Predictor:
    """Runs the model of ``cfg`` on RGB images.

    Args:
        cfg: a segdet config (``load_config``); ``MODEL.WEIGHTS`` is loaded strictly (every
            parameter must be in the file, with its shape).
        fuse: use the fused inference path (``segdet.deploy.fuse_model``) where the model has one
            (CGRSeg).
        model: a callable to run instead of the config's model, with its inference interface
            (list of input dicts -> list of output dicts), e.g. :class:`segdet.export.OnnxSegmentor`;
            ``MODEL.WEIGHTS`` is then not read and ``fuse`` must be False.

    Call with a list of (H, W, 3) uint8 RGB arrays; returns one dict per image, the model's
    outputs at that image's size: ``"instances"`` (detectors) and/or ``"sem_seg"`` (K, H, W)
    scores (segmentors), on the CPU.
    """

    def __init__(self, cfg, fuse: bool = False, model=None):
        from .trainer import build_mapper

        self.cfg = inference_config(cfg)
        if model is not None:
            if fuse:
                raise ValueError("Predictor: fuse applies to the config's PyTorch model, not to a given model")
            self.model, self.fused = model, 0
        else:
            self.model = build_model(self.cfg).eval()
            checkpointer = StudentWeightsCheckpointer(self.model, trust_pickle=self.cfg.MODEL.TRUST_PICKLE,
                                                      strict=True)
            checkpointer.load(self.cfg.MODEL.WEIGHTS)
            if fuse:
                self.model = fuse_model(self.model, inplace=True)
            self.fused = fused_module_count(self.model)
        if fuse and not self.fused:
            logger.warning(f"{self.cfg.MODEL.META_ARCHITECTURE} has no fused inference path; --fuse does nothing")
        # The test mapper's resize (detection: shortest edge; semantic: keep-ratio into a scale). A
        # multi-task model predicts both tasks from one forward at the detection test size.
        data_cfg = self.cfg
        if data_cfg.INPUT.DATASET_MAPPER_NAME == "multi_task":
            from segdet.data.multi_task import task_config

            data_cfg = task_config(data_cfg, "detection")
        self.augmentations = build_mapper(data_cfg, is_train=False).augmentations  # an AugmentationList
        self.input_format = self.cfg.INPUT.FORMAT

    def model_input(self, image: np.ndarray) -> Dict:
        """One (H, W, 3) uint8 RGB image -> the model's input dict (resized, in INPUT.FORMAT)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"Predictor: expected an (H, W, 3) RGB image, got shape {image.shape}")
        if self.input_format == "BGR":
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        aug_input = T.AugInput(np.ascontiguousarray(image))
        self.augmentations(aug_input)
        tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray]) -> List[Dict]:
        """Images of one resized size share a forward; others run apart, since a batch is padded
        to its largest image and context modules (pyramid pooling) would see that padding."""
        inputs = [self.model_input(image) for image in images]
        outputs: List[Dict] = [{} for _ in inputs]
        by_size: Dict[tuple, List[int]] = {}
        for i, x in enumerate(inputs):
            by_size.setdefault(tuple(x["image"].shape), []).append(i)
        for indices in by_size.values():
            for i, out in zip(indices, self.model([inputs[i] for i in indices])):
                outputs[i] = {k: v.to("cpu") if hasattr(v, "to") else v for k, v in out.items()}
        return outputs
