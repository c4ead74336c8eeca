"""Semantic segmentor with whole-image or sliding-window inference."""
from typing import Dict, List, Tuple

import torch
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.structures import ImageList

__all__ = ["SegdetSemanticSegmentor", "sliding_windows", "crop_and_resize_logits"]


def crop_and_resize_logits(logits: torch.Tensor, image_size, height: int, width: int) -> torch.Tensor:
    """Logits (K, Hp, Wp) of a padded input -> (K, height, width): crop the padding to
    ``image_size`` then resize bilinearly (align_corners=False). Same result as detectron2's
    ``sem_seg_postprocess``, but the resize is skipped when the size already matches (it would be
    an exact copy of a K×H×W map, ~80 ms for 150 classes at 512² on 2 CPU threads).

    Channels-last logits (class dimension innermost, stride 1) are resized in channels-last: the
    cropped view is made contiguous in that format first, which is ~5x faster on CPU than
    resizing the strided view and gives a channels-last result."""
    logits = logits[:, : image_size[0], : image_size[1]]
    if tuple(logits.shape[-2:]) == (height, width):
        return logits
    batched = logits[None]
    if logits.dim() == 3 and logits.stride(0) == 1 and logits.shape[0] > 1:
        batched = batched.contiguous(memory_format=torch.channels_last)
    return F.interpolate(batched, size=(height, width), mode="bilinear", align_corners=False)[0]


def sliding_windows(
    height: int, width: int, crop: Tuple[int, int], stride: Tuple[int, int]
) -> List[Tuple[int, int, int, int]]:
    """Windows ``(y0, y1, x0, x1)`` of at most ``crop`` size covering a ``height × width`` image
    every ``stride`` pixels; the last row/column of windows is shifted inside the image (mmseg's
    ``slide_inference`` grid)."""
    ch, cw = min(crop[0], height), min(crop[1], width)
    sh, sw = stride
    if sh <= 0 or sw <= 0:
        raise ValueError(f"TEST.SEM_SEG.STRIDE must be positive, got {stride}")
    rows = max(height - ch + sh - 1, 0) // sh + 1
    cols = max(width - cw + sw - 1, 0) // sw + 1
    windows = []
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * sh + ch, height), min(c * sw + cw, width)
            windows.append((y1 - ch, y1, x1 - cw, x1))
    return windows


@META_ARCH_REGISTRY.register()
class SegdetSemanticSegmentor(SemanticSegmentor):
    """Detectron2's :class:`SemanticSegmentor` plus mmseg-style sliding-window inference.

    Training is unchanged (images padded to the backbone's size divisibility, labels padded with
    the head's ignore value). At inference, ``test_mode="whole"`` runs the head once on the padded
    image; ``"slide"`` runs it on overlapping ``test_crop`` windows every ``test_stride`` pixels and
    averages the logits where windows overlap. Either way the logits (K, H, W) are cropped to the
    image and resized to the requested output ``height × width``.
    """

    @configurable
    def __init__(self, *, test_mode: str = "whole", test_crop=(512, 512), test_stride=(341, 341),
                 **kwargs):
        super().__init__(**kwargs)
        if test_mode not in ("whole", "slide"):
            raise ValueError(f"TEST.SEM_SEG.MODE must be 'whole' or 'slide', got {test_mode!r}")
        self.test_mode = test_mode
        self.test_crop = tuple(test_crop)
        self.test_stride = tuple(test_stride)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret.update(
            test_mode=cfg.TEST.SEM_SEG.MODE,
            test_crop=cfg.TEST.SEM_SEG.CROP_SIZE,
            test_stride=cfg.TEST.SEM_SEG.STRIDE,
        )
        return ret

    def forward(self, batched_inputs: List[Dict]):
        if self.training:
            return super().forward(batched_inputs)
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        if self.test_mode == "whole":
            padded = ImageList.from_tensors(images, self.backbone.size_divisibility,
                                            padding_constraints=self.backbone.padding_constraints)
            logits, _ = self.sem_seg_head(self.backbone(padded.tensor), None)
        else:
            logits = [self.slide_logits(image) for image in images]
        results = []
        for x, image, result in zip(batched_inputs, images, logits):
            height, width = x.get("height", image.shape[-2]), x.get("width", image.shape[-1])
            results.append({"sem_seg": crop_and_resize_logits(result, image.shape[-2:], height, width)})
        return results

    def whole_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (K, H, W) of one normalised image (C, H, W), padded for the backbone and
        cropped back."""
        images = ImageList.from_tensors(
            [image], self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )
        results, _ = self.sem_seg_head(self.backbone(images.tensor), None)
        return results[0, :, : image.shape[-2], : image.shape[-1]]

    def slide_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Sliding-window logits (K, H, W) of one normalised image (C, H, W)."""
        height, width = image.shape[-2:]
        summed, count = None, image.new_zeros(1, height, width)
        for y0, y1, x0, x1 in sliding_windows(height, width, self.test_crop, self.test_stride):
            logits = self.whole_logits(image[:, y0:y1, x0:x1])
            if summed is None:
                summed = image.new_zeros(logits.shape[0], height, width)
            summed[:, y0:y1, x0:x1] += logits
            count[:, y0:y1, x0:x1] += 1
        return summed / count
