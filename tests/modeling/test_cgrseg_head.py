"""CGRSeg head + segmentor: parameter counts, shapes, DPG switch, loss, training step, FLOPs."""
import os

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from segdet.modeling.cgrseg.head import CGRSegHead
from segdet.modeling.cgrseg.dpg import spatial_gather
from segdet.modeling.sem_seg.losses import sem_seg_cross_entropy
from segdet.utils.config_io import load_config
from _tools import cgrseg_ade20k_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model(variant: str, opts=()):
    return build_model(load_config(cgrseg_ade20k_config(variant), ["MODEL.DEVICE", "cpu", *opts]))


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("variant,backbone,head", [
    ("T", 5_748_360, 3_616_287), ("B", 12_151_408, 6_963_463), ("L", 25_578_016, 10_099_687)])
def test_parameter_counts(variant, backbone, head):
    model = _model(variant)
    assert _count(model.backbone) == backbone
    assert _count(model.sem_seg_head) == head
    assert _count(model) == {"T": 9_364_647, "B": 19_114_871, "L": 35_677_703}[variant]


def test_shapes_512_and_public_api():
    model = _model("T").eval()
    head = model.sem_seg_head
    assert isinstance(head, CGRSegHead)
    assert isinstance(head.dropout, nn.Dropout2d) and head.dropout.p == 0.1
    assert isinstance(head.conv_seg, nn.Conv2d) and head.conv_seg.weight.shape == (150, 128, 1, 1)
    assert isinstance(head.linear_fuse.bn, nn.SyncBatchNorm)  # MODEL.CGRSEG.NORM "SyncBN"
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 512, 512))
        x = head.decode_features(feats)
        logits = head.layers(feats)
        full, losses = head(feats)
    assert tuple(x.shape) == (1, 128, 64, 64)
    assert tuple(logits.shape) == (1, 150, 64, 64)
    assert losses == {} and tuple(full.shape) == (1, 150, 512, 512)
    assert torch.allclose(full, F.interpolate(logits, size=(512, 512), mode="bilinear", align_corners=False))


def test_segmentor_non_multiple_of_32_input():
    model = _model("T").eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 500, 380) * 255, "height": 250, "width": 190}])
    assert tuple(out[0]["sem_seg"].shape) == (150, 250, 190)
    assert torch.isfinite(out[0]["sem_seg"]).all()


def test_dpg_initial_gate_is_half_and_disabled_head():
    model = _model("T").eval()
    head = model.sem_seg_head
    x, ctx = torch.randn(2, 128, 4, 4), torch.randn(2, 150, 128)
    assert torch.allclose(head.lgc(x, ctx), 0.5 * x)

    no_dpg = _model("T", ["MODEL.CGRSEG.USE_DPG", "False"]).eval()
    assert no_dpg.sem_seg_head.lgc is None
    assert not any(".lgc." in k for k in no_dpg.state_dict())
    assert _count(no_dpg.sem_seg_head) == 3_616_287 - _count(head.lgc)
    h = no_dpg.sem_seg_head
    with torch.no_grad():
        feats = no_dpg.backbone(torch.randn(1, 3, 128, 96))
        expected = h.conv_seg(h.dropout(h.linear_fuse(h.decode_features(feats))))
        assert torch.allclose(h.layers(feats), expected)


def test_spatial_gather_uniform_logits_give_mean_feature():
    feats = torch.randn(2, 5, 3, 4)
    centres = spatial_gather(feats, torch.zeros(2, 7, 3, 4))
    assert centres.shape == (2, 7, 5)
    assert torch.allclose(centres, feats.mean(dim=(2, 3)).unsqueeze(1).expand(2, 7, 5), atol=1e-6)
    # a one-hot (very peaked) class map picks that pixel's feature
    logits = torch.full((2, 7, 3, 4), -1e4)
    logits[:, 0, 1, 2] = 0
    assert torch.allclose(spatial_gather(feats, logits)[:, 0], feats[:, :, 1, 2], atol=1e-5)


