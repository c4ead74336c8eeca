"""DRKD losses: GloRe unit, instance relation module, pure functions and the registered module."""
import copy

import pytest
import torch
from torch import nn
from torchvision.ops import roi_align

from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from segdet.config import get_segdet_cfg
from segdet.distill.losses import DISTILL_LOSS_REGISTRY
from segdet.distill.drkd.loss import DRKD, DRKDLoss
from segdet.distill.drkd.functional import (
    batch_normalized_l2,
    filter_seed,
    random_fc_filter,
    roi_align_per_image,
)
from segdet.distill.drkd.fast import BmmConv1x1, FastGloReUnit, conv1x1
from segdet.distill.drkd.glore import GloReUnit
from segdet.distill.drkd.relation import InstanceRelation
from segdet.utils.config_io import load_config

STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
IMG = 16  # tiny input image side: p2 is 4x4, p3 2x2


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tiny(levels=("p2", "p3"), mids=(2, 2), cs=3, ct=3, relation_filter="none", **kw) -> DRKD:
    used = sorted(set(levels) | set(kw.get("inst_levels", ("p2", "p3"))))
    kw.setdefault("roi_size", 2)
    return DRKD(levels=levels, glore_mid=mids, strides=STRIDES,
                student_channels={l: cs for l in used}, teacher_channels={l: ct for l in used},
                relation_filter=relation_filter, **kw)


def _feats(channels=3, batch=2, dtype=torch.float32, levels=("p2", "p3"), grad=False):
    return {l: torch.randn(batch, channels, IMG // STRIDES[l], IMG // STRIDES[l], dtype=dtype,
                           requires_grad=grad) for l in levels}


def _batch(boxes):
    out = []
    for b in boxes:
        inst = Instances((IMG, IMG))
        inst.gt_boxes = Boxes(torch.tensor(b, dtype=torch.float32).reshape(-1, 4))
        out.append({"instances": inst})
    return out


BOXES2 = [[[1.0, 1.0, 9.0, 12.0], [4.0, 2.0, 15.0, 15.0]], [[0.0, 3.0, 7.0, 10.0]]]


def _call(m, s, t, boxes):
    return m({"backbone": s}, {"backbone": t}, _batch(boxes))


def _official(m, s, t, boxes):
    """The DRKD code's un-normalised formulas (torch.dist over the batch for the pixel term, a sum
    of per-image torch.dist for the instance terms), with the wrong-image bug fixed."""
    pixel = sum(torch.dist(m.pixel_adapters[l](m.student_glore[l](s[l])), m.teacher_glore[l](t[l]))
                for l in m.levels)
    inst = fore = 0.0
    for l in m.inst_levels:
        for b, bx in enumerate(boxes):
            if not bx:
                continue
            bx = torch.tensor(bx, dtype=s[l].dtype).reshape(-1, 4)
            xs = roi_align(s[l][b:b + 1], [bx], m.roi_size, 1.0 / STRIDES[l], -1, False)
            xt = roi_align(t[l][b:b + 1], [bx], m.roi_size, 1.0 / STRIDES[l], -1, False)
            inst = inst + torch.dist(m.relation_adapters[l](m.student_relation[l](xs)[0]),
                                     m.teacher_relation[l](xt)[0])
            fore = fore + torch.dist(m.fore_adapters[l](xs), xt)
    return m.w_pixel * pixel, m.w_inst * inst, m.w_fore * fore


def _identity_(conv: nn.Conv2d) -> None:
    with torch.no_grad():
        conv.weight.copy_(torch.eye(conv.out_channels)[:, :, None, None])
        conv.bias.zero_()


# ---------------------------------------------------------------------------- GloRe / relation
def test_glore_param_counts_and_shapes():
    assert _count(GloReUnit(256, 64)) == 103_168
    assert _count(GloReUnit(256, 256)) == 656_896
    g = GloReUnit(5, 3)
    for shape in [(2, 5, 7, 9), (3, 5, 1, 2), (2, 5, 16, 20)]:
        assert g(torch.randn(shape)).shape == shape
    x = torch.randn(2, 5, 4, 6)
    assert torch.equal(GloReUnit(5, 3, zero_init_bn=True)(x), x)  # BN γ = 0: identity at init
    # one value per channel in training (torch's BN raises): batch-stat BN outputs β exactly
    with torch.no_grad():
        g.bn.bias.copy_(torch.arange(5.0))
    one = torch.randn(1, 5, 1, 1)
    assert torch.allclose(g(one), one + torch.arange(5.0).view(1, 5, 1, 1), atol=1e-6)


