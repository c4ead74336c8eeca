"""A semantic segmentor as one tensor-in, tensor-out module, for exporters.

``SegdetSemanticSegmentor`` takes detectron2's list of dicts; exporters want tensors. This wrapper
runs the same computation as its whole-image inference (normalisation, zero padding after it to
the backbone's size divisibility, backbone, head, crop back to the input) on a batch tensor.
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ExportableSegmentor"]


class ExportableSegmentor(nn.Module):
    """Args:
        model: a ``SegdetSemanticSegmentor`` (or any model with ``backbone``, ``sem_seg_head``,
            ``pixel_mean``, ``pixel_std``) in eval mode.
        preprocess: True: the input is raw pixels (B, 3, H, W) float in the config's
            ``INPUT.FORMAT`` order, 0-255, any H and W; normalised and padded inside. False: the
            input is already normalised, with H and W multiples of the backbone's size divisibility.

    Returns logits (B, K, H, W) at the input's size (the head's output, cropped).
    """

    def __init__(self, model: nn.Module, preprocess: bool = True):
        super().__init__()
        if getattr(model, "test_mode", "whole") != "whole":
            raise ValueError(f"export runs whole-image inference; the model's test mode is {model.test_mode!r} "
                             "(set TEST.SEM_SEG.MODE whole)")
        if getattr(model.backbone, "padding_constraints", {}).get("square_size", 0):
            raise ValueError("export does not support a backbone with square padding (padding_constraints.square_size)")
        self.backbone = model.backbone
        self.head = model.sem_seg_head
        self.preprocess = preprocess
        self.size_divisibility = int(model.backbone.size_divisibility or 1)
        self.register_buffer("pixel_mean", model.pixel_mean.detach().reshape(1, -1, 1, 1).clone(), persistent=False)
        self.register_buffer("pixel_std", model.pixel_std.detach().reshape(1, -1, 1, 1).clone(), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        x = image
        if self.preprocess:
            x = (x - self.pixel_mean) / self.pixel_std
            d = self.size_divisibility
            x = F.pad(x, (0, (-width) % d, 0, (-height) % d))  # zeros after normalisation, as ImageList
        logits, _ = self.head(self.backbone(x), None)
        return logits[:, :, :height, :width]
