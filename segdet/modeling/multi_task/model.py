"""MultiTaskModel: one backbone, a detection branch and a semantic branch."""
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone, build_sem_seg_head
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import ImageList

from segdet.modeling.meta_arch.semantic_segmentor import crop_and_resize_logits
from segdet.utils.errors import ConfigError

from .detection_branch import build_detection_branch
from .routing import (images_with, select_features, select_images, stand_in_instances, stand_in_sem_seg,
                      zeroed)

__all__ = ["MultiTaskModel", "TASKS"]

TASKS = ("detection", "sem_seg")
_LABEL_KEY = {"detection": "instances", "sem_seg": "sem_seg"}


@META_ARCH_REGISTRY.register()
class MultiTaskModel(nn.Module):
    """Detection and semantic segmentation from one backbone (detectron2's ``PanopticFPN``
    without the panoptic fusion, and with images that may carry only one kind of label).

    Training: the backbone runs once on the padded batch; the detection branch (Faster R-CNN's
    RPN + ROI heads, or RetinaNet's head) computes its losses on the images that carry
    ``"instances"``, the semantic head on those that carry ``"sem_seg"``; each task's losses are
    multiplied by its weight. A task that no image of the batch carries gives losses of exactly 0
    with zero gradients (:mod:`segdet.modeling.multi_task.routing`).

    Inference: ``{"instances": Instances, "sem_seg": (K, H, W) logits}`` per image for the tasks
    in ``test_tasks``; an input with a ``"task"`` entry ("detection" / "sem_seg", set by the
    multi-task mapper for the images of a dataset) gets that task's output only.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        detector: Optional[nn.Module],
        sem_seg_head: Optional[nn.Module],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        loss_weights: Optional[Dict[str, float]] = None,
        test_tasks: Sequence[str] = TASKS,
        input_format: str = "BGR",
    ):
        """
        Args:
            backbone: shared by both branches (its outputs are the features of both).
            detector: a detection branch (:mod:`.detection_branch`), or None.
            sem_seg_head: a detectron2-style semantic head ``head(features, targets) ->
                (logits, losses)``, or None.
            loss_weights: {"detection": w, "sem_seg": w} multiplying each task's losses.
            test_tasks: the outputs computed at inference.
        """
        super().__init__()
        if detector is None and sem_seg_head is None:
            raise ConfigError("MultiTaskModel needs MODEL.MULTI_TASK.DETECTOR or MODEL.MULTI_TASK.SEM_SEG")
        unknown = [t for t in test_tasks if t not in TASKS]
        if unknown:
            raise ConfigError(f"MODEL.MULTI_TASK.TEST_TASKS: unknown tasks {unknown}; expected some of {list(TASKS)}")
        built = {"detection": detector is not None, "sem_seg": sem_seg_head is not None}
        absent = [t for t in test_tasks if not built[t]]
        if absent:
            raise ConfigError(f"MODEL.MULTI_TASK.TEST_TASKS {list(test_tasks)} asks for {absent}, which this "
                              "model has no branch for")
        self.backbone = backbone
        self.detector = detector
        self.sem_seg_head = sem_seg_head
        self.loss_weights = {"detection": 1.0, "sem_seg": 1.0, **(loss_weights or {})}
        self.test_tasks = tuple(test_tasks)
        self.input_format = input_format
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        m = cfg.MODEL.MULTI_TASK
        if cfg.TEST.SEM_SEG.MODE != "whole":
            raise ConfigError(f"TEST.SEM_SEG.MODE {cfg.TEST.SEM_SEG.MODE!r}: MultiTaskModel runs whole-image "
                              "inference only; set it to 'whole'")
        backbone = build_backbone(cfg)
        shape = backbone.output_shape()
        return {
            "backbone": backbone,
            "detector": build_detection_branch(cfg, shape) if m.DETECTOR else None,
            "sem_seg_head": build_sem_seg_head(cfg, shape) if m.SEM_SEG else None,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "loss_weights": {"detection": m.DETECTION_LOSS_WEIGHT, "sem_seg": m.SEM_SEG_LOSS_WEIGHT},
            "test_tasks": tuple(m.TEST_TASKS),
            "input_format": cfg.INPUT.FORMAT,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def tasks(self) -> List[str]:
        """The tasks this model has a branch for."""
        return [t for t, branch in (("detection", self.detector), ("sem_seg", self.sem_seg_head)) if branch is not None]

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise and pad the images to the backbone's size divisibility."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.backbone.size_divisibility,
                                      padding_constraints=self.backbone.padding_constraints)

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: detectron2's list of dicts: "image" (C, H, W); in training
                "instances" and/or "sem_seg" (H, W) per image.
        Returns:
            training: {loss name: scalar}, each task's losses times its weight; inference: a
            list of {"instances", "sem_seg"} dicts (see the class docstring).
        """
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        losses = {}
        if self.detector is not None:
            task_losses = self._detection_losses(batched_inputs, images, features)
            losses.update({k: v * self.loss_weights["detection"] for k, v in task_losses.items()})
        if self.sem_seg_head is not None:
            task_losses = self._sem_seg_losses(batched_inputs, images, features)
            losses.update({k: v * self.loss_weights["sem_seg"] for k, v in task_losses.items()})
        return losses

    def _detection_losses(self, batched_inputs, images: ImageList, features) -> Dict[str, torch.Tensor]:
        index = images_with(batched_inputs, "instances")
        if index:
            gt = [batched_inputs[i]["instances"].to(self.device) for i in index]
            return self.detector.detection_losses(
                select_images(images, index), select_features(features, index, len(images)), gt)
        stand_in = [stand_in_instances(images.image_sizes[0], self.device)]
        return zeroed(self.detector.detection_losses(
            select_images(images, [0]), select_features(features, [0], len(images)), stand_in, update_state=False))

    def _sem_seg_losses(self, batched_inputs, images: ImageList, features) -> Dict[str, torch.Tensor]:
        ignore = self.sem_seg_head.ignore_value
        index = images_with(batched_inputs, "sem_seg")
        if index:
            # labels padded with the ignore value to the padded batch's size
            targets = torch.full((len(index), *images.tensor.shape[-2:]), ignore, dtype=torch.int64,
                                 device=self.device)
            for row, i in enumerate(index):
                label = batched_inputs[i]["sem_seg"]
                targets[row, : label.shape[0], : label.shape[1]] = label.to(self.device)
            _, task_losses = self.sem_seg_head(select_features(features, index, len(images)), targets)
            return task_losses
        target = stand_in_sem_seg(images.tensor.shape[-2:], images.image_sizes[0], ignore, self.device)
        _, task_losses = self.sem_seg_head(select_features(features, [0], len(images)), target)
        return zeroed(task_losses)

    # ------------------------------------------------------------------ inference
    def inference(self, batched_inputs: List[Dict]) -> List[Dict]:
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        wanted = [[x["task"]] if "task" in x else list(self.test_tasks) for x in batched_inputs]
        results: List[Dict] = [{} for _ in batched_inputs]
        sizes = [(x.get("height", s[0]), x.get("width", s[1])) for x, s in zip(batched_inputs, images.image_sizes)]

        index = [i for i, tasks in enumerate(wanted) if "detection" in tasks]
        if index and self.detector is not None:
            detections = self.detector.inference(select_images(images, index),
                                                 select_features(features, index, len(images)))
            for i, instances in zip(index, detections):
                results[i]["instances"] = detector_postprocess(instances, *sizes[i])
        index = [i for i, tasks in enumerate(wanted) if "sem_seg" in tasks]
        if index and self.sem_seg_head is not None:
            logits, _ = self.sem_seg_head(select_features(features, index, len(images)), None)
            for i, result in zip(index, logits):
                results[i]["sem_seg"] = crop_and_resize_logits(result, images.image_sizes[i], *sizes[i])
        return results

