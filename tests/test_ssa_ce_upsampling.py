"""The SSA main cross-entropy upsamples the student logits with align_corners=True, as the official
``CGRSeg_ssa.forward_train`` (xwmaxwma/SSA, models/decode_heads/cgr_head_ssa.py) does before its
``self.losses``; the model's align_corners=False is for inference only.

The expected values are computed here from plain torch (bilinear interpolate + cross_entropy with
ignore index 255), for mmseg's mean over all pixels (the official reduction) and for the mean over
valid pixels (segdet's default).
"""
import pytest
import torch
from torch.nn import functional as F

from segdet.modeling.ssa.criterion import SSACriterion
from segdet.modeling.ssa.losses import ssa_losses

ONLY_CE = {"coarse_ce": 0.0, "dice": 0.0}  # no teacher: the teacher terms are off as well


def _inputs():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, 5, 8, 8, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 5, (2, 64, 64), generator=g)
    targets[:, :5] = 255
    targets[1, :, 50:] = 255
    return logits, targets


def _plain_ce(logits, targets, align_corners: bool, avg_non_ignore: bool) -> torch.Tensor:
    up = F.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=align_corners)
    per_pixel = F.cross_entropy(up, targets, ignore_index=255, reduction="none")
    return per_pixel.sum() / ((targets != 255).sum() if avg_non_ignore else targets.numel())


@pytest.mark.parametrize("avg_non_ignore", [False, True])
def test_main_ce_upsamples_with_align_corners_true(avg_non_ignore):
    logits, targets = _inputs()
    student = {"logits": logits}
    losses = ssa_losses(student, None, torch.zeros_like(logits), targets, weights=ONLY_CE,
                        avg_non_ignore=avg_non_ignore)
    assert set(losses) == {"loss_sem_seg"}
    official = _plain_ce(logits, targets, align_corners=True, avg_non_ignore=avg_non_ignore)
    other = _plain_ce(logits, targets, align_corners=False, avg_non_ignore=avg_non_ignore)
    assert abs(official - other) > 1e-3  # the two upsamplings are told apart on this input
    torch.testing.assert_close(losses["loss_sem_seg"], official, rtol=1e-12, atol=0)
    # the criterion the SSA heads use computes the same
    criterion = SSACriterion(weights=ONLY_CE, avg_non_ignore=avg_non_ignore)
    torch.testing.assert_close(criterion(student, None, torch.zeros_like(logits), targets)["loss_sem_seg"],
                               official, rtol=1e-12, atol=0)