# (C, N, H, W) of a batch of 2 for each association FastGloReUnit.plan can pick
GLORE_PLANS = {
    (3, 2, 1, 1): ("state_map", "state_map"),
    (3, 2, 1, 2): ("node_sums", "premultiplied"),
    (3, 4, 1, 2): ("state_map", "premultiplied"),
    (8, 2, 1, 3): ("state_map", "chained"),
    (8, 2, 2, 3): ("node_sums", "chained"),
    (3, 2, 4, 5): ("node_sums", "premultiplied"),
}


@pytest.mark.parametrize("shape", list(GLORE_PLANS))
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("unit", [GloReUnit, FastGloReUnit])
def test_glore_matches_explicit_formula(shape, normalize, unit):
    """The reference unit and every association of the fast unit's matrix products give the
    module-by-module formula, its gradients and BN running statistics (float64)."""
    c, n, h, w = shape
    g = unit(c, n, normalize=normalize)
    if unit is FastGloReUnit:
        assert tuple(g.plan(2, h * w).values()) == GLORE_PLANS[shape]
    with torch.no_grad():
        g.bn.weight.uniform_(0.5, 1.5), g.bn.bias.uniform_(-1, 1)
    x = (torch.randn(2, c, h, w, dtype=torch.float64) + 0.5).requires_grad_()
    g = g.double()
    hw = h * w
    v = torch.einsum("sc,bcp->bsp", g.conv_state.weight[:, :, 0, 0], x.flatten(2)) + g.conv_state.bias[:, None]
    p = torch.einsum("nc,bcp->bnp", g.conv_proj.weight[:, :, 0, 0], x.flatten(2)) + g.conv_proj.bias[:, None]
    nodes = v @ p.transpose(1, 2) / (hw if normalize else 1)              # (B, S, N)
    adj = g.gcn_node.weight[:, :, 0]
    hidden = nodes + nodes @ adj.t() + g.gcn_node.bias                    # bias along nodes
    z = g.gcn_state.weight[:, :, 0] @ torch.relu(hidden)
    y = torch.einsum("cs,bsp->bcp", g.conv_extend.weight[:, :, 0, 0], z @ p)
    mean, var = y.mean(dim=(0, 2), keepdim=True), y.var(dim=(0, 2), unbiased=False, keepdim=True)
    expected = x + ((y - mean) / torch.sqrt(var + 1e-4) * g.bn.weight[:, None] + g.bn.bias[:, None]).view_as(x)
    out = g(x)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), [x, *g.parameters()])
    expected_grads = torch.autograd.grad((expected * weights).sum(), [x, *g.parameters()])
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(g.bn.running_mean, 0.1 * mean.flatten())
    torch.testing.assert_close(g.bn.running_var, 0.9 + 0.1 * y.var(dim=(0, 2), unbiased=True))


def test_relation_module_param_counts_and_output():
    assert _count(InstanceRelation(2304, "none")) == 10_622_592
    assert _count(InstanceRelation(2304, "random_fc")) == 10_622_592
    assert _count(InstanceRelation(2304, "learned")) == 10_622_592 + 2 * (2304 * 1152 + 1152)
    rel = InstanceRelation(8, "none")
    x = torch.randn(3, 2, 2, 2)
    z, r = rel(x)
    flat = x.flatten(1)
    expected_r = torch.softmax(rel.theta(flat) @ rel.phi(flat).t(), dim=1)
    assert torch.allclose(r, expected_r, atol=1e-6) and torch.allclose(r.sum(1), torch.ones(3))
    assert torch.allclose(z, (flat + rel.out(expected_r @ rel.g(flat))).view_as(x), atol=1e-6)
    z1, r1 = rel(x[:1])  # M = 1: R = [1]
    assert torch.equal(r1, torch.ones(1, 1))
    with pytest.raises(ValueError, match="random_fc"):
        InstanceRelation(8, "random_fc")(x)
    with pytest.raises(ValueError, match="relation_filter"):
        InstanceRelation(8, "fancy")


