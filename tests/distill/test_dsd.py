"""DSD: PSD / CSD pure functions and the registered "PSD" / "CSD" loss modules."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from segdet.config import get_segdet_cfg
from segdet.distill.losses import DISTILL_LOSS_REGISTRY
from segdet.distill.dsd.loss import CSD, PSD, flatten_tap_maps
from segdet.distill.dsd.functional import (
    attention_map,
    csd_loss,
    csd_similarity,
    psd_loss,
    residual_pairs,
)


def _feats(seed, shapes, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=dtype) for s in shapes]


SHAPES = [(2, 3, 4, 4), (2, 5, 4, 4), (2, 4, 4, 4)]


# ----------------------------------------------------------------------------------------- PSD
def test_attention_map_is_channel_mean_of_squares():
    f = torch.tensor([[1.0, -2.0], [3.0, 0.0]]).view(1, 2, 1, 2)  # channels (1,-2) and (3,0)
    assert torch.equal(attention_map(f), torch.tensor([[[[5.0, 2.0]]]]))


def test_residual_pairs():
    assert residual_pairs(3, "adjacent") == [(0, 1), (1, 2)]
    assert residual_pairs(3, "all") == [(0, 1), (0, 2), (1, 2)]
    with pytest.raises(ValueError, match="at least 2"):
        residual_pairs(1)
    with pytest.raises(ValueError, match="pairs"):
        residual_pairs(3, "neighbours")


@pytest.mark.parametrize("pairs", ["adjacent", "all"])
def test_psd_zero_when_identical_and_positive_otherwise(pairs):
    s = _feats(0, SHAPES)
    assert psd_loss(s, [f.clone() for f in s], pairs=pairs).item() == 0.0
    assert psd_loss(s, _feats(1, SHAPES), pairs=pairs).item() > 1e-3


def test_psd_invariant_to_positive_rescaling_and_channel_repetition():
    s, t = _feats(0, SHAPES), _feats(1, SHAPES)
    ref = psd_loss(s, t, pairs="all")
    s2 = [3.7 * s[0], torch.cat([s[1], s[1], s[1]], 1), 0.01 * torch.cat([s[2], s[2]], 1)]
    torch.testing.assert_close(psd_loss(s2, t, pairs="all"), ref, rtol=1e-5, atol=1e-8)
    # ...but not to an additive shift of one layer
    s3 = [s[0] + 1.0, s[1], s[2]]
    assert abs(psd_loss(s3, t, pairs="all").item() - ref.item()) > 1e-4


def test_psd_equals_cosine_identity():
    """(1/K) Σ_k mean((r_s − r_t)²) = (1/K) Σ_k mean_b (2 − 2cos(r_s, r_t)) / N, computed by hand."""
    s, t = _feats(2, SHAPES), _feats(3, [(2, 6, 4, 4), (2, 2, 4, 4), (2, 7, 4, 4)])
    n = 16

    def residuals(fs):
        a = [(f ** 2).mean(1).flatten(1) for f in fs]
        a = [x / x.norm(dim=1, keepdim=True) for x in a]
        r = [a[1] - a[0], a[2] - a[1]]
        return [x / x.norm(dim=1, keepdim=True) for x in r]

    expected = sum(((2 - 2 * F.cosine_similarity(a, b, dim=1)) / n).mean()
                   for a, b in zip(residuals(s), residuals(t))) / 2
    torch.testing.assert_close(psd_loss(s, t, pairs="adjacent"), expected, rtol=1e-5, atol=1e-9)


def test_psd_zero_inputs_give_finite_loss():
    z = [torch.zeros(1, 2, 3, 3) for _ in range(2)]
    assert torch.isfinite(psd_loss(z, z)) and psd_loss(z, z).item() == 0.0


def test_psd_resize_path_os32_student_os8_teacher():
    """Teacher maps are 4x nearest-upsampled student maps (OS8 vs OS32): bilinear resizing to the
    student's 4x4 size recovers them exactly, so the loss is 0; without resizing it would fail."""
    s = _feats(4, [(2, 3, 4, 4), (2, 8, 4, 4)])
    t = [F.interpolate(torch.cat([f, f], 1), scale_factor=4, mode="nearest") for f in s]
    assert tuple(t[0].shape[-2:]) == (16, 16)
    assert psd_loss(s, t, size=(4, 4)).item() == pytest.approx(0.0, abs=1e-12)
    # at the teacher's size (student upsampled) the maps differ: bilinear != nearest
    assert psd_loss(s, t, size=(16, 16)).item() > 1e-6
    # default size is the largest student map; mixed student strides work
    s_mixed = [s[0], F.avg_pool2d(s[1], 2)]
    loss = psd_loss(s_mixed, t)
    assert torch.isfinite(loss)


