"""SSA classifier core: parameters, student / teacher forwards, boundary mask and the losses."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from segdet.config import get_segdet_cfg
from segdet.modeling.ssa.boundary import boundary_mask, label_edges
from segdet.modeling.ssa.classifier import TEACHER_MODULES, SSAClassifier, class_means
from segdet.modeling.ssa.losses import (
    DEFAULT_SSA_LOSS_WEIGHTS,
    SSA_LOSS_NAMES,
    count_masks,
    dice_loss,
    nearest_labels,
    response_kd_loss,
    semantic_kd_loss,
    spatial_kd_loss,
    ssa_losses,
    valid_pixel_cross_entropy,
)

D = torch.float64


def _count(module, teacher):
    return sum(p.numel() for n, p in module.named_parameters() if n.startswith("gt_") == teacher)


# ------------------------------------------------------------------------------------ parameters
@pytest.mark.parametrize("c,k,inference,teacher", [(256, 150, 303_616, 262_656), (128, 150, 86_272, 65_792)])
def test_parameter_counts(c, k, inference, teacher):
    assert inference == c * 9 + c + k * c + 2 * (2 * c * (c // 2) + (c // 2) * c + c) + c * c
    m = SSAClassifier(c, k)
    assert _count(m, teacher=False) == inference and _count(m, teacher=True) == teacher
    assert round(inference / 1e6, 3) == {256: 0.304, 128: 0.086}[c]
    assert round(teacher / 1e6, 3) == {256: 0.263, 128: 0.066}[c]
    # no teacher branch: absent from parameters and state dict
    for m in (SSAClassifier(c, k, with_teacher=False), SSAClassifier(c, k).drop_teacher()):
        assert sum(p.numel() for p in m.parameters()) == inference
        assert not any(key.startswith(TEACHER_MODULES) for key in m.state_dict())


def test_state_dict_names_match_the_official_layout():
    shapes = {k: tuple(v.shape) for k, v in SSAClassifier(8, 3).state_dict().items()}
    assert shapes == {
        "get_feat_pos.weight": (8, 1, 3, 3), "get_feat_pos.bias": (8,), "center_pos.weight": (3, 8),
        "center_content_proj.0.weight": (4, 16), "center_content_proj.2.weight": (8, 4),
        "center_content_proj.2.bias": (8,),
        "center_pos_proj.0.weight": (4, 16), "center_pos_proj.2.weight": (8, 4), "center_pos_proj.2.bias": (8,),
        "center_proj.weight": (8, 8),
        "gt_center_content_proj.0.weight": (4, 16), "gt_center_content_proj.2.weight": (8, 4),
        "gt_center_content_proj.2.bias": (8,),
        "gt_center_pos_proj.0.weight": (4, 16), "gt_center_pos_proj.2.weight": (8, 4),
        "gt_center_pos_proj.2.bias": (8,),
        "gt_center_proj.weight": (8, 8),
    }


# -------------------------------------------------------------------------------------- forwards
def _labels(b, h, w, k, seed=0, ignore_frac=0.1):
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, k, (b, h, w), generator=g)
    lab[torch.rand(b, h, w, generator=g) < ignore_frac] = 255
    return lab


def _pipeline(b=2, c=8, k=5, h=4, w=4, size=16, dtype=torch.float32, gt=None, seed=0):
    torch.manual_seed(seed)
    ssa = SSAClassifier(c, k).to(dtype)
    conv_seg = nn.Conv2d(c, k, 1).to(dtype)
    feat = torch.randn(b, c, h, w, dtype=dtype, requires_grad=True)
    coarse = conv_seg(F.dropout2d(feat, 0.1, training=True))
    out = ssa(feat, coarse, conv_seg.weight)
    gt = _labels(b, size, size, k, seed) if gt is None else gt
    t = ssa.teacher_forward(feat, out["pos_feat"], conv_seg.weight, gt)
    return ssa, conv_seg, feat, coarse, out, t, gt


def test_shapes_and_bounds():
    ssa, conv_seg, feat, coarse, out, t, gt = _pipeline()
    assert out["logits"].shape == (2, 5, 4, 4) and t["logits"].shape == (2, 5, 4, 4)
    for d in (out, t):
        assert d["sem_proto"].shape == (2, 5, 8) and d["pos_proto"].shape == (2, 5, 8)
        assert d["logits"].abs().max() <= 15.0 + 1e-4  # cosine x temperature
    assert out["pos_feat"].shape == (2, 8, 4, 4)
    # the 4-D conv weight is accepted as well
    torch.testing.assert_close(ssa(feat, coarse, conv_seg.weight.flatten(1))["logits"], out["logits"])
    with pytest.raises(ValueError, match=r"\(5, 8\)"):
        ssa(feat, coarse, torch.zeros(5, 7))
    with pytest.raises(ValueError, match="coarse logits"):
        ssa(feat, coarse[:, :4], conv_seg.weight)
    with pytest.raises(RuntimeError, match="teacher branch"):
        SSAClassifier(8, 5, with_teacher=False).teacher_forward(feat, out["pos_feat"], conv_seg.weight, gt)


def test_class_means_hand_computed():
    values = torch.tensor([[[1.0, 2.0, 3.0]], [[5.0, 7.0, 9.0]]])  # (B=2, C=1, n=3)
    labels = torch.tensor([[0, 0, 255], [1, 0, 1]])
    fallback = torch.tensor([[10.0], [20.0], [30.0]])
    batch = class_means(values, labels, 3, fallback, per_image=False)
    torch.testing.assert_close(batch, torch.tensor([[10.0 / 3], [7.0], [30.0]]))  # class 2 absent
    per_image = class_means(values, labels, 3, fallback, per_image=True)
    torch.testing.assert_close(per_image, torch.tensor([[[1.5], [20.0], [30.0]], [[7.0], [7.0], [30.0]]]))


def test_teacher_centres_batch_level_semantic_per_image_spatial_with_fallbacks():
    c, k = 6, 4
    ssa = SSAClassifier(c, k).to(D)
    feat = torch.randn(2, c, 4, 4, dtype=D)
    s = torch.randn(k, c, dtype=D)
    gt = torch.zeros(2, 4, 4, dtype=torch.long)
    gt[0, :, 2:] = 1  # image 0: classes 0, 1; image 1: classes 0, 2; class 3 absent
    gt[1, 3, :] = 2
    gt[1, 0, 0] = 255
    out = ssa(feat, torch.randn(2, k, 4, 4, dtype=D), s)
    pos_feat = out["pos_feat"]
    t = ssa.teacher_forward(feat, pos_feat, s, gt)
    # semantic: one batch-level prototype set, shared by both images
    torch.testing.assert_close(t["sem_proto"][0], t["sem_proto"][1])
    valid0 = (gt == 0)
    centre0 = feat.permute(0, 2, 3, 1)[valid0].mean(0)
    torch.testing.assert_close(t["sem_proto"][0, 0], ssa.gt_center_content_proj(torch.cat([centre0, s[0]])))
    torch.testing.assert_close(t["sem_proto"][0, 3], ssa.gt_center_content_proj(torch.cat([s[3], s[3]])))
    # spatial: per image; class 1 is absent from image 1 -> the basis row
    p = ssa.center_pos.weight
    pc = pos_feat[1].permute(1, 2, 0)[gt[1] == 0].mean(0)
    torch.testing.assert_close(t["pos_proto"][1, 0], ssa.gt_center_pos_proj(torch.cat([pc, p[0]])))
    torch.testing.assert_close(t["pos_proto"][1, 1], ssa.gt_center_pos_proj(torch.cat([p[1], p[1]])))
    assert (t["pos_proto"][0, 0] - t["pos_proto"][1, 0]).abs().max() > 1e-6


def _align_teacher_to_student(ssa):
    """Teacher projections = student's; the position MLP's input halves swapped (student cat
    [basis, centre], teacher cat [centre, basis])."""
    c = ssa.channels
    with torch.no_grad():
        ssa.gt_center_content_proj.load_state_dict(ssa.center_content_proj.state_dict())
        ssa.gt_center_proj.load_state_dict(ssa.center_proj.state_dict())
        ssa.gt_center_pos_proj.load_state_dict(ssa.center_pos_proj.state_dict())
        w = ssa.center_pos_proj[0].weight
        ssa.gt_center_pos_proj[0].weight.copy_(torch.cat([w[:, c:], w[:, :c]], 1))


def test_student_equals_teacher_when_coarse_mask_is_the_ground_truth():
    """B = 1, every class present, M = 200·onehot(GT): the student's soft centres become the GT
    class means, so with the teacher's projections set to the student's both classifiers agree
    (this checks both forwards, the two softmax axes and the concatenation orders)."""
    c, k = 6, 3
    ssa = SSAClassifier(c, k).to(D)
    _align_teacher_to_student(ssa)
    gt = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 1], [2, 2, 1, 1], [0, 0, 255, 1]]])
    feat = torch.randn(1, c, 4, 4, dtype=D)
    s = torch.randn(k, c, dtype=D)
    coarse = 200.0 * F.one_hot(gt.clamp(max=k - 1), k).permute(0, 3, 1, 2).to(D)
    coarse[:, :, 3, 2] = 0.0  # the ignored pixel: uniform coarse scores
    out = ssa(feat, coarse, s)
    t = ssa.teacher_forward(feat, out["pos_feat"], s, gt)
    # without ignored pixels everything agrees
    gt2 = gt.clone()
    gt2[0, 3, 2] = 1
    coarse2 = 200.0 * F.one_hot(gt2, k).permute(0, 3, 1, 2).to(D)
    out2 = ssa(feat, coarse2, s)
    t2 = ssa.teacher_forward(feat, out2["pos_feat"], s, gt2)
    for key in ("logits", "sem_proto", "pos_proto"):
        torch.testing.assert_close(out2[key], t2[key])
    assert semantic_kd_loss(out2["sem_proto"], t2["sem_proto"]).item() == pytest.approx(0.0, abs=1e-12)
    # with an ignored pixel (uniform coarse scores there) the spatial centres still agree: the
    # softmax over space gives it weight e^-200; the semantic ones do not (it adds 1/K of its
    # feature to every class's soft mean)
    torch.testing.assert_close(out["pos_proto"], t["pos_proto"])
    assert (out["sem_proto"] - t["sem_proto"]).abs().max() > 1e-3


def test_teacher_uses_the_ground_truth():
    """Separable features (class 0 ≈ e0, class 1 ≈ e1) and projections that pass the semantic GT
    centre through: the teacher labels every pixel right, and swapping the GT swaps its output."""
    c, k = 4, 2
    ssa = SSAClassifier(c, k, hidden_channels=4)
    with torch.no_grad():
        for p in ssa.parameters():
            p.zero_()
        w0 = torch.zeros(4, 2 * c)  # hidden = (x0, x1, -x0, -x1) of the centre half
        w0[0, 0], w0[1, 1], w0[2, 0], w0[3, 1] = 1, 1, -1, -1
        ssa.gt_center_content_proj[0].weight.copy_(w0)
        w2 = torch.zeros(c, 4)
        w2[0, 0], w2[0, 2], w2[1, 1], w2[1, 3] = 1, -1, 1, -1
        ssa.gt_center_content_proj[2].weight.copy_(w2)
        ssa.gt_center_proj.weight.copy_(torch.eye(c))
    gt = torch.zeros(2, 8, 8, dtype=torch.long)
    gt[:, :, 4:] = 1
    gt[0, 6:, 4:] = 0
    gt[1, 0, 0] = 255
    small = nearest_labels(gt, (4, 4))
    g = torch.Generator().manual_seed(0)
    feat = F.one_hot(small.clamp(max=1), 4).permute(0, 3, 1, 2).float() * (1 + torch.rand(2, 1, 4, 4, generator=g))
    feat = feat + 0.05 * torch.randn(2, c, 4, 4, generator=g)
    out = ssa(feat, torch.zeros(2, k, 4, 4), torch.randn(k, c))
    pred = ssa.teacher_forward(feat, out["pos_feat"], torch.randn(k, c), gt)["logits"].argmax(1)
    valid = small != 255
    assert torch.equal(pred[valid], small[valid])
    swapped = torch.where(gt == 255, gt, 1 - gt)
    pred_sw = ssa.teacher_forward(feat, out["pos_feat"], torch.randn(k, c), swapped)["logits"].argmax(1)
    assert torch.equal(pred_sw[valid], 1 - small[valid])


def test_gradients_reach_every_parameter_through_the_losses():
    ssa, conv_seg, feat, coarse, out, t, gt = _pipeline()
    losses = ssa_losses(out, t, coarse, gt)
    sum(losses.values()).backward()
    for name, p in list(ssa.named_parameters()) + [("conv_seg.weight", conv_seg.weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert feat.grad.abs().sum() > 0


# -------------------------------------------------------------------------------------- boundary
def test_boundary_on_a_two_region_map():
    lab = torch.zeros(1, 8, 8, dtype=torch.long)
    lab[:, :, 4:] = 1
    edges = label_edges(lab)
    expected = torch.zeros(1, 8, 8, dtype=torch.bool)
    expected[:, :, 3] = True  # thinned to the smaller-label side: 1 px
    assert torch.equal(edges, expected)
    both = torch.zeros(1, 8, 8, dtype=torch.bool)
    both[:, :, 3:5] = True
    assert torch.equal(label_edges(lab, thin=False), both)
    m = boundary_mask(lab, edge_size=3, border=0)
    expected = torch.zeros(1, 8, 8, dtype=torch.bool)
    expected[:, :, 2:5] = True
    assert torch.equal(m, expected)
    # border 2: edge rows 0,1,6,7 removed before the 3x3 dilation -> rows 1..6, cols 2..4
    m = boundary_mask(lab, edge_size=3, border=2)
    expected = torch.zeros(1, 8, 8, dtype=torch.bool)
    expected[:, 1:7, 2:5] = True
    assert torch.equal(m, expected)
    # edge_size 1: no dilation; even edge sizes dilate by (k-1)//2 before, k//2 after
    assert torch.equal(boundary_mask(lab, edge_size=1, border=0), label_edges(lab))
    expected = torch.zeros(1, 8, 8, dtype=torch.bool)
    expected[:, :, 2:4] = True
    assert torch.equal(boundary_mask(lab, edge_size=2, border=0), expected)


def test_boundary_square_and_ignore():
    lab = torch.zeros(1, 8, 8, dtype=torch.long)
    lab[:, 3:5, 3:5] = 1
    ring = torch.zeros(1, 8, 8, dtype=torch.bool)
    ring[:, 2:6, 2:6] = True
    ring[:, 3:5, 3:5] = False  # the 12 class-0 pixels touching the square (8-neighbourhood)
    assert torch.equal(label_edges(lab), ring)
    # ignore regions make no boundary, at the image edge neither
    lab_ign = torch.zeros(1, 8, 8, dtype=torch.long)
    lab_ign[:, :, 4:] = 255
    assert not label_edges(lab_ign).any()
    assert not boundary_mask(torch.full((2, 5, 5), 255)).any()


def test_boundary_runs_without_host_round_trip():
    """On the meta device (no data) any CPU copy or data-dependent host op would fail."""
    lab = torch.zeros(2, 16, 16, dtype=torch.long, device="meta")
    m = boundary_mask(lab, edge_size=3, border=6)
    assert m.device.type == "meta" and m.shape == (2, 16, 16) and m.dtype == torch.bool


# ---------------------------------------------------------------------------------------- losses
def test_nearest_labels_samples_the_stride_grid():
    lab = torch.arange(64).view(1, 8, 8)
    assert torch.equal(nearest_labels(lab, (2, 2)), torch.tensor([[[0, 4], [32, 36]]]))


def test_cross_entropies_and_their_normalisations():
    logits = torch.zeros(1, 3, 2, 2)  # CE = ln 3 at every valid pixel
    targets = torch.tensor([[[0, 1], [255, 255]]])
    assert valid_pixel_cross_entropy(logits, targets).item() == pytest.approx(math.log(3))
    out = {"logits": logits}
    main_all = ssa_losses(out, None, logits, targets, avg_non_ignore=False)
    main_valid = ssa_losses(out, None, logits, targets, avg_non_ignore=True)
    assert main_all["loss_sem_seg"].item() == pytest.approx(math.log(3) / 2)  # mmseg: over all pixels
    assert main_valid["loss_sem_seg"].item() == pytest.approx(math.log(3))
    assert main_all["loss_ssa_coarse_ce"].item() == pytest.approx(math.log(3))  # always valid-pixel mean


@pytest.mark.parametrize("alpha", [0.5, 0.3])
def test_response_kd_hand_computed(alpha):
    """1x8 map, K = 3 (class 2 absent), labels [0,0,0,0,1,1,1,ignore], boundary [1,1,0,0,0,1,1,0]."""
    g = torch.Generator().manual_seed(0)
    o = torch.randn(1, 3, 1, 8, generator=g, dtype=D)
    t = torch.randn(1, 3, 1, 8, generator=g, dtype=D)
    labels = torch.tensor([[[0, 0, 0, 0, 1, 1, 1, 255]]])
    edge = torch.tensor([[[1, 1, 0, 0, 0, 1, 1, 0]]], dtype=torch.bool)
    p_t, logp = F.softmax(t, 1)[0, :, 0], F.log_softmax(o, 1)[0, :, 0]  # (3, 8)
    ent = [-(p_t[:, i] * torch.log(p_t[:, i])).sum() for i in range(8)]
    ce = [-((1 - alpha) * F.one_hot(labels[0, 0, i].clamp(max=2), 3) * logp[:, i]).sum()
          - (alpha * p_t[:, i] * logp[:, i]).sum() for i in range(8)]

    def avg(idx):  # entropy-weighted mean of the soft CE over a pixel subset
        return sum(ent[i] * ce[i] for i in idx) / sum(ent[i] for i in idx)

    # class 0: boundary {0, 1}, interior {2, 3}; class 1: boundary {5, 6}, interior {4}
    expected = (0.5 * (avg([0, 1]) + avg([2, 3])) + 0.5 * (avg([5, 6]) + avg([4]))) / 2
    torch.testing.assert_close(response_kd_loss(o, t, labels, edge, smoothness=alpha), expected)
    # an empty subset contributes 0 but still counts in the 1/2
    expected = (0.5 * avg([0, 1, 2, 3]) + 0.5 * avg([4, 5, 6])) / 2
    torch.testing.assert_close(response_kd_loss(o, t, labels, torch.zeros_like(edge), smoothness=alpha), expected)
    # the teacher is detached
    o.requires_grad_()
    t.requires_grad_()
    response_kd_loss(o, t, labels, edge).backward()
    assert t.grad is None and o.grad.abs().sum() > 0


def test_dice_hand_computed():
    logits = torch.zeros(1, 3, 2, 2)  # sigmoid = 1/2 everywhere
    targets = torch.tensor([[[0, 0], [1, 255]]])
    # class 0: 1 - (2*1 + 1)/(2 + 2 + 1) = 0.4; class 1: 1 - (2*0.5 + 1)/(2 + 1 + 1) = 0.5; class 2 absent
    assert count_masks(targets, 3).item() == 2
    assert dice_loss(logits, targets, num_masks=2).item() == pytest.approx(0.45)
    assert dice_loss(logits, targets, num_masks=torch.tensor(4.0)).item() == pytest.approx(0.225)
    assert dice_loss(logits, targets, num_masks=0).item() == pytest.approx(0.9)  # clamped to 1
    two = torch.stack([targets[0], torch.tensor([[2, 2], [2, 2]])])
    assert count_masks(two, 3).item() == 3
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        count_masks(torch.tensor([[[0, 3]]]), 3)


def test_semantic_kd_hand_computed_and_one_sided():
    ortho = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=D)
    same = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]], dtype=D)
    off = 1.0 / (1.0 + math.exp(15.0))  # softmax(15*[1, 0])[1]
    # student relates the classes more (0.5) than the teacher (off): penalised, per row 0.5 - off
    assert semantic_kd_loss(same, ortho).item() == pytest.approx(0.5 - off, rel=1e-10)
    # the reverse is not penalised (one-sided); identical prototypes give 0
    assert semantic_kd_loss(ortho, same).item() == 0.0
    x = torch.randn(2, 4, 3, dtype=D)
    assert semantic_kd_loss(x, x.clone()).item() == 0.0


def test_semantic_kd_detaches_the_key_side():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(1, 4, 3, generator=g, dtype=D, requires_grad=True)
    t = torch.randn(1, 4, 3, generator=g, dtype=D)
    g_default, = torch.autograd.grad(semantic_kd_loss(s, t), s)
    g_const_key, = torch.autograd.grad(semantic_kd_loss(s, t, student_key=s.detach().clone()), s)
    g_live_key, = torch.autograd.grad(semantic_kd_loss(s, t, student_key=s), s)
    torch.testing.assert_close(g_default, g_const_key)
    assert (g_default - g_live_key).abs().max() > 1e-6


def test_spatial_kd_hand_computed_and_vanishing_gradient():
    s = torch.tensor([[[0.0, math.log(3.0)]]], dtype=D, requires_grad=True)
    t = torch.zeros(1, 1, 2, dtype=D)
    assert spatial_kd_loss(s, t).item() == pytest.approx(0.5 * (math.log(4) + math.log(4 / 3)))
    x = torch.randn(2, 3, 5, dtype=D, requires_grad=True)
    y = x.detach().clone()
    value = spatial_kd_loss(x, y)
    p = F.softmax(y, -1)
    assert value.item() == pytest.approx(-(p * p.log()).sum(-1).mean().item())  # = teacher entropy
    grad, = torch.autograd.grad(value, x)
    assert grad.abs().max() < 1e-15


def test_losses_gradcheck():
    g = torch.Generator().manual_seed(2)
    r = lambda *s: torch.randn(*s, generator=g, dtype=D)  # noqa: E731
    targets = torch.tensor([[[0, 1, 1], [255, 0, 2]]])
    labels = torch.tensor([[[0, 1, 1], [255, 0, 0]]])
    edge = torch.tensor([[[1, 1, 0], [0, 0, 0]]], dtype=torch.bool)
    t_logits, t_proto, key = r(1, 4, 2, 3), r(2, 3, 5), r(2, 3, 5)
    checks = [
        (lambda x: valid_pixel_cross_entropy(x, targets), r(1, 4, 2, 3)),
        (lambda x: response_kd_loss(x, t_logits, labels, edge), r(1, 4, 2, 3)),
        (lambda x: dice_loss(x, targets, num_masks=3), r(1, 4, 2, 3)),
        (lambda x: semantic_kd_loss(x, t_proto, 2.0, student_key=key), r(2, 3, 5)),
        (lambda x: spatial_kd_loss(x, t_proto), r(2, 3, 5)),
    ]
    for fn, x in checks:
        assert torch.autograd.gradcheck(fn, (x.requires_grad_(),))


# ----------------------------------------------------------------------------------- ssa_losses
def test_ssa_losses_terms_weights_and_names():
    ssa, conv_seg, feat, coarse, out, t, gt = _pipeline()
    losses = ssa_losses(out, t, coarse, gt)
    assert set(losses) == set(SSA_LOSS_NAMES.values()) and len(losses) == 8
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    torch.testing.assert_close(losses["loss_ssa_semantic_kd"],
                               10.0 * semantic_kd_loss(out["sem_proto"], t["sem_proto"]))
    torch.testing.assert_close(losses["loss_ssa_spatial_kd"], 0.4 * spatial_kd_loss(out["pos_proto"], t["pos_proto"]))
    small = nearest_labels(gt, (4, 4))
    kd = response_kd_loss(out["logits"], t["logits"], small, boundary_mask(small, 3, 6))
    torch.testing.assert_close(losses["loss_ssa_response_kd"], kd)
    up = F.interpolate(out["logits"], size=(16, 16), mode="bilinear", align_corners=True)
    torch.testing.assert_close(losses["loss_ssa_dice"], dice_loss(up, gt, count_masks(gt, 5)))
    # weights from the config keys (lower-cased); a zero weight drops the term
    cfg = get_segdet_cfg()
    weights = {k.lower(): v for k, v in cfg.MODEL.SSA.LOSS_WEIGHTS.items()}
    assert weights == DEFAULT_SSA_LOSS_WEIGHTS
    weights.update(dice=0.0, semantic_kd=2.0)
    custom = ssa_losses(out, t, coarse, gt, weights=weights)
    assert "loss_ssa_dice" not in custom and len(custom) == 7
    torch.testing.assert_close(custom["loss_ssa_semantic_kd"], losses["loss_ssa_semantic_kd"] / 5)
    with pytest.raises(KeyError, match="kd_weight"):
        ssa_losses(out, t, coarse, gt, weights={"kd_weight": 1.0})
    assert set(ssa_losses(out, None, coarse, gt)) == {"loss_sem_seg", "loss_ssa_coarse_ce", "loss_ssa_dice"}


def test_all_ignore_labels_give_zero_finite_losses_and_gradients():
    gt = torch.full((2, 16, 16), 255, dtype=torch.long)
    ssa, conv_seg, feat, coarse, out, t, gt = _pipeline(gt=gt)
    losses = ssa_losses(out, t, coarse, gt, avg_non_ignore=False)
    for name in ("loss_sem_seg", "loss_ssa_coarse_ce", "loss_ssa_teacher_ce", "loss_ssa_response_kd",
                 "loss_ssa_dice", "loss_ssa_teacher_dice"):
        assert losses[name].item() == 0.0, name
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name, p in list(ssa.named_parameters()) + [("feat", feat), ("conv_seg", conv_seg.weight)]:
        assert p.grad is None or torch.isfinite(p.grad).all(), name