@pytest.mark.parametrize("relation_filter", ["none", "learned", "random_fc"])
def test_stacked_images_equal_one_call_per_image(relation_filter):
    """One call on several images' instances (counts, an image without boxes included) gives
    each image's own z and R, with R block-diagonal."""
    torch.manual_seed(0)
    rel = InstanceRelation(12, relation_filter)
    counts = [3, 0, 2, 1]
    x = torch.randn(sum(counts), 3, 2, 2)

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds] if relation_filter == "random_fc" else None

    z, r = rel(x, gens([5, 6, 7, 8]), counts)
    assert z.shape == x.shape and r.shape == (6, 6)
    start = 0
    for b, m in enumerate(counts):
        if m == 0:
            continue
        g = gens([5 + b])
        zb, rb = rel(x[start:start + m], g[0] if g else None)
        torch.testing.assert_close(z[start:start + m], zb, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r[start:start + m, start:start + m], rb, rtol=1e-5, atol=1e-6)
        outside = torch.ones(6, dtype=torch.bool)
        outside[start:start + m] = False
        assert torch.all(r[start:start + m][:, outside] == 0)
        start += m
    with pytest.raises(ValueError, match="do not add up"):
        rel(x, gens([1, 2]), [2, 2])
    if relation_filter == "random_fc":
        with pytest.raises(ValueError, match="one torch.Generator per image"):
            rel(x, gens([1]), counts)


def test_conv1x1_is_the_1x1_convolution():
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    conv = nn.Conv2d(5, 7, 1).double()
    fast = BmmConv1x1(5, 7).double()
    fast.load_state_dict(conv.state_dict())
    torch.testing.assert_close(fast(x), conv(x))
    torch.testing.assert_close(conv1x1(x, conv.weight, conv.bias), conv(x))
    torch.testing.assert_close(conv1x1(x, conv.weight), conv(x) - conv.bias.view(1, -1, 1, 1))
    assert torch.autograd.gradcheck(lambda t: conv1x1(t, conv.weight, conv.bias), (x,))


def test_random_fc_filter_is_seeded_and_uses_default_linear_init():
    x = torch.randn(4, 6)
    a = random_fc_filter(x, torch.Generator().manual_seed(5))
    b = random_fc_filter(x, torch.Generator().manual_seed(5))
    c = random_fc_filter(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    gen = torch.Generator().manual_seed(5)
    bound = 6 ** -0.5
    w = (torch.rand((4, 6), generator=gen) * 2 - 1) * bound
    bias = (torch.rand((4,), generator=gen) * 2 - 1) * bound
    assert torch.allclose(a, torch.softmax(x @ w.t() + bias, dim=1))
    seeds = {filter_seed(0, it, lvl, img) for it in range(3) for lvl in range(2) for img in range(4)}
    assert len(seeds) == 24 and filter_seed(0, 1, 0, 0) == filter_seed(0, 1, 0, 0)


# ---------------------------------------------------------------------------- parameter counts
class _Backbone(nn.Module):
    def __init__(self, levels, channels):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self._shapes = {l: ShapeSpec(channels=channels, stride=STRIDES[l]) for l in levels}

    def output_shape(self):
        return self._shapes


class _Detector(nn.Module):
    def __init__(self, levels=("p2", "p3", "p4", "p5", "p6"), channels=256):
        super().__init__()
        self.backbone = _Backbone(levels, channels)


@pytest.mark.parametrize("relation_filter,expected", [
    ("none", 47_436_544), ("random_fc", 47_436_544), ("learned", 47_436_544 + 4 * 5_310_720)])
def test_two_stage_extra_params_from_config(relation_filter, expected):
    cfg = get_segdet_cfg()
    cfg.DISTILL.DRKD.RELATION_FILTER = relation_filter
    loss = DISTILL_LOSS_REGISTRY.get("DRKD")(cfg, _Detector(), _Detector())
    assert DRKDLoss is DRKD and _count(loss) == expected
    assert loss.student_taps == ("backbone",) and loss.teacher_taps == ("backbone",)
    assert loss.strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}


