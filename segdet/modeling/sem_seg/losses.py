"""Pure loss functions for segdet's semantic-segmentation heads."""
import torch
from torch.nn import functional as F

__all__ = ["sem_seg_cross_entropy"]


def sem_seg_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = 255,
                          avg_non_ignore: bool = True) -> torch.Tensor:
    """Per-pixel softmax cross-entropy.

    Args:
        logits: (B, K, H, W) class scores (already at the label resolution).
        targets: (B, H, W) integer labels; ``ignore_index`` pixels contribute 0.
        ignore_index: label value to ignore.
        avg_non_ignore: True = mean over valid pixels; False = mmseg 0.27's mean over all
            B*H*W pixels (ignored ones counted as 0).
    Returns:
        scalar loss. A label map that is entirely ``ignore_index`` gives exactly 0 (finite, with
        a zero gradient), never NaN.
    """
    if logits.dim() != 4 or targets.dim() != 3 or logits.shape[0] != targets.shape[0] \
            or logits.shape[-2:] != targets.shape[-2:]:
        raise ValueError(f"sem_seg_cross_entropy: expected logits (B, K, H, W) and targets (B, H, W) "
                         f"of the same B, H, W; got {tuple(logits.shape)} and {tuple(targets.shape)}")
    loss = F.cross_entropy(logits, targets.long(), ignore_index=ignore_index, reduction="none")
    if avg_non_ignore:
        valid = (targets != ignore_index).sum().clamp(min=1)
        return loss.sum() / valid.to(loss.dtype)
    return loss.mean()
