"""EfficientFormerV2 backbone: parameter counts, shapes, bias tables (and the fused bias cache)."""
import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY

from segdet.config import get_segdet_cfg
from segdet.modeling.cgrseg.efficientformer_v2 import EfficientFormerV2
from segdet.modeling.cgrseg.efficientformer_v2_attention import (
    Attention4D,
    Attention4DDownsample,
    relative_position_index,
)


def _official_index(resolution: int, query_stride: int):
    """The official first-seen offset numbering (dict over (|dy|, |dx|) pairs)."""
    r = resolution
    rq = math.ceil(r / query_stride)
    step = math.ceil(r / rq)
    keys = list(itertools.product(range(r), range(r)))
    queries = list(itertools.product(range(rq), range(rq)))
    offsets, idxs = {}, []
    for p1 in queries:
        for p2 in keys:
            off = (abs(p1[0] * step - p2[0]), abs(p1[1] * step - p2[1]))
            if off not in offsets:
                offsets[off] = len(offsets)
            idxs.append(offsets[off])
    return torch.tensor(idxs).view(len(queries), len(keys)), len(offsets)


@pytest.mark.parametrize("resolution,stride", [(4, 1), (5, 1), (7, 1), (6, 2), (7, 2), (14, 2)])
def test_relative_position_index_matches_official_numbering(resolution, stride):
    ref, num = _official_index(resolution, stride)
    idx = relative_position_index(resolution, stride)
    assert num == resolution ** 2
    assert torch.equal(idx, ref)


@pytest.mark.parametrize("variant,params", [("S1", 5_748_360), ("S2", 12_151_408), ("L", 25_578_016)])
def test_parameter_counts(variant, params):
    model = EfficientFormerV2(variant=variant)
    assert sum(p.numel() for p in model.parameters()) == params


def test_registry_builder_and_shapes_512():
    cfg = get_segdet_cfg()
    cfg.MODEL.EFFICIENTFORMER_V2.VARIANT = "S1"
    model = BACKBONE_REGISTRY.get("build_efficientformer_v2_backbone")(cfg, ShapeSpec(channels=3)).eval()
    assert model.size_divisibility == 32
    assert model.output_shape() == {
        "res2": ShapeSpec(channels=32, stride=4), "res3": ShapeSpec(channels=48, stride=8),
        "res4": ShapeSpec(channels=120, stride=16), "res5": ShapeSpec(channels=224, stride=32)}
    with torch.no_grad():
        out = model(torch.randn(1, 3, 512, 512))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (1, 32, 128, 128), "res3": (1, 48, 64, 64), "res4": (1, 120, 32, 32), "res5": (1, 224, 16, 16)}
    # the seg tables as in the official checkpoints (512 input)
    stage3 = model.network[4][-1].token_mixer
    assert stage3.attention_biases_seg.shape == (8, 256) and stage3.attention_bias_idxs_seg.shape == (256, 256)
    down = model.network[5].attn
    assert down.attention_biases_seg.shape == (8, 1024) and down.attention_bias_idxs_seg.shape == (256, 1024)


def test_odd_input_size_rounds_up():
    model = EfficientFormerV2(variant="S0", out_features=("res4", "res5")).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 161, 97))
    # 161 -> 81 -> 41 -> 21 -> 11 -> 6 ; 97 -> 49 -> 25 -> 13 -> 7 -> 4
    assert tuple(out["res4"].shape) == (1, 96, 11, 7)
    assert tuple(out["res5"].shape) == (1, 176, 6, 4)
    assert set(out) == {"res4", "res5"}


def test_train_and_eval_return_self():
    model = EfficientFormerV2(variant="S0")
    assert model.eval() is model and model.train() is model