def test_cross_entropy_by_hand_both_reductions():
    logits = torch.tensor([[[[2.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [3.0, 1.0]]]])  # (1, 2, 2, 2)
    labels = torch.tensor([[[0, 1], [255, 255]]])
    # pixel (0,0): -log(e^2/(e^2+1)); pixel (0,1): -log(e/(1+e)); two ignored pixels
    l00 = -torch.log(torch.tensor(2.0).exp() / (torch.tensor(2.0).exp() + 1))
    l01 = -torch.log(torch.tensor(1.0).exp() / (1 + torch.tensor(1.0).exp()))
    valid_mean = sem_seg_cross_entropy(logits, labels, 255, avg_non_ignore=True)
    all_mean = sem_seg_cross_entropy(logits, labels, 255, avg_non_ignore=False)
    assert torch.allclose(valid_mean, (l00 + l01) / 2)
    assert torch.allclose(all_mean, (l00 + l01) / 4)
    assert torch.allclose(valid_mean, F.cross_entropy(logits, labels, ignore_index=255))


@pytest.mark.parametrize("avg_non_ignore", [True, False])
def test_all_ignored_label_gives_zero_loss_and_finite_gradient(avg_non_ignore):
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = sem_seg_cross_entropy(logits, torch.full((2, 4, 4), 255), 255, avg_non_ignore)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


def test_cross_entropy_gradcheck():
    logits = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[[0, 2, 255], [1, 255, 0]]])
    for avg in (True, False):
        assert torch.autograd.gradcheck(lambda z: sem_seg_cross_entropy(z, labels, 255, avg), (logits,))


def test_cross_entropy_bad_shapes():
    with pytest.raises(ValueError, match="targets"):
        sem_seg_cross_entropy(torch.randn(1, 3, 4, 4), torch.zeros(1, 5, 4, dtype=torch.long))


def test_training_step_batch_one():
    model = _model("T").train()
    label = torch.randint(0, 150, (128, 128))
    label[:10] = 255
    with EventStorage(0):
        losses = model([{"image": torch.rand(3, 128, 128) * 255, "sem_seg": label}])
    assert set(losses) == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])
    losses["loss_sem_seg"].backward()
    head = model.sem_seg_head
    # (conv_mask gets no gradient at init: the last DPG conv is zero, so the gate is constant)
    for p in (head.conv_seg.weight, head.lgc.channel_mul_conv[3].weight, head.trans.transformer_blocks[0].gamma,
              model.backbone.patch_embed[0].weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # 64 px input: a 1x1 pyramid-pool grid, which BatchNorm cannot train on with one image
    with pytest.raises(ValueError, match="batch 1"), EventStorage(0):
        model([{"image": torch.rand(3, 64, 64) * 255, "sem_seg": label[:64, :64]}])


def test_loss_reduction_follows_config():
    model = _model("T")
    assert model.sem_seg_head.avg_non_ignore is True  # the configs' default: valid-pixel mean
    official = _model("T", ["MODEL.SEM_SEG_HEAD.LOSS_AVG_NON_IGNORE", "False"]).sem_seg_head
    assert official.avg_non_ignore is False  # mmseg 0.27's all-pixel mean, as a switch
    logits = torch.randn(1, 150, 4, 4)
    targets = torch.randint(0, 150, (1, 32, 32))
    targets[0, :16] = 255  # half the pixels ignored
    up = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    valid_mean = F.cross_entropy(up, targets, ignore_index=255)
    assert torch.allclose(model.sem_seg_head.losses(logits, targets)["loss_sem_seg"], valid_mean)
    assert torch.allclose(official.losses(logits, targets)["loss_sem_seg"], valid_mean / 2)


def _mmcv_style_gmacs(variant: str):
    """mmcv get_model_complexity_info convention (segdet.utils.flops) on backbone + head at
    512x512; the final resize to the input size is excluded, as in mmseg's get_flops."""
    from segdet.utils.flops import count_module_flops

    class Net(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.backbone, self.head = model.backbone, model.sem_seg_head

        def forward(self, x):
            return self.head.layers(self.backbone(x))

    flops = count_module_flops(Net(_model(variant)), torch.randn(1, 3, 512, 512), "mmcv")
    return flops["total"], flops["backbone"], flops["head"]


@pytest.mark.parametrize("variant,reported", [
    ("T", 4.0), pytest.param("B", 7.6, marks=pytest.mark.slow), pytest.param("L", 14.9, marks=pytest.mark.slow)])
def test_flops_match_the_reported_official_count(variant, reported):
    """The papers' GFLOPs at 512x512 (CGRSeg README tables: T 4.0, B 7.6, L 14.9; mmcv's
    get_flops, MACs, attention matmuls not counted). They are rounded to one decimal and mmcv's
    hooks differ in small ops (activations, upsampling), so 3%: enough to catch a wrong width,
    depth or feature resolution, not a single small block."""
    total, backbone, head = _mmcv_style_gmacs(variant)
    print(f"CGRSeg-{variant}: {total:.3f} GMACs (backbone {backbone:.3f}, head {head:.3f})")
    assert abs(total - reported) / reported < 0.03
