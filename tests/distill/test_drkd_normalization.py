"""DRKD's two normalisations (DISTILL.DRKD.NORMALIZATION) and the parity defaults.

"scale_aware" divides each un-squared norm by sqrt(its element count / the count at the reference
shape). What must hold: equal to "official" at the reference shape, exactly; invariant
when the same images are scaled x2 and when the batch is doubled; "official" unchanged. Values in
float64, so that equalities are exact or at rounding level (rel 1e-12).
"""
import os

import pytest
import torch
from torch.nn import functional as F

from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from segdet.config import get_segdet_cfg
from segdet.distill.drkd.loss import DRKD
from segdet.distill.drkd.functional import reference_level_size, size_factor
from segdet.utils.config_io import load_config

STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
KEYS = ("drkd_pixel", "drkd_inst", "drkd_fore")
EXACT = dict(rel=1e-12, abs=0.0)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _drkd(levels=("p2", "p3"), inst_levels=("p2", "p3"), c=4, mids=None, **kw) -> DRKD:
    used = sorted(set(levels) | set(inst_levels))
    torch.manual_seed(0)
    m = DRKD(levels=levels, glore_mid=mids or (2,) * len(levels), strides=STRIDES,
             student_channels={l: c for l in used}, teacher_channels={l: c for l in used},
             inst_levels=inst_levels, **kw)
    return m.double()


def _batch(boxes, size):
    out = []
    for b in boxes:
        inst = Instances(size)
        inst.gt_boxes = Boxes(torch.tensor(b, dtype=torch.float64).reshape(-1, 4))
        out.append({"instances": inst})
    return out


def _run(m, s, t, boxes, size, normalization, iteration=3):
    m.normalization = normalization
    with EventStorage(iteration):
        out = m({"backbone": s}, {"backbone": t}, _batch(boxes, size))
    return {k: v.item() for k, v in out.items()}


