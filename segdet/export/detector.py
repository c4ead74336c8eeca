"""A detector (Faster R-CNN, RetinaNet) as one tensor-in, tensors-out module, for exporters.

detectron2's detectors take a list of dicts and return ``Instances``; their inference code
branches in Python on values computed from the data (``if not valid_mask.all()``, ``len(boxes)``
against NMS size limits, image sizes as tensors), which ``torch.export`` cannot trace: the
exported program has data-dependent shapes (the number of proposals above the score threshold,
the boxes NMS keeps) but no data-dependent control flow (detectron2's ``TracingAdapter``, which
flattens the inputs and outputs for ``torch.jit.trace``, does not change that: exported with
``torch.export`` it fails on the first such branch). :class:`ExportableDetector` runs the
same computation as the model's inference at the image's own size (``model([{"image": x,
"height": H, "width": W}])``) with the model's own modules (backbone, RPN head, anchors, box
pooler, box head and predictor; RetinaNet's head) and the post-processing written without those
branches: the same top-k, clipping, empty-box filtering, score threshold and per-class NMS (one
``torchvision.ops.nms`` per level or class, as torchvision's ``batched_nms`` does for large
inputs), the same order.
"""
import contextlib
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms


__all__ = ["ExportableDetector", "is_exportable_detector", "nms_may_keep_any_number"]