def test_retinanet_config_without_fore_and_channel_mismatch():
    cfg = get_segdet_cfg()
    c = cfg.DISTILL.DRKD
    c.LEVELS, c.INST_LEVELS, c.RELATION_FILTER = ("p3", "p4", "p5", "p6", "p7"), ("p3", "p4"), "none"
    c.W_PIXEL, c.W_INST, c.W_FORE = 4e-3, 5e-3, 0.0
    levels = ("p3", "p4", "p5", "p6", "p7")
    loss = DRKD(cfg, _Detector(levels), _Detector(levels))
    assert _count(loss) == 47_436_544 - 2 * 65_792 and len(loss.fore_adapters) == 0
    # student FPN 128 channels, teacher 256: adapters 128 -> 256, student-side modules on 128
    small = DRKD(cfg, _Detector(levels, 128), _Detector(levels, 256))
    assert small.pixel_adapters["p3"].weight.shape == (256, 128, 1, 1)
    assert small.student_relation["p3"].theta.in_features == 128 * 9
    assert small.teacher_relation["p3"].theta.in_features == 256 * 9


def test_missing_level_is_a_clear_error():
    cfg = get_segdet_cfg()  # LEVELS p2..p6
    with pytest.raises(KeyError, match=r"LEVELS.*\['p2'\].*student.*available: \['p3', 'p4', 'p5', 'p6', 'p7'\]"):
        DRKD(cfg, _Detector(("p3", "p4", "p5", "p6", "p7")), _Detector())
    cfg.DISTILL.DRKD.GLORE_MID = (64, 64)
    with pytest.raises(ValueError, match="GLORE_MID has 2 values for 5"):
        DRKD(cfg, _Detector(), _Detector())
    cfg.DISTILL.DRKD.GLORE_MID = (64, 64, 256, 256, 256)
    cfg.DISTILL.DRKD.RELATION_FILTER = "random"
    with pytest.raises(ValueError, match="RELATION_FILTER"):
        DRKD(cfg, _Detector(), _Detector())


# ---------------------------------------------------------------------------- loss values
def test_batch_normalized_l2_value_and_gradient_at_zero():
    diff = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert batch_normalized_l2(diff, 2).item() == pytest.approx(5.0)
    assert batch_normalized_l2(diff, 4).item() == pytest.approx(5.0 * 2 ** 0.5)
    zero = torch.zeros(2, 3, requires_grad=True)
    batch_normalized_l2(zero, 2).backward()
    assert torch.equal(zero.grad, torch.zeros(2, 3))  # no NaN at a zero difference


def test_pixel_term_hand_computed():
    m = _tiny(levels=("p2",), mids=(1,), cs=2, ct=2, w_inst=0.0, w_fore=0.0, glore_zero_init_bn=True,
              ref_images_per_device=2)
    with torch.no_grad():
        m.pixel_adapters["p2"].weight.copy_(2 * torch.eye(2)[:, :, None, None])
        m.pixel_adapters["p2"].bias.fill_(0.5)
    s = {"p2": torch.ones(2, 2, 2, 2)}
    s["p2"][1] = 2.0
    t = {"p2": torch.zeros(2, 2, 2, 2)}
    out = m({"backbone": s}, {"backbone": t}, _batch([[], []]))
    assert set(out) == {"drkd_pixel"}
    # GloRe = identity; d = 2 s + 0.5: 2.5 on image 0, 4.5 on image 1, 8 values each
    assert out["drkd_pixel"].item() == pytest.approx(1e-3 * (8 * 2.5 ** 2 + 8 * 4.5 ** 2) ** 0.5, rel=1e-6)
    m.ref_images = 4.0  # k = 4 / 2
    out = m({"backbone": s}, {"backbone": t}, _batch([[], []]))
    assert out["drkd_pixel"].item() == pytest.approx(1e-3 * (2 * 212.0) ** 0.5, rel=1e-6)


