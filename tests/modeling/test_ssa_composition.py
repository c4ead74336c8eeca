"""The composed SSA heads (decoder + coarse classifier + SSAClassifier + SSACriterion) against
numbers recorded from the previous mixin implementation (commit fad41c4): the same state-dict keys
in the same order (CGRSeg-B-SSA, the sample CGRSeg-T-SSA config, with and without the teacher),
and, for fixed float64 weights and inputs, the same logits and the same eight loss values."""
import copy
import hashlib
import os

import pytest
import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model

from segdet.deploy import fuse_model
from segdet.deploy.cgrseg_head import FusedCGRSegHead
from segdet.modeling.cgrseg.head import CGRSegHead
from segdet.modeling.ssa.criterion import SSACriterion
from segdet.modeling.ssa.heads import CGRSegSSAHead, SemSegFPNSSAHead
from segdet.utils.config_io import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {"B-SSA": os.path.join(ROOT, "projects", "SSA", "configs", "ADE20K", "CGRSeg-B-SSA.yaml"),
           "street": os.path.join(ROOT, "projects", "SSA", "configs", "Samples", "cgrseg_t_ssa_street.yaml")}

CGRSEG_SHAPES = {"res3": ShapeSpec(channels=8, stride=8), "res4": ShapeSpec(channels=16, stride=16),
                 "res5": ShapeSpec(channels=24, stride=32)}
FPN_SHAPES = {f"p{i}": ShapeSpec(channels=8, stride=2 ** i) for i in range(2, 6)}

# Recorded from the mixin heads (fad41c4) with _filled / _features / _labels below, except
# loss_sem_seg: re-recorded when the main CE moved to the official align_corners=True upsampling
# (the mixin's align_corners=False values are checked in test_main_ce_before_and_after_the_upsampling_fix).
MIXIN_CE_ALIGN_CORNERS_FALSE = {"cgrseg": 2.000778405464578, "fpn": 1.384260272069259}
RECORDED = {
    "cgrseg": {
        "logits_sum": -829.1910319996141, "logits_abs_sum": 961.7707184299761, "full_sum": -53068.2260479753,
        "logits_00": [-7.360967834955151, -3.6122228569798653, -5.500453619155293],
        "losses": {"loss_sem_seg": 2.0332555316883036, "loss_ssa_coarse_ce": 1.1454927926803575,
                   "loss_ssa_dice": 0.9055474644488369, "loss_ssa_response_kd": 0.9191903633203516,
                   "loss_ssa_semantic_kd": 0.1468706716907626, "loss_ssa_spatial_kd": 2.4040617486542746,
                   "loss_ssa_teacher_ce": 1.4868038700223445, "loss_ssa_teacher_dice": 0.55211822666263},
    },
    "fpn": {
        "logits_sum": -2406.1583935135686, "logits_abs_sum": 2711.6518022515747, "full_sum": -38498.5342962171,
        "logits_00": [0.5165419651098784, 1.9523921066334275, -0.6193355984292289],
        "losses": {"loss_sem_seg": 1.386062308679624, "loss_ssa_coarse_ce": 3.0327030334994887,
                   "loss_ssa_dice": 0.7647133445963835, "loss_ssa_response_kd": 1.2426701994147984,
                   "loss_ssa_semantic_kd": 1.2533979070161285, "loss_ssa_spatial_kd": 35.24507558987269,
                   "loss_ssa_teacher_ce": 1.238469055921252, "loss_ssa_teacher_dice": 0.5324951102470695},
    },
}
# (number of keys, sha256 of the keys joined by newlines in state-dict order)
RECORDED_KEYS = {
    ("B-SSA", True): (1326, "25753b64fbc508a3b0143a60a8b9c3bfafca9fd1a238e3474629d8081b7fd02a"),
    ("B-SSA", False): (1319, "a27af28dcb54fac626953d65ed22c106e2187c759bd423e77c4bc4a80667eab9"),
    ("street", True): (961, "8434753121074c313bd3c5e21eedb2cdf0cad13b522ef8a5e2918a91bab94d7c"),
    ("street", False): (954, "81f514f1cf4d2d4910b6f65307970b213f6aacce811a4d8a6d5e33c71a4646d7"),
}


def _filled(head: nn.Module) -> nn.Module:
    """float64 head whose every float tensor is N(0, 0.25) in sorted-key order (running_var |.|+0.5)."""
    head = head.double()
    g = torch.Generator().manual_seed(0)
    state = head.state_dict()
    for key in sorted(state):
        if state[key].dtype == torch.long:
            continue
        value = torch.randn(state[key].shape, generator=g, dtype=torch.float64) * 0.5
        state[key] = value.abs() + 0.5 if key.endswith("running_var") else value
    head.load_state_dict(state)
    return head


def _features(shapes, size=64):
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(2, s.channels, size // s.stride, size // s.stride, generator=g, dtype=torch.float64)
            for k, s in shapes.items()}


def _labels(size=64):
    g = torch.Generator().manual_seed(2)
    gt = torch.randint(0, 3, (2, size, size), generator=g)
    gt[:, :5] = 255
    return gt


def _heads():
    cgrseg = CGRSegSSAHead(CGRSEG_SHAPES, num_classes=3, channels=16, next_repeat=1, dw_size=3, neck_size=3,
                           dropout=0.0, norm="BN", criterion=SSACriterion(avg_non_ignore=False))
    fpn = SemSegFPNSSAHead(FPN_SHAPES, num_classes=3, conv_dims=32, common_stride=4, norm="GN", dropout=0.0,
                           ignore_value=255, criterion=SSACriterion(weights={"spatial_kd": 2.0}))
    return {"cgrseg": (cgrseg, CGRSEG_SHAPES), "fpn": (fpn, FPN_SHAPES)}


