"""DeepLabV3+ with the SSA classifier (DeepLabV3PlusSSAHead) and its plain base head
(DeepLabV3PlusGlobalPoolHead): building from the sample configs, the training losses, inference
shapes, parameter counts with and without the teacher, the state-dict layout, where S_f is taken,
and the DeepLab config keys next to detectron2's add_deeplab_config."""
import os

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_model
from detectron2.projects.deeplab import add_deeplab_config
from detectron2.projects.deeplab.semantic_seg import DeepLabV3PlusHead

from segdet.config import add_segdet_config, get_segdet_cfg
from segdet.modeling.ssa.heads import DeepLabV3PlusGlobalPoolHead, DeepLabV3PlusSSAHead
from segdet.utils.config_io import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAIN = os.path.join(ROOT, "configs", "Samples", "deeplabv3plus_mnv2_street.yaml")
SSA = os.path.join(ROOT, "projects", "SSA", "configs", "Samples", "deeplabv3plus_mnv2_street_ssa.yaml")
NO_DOWNLOADS = ["MODEL.WEIGHTS", "", "MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.DEVICE", "cpu"]
# MobileNetV2's m2 / m5 widths and strides (the sample configs' IN_FEATURES)
SHAPES = {"m2": ShapeSpec(channels=24, stride=4), "m5": ShapeSpec(channels=320, stride=32)}
FULL_LOSSES = {"loss_sem_seg", "loss_ssa_coarse_ce", "loss_ssa_teacher_ce", "loss_ssa_response_kd", "loss_ssa_dice",
               "loss_ssa_teacher_dice", "loss_ssa_semantic_kd", "loss_ssa_spatial_kd"}
STUDENT_LOSSES = {"loss_sem_seg", "loss_ssa_coarse_ce", "loss_ssa_dice"}

# The sample head: C = CONVS_DIM = 64, K = 3 classes, MLP hidden C/2 = 32.
#   one MLP: Linear(2C -> C/2, no bias) + Linear(C/2 -> C): 128*32 + 32*64 + 64 = 6,208
#   inference SSA: get_feat_pos 9C + C = 640, center_pos K*C = 192, 2 MLPs 12,416, center_proj C*C 4,096
#   teacher: 2 MLPs 12,416 + gt_center_proj C*C 4,096
SSA_INFERENCE_PARAMS = 640 + 192 + 2 * 6208 + 4096  # 17,344
SSA_TEACHER_PARAMS = 2 * 6208 + 4096  # 16,512


def _cfg(path=SSA, opts=()):
    return load_config(path, NO_DOWNLOADS + list(opts), freeze=False)


def _head(path=SSA, opts=()):
    cfg = _cfg(path, opts)
    return SEM_SEG_HEADS_REGISTRY.get(cfg.MODEL.SEM_SEG_HEAD.NAME)(cfg, SHAPES)


def _features(batch=2, h=8, w=10, seed=0):
    """Backbone maps of a (32h, 32w) input: m2 (B, 24, 8h, 8w) and m5 (B, 320, h, w)."""
    g = torch.Generator().manual_seed(seed)
    return {"m2": torch.randn(batch, 24, 8 * h, 8 * w, generator=g),
            "m5": torch.randn(batch, 320, h, w, generator=g)}