def _nms_fake(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision's fake ``nms``, except that the number of kept boxes may be 0 or 1."""
    torch._check(dets.dim() == 2 and dets.size(1) == 4 and scores.dim() == 1 and dets.size(0) == scores.size(0))
    return dets.new_empty(torch.library.get_ctx().new_dynamic_size(), dtype=torch.long)


@contextlib.contextmanager
def nms_may_keep_any_number():
    """While exporting: torchvision's fake ``nms`` says it keeps at least 2 boxes
    (``create_unbacked_symint()``, whose minimum is 2), so an exported program would assert that
    every NMS keeps 2 or more and fail on an image with fewer detections. This registers, for the
    duration, a fake that allows any number (torchvision's is restored after)."""
    lib = torch.library.Library("torchvision", "FRAGMENT")
    try:
        torch.library.register_fake("torchvision::nms", _nms_fake, lib=lib)
        yield
    finally:
        lib._destroy()


def is_exportable_detector(model: nn.Module) -> bool:
    """True for the detectors :class:`ExportableDetector` wraps: RetinaNet, and GeneralizedRCNN
    with an RPN and box-only standard ROI heads."""
    from detectron2.modeling import GeneralizedRCNN, RetinaNet
    from detectron2.modeling.proposal_generator import RPN
    from detectron2.modeling.roi_heads import StandardROIHeads

    if isinstance(model, RetinaNet):
        return True
    return (isinstance(model, GeneralizedRCNN) and type(model.proposal_generator) is RPN
            and type(model.roi_heads) is StandardROIHeads and not model.roi_heads.mask_on
            and not model.roi_heads.keypoint_on)


def _clip(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``Boxes.clip``: x1, x2 into [0, width], y1, y2 into [0, height]."""
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    return torch.stack((x1.clamp(min=0, max=width), y1.clamp(min=0, max=height), x2.clamp(min=0, max=width),
                        y2.clamp(min=0, max=height)), dim=-1)


def _nonempty(boxes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """``Boxes.nonempty``: width and height above ``threshold``."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


def _nms_per_group(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, num_groups: int,
                   threshold: float) -> torch.Tensor:
    """Indices kept by NMS within each group (0 .. num_groups - 1), by decreasing score: the
    result of ``torchvision.ops.batched_nms`` (its loop over groups), without its branches on
    the number of boxes."""
    if num_groups == 1:
        return nms(boxes, scores, threshold)
    kept = []
    for group in range(num_groups):
        members = torch.nonzero(groups == group).flatten()
        kept.append(members[nms(boxes[members], scores[members], threshold)])
    keep = torch.cat(kept).sort().values  # index order, as batched_nms's mask
    return keep[scores[keep].sort(descending=True)[1]]


class ExportableDetector(nn.Module):
    """Args:
        model: a detectron2 ``GeneralizedRCNN`` (RPN + standard ROI heads, boxes only) or
            ``RetinaNet`` in eval mode (see :func:`is_exportable_detector`).

    ``forward(image)``: ``image`` (3, H, W) float32 raw pixels 0-255 in the model's input format
    (normalised and padded inside). Returns ``boxes`` (N, 4) float32 XYXY in pixels of the
    input, ``scores`` (N,) float32 and ``classes`` (N,) int64, by decreasing score; N varies
    (at most ``TEST.DETECTIONS_PER_IMAGE``). They are the model's own detections of the image at
    its size (``model([{"image": image, "height": H, "width": W}])``).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if not is_exportable_detector(model):
            raise ValueError(f"{type(model).__name__}: export supports RetinaNet and Faster R-CNN (RPN + standard "
                             "ROI heads, boxes only)")
        if getattr(model.backbone, "padding_constraints", {}).get("square_size", 0):
            raise ValueError("export does not support a backbone with square padding (padding_constraints.square_size)")
        self.model = model
        self.retinanet = not hasattr(model, "roi_heads")
        self.size_divisibility = int(model.backbone.size_divisibility or 1)

    def normalise_and_pad(self, image: torch.Tensor) -> torch.Tensor:
        """The model's ``preprocess_image`` on one image: normalise, then zero padding to the
        backbone's size divisibility (a (1, 3, H', W') batch)."""
        height, width = image.shape[-2:]
        x = (image - self.model.pixel_mean) / self.model.pixel_std
        d = self.size_divisibility
        return F.pad(x, (0, (-width) % d, 0, (-height) % d))[None]

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        height, width = int(image.shape[-2]), int(image.shape[-1])
        features = self.model.backbone(self.normalise_and_pad(image))
        if self.retinanet:
            boxes, scores, classes = self._retinanet(features, height, width)
        else:
            boxes, scores, classes = self._rcnn(features, height, width)
        # detector_postprocess at the input's size: scale 1, clip, drop empty boxes
        boxes = _clip(boxes, height, width)
        keep = _nonempty(boxes)
        return boxes[keep], scores[keep], classes[keep]

    def _proposals(self, features, height: int, width: int) -> torch.Tensor:
        """RPN.forward + find_top_rpn_proposals (inference, one image): proposal boxes (P, 4)."""
        rpn = self.model.proposal_generator
        features = [features[f] for f in rpn.in_features]
        anchors = rpn.anchor_generator(features)
        logits, deltas = rpn.rpn_head(features)
        logits = [score.permute(0, 2, 3, 1).flatten(1) for score in logits]
        box_dim = rpn.anchor_generator.box_dim
        deltas = [x.view(x.shape[0], -1, box_dim, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
                  for x in deltas]
        proposals = rpn._decode_proposals(anchors, deltas)
        pre_nms_topk, post_nms_topk = rpn.pre_nms_topk[False], rpn.post_nms_topk[False]
        kept_boxes, kept_scores = [], []
        for boxes_i, logits_i in zip(proposals, logits):  # the per-level NMS of batched_nms, level by level
            scores_i, index = logits_i[0].topk(min(logits_i.shape[1], pre_nms_topk))
            boxes_i = boxes_i[0][index]
            valid = torch.isfinite(boxes_i).all(dim=1) & torch.isfinite(scores_i)
            boxes_i, scores_i = _clip(boxes_i[valid], height, width), scores_i[valid]
            keep = _nonempty(boxes_i, rpn.min_box_size)
            boxes_i, scores_i = boxes_i[keep], scores_i[keep]
            keep = nms(boxes_i, scores_i, rpn.nms_thresh).sort().values  # index order, as batched_nms's mask
            kept_boxes.append(boxes_i[keep])
            kept_scores.append(scores_i[keep])
        boxes, scores = torch.cat(kept_boxes), torch.cat(kept_scores)
        order = scores.sort(descending=True)[1][:post_nms_topk]
        return boxes[order]

    def _pool(self, features: List[torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        """ROIPooler.forward for one image (its batch-index column built without a list of sizes,
        assign_boxes_to_levels without ``Boxes``, whose constructor branches on the box count)."""
        pooler = self.model.roi_heads.box_pooler
        rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], dim=1)
        if len(pooler.level_poolers) == 1:
            return pooler.level_poolers[0](features[0], rois)
        sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        levels = torch.floor(pooler.canonical_level + torch.log2(sizes / pooler.canonical_box_size + 1e-8))
        levels = torch.clamp(levels, min=pooler.min_level, max=pooler.max_level).to(torch.int64) - pooler.min_level
        size = pooler.output_size
        output = features[0].new_zeros((rois.shape[0], features[0].shape[1], size[0], size[1]))
        for level, level_pooler in enumerate(pooler.level_poolers):
            index = torch.nonzero(levels == level).flatten()
            output.index_put_((index,), level_pooler(features[level], rois[index]))
        return output

    def _rcnn(self, features, height: int, width: int):
        """StandardROIHeads box inference + fast_rcnn_inference_single_image."""
        heads = self.model.roi_heads
        predictor = heads.box_predictor
        proposals = self._proposals(features, height, width)
        box_features = self._pool([features[f] for f in heads.box_in_features], proposals)
        logits, deltas = predictor(heads.box_head(box_features))
        boxes = predictor.box2box_transform.apply_deltas(deltas, proposals)
        if predictor.use_sigmoid_ce or predictor.use_fed_loss:
            scores = logits.sigmoid()
        else:
            scores = F.softmax(logits, dim=-1)
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
        boxes, scores = boxes[valid], scores[valid][:, :-1]
        num_classes = scores.shape[1]
        per_class = boxes.shape[1] // 4
        boxes = _clip(boxes.reshape(-1, 4), height, width).view(-1, per_class, 4)
        mask = scores > predictor.test_score_thresh
        index = mask.nonzero()
        boxes = boxes[index[:, 0], 0] if per_class == 1 else boxes[mask]
        scores = scores[mask]
        keep = _nms_per_group(boxes, scores, index[:, 1], num_classes, predictor.test_nms_thresh)
        if predictor.test_topk_per_image >= 0:
            keep = keep[:predictor.test_topk_per_image]
        return boxes[keep], scores[keep], index[keep, 1]

    def _retinanet(self, features, height: int, width: int):
        """RetinaNet.forward_inference + inference_single_image, one image."""
        model = self.model
        features = [features[f] for f in model.head_in_features]
        logits, deltas = model._transpose_dense_predictions(model.head(features), [model.num_classes, 4])
        anchors = model.anchor_generator(features)
        all_boxes: List[torch.Tensor] = []
        all_scores: List[torch.Tensor] = []
        all_classes: List[torch.Tensor] = []
        for anchors_i, logits_i, deltas_i in zip(anchors, logits, deltas):
            # threshold, then the top-k candidates: the top-k of all scores that are above the threshold
            scores_i = logits_i[0].sigmoid().flatten()
            scores_i, index = scores_i.topk(min(model.test_topk_candidates, scores_i.shape[0]))
            keep = scores_i > model.test_score_thresh
            scores_i, index = scores_i[keep], index[keep]
            anchor_index, classes_i = index // model.num_classes, index % model.num_classes
            all_boxes.append(model.box2box_transform.apply_deltas(deltas_i[0][anchor_index],
                                                                  anchors_i.tensor[anchor_index]))
            all_scores.append(scores_i)
            all_classes.append(classes_i)
        boxes, scores, classes = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_classes)
        keep = _nms_per_group(boxes, scores, classes, model.num_classes, model.test_nms_thresh)
        keep = keep[:model.max_detections_per_image]
        return boxes[keep], scores[keep], classes[keep]
