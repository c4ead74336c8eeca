"""Multi-scale + flip test-time augmentation (segdet/modeling/meta_arch/sem_seg_tta.py) on tiny
segmentors whose equivariances are known: a 1x1-conv head (flip-equivariant; scale-consistent on
a constant image) and a 3x3-conv head with random weights (neither)."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import Backbone, ShapeSpec

from segdet.config import get_segdet_cfg
from segdet.modeling.meta_arch import sem_seg_tta
from segdet.modeling.meta_arch.semantic_segmentor import SegdetSemanticSegmentor

K = 4


class _Identity(Backbone):
    """The normalised image as the only feature; records the (h, w) of every forward."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        return {"x": x}

    def output_shape(self):
        return {"x": ShapeSpec(channels=3, stride=1)}


class _ConvHead(nn.Module):
    def __init__(self, kernel: int):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, K, kernel, padding=kernel // 2)

    def forward(self, features, targets=None):
        return self.conv(features["x"]), {}


def _model(kernel: int, **kwargs) -> SegdetSemanticSegmentor:
    return SegdetSemanticSegmentor(backbone=_Identity(), sem_seg_head=_ConvHead(kernel),
                                   pixel_mean=[100.0, 110.0, 120.0], pixel_std=[50.0, 60.0, 70.0],
                                   **kwargs).eval()


def _cfg(ratios=(1.0,), flip=True, scale=(60, 40)):
    cfg = get_segdet_cfg()
    cfg.TEST.SEM_SEG.AUG_RATIOS = ratios
    cfg.TEST.AUG.FLIP = flip
    cfg.INPUT.SEM_SEG.TEST_RESIZE_SCALE = scale
    return cfg


def _random_image(h=40, w=60):
    return torch.as_tensor(np.random.RandomState(1).randint(0, 256, (3, h, w), dtype=np.uint8))


def _plain_prob(model, image):
    with torch.no_grad():
        return model([{"image": image}])[0]["sem_seg"].softmax(dim=0)


def _tta(cfg, model, image):
    with torch.no_grad():
        return sem_seg_tta.SemanticSegmentorWithTTA(cfg, model)([{"image": image}])[0]["sem_seg"]


def test_flip_of_a_flip_equivariant_model_is_the_plain_output():
    model, image = _model(1), _random_image()
    out = _tta(_cfg(flip=True), model, image)
    assert out.shape == (K, 40, 60)
    torch.testing.assert_close(out, _plain_prob(model, image), rtol=0, atol=1e-6)


def test_flip_changes_the_output_of_a_non_equivariant_model():
    model, image = _model(3), _random_image()
    plain, out = _plain_prob(model, image), _tta(_cfg(flip=True), model, image)
    flipped = _plain_prob(model, image.flip(-1)).flip(-1)
    assert (out - plain).abs().max() > 1e-2
    torch.testing.assert_close(out, (plain + flipped) / 2, rtol=0, atol=1e-6)


def test_multi_scale_sizes_are_mmseg_img_ratios():
    """Keep-ratio into (int(60 r), int(40 r)) of a 40x60 image; each scale and its flip."""
    model = _model(1)
    image = torch.full((3, 40, 60), 90, dtype=torch.uint8)
    _tta(_cfg(ratios=(0.5, 0.75, 1.0, 1.75), flip=True), model, image)
    assert model.backbone.seen == [(20, 30), (30, 45), (40, 60), (70, 105)]  # flip batched with its scale


def test_multi_scale_flip_of_a_scale_consistent_model_is_the_plain_output():
    """On a constant image every scale of the 1x1-conv model gives the same constant logits."""
    model = _model(1)
    image = torch.stack([torch.full((40, 60), v, dtype=torch.uint8) for v in (30, 200, 90)])
    out = _tta(_cfg(ratios=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip=True), model, image)
    torch.testing.assert_close(out, _plain_prob(model, image), rtol=0, atol=1e-6)