def _labels(batch=2, h=8, w=10, seed=1):
    """(B, 32h, 32w) labels in {0, 1, 2}, the top 8 rows ignored (255)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (batch, 32 * h, 32 * w), generator=g)
    labels[:, :8] = 255
    return labels


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_builds_from_the_sample_configs():
    for path, head_type in ((PLAIN, DeepLabV3PlusGlobalPoolHead), (SSA, DeepLabV3PlusSSAHead)):
        model = build_model(load_config(path, NO_DOWNLOADS))
        head = model.sem_seg_head
        assert type(head) is head_type and head.common_stride == 4
        assert getattr(head, "base_head", head).in_features == ["m2", "m5"]
    assert model.sem_seg_head.with_teacher and model.sem_seg_head.ssa.channels == 64


def test_training_returns_the_ssa_losses_finite_with_gradients():
    head = _head().train()
    _, losses = head(_features(), _labels())
    assert set(losses) == FULL_LOSSES
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    assert head.ssa.gt_center_proj.weight.grad is not None  # the teacher is trained
    assert head.decoder["m5"]["project_conv"].project.weight.grad.abs().sum() > 0  # ASPP is reached


def test_training_without_teacher_keeps_the_student_terms():
    head = _head(opts=["MODEL.SSA.WITH_TEACHER", "False"]).train()
    _, losses = head(_features(), _labels())
    assert set(losses) == STUDENT_LOSSES and all(torch.isfinite(v) for v in losses.values())


def test_training_needs_targets():
    with pytest.raises(ValueError, match="targets"):
        _head().train()(_features())


def test_inference_returns_logits_at_the_input_size():
    head = _head().eval()
    with torch.no_grad():
        logits, extra = head(_features(batch=3, h=5, w=7))  # a 160x224 input: m2 40x56
    assert extra == {} and logits.shape == (3, 3, 160, 224)


def test_parameter_counts_with_and_without_teacher():
    plain = _head(PLAIN)
    full = _head()
    inference = _head(opts=["MODEL.SSA.WITH_TEACHER", "False"])
    assert _count(inference) - _count(plain) == SSA_INFERENCE_PARAMS
    assert _count(full) - _count(inference) == SSA_TEACHER_PARAMS
    assert not any("gt_center" in k for k in inference.state_dict())
    assert _count(full.drop_teacher()) == _count(inference)


def test_state_dict_is_the_plain_heads_plus_ssa():
    plain, ssa = _head(PLAIN), _head(opts=["MODEL.SSA.WITH_TEACHER", "False"])
    plain_keys = set(plain.state_dict())
    assert {k for k in ssa.state_dict() if not k.startswith("ssa.")} == plain_keys
    assert any(k.startswith("decoder.m2.project_conv.") for k in plain_keys) and "predictor.weight" in plain_keys
    result = ssa.load_state_dict(plain.state_dict(), strict=False)
    assert not result.unexpected_keys and all(k.startswith("ssa.") for k in result.missing_keys)
    assert ssa.base_head.decoder is ssa.decoder  # the base head's ModuleDict keeps its name


def test_coarse_mask_is_the_plain_heads_prediction():
    """S_f is the predictor's input: with the plain head's weights, M = the plain logits."""
    plain = _head(PLAIN).eval()
    ssa = _head().eval()
    ssa.load_state_dict(plain.state_dict(), strict=False)
    feats = _features(seed=3)
    with torch.no_grad():
        _, coarse, out = ssa.ssa_outputs(feats)
        expected = plain.layers(feats)
    assert coarse.shape == (2, 3, 64, 80)
    torch.testing.assert_close(coarse, expected)
    assert not torch.allclose(out["logits"], expected)  # the final logits are SSA's


def test_global_pooling_head_equals_detectron2s_at_the_crop_size():
    """With the input at the training crop size, detectron2's crop-grid pooling is global pooling:
    both heads give the same logits; at another size only the global-pooling head runs."""
    args = DeepLabV3PlusGlobalPoolHead.from_config(_cfg(PLAIN), SHAPES)
    ours = DeepLabV3PlusGlobalPoolHead(**args).eval()
    theirs = DeepLabV3PlusHead(**{**args, "train_size": (256, 320)}).eval()  # pools 8x10 windows
    theirs.load_state_dict(ours.state_dict())
    feats = _features(h=8, w=10, seed=4)  # m5 8x10 = the 256x320 crop at stride 32
    with torch.no_grad():
        torch.testing.assert_close(ours(feats)[0], theirs(feats)[0])
        other = _features(h=5, w=7)
        assert ours(other)[0].shape == (2, 3, 160, 224)
        with pytest.raises(ValueError, match="pool_kernel_size"):
            theirs(other)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="MODEL.SEM_SEG_HEAD.LOSS_TYPE"):
        _head(opts=["MODEL.SEM_SEG_HEAD.LOSS_TYPE", "hard_pixel_mining"])
    with pytest.raises(KeyError, match="m4"):
        _head(opts=["MODEL.SEM_SEG_HEAD.IN_FEATURES", "['m2', 'm4']"])
    with pytest.raises(ValueError, match="PROJECT_CHANNELS"):
        _head(opts=["MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS", "[32, 32]"])
    with pytest.raises(ValueError, match="MODEL.SSA.DROPOUT"):
        _head(opts=["MODEL.SSA.DROPOUT", "1.0"])


def test_deeplab_config_keys_with_add_deeplab_config_in_either_order():
    segdet_first = get_segdet_cfg()
    add_deeplab_config(segdet_first)
    deeplab_first = get_cfg()
    add_deeplab_config(deeplab_first)
    add_segdet_config(deeplab_first)
    assert segdet_first == deeplab_first
    head = get_segdet_cfg().MODEL.SEM_SEG_HEAD
    assert segdet_first.MODEL.SEM_SEG_HEAD == head  # same defaults as add_deeplab_config
    assert (head.LOSS_TYPE, head.PROJECT_CHANNELS, head.ASPP_CHANNELS, head.ASPP_DILATIONS) == (
        "hard_pixel_mining", [48], 256, [6, 12, 18])