@pytest.mark.parametrize("relation_filter", ["none", "learned"])
def test_batch_size_invariance_matches_official_at_reference(relation_filter):
    m = _tiny(relation_filter=relation_filter)
    s, t = _feats(), _feats()
    out2 = _call(m, s, t, BOXES2)
    official = _official(m, s, t, BOXES2)
    for key, value in zip(("drkd_pixel", "drkd_inst", "drkd_fore"), official):
        assert out2[key].item() == pytest.approx(value.item(), rel=1e-5)
    # four images = the pair twice: same values under the normalised formulas
    s4 = {l: torch.cat([v, v]) for l, v in s.items()}
    t4 = {l: torch.cat([v, v]) for l, v in t.items()}
    out4 = _call(m, s4, t4, BOXES2 + BOXES2)
    for key in out2:
        assert out4[key].item() == pytest.approx(out2[key].item(), rel=1e-5)
    # while the official (un-normalised) formulas grow by sqrt(2) and 2
    official4 = _official(m, s4, t4, BOXES2 + BOXES2)
    assert official4[0].item() == pytest.approx(2 ** 0.5 * official[0].item(), rel=1e-5)
    assert official4[1].item() == pytest.approx(2 * official[1].item(), rel=1e-5)


def test_roi_align_uses_each_images_own_features():
    feature = torch.zeros(2, 1, 4, 4)
    feature[1] = torch.arange(16.0).view(1, 4, 4) + 1
    boxes = [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 4.0, 15.0, 12.0]])]
    pooled = roi_align_per_image(feature, boxes, 2, 4)
    assert pooled[0].shape == (0, 1, 2, 2) and pooled[1].shape == (2, 1, 2, 2)
    assert torch.allclose(pooled[1], roi_align(feature[1:2], [boxes[1]], 2, 0.25, -1, False))
    # box (0,0,8,8) at stride 4 is (0,0,2,2) on the map (aligned=False: no half-pixel shift);
    # one sample per 1x1 bin at its centre (0.5|1.5, 0.5|1.5) of f(x, y) = 4y + x + 1 (image 1)
    assert pooled[1][0].flatten().tolist() == pytest.approx([3.5, 4.5, 7.5, 8.5])
    # the official call (all images' features, one image's boxes) reads image 0: zeros
    assert roi_align(feature, [boxes[1]], 2, 0.25, -1, False).abs().sum() == 0


def test_wrong_image_regression_through_the_loss():
    m = _tiny(w_pixel=0.0, w_inst=0.0, cs=4, ct=4)
    for l in m.fore_adapters:
        _identity_(m.fore_adapters[l])
    s = _feats(channels=4)
    t = {l: v.clone() for l, v in s.items()}
    for v in t.values():
        v[1] += 1.0  # the images differ on image 1 only, by exactly 1
    boxes = [[[1.0, 1.0, 9.0, 12.0]], [[1.0, 1.0, 9.0, 12.0], [4.0, 2.0, 15.0, 15.0]]]
    out = _call(m, s, t, boxes)
    assert set(out) == {"drkd_fore"}
    # image 1: 2 boxes x 4 channels x 2 x 2 differences of 1 -> norm sqrt(32) per level
    assert out["drkd_fore"].item() == pytest.approx(2.4e-3 * (2 / 2) * 2 * 32 ** 0.5, rel=1e-5)


@pytest.mark.parametrize("relation_filter", ["none", "learned", "random_fc"])
def test_zero_when_both_sides_identical(relation_filter):
    m = _tiny(relation_filter=relation_filter)
    m.teacher_glore = copy.deepcopy(m.student_glore)
    m.teacher_relation = copy.deepcopy(m.student_relation)
    for adapters in (m.pixel_adapters, m.relation_adapters, m.fore_adapters):
        for conv in adapters.values():
            _identity_(conv)
    s = _feats(grad=True)
    t = {l: v.detach().clone() for l, v in s.items()}
    out = _call(m, s, t, BOXES2)
    assert set(out) == {"drkd_pixel", "drkd_inst", "drkd_fore"}
    assert all(v.item() == 0.0 for v in out.values()), out
    sum(out.values()).backward()
    assert all(torch.isfinite(v.grad).all() for v in s.values())
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    # and a perturbation of the student features makes every term positive
    out = _call(m, {l: v + 0.1 for l, v in s.items()}, t, BOXES2)
    assert all(v.item() > 1e-5 for v in out.values())


def test_random_fc_is_deterministic_per_seed_and_iteration():
    m = _tiny(relation_filter="random_fc", w_pixel=0.0, w_fore=0.0)
    s, t = _feats(), _feats()

    def inst(iteration, seed=0):
        m.seed = seed
        with EventStorage(iteration):
            return _call(m, s, t, BOXES2)["drkd_inst"].item()

    first = inst(7)
    assert inst(7) == first                      # bit-identical re-run
    assert inst(8) != first and inst(7, seed=1) != first
    at_zero = inst(0)
    m.seed = 0
    assert _call(m, s, t, BOXES2)["drkd_inst"].item() == at_zero  # no storage: iteration 0