def test_psd_gradcheck():
    s = [f.requires_grad_() for f in _feats(5, [(1, 2, 3, 3), (1, 3, 3, 3), (1, 2, 3, 3)], torch.float64)]
    t = _feats(6, [(1, 4, 3, 3), (1, 2, 3, 3), (1, 3, 3, 3)], torch.float64)
    for pairs in ("adjacent", "all"):
        assert torch.autograd.gradcheck(lambda *x: psd_loss(list(x), t, pairs=pairs), tuple(s))


def test_psd_layer_count_mismatch():
    with pytest.raises(ValueError, match="must be equal"):
        psd_loss(_feats(0, SHAPES), _feats(0, SHAPES[:2]))


# ----------------------------------------------------------------------------------------- CSD
LOG3 = math.log(3.0)
# 2 classes on a 2x2 map. Student: uniform. Teacher: class 0 likely in the top row (3:1).
Z_S = torch.zeros(1, 2, 2, 2)
Z_T = torch.stack([torch.tensor([[LOG3, LOG3], [-LOG3, -LOG3]]), torch.zeros(2, 2)]).unsqueeze(0)


def test_csd_paper_form_hand_computed():
    # q0 = (3/4,3/4,1/4,1/4), q1 = 1-q0 -> cos = (4*3/16)/(20/16) = 3/5; student: all ones
    torch.testing.assert_close(csd_similarity(Z_T, "paper", tau=1.0, pool=1),
                               torch.tensor([[[1.0, 0.6], [0.6, 1.0]]]))
    torch.testing.assert_close(csd_similarity(Z_S, "paper", tau=1.0, pool=1), torch.ones(1, 2, 2))
    assert csd_loss(Z_S, Z_T, "paper", tau=1.0, pool=1).item() == pytest.approx(0.08, rel=1e-5)


def test_csd_cirkd_form_hand_computed():
    # P0 = (9,9,1,1)/20 over space, P1 = 1/4 -> S00 = 164/400, S01 = S11 = 1/4; student all 1/4
    torch.testing.assert_close(csd_similarity(Z_T, "cirkd", tau=1.0, pool=1),
                               torch.tensor([[[0.41, 0.25], [0.25, 0.25]]]))
    assert csd_loss(Z_S, Z_T, "cirkd", tau=1.0, pool=1).item() == pytest.approx(0.0064, rel=1e-5)


def test_csd_pool_and_tau():
    # 2x2 pool of a 2x2 map leaves one pixel: both class maps are scalars -> paper S = ones
    torch.testing.assert_close(csd_similarity(Z_T, "paper", tau=1.0, pool=2), torch.ones(1, 2, 2))
    # tau scales the logits: tau=2 on 2*z equals tau=1 on z
    torch.testing.assert_close(csd_similarity(2 * Z_T, "cirkd", tau=2.0, pool=1),
                               csd_similarity(Z_T, "cirkd", tau=1.0, pool=1))


@pytest.mark.parametrize("form", ["paper", "cirkd"])
def test_csd_zero_when_identical(form):
    z = torch.randn(2, 5, 6, 7)
    assert csd_loss(z, z.clone(), form=form).item() == 0.0


def test_csd_invariances():
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(2, 4, 6, 6, generator=g), torch.randn(2, 4, 6, 6, generator=g)
    per_class = torch.randn(2, 4, 1, 1, generator=g) * 5
    per_pixel = torch.randn(2, 1, 6, 6, generator=g) * 5
    for pool in (1, 2):
        ref_c, ref_p = csd_loss(z, t, "cirkd", pool=pool), csd_loss(z, t, "paper", pool=pool)
        torch.testing.assert_close(csd_loss(z + per_class, t, "cirkd", pool=pool), ref_c, rtol=1e-4, atol=1e-10)
        torch.testing.assert_close(csd_loss(z + per_pixel, t, "paper", pool=pool), ref_p, rtol=1e-4, atol=1e-10)
        # and the converse shifts do change each form
        assert abs(csd_loss(z + per_pixel, t, "cirkd", pool=pool) - ref_c) > 1e-3 * ref_c
        assert abs(csd_loss(z + per_class, t, "paper", pool=pool) - ref_p) > 1e-3 * ref_p


