"""SegdetSemanticSegmentor: sliding windows, post-processing, slide == whole for local models."""
import pytest
import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess

from segdet.modeling.meta_arch.semantic_segmentor import (
    SegdetSemanticSegmentor, crop_and_resize_logits, sliding_windows)


def test_sliding_windows_cover_the_image_like_mmseg():
    windows = sliding_windows(512, 700, (512, 512), (341, 341))
    assert windows == [(0, 512, 0, 512), (0, 512, 188, 700)]  # last column shifted inside
    assert sliding_windows(300, 300, (512, 512), (341, 341)) == [(0, 300, 0, 300)]
    grid = sliding_windows(1000, 1000, (512, 512), (341, 341))
    assert len(grid) == 9  # rows = cols = ceil((1000 - 512) / 341) + 1 = 3
    covered = torch.zeros(1000, 1000, dtype=torch.bool)
    for y0, y1, x0, x1 in grid:
        assert y1 - y0 == 512 and x1 - x0 == 512
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    with pytest.raises(ValueError, match="STRIDE"):
        sliding_windows(10, 10, (4, 4), (0, 2))


@pytest.mark.parametrize("out_size", [(40, 50), (37, 45)])
def test_crop_and_resize_matches_detectron2(out_size):
    logits = torch.randn(5, 48, 64)
    ours = crop_and_resize_logits(logits, (40, 50), *out_size)
    reference = sem_seg_postprocess(logits, (40, 50), *out_size)
    assert torch.allclose(ours, reference, atol=1e-6)


@pytest.mark.parametrize("out_size", [(40, 50), (80, 90)])
def test_crop_and_resize_channels_last_logits(out_size):
    """Channels-last logits (a fused channels-last model's output) are resized in channels-last:
    same values as detectron2's post-processing, channels-last result; the identity is a view."""
    nchw = torch.randn(1, 6, 48, 64)
    logits = nchw.contiguous(memory_format=torch.channels_last)[0]  # (K, H, W), class stride 1
    assert logits.stride(0) == 1
    ours = crop_and_resize_logits(logits, (40, 50), *out_size)
    reference = sem_seg_postprocess(nchw[0], (40, 50), *out_size)
    assert ours.shape == reference.shape == (6, *out_size)
    assert torch.allclose(ours, reference, atol=1e-5)
    if out_size != (40, 50):
        assert ours.stride(0) == 1  # still channels-last
    else:
        assert ours.data_ptr() == logits.data_ptr()


class _PixelBackbone(Backbone):
    """A per-pixel (1x1) 'backbone': its output at a pixel depends on that pixel only."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return {"res2": self.conv(x)}

    def output_shape(self):
        return {"res2": ShapeSpec(channels=4, stride=1)}

    @property
    def size_divisibility(self):
        return 8


class _PixelHead(nn.Module):
    ignore_value = 255

    def __init__(self):
        super().__init__()
        self.predictor = nn.Conv2d(4, 3, 1)

    def forward(self, features, targets=None):
        return self.predictor(features["res2"]), {}


def test_slide_inference_equals_whole_for_a_local_model():
    kwargs = dict(backbone=_PixelBackbone(), sem_seg_head=_PixelHead(), pixel_mean=[0.0, 0.0, 0.0],
                  pixel_std=[1.0, 1.0, 1.0])
    whole = SegdetSemanticSegmentor(test_mode="whole", **kwargs).eval()
    slide = SegdetSemanticSegmentor(test_mode="slide", test_crop=(16, 16), test_stride=(10, 10), **kwargs).eval()
    inputs = [{"image": torch.rand(3, 37, 45) * 255, "height": 74, "width": 90}]
    with torch.no_grad():
        a, b = whole(inputs)[0]["sem_seg"], slide(inputs)[0]["sem_seg"]
    assert a.shape == (3, 74, 90)
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="TEST.SEM_SEG.MODE"):
        SegdetSemanticSegmentor(test_mode="tiles", **kwargs)