@pytest.mark.parametrize("name", ["cgrseg", "fpn"])
def test_logits_and_losses_equal_the_recorded_float64_values(name):
    head, shapes = _heads()[name]
    head = _filled(head)
    feats, gt, ref = _features(shapes), _labels(), RECORDED[name]
    with torch.no_grad():
        logits = head.eval().layers(feats)
        full, extra = head(feats)
    assert extra == {} and logits.dtype == torch.float64 and tuple(logits.shape[:2]) == (2, 3)
    assert logits.sum().item() == pytest.approx(ref["logits_sum"], rel=1e-12, abs=1e-9)
    assert logits.abs().sum().item() == pytest.approx(ref["logits_abs_sum"], rel=1e-12)
    assert full.sum().item() == pytest.approx(ref["full_sum"], rel=1e-12)
    assert logits[0, :, 0, 0].tolist() == pytest.approx(ref["logits_00"], rel=1e-12)
    _, losses = head.train()(feats, gt)
    assert {k: v.item() for k, v in losses.items()} == pytest.approx(ref["losses"], rel=1e-12)


@pytest.mark.parametrize("name", ["cgrseg", "fpn"])
def test_main_ce_before_and_after_the_upsampling_fix(name):
    """The head's main CE is the CE of its logits upsampled with align_corners=True; with
    align_corners=False the same logits give the mixin's recorded value."""
    from torch.nn import functional as F

    from segdet.modeling.sem_seg.losses import sem_seg_cross_entropy

    head, shapes = _heads()[name]
    head = _filled(head).train()
    feats, gt = _features(shapes), _labels()
    _, losses = head(feats, gt)
    _, _, out = head.ssa_outputs(feats)
    avg = head.criterion.avg_non_ignore
    ce = {ac: sem_seg_cross_entropy(F.interpolate(out["logits"], size=gt.shape[-2:], mode="bilinear",
                                                  align_corners=ac), gt, 255, avg).item() for ac in (False, True)}
    assert ce[False] == pytest.approx(MIXIN_CE_ALIGN_CORNERS_FALSE[name], rel=1e-12)
    assert losses["loss_sem_seg"].item() == pytest.approx(ce[True], rel=1e-12)
    assert abs(ce[True] - ce[False]) > 1e-3


def test_criterion_alone_gives_the_head_losses():
    head, shapes = _heads()["cgrseg"]
    head = _filled(head).train()
    feats, gt = _features(shapes), _labels()
    feat, coarse, out = head.ssa_outputs(feats)
    teacher = head.ssa.teacher_forward(feat, out["pos_feat"], head.classifier.weight, gt)
    losses = head.criterion(out, teacher, coarse, gt)
    assert {k: v.item() for k, v in losses.items()} == pytest.approx(RECORDED["cgrseg"]["losses"], rel=1e-12)
    student_only = head.criterion(out, None, coarse, gt)
    assert set(student_only) == {"loss_sem_seg", "loss_ssa_coarse_ce", "loss_ssa_dice"}
    assert student_only["loss_ssa_dice"].item() == pytest.approx(RECORDED["cgrseg"]["losses"]["loss_ssa_dice"])


def test_decoder_modules_are_the_heads_own_and_follow_train_eval_and_copies():
    head, _ = _heads()["cgrseg"]
    assert "decoder" not in dict(head.named_children())
    assert head.trans is head.decoder.trans and head.conv_seg is head.decoder.conv_seg
    assert head.logits_tap is not head.decoder.logits_tap  # the SSA head's own tap
    assert not any(k.startswith(("decoder.", "criterion.")) for k in head.state_dict())
    head.eval()
    assert not head.decoder.training
    head.train()
    assert head.decoder.training
    clone = copy.deepcopy(head)
    assert clone.decoder.trans is clone.trans and clone.trans is not head.trans


def test_fused_cgrseg_ssa_head_gives_the_same_logits():
    head, shapes = _heads()["cgrseg"]
    head = _filled(head).eval()
    feats = _features(shapes)
    with torch.no_grad():
        plain = head.layers(feats)
        fused = fuse_model(head)
        assert isinstance(fused.base_head, FusedCGRSegHead) and fused.decoder is fused.base_head
        assert isinstance(fused.dropout, nn.Identity) and fused.dropout is fused.decoder.dropout
        assert fused.trans is fused.base_head.trans and isinstance(head.base_head, CGRSegHead)
        torch.testing.assert_close(fused.layers(feats), plain, rtol=1e-10, atol=1e-10)
    with pytest.raises(RuntimeError, match="fused"):
        fused.train()


@pytest.mark.parametrize("which,with_teacher", [("B-SSA", True), ("B-SSA", False), ("street", True),
                                                ("street", False)])
def test_state_dict_keys_equal_the_recorded_ones(which, with_teacher):
    model = build_model(load_config(CONFIGS[which], ["MODEL.DEVICE", "cpu", "MODEL.SSA.WITH_TEACHER", str(with_teacher)]))
    keys = list(model.state_dict())
    n, sha = RECORDED_KEYS[(which, with_teacher)]
    assert len(keys) == n
    assert hashlib.sha256("\n".join(keys).encode()).hexdigest() == sha
    # parameter names (optimizer state, DSD taps) are the state-dict names: no hidden prefix
    params = [k for k, _ in model.named_parameters()]
    assert params == [k for k in keys if k in set(params)] and "sem_seg_head.conv_seg" in dict(model.named_modules())