@pytest.mark.parametrize("form", ["paper", "cirkd"])
def test_csd_resize_path(form):
    """OS8 teacher logits = 4x nearest-upsampled OS32 student logits: resizing back recovers them."""
    s = torch.randn(2, 3, 4, 4)
    t = F.interpolate(s, scale_factor=4, mode="nearest")
    assert csd_loss(s, t, form=form).item() == pytest.approx(0.0, abs=1e-12)
    assert csd_loss(s, torch.randn(2, 3, 16, 16), form=form).item() > 0
    with pytest.raises(ValueError, match="class count"):
        csd_loss(s, torch.randn(2, 4, 4, 4))


@pytest.mark.parametrize("form", ["paper", "cirkd"])
def test_csd_gradcheck(form):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(1, 3, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 3, 3, 3, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: csd_loss(x, t, form=form, tau=1.5, pool=2), (s,))


def _segmentation_like_logits(seed, k=19, h=64, w=128, margin=10.0, flip=0.2):
    """Teacher: margin * one-hot of a blocky label map + noise; student: 20 % of pixels relabelled."""
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, k, (1, h // 8, w // 8), generator=g).repeat_interleave(8, 1).repeat_interleave(8, 2)
    lab_s = lab.clone()
    changed = torch.rand(lab.shape, generator=g) < flip
    lab_s[changed] = torch.randint(0, k, (int(changed.sum()),), generator=g)
    onehot = lambda l: F.one_hot(l, k).permute(0, 3, 1, 2).float()  # noqa: E731
    t = margin * onehot(lab) + torch.randn(1, k, h, w, generator=g)
    s = margin * onehot(lab_s) + torch.randn(1, k, h, w, generator=g)
    return s, t


def test_csd_cirkd_form_is_inert_and_paper_form_is_not():
    """At lambda = 10 on 19-class segmentation-like logits (64x128, margin 10, 20 % of pixels
    relabelled), the CIRKD form's gradient norm w.r.t. the student logits is ~2e-9 (measured),
    i.e. CSD-cirkd does nothing; the paper form's is ~3.3e-3."""
    s, t = _segmentation_like_logits(0)
    s.requires_grad_()
    g_cirkd, = torch.autograd.grad(10 * csd_loss(s, t, form="cirkd"), s)
    g_paper, = torch.autograd.grad(10 * csd_loss(s, t, form="paper"), s)
    assert g_cirkd.norm().item() < 1e-6
    assert g_paper.norm().item() > 1e-4


# ---------------------------------------------------------------------------- registered modules
class _Toy(nn.Module):
    """backbone.stages.{0,1,2} (strides 2, 4, 8) and sem_seg_head.conv_seg (logits)."""

    def __init__(self, widths=(3, 4, 5), classes=3):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.stages = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 3, 2, 1) for c_in, c_out in zip((3,) + widths[:-1], widths))
        self.sem_seg_head = nn.Module()
        self.sem_seg_head.conv_seg = nn.Conv2d(widths[-1], classes, 1)

    def forward(self, x):
        for s in self.backbone.stages:
            x = s(x)
        return self.sem_seg_head.conv_seg(x)


def _cfg(**dsd):
    cfg = get_segdet_cfg()
    cfg.DISTILL.DSD.STUDENT_LOGITS = cfg.DISTILL.DSD.TEACHER_LOGITS = "sem_seg_head.conv_seg"  # the toy model's logits
    cfg.DISTILL.DSD.STUDENT_LAYERS = ("backbone.stages.1", "backbone.stages.2")
    cfg.DISTILL.DSD.TEACHER_LAYERS = ("backbone.stages.1", "backbone.stages.2")
    for k, v in dsd.items():
        setattr(cfg.DISTILL.DSD, k, v)
    return cfg


def _record(model, names, x):
    out = {}
    handles = [dict(model.named_modules())[n].register_forward_hook(
        lambda m, i, o, n=n: out.__setitem__(n, o)) for n in names]
    model(x)
    for h in handles:
        h.remove()
    return out


