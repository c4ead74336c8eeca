"""Detection branches of the multi-task model: detectron2's Faster R-CNN and RetinaNet heads on a
backbone they do not own.

A branch takes the shared backbone's features of the images that carry boxes and returns
detectron2's losses (training, :meth:`detection_losses`) or per-image :class:`Instances` before post-processing
(:meth:`inference`). The parameter names are those of the single-task detectors minus the backbone:
``proposal_generator.*`` and ``roi_heads.*`` (Faster R-CNN) or ``head.*`` (RetinaNet).
"""
from typing import Dict, List

import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import RetinaNet
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.modeling.proposal_generator import build_proposal_generator
from detectron2.modeling.roi_heads import build_roi_heads
from detectron2.structures import ImageList, Instances

from segdet.modeling.backbone.features import check_in_features
from segdet.utils.errors import ConfigError

__all__ = ["RCNNDetectionBranch", "RetinaNetDetectionBranch", "build_detection_branch", "DETECTION_BRANCHES"]


class RCNNDetectionBranch(nn.Module):
    """Faster R-CNN's RPN and ROI heads (detectron2's ``GeneralizedRCNN`` without its backbone)."""

    def __init__(self, cfg, input_shape: Dict[str, ShapeSpec]):
        super().__init__()
        self.proposal_generator = build_proposal_generator(cfg, input_shape)
        self.roi_heads = build_roi_heads(cfg, input_shape)

    def detection_losses(self, images: ImageList, features: Dict[str, torch.Tensor],
                         gt_instances: List[Instances], update_state: bool = True) -> Dict[str, torch.Tensor]:
        """detectron2's RPN and ROI-head losses for ``images`` (N images) and their features
        {name: (N, C, H, W)} (``update_state``: these heads keep no running state)."""
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        return {**proposal_losses, **detector_losses}

    def inference(self, images: ImageList, features: Dict[str, torch.Tensor]) -> List[Instances]:
        """Detections per image, in the padded input's coordinates."""
        proposals, _ = self.proposal_generator(images, features, None)
        results, _ = self.roi_heads(images, features, proposals, None)
        return results


class RetinaNetDetectionBranch(RetinaNet):
    """RetinaNet's head, anchors, matching, focal loss and inference (detectron2's ``RetinaNet``)
    without a backbone: ``self.backbone`` is None and only :meth:`detection_losses` / :meth:`inference`
    are used (the forward of the full detector is not)."""

    def __init__(self, cfg, input_shape: Dict[str, ShapeSpec]):
        r = cfg.MODEL.RETINANET
        check_in_features("MODEL.RETINANET.IN_FEATURES", r.IN_FEATURES, input_shape)
        feature_shapes = [input_shape[f] for f in r.IN_FEATURES]
        super().__init__(
            backbone=None,
            head=RetinaNetHead(cfg, feature_shapes),
            head_in_features=list(r.IN_FEATURES),
            anchor_generator=build_anchor_generator(cfg, feature_shapes),
            box2box_transform=Box2BoxTransform(weights=r.BBOX_REG_WEIGHTS),
            anchor_matcher=Matcher(r.IOU_THRESHOLDS, r.IOU_LABELS, allow_low_quality_matches=True),
            num_classes=r.NUM_CLASSES,
            focal_loss_alpha=r.FOCAL_LOSS_ALPHA,
            focal_loss_gamma=r.FOCAL_LOSS_GAMMA,
            smooth_l1_beta=r.SMOOTH_L1_LOSS_BETA,
            box_reg_loss_type=r.BBOX_REG_LOSS_TYPE,
            test_score_thresh=r.SCORE_THRESH_TEST,
            test_topk_candidates=r.TOPK_CANDIDATES_TEST,
            test_nms_thresh=r.NMS_THRESH_TEST,
            max_detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
            pixel_mean=cfg.MODEL.PIXEL_MEAN,
            pixel_std=cfg.MODEL.PIXEL_STD,
            vis_period=0,
            input_format=cfg.INPUT.FORMAT,
        )
        # the normalisation lives in the multi-task model: no buffers of the full detector here
        del self.pixel_mean, self.pixel_std

    @property
    def device(self) -> torch.device:
        return self.head.cls_score.weight.device

    def detection_losses(self, images: ImageList, features: Dict[str, torch.Tensor],
                         gt_instances: List[Instances], update_state: bool = True) -> Dict[str, torch.Tensor]:
        """RetinaNet's focal and box losses for ``images`` (N) and features {name: (N, C, H, W)}.
        ``update_state=False`` (a stand-in batch) leaves the moving average of positive anchors
        that normalises the losses as it was."""
        levels = [features[f] for f in self.head_in_features]
        saved = {k: v for k, v in vars(self).items() if k.startswith("loss_normalizer")}
        losses = self.forward_training(images, levels, self.head(levels), gt_instances)
        if not update_state:
            for key in [k for k in vars(self) if k.startswith("loss_normalizer")]:
                delattr(self, key)
            vars(self).update(saved)
        return losses

    def inference(self, images: ImageList, features: Dict[str, torch.Tensor]) -> List[Instances]:
        """Detections per image, in the padded input's coordinates."""
        levels = [features[f] for f in self.head_in_features]
        return self.forward_inference(images, levels, self.head(levels))


DETECTION_BRANCHES = {"GeneralizedRCNN": RCNNDetectionBranch, "RetinaNet": RetinaNetDetectionBranch}


def build_detection_branch(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """The branch named by ``MODEL.MULTI_TASK.DETECTOR``."""
    name = cfg.MODEL.MULTI_TASK.DETECTOR
    if name not in DETECTION_BRANCHES:
        raise ConfigError(f"MODEL.MULTI_TASK.DETECTOR must be one of {sorted(DETECTION_BRANCHES)}, got {name!r}")
    return DETECTION_BRANCHES[name](cfg, input_shape)