def _reference_attention4d(m: Attention4D, x: torch.Tensor) -> torch.Tensor:
    """Official-orientation forward (q (N,kd) @ k (kd,N), attn @ v) with the bias resized by
    bicubic interpolation along the flattened (Nq, Nk) axes."""
    B, _, H, W = x.shape
    n, nh = H * W, m.num_heads
    q = m.q(x).flatten(2).reshape(B, nh, -1, n).permute(0, 1, 3, 2)
    k = m.k(x).flatten(2).reshape(B, nh, -1, n)
    v = m.v(x)
    v_local = m.v_local(v)
    v = v.flatten(2).reshape(B, nh, -1, n).permute(0, 1, 3, 2)
    bias = m.attention_biases_seg[:, m.attention_bias_idxs_seg]
    bias = F.interpolate(bias.unsqueeze(0), size=(n, n), mode="bicubic")
    attn = (q @ k) * m.scale + bias
    attn = m.talking_head2(m.talking_head1(attn).softmax(dim=-1))
    out = (attn @ v).transpose(2, 3).reshape(B, m.dh, H, W) + v_local
    return m.proj(out)


def test_attention_bias_interpolated_to_other_grid():
    torch.manual_seed(0)
    m = Attention4D(dim=16, resolution=4, imagenet_resolution=7).double().eval()
    with torch.no_grad():
        m.attention_biases_seg.normal_()
        x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
        out = m(x)
        ref = _reference_attention4d(m, x)
        assert torch.allclose(out, ref, atol=1e-10)
        # at the table's own grid the bias is the plain gather (no interpolation change)
        gathered = m.attention_biases_seg[:, m.attention_bias_idxs_seg].unsqueeze(0)
        assert torch.allclose(m.attention_bias(16, 16), gathered, atol=1e-12)
        other = m.attention_bias(30, 30)
        assert other.shape == (1, 8, 30, 30) and not torch.allclose(other[..., :16, :16], gathered)


def test_downsample_attention_odd_sizes_and_bias_shape():
    m = Attention4DDownsample(dim=8, out_dim=12, resolution=8, imagenet_resolution=14).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 8, 7, 5))
    assert tuple(out.shape) == (1, 12, 4, 3)
    assert tuple(m.attention_bias(12, 35).shape) == (1, 8, 12, 35)


def test_fused_bias_cache_reused_and_dropped_on_load_state_dict():
    """The fused attention gathers its bias once per token grid; loading other weights into the
    fused model drops the cached biases (they follow the loaded tables)."""
    from segdet.deploy import fuse_model

    torch.manual_seed(0)
    model = EfficientFormerV2(variant="S0").eval()
    x = torch.randn(1, 3, 96, 128)
    fast = fuse_model(model)
    bias = fast.network[4][-1].token_mixer.bias
    with torch.no_grad():
        before = fast(x)["res5"]
        torch.testing.assert_close(before, model(x)["res5"], rtol=0, atol=1e-4)
        cached = bias(12, 12)
        assert bias(12, 12) is cached  # constant work done once per grid
        state = fast.state_dict()
        for key in state:
            if key.endswith("bias.table"):
                state[key] = torch.randn_like(state[key])
        fast.load_state_dict(state)
        assert bias(12, 12) is not cached
        after = fast(x)["res5"]
        # the plain model with the same tables
        plain = model.state_dict()
        for key in plain:
            if key.endswith("attention_biases_seg"):
                plain[key] = state[key.replace("attention_biases_seg", "bias.table")]
        model.load_state_dict(plain)
        expected = model(x)["res5"]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, rtol=0, atol=1e-4)


def test_eval_with_grad_enabled_keeps_bias_gradient():
    model = EfficientFormerV2(variant="S0", out_features=("res5",)).eval()
    out = model(torch.randn(1, 3, 64, 64))["res5"]
    out.sum().backward()
    grad = model.network[6][-1].token_mixer.attention_biases_seg.grad
    assert grad is not None and grad.abs().sum() > 0


def test_bad_variant_and_out_features():
    with pytest.raises(ValueError, match="VARIANT"):
        EfficientFormerV2(variant="S3")
    with pytest.raises(ValueError, match="OUT_FEATURES"):
        EfficientFormerV2(variant="S0", out_features=("res6",))