def test_multi_scale_flip_is_mmseg_aug_test():
    """mmseg's aug_test written out: per scale (OpenCV bilinear resize of the image) and flip,
    logits resized bilinearly to the original size, then softmax, flipped back, averaged."""
    import cv2
    from torch.nn import functional as F

    model, image = _model(3), _random_image()
    expected = []
    for h, w in ((20, 30), (60, 90)):  # ratios 0.5, 1.5 of (60, 40) for a 40x60 image
        hwc = cv2.resize(image.permute(1, 2, 0).numpy(), (w, h), interpolation=cv2.INTER_LINEAR)
        scaled = torch.as_tensor(hwc).permute(2, 0, 1)
        for flip in (False, True):
            with torch.no_grad():
                logits = model([{"image": scaled.flip(-1) if flip else scaled}])[0]["sem_seg"]
            prob = F.interpolate(logits[None], size=(40, 60), mode="bilinear", align_corners=False)[0].softmax(0)
            expected.append(prob.flip(-1) if flip else prob)
    out = _tta(_cfg(ratios=(0.5, 1.5), flip=True), model, image)
    torch.testing.assert_close(out, torch.stack(expected).mean(0), rtol=0, atol=1e-6)


def test_multi_scale_changes_the_output_of_a_non_consistent_model():
    model, image = _model(3), _random_image()
    out = _tta(_cfg(ratios=(0.5, 1.0, 1.5), flip=False), model, image)
    assert (out - _plain_prob(model, image)).abs().max() > 1e-2


def test_tta_runs_the_models_sliding_windows_at_every_scale():
    whole, slide = _model(1), _model(1, test_mode="slide", test_crop=(16, 16), test_stride=(12, 12))
    image = _random_image()
    cfg = _cfg(ratios=(0.5, 1.0), flip=True)
    torch.testing.assert_close(_tta(cfg, slide, image), _tta(cfg, whole, image), rtol=0, atol=1e-6)
    assert all(max(hw) <= 16 for hw in slide.backbone.seen) and len(slide.backbone.seen) > 4


def test_bad_ratios_are_refused():
    with pytest.raises(ValueError, match="AUG_RATIOS"):
        sem_seg_tta.SemanticSegmentorWithTTA(_cfg(ratios=(1.0, 0.0)), _model(1))


def test_trainer_test_uses_tta_with_original_size_images(tmp_path, monkeypatch):
    """Trainer.test with TEST.AUG.ENABLED: the wrapper gets the images at their original size,
    and for a flip-equivariant model with ratio 1 the mIoU is the plain one."""
    from segdet.engine.trainer import Trainer

    name = "segdet_test_tta_set"
    rng = np.random.RandomState(0)
    files = []
    for i in range(2):
        img, lab = tmp_path / f"{i}.png", tmp_path / f"{i}_label.png"
        Image.fromarray(rng.randint(0, 256, (30, 50, 3), dtype=np.uint8)).save(img)
        Image.fromarray(rng.randint(0, K, (30, 50), dtype=np.uint8)).save(lab)
        files.append({"file_name": str(img), "sem_seg_file_name": str(lab), "image_id": i})
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [dict(d) for d in files])
        MetadataCatalog.get(name).set(stuff_classes=[str(k) for k in range(K)], ignore_label=255,
                                      evaluator_type="sem_seg")
    cfg = _cfg(ratios=(1.0,), flip=True, scale=(100, 60))  # single-scale test resizes 30x50 -> 60x100
    cfg.DATASETS.TEST = (name,)
    cfg.INPUT.DATASET_MAPPER_NAME = "sem_seg"
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = K
    cfg.TEST.VIS_NUM_IMAGES = 0
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    model = _model(1)
    plain = Trainer.test(cfg, model)["sem_seg"]["mIoU"]
    assert model.backbone.seen == [(60, 100), (60, 100)]
    seen = []
    monkeypatch.setattr(sem_seg_tta.SemanticSegmentorWithTTA, "augmented_sizes",
                        lambda self, h, w: seen.append(h) or [self.resize.output_size(h, w, r) for r in self.ratios])
    cfg.TEST.AUG.ENABLED = True
    model.backbone.seen.clear()
    tta = Trainer.test(cfg, model)["sem_seg"]["mIoU"]
    assert seen == [30, 30] and model.backbone.seen == [(60, 100), (60, 100)]  # 30x50 resized once
    assert tta == pytest.approx(plain)