def _randn(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


# ---------------------------------------------------------------------------- reference shape
def test_reference_level_sizes_are_detectron2_fpn_sizes():
    sizes = [reference_level_size((800, 1216), STRIDES[l]) for l in STRIDES]
    assert sizes == [(200, 304), (100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]
    # detectron2's extra levels on the 25 x 38 stride-32 map: P6 max-pool (Faster R-CNN) and the
    # P6/P7 convs (RetinaNet) give exactly the ceil sizes
    p5 = torch.zeros(1, 1, 25, 38)
    assert LastLevelMaxPool()(p5)[0].shape[-2:] == (13, 19)
    p6, p7 = LastLevelP6P7(1, 1, in_feature="p5")(p5)
    assert p6.shape[-2:] == (13, 19) and p7.shape[-2:] == (7, 10)
    assert size_factor(10, 10) == 1.0 and size_factor(4, 16) == 2.0


# ---------------------------------------------------------------------------- official unchanged
# Values of the implementation before NORMALIZATION existed (commit 03fc1f8), same seeds and inputs.
OFFICIAL_BEFORE = {
    "learned": (0.025864538215854018, 0.0636418037755683, 0.04176194986671666),
    "random_fc": (0.025864538215854018, 0.07533027044716394, 0.045203516881251675),
    "none": (0.025864538215854018, 0.07538631596366284, 0.045203516881251675),
}


@pytest.mark.parametrize("relation_filter", list(OFFICIAL_BEFORE))
@pytest.mark.parametrize("explicit", [False, True])
def test_official_form_is_unchanged(relation_filter, explicit):
    kw = {"normalization": "official"} if explicit else {}
    torch.manual_seed(0)
    m = DRKD(levels=("p2", "p3"), glore_mid=(2, 2), strides={"p2": 4, "p3": 8},
             student_channels={"p2": 3, "p3": 3}, teacher_channels={"p2": 4, "p3": 4}, roi_size=2,
             relation_filter=relation_filter, **kw).double()
    gen = torch.Generator().manual_seed(1)
    s = {l: _randn(gen, 2, 3, 16 // STRIDES[l], 16 // STRIDES[l]) for l in ("p2", "p3")}
    t = {l: _randn(gen, 2, 4, 16 // STRIDES[l], 16 // STRIDES[l]) for l in ("p2", "p3")}
    boxes = [[[1.0, 1.0, 9.0, 12.0], [4.0, 2.0, 15.0, 15.0]], [[0.0, 3.0, 7.0, 10.0]]]
    with EventStorage(3):
        out = m({"backbone": s}, {"backbone": t}, _batch(boxes, (16, 16)))
    for key, want in zip(KEYS, OFFICIAL_BEFORE[relation_filter]):
        assert out[key].item() == pytest.approx(want, **EXACT)


# ---------------------------------------------------------------------------- at the reference
def test_equal_to_official_at_the_default_coco_reference():
    """The default reference (800 x 1216 padded input, 2 images, 256 channels, 3x3 RoIs) on its
    two smallest Faster R-CNN levels, P5 25 x 38 and P6 13 x 19: bit-identical values."""
    m = _drkd(levels=("p5", "p6"), inst_levels=("p5", "p6"), c=256, mids=(4, 4), w_inst=0.0)
    gen = torch.Generator().manual_seed(2)
    s = {"p5": _randn(gen, 2, 256, 25, 38), "p6": _randn(gen, 2, 256, 13, 19)}
    t = {l: _randn(gen, *v.shape) for l, v in s.items()}
    boxes = [[[40.0, 64.0, 600.0, 500.0], [300.0, 100.0, 1100.0, 700.0]], [[0.0, 0.0, 900.0, 780.0]]]
    official = _run(m, s, t, boxes, (800, 1216), "official")
    scaled = _run(m, s, t, boxes, (800, 1216), "scale_aware")
    assert set(official) == {"drkd_pixel", "drkd_fore"} and official["drkd_pixel"] > 0
    assert scaled == official


@pytest.mark.parametrize("relation_filter", ["learned", "random_fc", "none"])
def test_equal_to_official_at_a_configured_reference(relation_filter):
    """All three terms, a small configured reference: a 16 x 16 input, 2 images, 4 channels, 3x3
    RoIs (the instance reference keeps each image's own instance count)."""
    m = _drkd(relation_filter=relation_filter, roi_size=3, ref_input_size=(16, 16), ref_channels=4)
    gen = torch.Generator().manual_seed(3)
    s = {l: _randn(gen, 2, 4, 16 // STRIDES[l], 16 // STRIDES[l]) for l in ("p2", "p3")}
    t = {l: _randn(gen, *v.shape) for l, v in s.items()}
    boxes = [[[1.0, 1.0, 9.0, 12.0], [4.0, 2.0, 15.0, 15.0], [2.0, 2.0, 6.0, 6.0]], [[0.0, 3.0, 7.0, 10.0]]]
    official = _run(m, s, t, boxes, (16, 16), "official")
    assert set(official) == set(KEYS) and min(official.values()) > 0
    assert _run(m, s, t, boxes, (16, 16), "scale_aware") == official


def test_scale_aware_factors_away_from_the_reference():
    """Off the reference, "scale_aware" = official × the documented factors: pixel
    sqrt(C_ref·H_l·W_l / (C·H·W)) per level, instance sqrt(C_ref·3·3 / (C·k·k))."""
    m = _drkd(levels=("p2",), inst_levels=("p2",), c=4, roi_size=2, ref_input_size=(40, 24),
              ref_channels=16, relation_filter="none")
    gen = torch.Generator().manual_seed(4)
    s, t = {"p2": _randn(gen, 3, 4, 4, 4)}, {"p2": _randn(gen, 3, 4, 4, 4)}
    boxes = [[[1.0, 1.0, 9.0, 12.0]], [[0.0, 3.0, 7.0, 10.0]], []]
    official = _run(m, s, t, boxes, (16, 16), "official")
    scaled = _run(m, s, t, boxes, (16, 16), "scale_aware")
    # reference p2 map 10 x 6 with 16 channels against 4 x 4 with 4: sqrt(960 / 64)
    assert scaled["drkd_pixel"] == pytest.approx(official["drkd_pixel"] * 15 ** 0.5, **EXACT)
    for key in ("drkd_inst", "drkd_fore"):   # sqrt(16·9 / (4·4)) = 3
        assert scaled[key] == pytest.approx(official[key] * 3.0, **EXACT)


# ---------------------------------------------------------------------------- invariances
def test_pixel_term_invariant_to_images_scaled_x2():
    """The same images at twice the size: every level's features are a nearest-upsampled x2 copy,
    so the per-element differences are the same. GLORE_NORMALIZE (node features / H·W) makes the
    GloRe output an upsampled copy too; the official GloRe sums its nodes over H·W, which its
    graph-convolution bias turns into a (small) change of the function itself."""
    m = _drkd(w_inst=0.0, w_fore=0.0, glore_normalize=True, ref_input_size=(24, 40))
    gen = torch.Generator().manual_seed(5)
    s = {l: _randn(gen, 2, 4, 16 // STRIDES[l], 16 // STRIDES[l]) for l in ("p2", "p3")}
    t = {l: _randn(gen, *v.shape) for l, v in s.items()}
    up = {k: {l: F.interpolate(v, scale_factor=2, mode="nearest") for l, v in d.items()}
          for k, d in (("s", s), ("t", t))}
    small = {n: _run(m, s, t, [[], []], (16, 16), n)["drkd_pixel"] for n in ("official", "scale_aware")}
    big = {n: _run(m, up["s"], up["t"], [[], []], (32, 32), n)["drkd_pixel"] for n in ("official", "scale_aware")}
    assert big["scale_aware"] == pytest.approx(small["scale_aware"], **EXACT)
    assert big["official"] == pytest.approx(2.0 * small["official"], **EXACT)  # sqrt(4x the elements)


def _affine_maps(coef, image_size, scale):
    """Per channel a + u·y + v·x in the coordinates of the *original* image: the features of the
    image scaled by ``scale`` at each level (y = s·i / scale)."""
    out = {}
    for l in ("p2", "p3"):
        n = image_size * scale // STRIDES[l]
        pos = torch.arange(n, dtype=torch.float64) * STRIDES[l] / scale
        a, u, v = coef[l]                                             # (B, C, 1, 1) each
        out[l] = a + u * pos.view(1, 1, n, 1) + v * pos.view(1, 1, 1, n)
    return out


@pytest.mark.parametrize("relation_filter", ["learned", "random_fc", "none"])
def test_instance_terms_invariant_to_images_scaled_x2(relation_filter):
    """The instance and imitation terms pool k x k RoIs, whatever the image size, so their element
    count (M_b·C·k·k) and value do not change when the images and boxes are scaled x2, in either
    form. Features affine in image coordinates are the content for which RoIAlign of the x2 image
    returns exactly the same bins (a bin's samples average to the affine value at its centre;
    nearest-upsampled copies do not: bilinear samples between duplicated pixels differ)."""
    m = _drkd(w_pixel=0.0, relation_filter=relation_filter, roi_size=2, ref_channels=64)
    gen = torch.Generator().manual_seed(6)
    coefs = {side: {l: tuple(_randn(gen, 2, 4, 1, 1) for _ in range(3)) for l in ("p2", "p3")}
             for side in ("s", "t")}
    # inside [0, 24] px: every sample stays within the p3 map (no border clamping)
    boxes = [[[1.0, 2.0, 20.0, 13.0], [5.0, 6.0, 23.0, 24.0]], [[2.0, 0.5, 14.0, 17.0]]]
    boxes2 = [[[2 * v for v in b] for b in img] for img in boxes]
    for n in ("official", "scale_aware"):
        small = _run(m, _affine_maps(coefs["s"], 32, 1), _affine_maps(coefs["t"], 32, 1), boxes, (32, 32), n)
        big = _run(m, _affine_maps(coefs["s"], 32, 2), _affine_maps(coefs["t"], 32, 2), boxes2, (64, 64), n)
        assert set(small) == {"drkd_inst", "drkd_fore"} and min(small.values()) > 0
        for key in small:
            assert big[key] == pytest.approx(small[key], rel=1e-10), (n, key)


@pytest.mark.parametrize("normalization", ["official", "scale_aware"])
@pytest.mark.parametrize("relation_filter", ["learned", "none"])
def test_all_terms_invariant_to_the_batch_doubled(normalization, relation_filter):
    """The same two images twice (4 per device): equal values. (``random_fc`` draws a filter per
    image index, so duplicated images get other filters: not comparable this way.)"""
    m = _drkd(relation_filter=relation_filter, roi_size=3, ref_input_size=(48, 32), ref_channels=32)
    gen = torch.Generator().manual_seed(7)
    s = {l: _randn(gen, 2, 4, 16 // STRIDES[l], 16 // STRIDES[l]) for l in ("p2", "p3")}
    t = {l: _randn(gen, *v.shape) for l, v in s.items()}
    boxes = [[[1.0, 1.0, 9.0, 12.0], [4.0, 2.0, 15.0, 15.0]], [[0.0, 3.0, 7.0, 10.0]]]
    two = _run(m, s, t, boxes, (16, 16), normalization)
    four = _run(m, {l: torch.cat([v, v]) for l, v in s.items()}, {l: torch.cat([v, v]) for l, v in t.items()},
                boxes + boxes, (16, 16), normalization)
    assert set(two) == set(KEYS)
    for key in KEYS:
        assert four[key] == pytest.approx(two[key], **EXACT), key


def test_bad_normalization_settings_name_the_key():
    with pytest.raises(ValueError, match=r"DISTILL.DRKD.NORMALIZATION must be one of .*'scale_aware'.*got 'mean'"):
        _drkd(normalization="mean")
    with pytest.raises(ValueError, match=r"DISTILL.DRKD.REF_INPUT_SIZE must be .*\(H, W\)"):
        _drkd(ref_input_size=(800,))
    with pytest.raises(ValueError, match="DISTILL.DRKD.REF_CHANNELS must be > 0"):
        _drkd(ref_channels=0)


# ---------------------------------------------------------------------------- parity defaults
def test_parity_defaults_and_configs():
    """RELATION_FILTER defaults to the official random_fc (it was "learned"); the official norms
    by default and in the COCO configs, scale-aware in the sample configs; RetinaNet as the
    released single-stage code: relation term only (the pixel term is an extension)."""
    c = get_segdet_cfg().DISTILL.DRKD
    assert c.RELATION_FILTER == "random_fc" and c.NORMALIZATION == "official"
    assert tuple(c.REF_INPUT_SIZE) == (800, 1216) and c.REF_CHANNELS == 256 and c.REF_IMAGES_PER_DEVICE == 2
    assert _drkd().relation_filter == "random_fc"
    root = os.path.join(ROOT, "projects", "DRKD", "configs") + os.sep
    expected = {
        "COCO/faster_rcnn_R101_to_R50_FPN_2x_drkd.yaml": ("official", "random_fc", (1e-3, 4e-3, 2.4e-3)),
        "COCO/retinanet_R101_to_R50_FPN_2x_drkd.yaml": ("official", "none", (0.0, 5e-3, 0.0)),
        "Samples/faster_rcnn_mnv2_fpn_trees_drkd.yaml": ("scale_aware", "random_fc", (1e-3, 4e-3, 2.4e-3)),
        "Samples/retinanet_mnv2_fpn_trees_drkd.yaml": ("scale_aware", "none", (0.0, 5e-3, 0.0)),
    }
    for name, (normalization, relation_filter, weights) in expected.items():
        d = load_config(root + name, freeze=False).DISTILL.DRKD
        assert (d.NORMALIZATION, d.RELATION_FILTER, (d.W_PIXEL, d.W_INST, d.W_FORE)) == \
            (normalization, relation_filter, weights), name