@pytest.mark.parametrize("relation_filter", ["none", "learned"])
def test_image_without_boxes_contributes_zero(relation_filter):
    m = _tiny(relation_filter=relation_filter, w_pixel=0.0)
    s, t = _feats(), _feats()
    both = _call(m, s, t, [[], BOXES2[1]])
    alone = _call(m, {l: v[1:] for l, v in s.items()}, {l: v[1:] for l, v in t.items()}, [BOXES2[1]])
    for key in ("drkd_inst", "drkd_fore"):
        assert torch.isfinite(both[key]) and both[key].item() > 0
        # k = 2/2 with the empty image vs 2/1 alone: the empty image adds nothing
        assert both[key].item() == pytest.approx(alone[key].item() / 2, rel=1e-6)


def test_batch_without_boxes_is_zero_and_touches_parameters():
    m = _tiny(relation_filter="learned")
    s = _feats(grad=True)
    out = _call(m, s, _feats(), [[], []])
    assert out["drkd_inst"].item() == 0.0 and out["drkd_fore"].item() == 0.0
    assert out["drkd_pixel"].item() > 0
    sum(out.values()).backward()
    for module in (m.student_relation, m.teacher_relation, m.relation_adapters, m.fore_adapters):
        for p in module.parameters():
            assert p.grad is not None and torch.count_nonzero(p.grad) == 0


def test_freeze_teacher_side():
    m = _tiny(freeze_teacher_side=True)
    frozen = {id(p) for mod in (m.teacher_glore, m.teacher_relation) for p in mod.parameters()}
    assert frozen and all(not p.requires_grad for p in m.parameters() if id(p) in frozen)
    assert all(p.requires_grad for p in m.parameters() if id(p) not in frozen)