def test_registered_modules_built_from_config_and_forward():
    assert DISTILL_LOSS_REGISTRY.get("PSD") is PSD and DISTILL_LOSS_REGISTRY.get("CSD") is CSD
    student, teacher = _Toy(), _Toy(widths=(6, 8, 10))
    cfg = _cfg(W_PSD=1000.0, W_CSD=7.0, CSD_FORM="paper", TAU=2.0, CSD_POOL=1)
    psd, csd = PSD(cfg, student, teacher), CSD(cfg, student, teacher)
    assert psd.student_taps == ("backbone.stages.1", "backbone.stages.2", "sem_seg_head.conv_seg")
    assert psd.teacher_taps == ("backbone.stages.1", "backbone.stages.2")
    assert csd.student_taps == ("sem_seg_head.conv_seg",) and csd.teacher_taps == ("sem_seg_head.conv_seg",)
    assert sum(p.numel() for p in psd.parameters()) + sum(p.numel() for p in csd.parameters()) == 0

    x = torch.randn(2, 3, 32, 32)
    s = _record(student, psd.student_taps, x)
    with torch.no_grad():
        t = _record(teacher, psd.teacher_taps + csd.teacher_taps, x)
    out_psd = psd({n: s[n] for n in psd.student_taps}, {n: t[n] for n in psd.teacher_taps}, [])
    out_csd = csd({n: s[n] for n in csd.student_taps}, {n: t[n] for n in csd.teacher_taps}, [])
    assert set(out_psd) == {"dsd_psd"} and set(out_csd) == {"dsd_csd"}
    # stage 1 is 8x8, stage 2 and the logits are 4x4: everything is resized to the logits' 4x4
    expected = 1000.0 * psd_loss([s["backbone.stages.1"], s["backbone.stages.2"]],
                                 [t["backbone.stages.1"], t["backbone.stages.2"]], size=(4, 4))
    torch.testing.assert_close(out_psd["dsd_psd"], expected)
    torch.testing.assert_close(out_csd["dsd_csd"], 7.0 * csd_loss(s["sem_seg_head.conv_seg"],
                                                                t["sem_seg_head.conv_seg"], "paper", 2.0, 1))
    (out_psd["dsd_psd"] + out_csd["dsd_csd"]).backward()
    assert student.backbone.stages[0].weight.grad.abs().sum() > 0

    # "largest": the 8x8 stage-1 map sets the size and the logits tap is not needed
    psd_l = PSD(_cfg(PSD_RESIZE_TO="largest"), student, teacher)
    assert "sem_seg_head.conv_seg" not in psd_l.student_taps
    out = psd_l({n: s[n] for n in psd_l.student_taps}, {n: t[n] for n in psd_l.teacher_taps}, [])
    expected = 1000.0 * psd_loss([s["backbone.stages.1"], s["backbone.stages.2"]],
                                 [t["backbone.stages.1"], t["backbone.stages.2"]], size=(8, 8))
    torch.testing.assert_close(out["dsd_psd"], expected.detach())


def test_dict_tap_outputs_are_flattened_largest_first():
    big, small, mid = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 2, 2), torch.randn(1, 2, 4, 4)
    maps = flatten_tap_maps({"res5": small, "res3": big, "res4": mid}, "backbone", "student")
    assert [m.shape[-1] for m in maps] == [8, 4, 2]
    psd = PSD(student_layers=("backbone",), teacher_layers=("t1", "t2", "t3"), resize_to="largest")
    out = psd({"backbone": {"res5": small, "res3": big, "res4": mid}}, {"t1": big, "t2": mid, "t3": small}, [])
    assert out["dsd_psd"].item() == 0.0
    with pytest.raises(ValueError, match="'backbone'"):
        flatten_tap_maps({"res3": big, "n": 3}, "backbone", "student")
    with pytest.raises(ValueError, match="give 3 maps"):
        psd({"backbone": {"a": big, "b": mid, "c": small}}, {"t1": big, "t2": mid, "t3": [small, small]}, [])


def test_bad_config_values_raise_clear_errors():
    student, teacher = _Toy(), _Toy()
    with pytest.raises(ValueError, match="CSD_FORM"):
        CSD(_cfg(CSD_FORM="kl"), student, teacher)
    with pytest.raises(ValueError, match="PAIRS"):
        PSD(_cfg(PAIRS="every"), student, teacher)
    with pytest.raises(ValueError, match="PSD_RESIZE_TO"):
        PSD(_cfg(PSD_RESIZE_TO="teacher"), student, teacher)
    with pytest.raises(ValueError, match="STUDENT_LAYERS"):
        PSD(_cfg(STUDENT_LAYERS=()), student, teacher)
    with pytest.raises(KeyError, match="backbone.stage.9"):
        PSD(_cfg(STUDENT_LAYERS=("backbone.stage.9",)), student, teacher)
    with pytest.raises(KeyError, match="sem_seg_head.predictor"):
        CSD(_cfg(TEACHER_LOGITS="sem_seg_head.predictor"), student, teacher)
    csd = CSD(_cfg(), student, teacher)
    with pytest.raises(ValueError, match="logits"):
        csd({"sem_seg_head.conv_seg": {"x": torch.zeros(1)}}, {"sem_seg_head.conv_seg": torch.zeros(1, 3, 2, 2)}, [])