@pytest.mark.parametrize("relation_filter", ["learned", "random_fc"])
def test_gradcheck_pixel_instance_fore(relation_filter):
    m = _tiny(relation_filter=relation_filter, mids=(2, 2), cs=2, ct=3).double()
    t = _feats(channels=3, dtype=torch.float64)
    s = _feats(channels=2, dtype=torch.float64, grad=True)

    def fn(p2, p3):
        out = _call(m, {"p2": p2, "p3": p3}, t, BOXES2)
        return out["drkd_pixel"], out["drkd_inst"], out["drkd_fore"]

    assert torch.autograd.gradcheck(fn, (s["p2"], s["p3"]), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("relation_filter", ["learned", "random_fc"])
def test_fast_option_equals_the_reference(relation_filter):
    """DISTILL.DRKD.FAST: the same state dict gives the reference's three terms and every
    gradient (float64), on maps where the fast GloRe units take different product orders."""
    torch.manual_seed(0)
    ref = _tiny(relation_filter=relation_filter, mids=(4, 4), cs=8, ct=8).double()
    fast = _tiny(relation_filter=relation_filter, mids=(4, 4), cs=8, ct=8, fast=True).double()
    assert not ref.fast and fast.fast and set(ref.state_dict()) == set(fast.state_dict())
    fast.load_state_dict(ref.state_dict())
    assert isinstance(fast.student_glore["p2"], FastGloReUnit) and type(ref.student_glore["p2"]) is GloReUnit
    assert [tuple(fast.student_glore[l].plan(2, (IMG // STRIDES[l]) ** 2).values()) for l in ("p2", "p3")] \
        == [("node_sums", "premultiplied"), ("state_map", "premultiplied")]
    t = _feats(channels=8, dtype=torch.float64)
    s = _feats(channels=8, dtype=torch.float64, grad=True)
    outs, grads = [], []
    for m in (ref, fast):
        with EventStorage(3):
            out = _call(m, s, t, BOXES2)
        total = sum(out.values())
        grads.append(torch.autograd.grad(total, [s["p2"], s["p3"], *m.parameters()], allow_unused=True))
        outs.append(out)
    assert set(outs[0]) == {"drkd_pixel", "drkd_inst", "drkd_fore"}
    for key in outs[0]:
        torch.testing.assert_close(outs[1][key], outs[0][key], rtol=1e-10, atol=1e-12)
    for got, want in zip(grads[1], grads[0]):
        assert (got is None) == (want is None)
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_fast_option_from_config():
    cfg = get_segdet_cfg()
    assert cfg.DISTILL.DRKD.FAST is False
    assert not DISTILL_LOSS_REGISTRY.get("DRKD")(cfg, _Detector(), _Detector()).fast
    cfg.DISTILL.DRKD.FAST = True
    loss = DISTILL_LOSS_REGISTRY.get("DRKD")(cfg, _Detector(), _Detector())
    assert loss.fast and isinstance(loss.pixel_adapters["p2"], BmmConv1x1)


def test_bad_inputs_are_clear_errors():
    m = _tiny()
    s, t = _feats(), _feats()
    with pytest.raises(KeyError, match=r"teacher features lack level\(s\) \['p3'\]"):
        m({"backbone": s}, {"backbone": {"p2": t["p2"]}}, _batch(BOXES2))
    with pytest.raises(ValueError, match="same batch size and spatial size"):
        m({"backbone": s}, {"backbone": {**t, "p3": torch.randn(2, 3, 3, 3)}}, _batch(BOXES2))
    with pytest.raises(KeyError, match="instances"):
        m({"backbone": s}, {"backbone": t}, [{}, {}])


# ---------------------------------------------------------------------------- detectron2 e2e
SAMPLE_CFG = "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml"


def _sample_cfg(fpn_channels, extra=()):
    return load_config(SAMPLE_CFG, [
        "MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", fpn_channels,
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32, *extra],
        freeze=False)


def test_drkd_in_distillation_model_end_to_end(tmp_path):
    teacher_cfg = _sample_cfg(32)
    teacher_path = tmp_path / "teacher.yaml"
    teacher_path.write_text(teacher_cfg.dump())
    weights = tmp_path / "teacher.pth"
    torch.save({"model": build_model(teacher_cfg).state_dict()}, weights)
    cfg = _sample_cfg(16, [
        "MODEL.META_ARCHITECTURE", "DistillationModel",
        "DISTILL.TEACHER.CONFIG_FILE", str(teacher_path), "DISTILL.TEACHER.WEIGHTS", str(weights),
        "DISTILL.LOSSES", ("DRKD",), "DISTILL.DRKD.GLORE_MID", (4, 4, 8, 8, 8),
        "DISTILL.DRKD.ROI_SIZE", 1])
    model = build_model(cfg).train()
    drkd = model.distill_losses["drkd"]
    # student FPN 16 channels, teacher 32: d = 16 (student) / 32 (teacher) relation modules
    assert drkd.pixel_adapters["p2"].weight.shape == (32, 16, 1, 1)
    assert drkd.student_relation["p2"].theta.in_features == 16
    assert drkd.teacher_relation["p2"].theta.in_features == 32
    inputs = []
    for _ in range(2):
        inst = Instances((64, 64))
        inst.gt_boxes = Boxes(torch.tensor([[4.0, 4.0, 30.0, 30.0], [20.0, 10.0, 60.0, 50.0]]))
        inst.gt_classes = torch.zeros(2, dtype=torch.long)
        inputs.append({"image": torch.rand(3, 64, 64) * 255, "instances": inst, "height": 64, "width": 64})
    with EventStorage(0):
        losses = model(inputs)
    for key in ("drkd_pixel", "drkd_inst", "drkd_fore"):
        assert torch.isfinite(losses[f"loss_distill_{key}"]) and losses[f"loss_distill_{key}"] > 0
    # the distillation terms alone reach the student's FPN and the teacher-side modules
    sum(v for k, v in losses.items() if "distill" in k).backward()
    assert drkd.teacher_glore["p4"].conv_proj.weight.grad.abs().sum() > 0
    assert drkd.teacher_relation["p3"].theta.weight.grad.abs().sum() > 0
    assert model.student.backbone.fpn_output3.weight.grad.abs().sum() > 0
    keys = set(model.state_dict())
    assert "distill_losses.drkd.student_relation.p2.theta.weight" in keys
    assert not any("drkd" in k for k in model.export_student_state_dict())
