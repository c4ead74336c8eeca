"""``segdet.deploy``: the fold helpers (exact in float64), the faster operations, ``fuse_model``'s
contract, and the fused CGRSeg models (same logits as the plain models after randomising every
BatchNorm, layer scale and attention bias)."""
import copy
import os

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from detectron2.modeling import build_model

from segdet.deploy import FusedModule, fuse_model, fused_module_count, ops, register_fuser
from segdet.deploy.cgrseg_head import FusedCGRSegHead
from segdet.deploy.fold import (
    ChannelAffine,
    bn_scale_shift,
    conv_to_channel_affine,
    fold_affine_into_conv,
    fold_bn_into_following_conv,
    fold_conv_bn,
    fold_seq,
    scale_conv_output,
)
from segdet.deploy.ops import ConvGELU, gelu_, mix_heads, upsample_channels_last, with_gelu
from segdet.modeling.cgrseg.efficientformer_v2_attention import Attention4D, Attention4DDownsample, LGQuery
from segdet.modeling.cgrseg.efficientformer_v2_blocks import AttnDownsample, AttnFFN, ConvDownsample, FFN, Mlp
from segdet.modeling.cgrseg.head import CGRSegHead, ConvNormAct
from segdet.modeling.cgrseg.rcm import RCA, RCM
from segdet.utils.config_io import load_config
from _tools import cgrseg_ade20k_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _random_bn(c: int, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c).double().eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=g, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(c, generator=g, dtype=torch.float64) + 0.1)
        bn.weight.copy_(torch.randn(c, generator=g, dtype=torch.float64))
        bn.bias.copy_(torch.randn(c, generator=g, dtype=torch.float64))
    return bn


def _state(module: nn.Module):
    return {k: v.clone() for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------- fold helpers


def test_bn_scale_shift_hand_computed():
    bn = nn.BatchNorm2d(2, eps=1.0).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
        bn.running_var.copy_(torch.tensor([3.0, 0.0]))
        bn.weight.copy_(torch.tensor([4.0, 0.5]))
        bn.bias.copy_(torch.tensor([1.0, 0.0]))
    scale, shift = bn_scale_shift(bn)
    # scale = w / sqrt(var + eps) = (4 / 2, 0.5 / 1); shift = b - mean * scale = (1 - 2, 0 + 1)
    assert torch.allclose(scale, torch.tensor([2.0, 0.5], dtype=torch.float64))
    assert torch.allclose(shift, torch.tensor([-1.0, 1.0], dtype=torch.float64))
    x = torch.randn(3, 2, 4, 5)
    assert torch.allclose(bn(x), x * scale.float().view(1, -1, 1, 1) + shift.float().view(1, -1, 1, 1), atol=1e-6)


def test_bn_scale_shift_without_affine_and_without_stats():
    bn = nn.BatchNorm2d(3, affine=False).eval()
    with torch.no_grad():
        bn.running_var.fill_(4.0 - bn.eps)
        bn.running_mean.fill_(2.0)
    scale, shift = bn_scale_shift(bn)
    assert torch.allclose(scale, torch.full((3,), 0.5, dtype=torch.float64))
    assert torch.allclose(shift, torch.full((3,), -1.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="running statistics"):
        bn_scale_shift(nn.BatchNorm2d(3, track_running_stats=False))
    with pytest.raises(ValueError, match="BatchNorm"):
        bn_scale_shift(nn.LayerNorm(3))


@pytest.mark.parametrize("groups,kernel,stride,bias", [(1, 1, 1, True), (1, 3, 2, False), (4, 3, 1, True),
                                                       (8, 3, 2, True)])
def test_fold_conv_bn_exact(groups, kernel, stride, bias):
    torch.manual_seed(groups + kernel)
    conv = nn.Conv2d(8, 8 if groups == 8 else 12, kernel, stride=stride, padding=kernel // 2, groups=groups,
                     bias=bias).double()
    bn = _random_bn(conv.out_channels, 1)
    before = _state(conv), _state(bn)
    fused = fold_conv_bn(conv, bn)
    x = torch.randn(2, 8, 9, 7, dtype=torch.float64)
    assert fused.weight.dtype == torch.float64 and fused.bias is not None
    assert (fused.stride, fused.padding, fused.groups) == (conv.stride, conv.padding, conv.groups)
    torch.testing.assert_close(fused(x), bn(conv(x)), rtol=0, atol=1e-12)
    # pure: the inputs are untouched
    for old, new in zip(before, (_state(conv), _state(bn))):
        assert all(torch.equal(old[k], new[k]) for k in old)


def test_fold_conv_bn_float32_and_channel_mismatch():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    bn = _random_bn(5, 2).float()
    x = torch.randn(1, 3, 6, 6)
    fused = fold_conv_bn(conv, bn)
    assert fused.weight.dtype == torch.float32
    torch.testing.assert_close(fused(x), bn(conv(x)), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="4 channels"):
        fold_conv_bn(conv, nn.BatchNorm2d(4).eval())


@pytest.mark.parametrize("groups,kernel", [(1, 1), (1, 3), (2, 1), (6, 2)])
def test_fold_bn_into_following_conv_exact(groups, kernel):
    torch.manual_seed(kernel * 10 + groups)
    bn = _random_bn(6, 3)
    conv = nn.Conv2d(6, 4 if groups < 6 else 12, kernel, padding=0, groups=groups).double()
    fused = fold_bn_into_following_conv(bn, conv)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(fused(x), conv(bn(x)), rtol=0, atol=1e-12)


def test_fold_bn_into_following_conv_refuses_padding():
    with pytest.raises(ValueError, match="padding 0"):
        fold_bn_into_following_conv(_random_bn(4, 0), nn.Conv2d(4, 4, 3, padding=1).double())
    with pytest.raises(ValueError, match="takes 5"):
        fold_bn_into_following_conv(_random_bn(4, 0), nn.Conv2d(5, 4, 1).double())


def test_scale_and_affine_fold():
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    scale = torch.tensor([0.5, -2.0, 3.0, 1e-5], dtype=torch.float64)
    shift = torch.tensor([1.0, 0.0, -1.0, 2.0], dtype=torch.float64)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(scale_conv_output(conv, scale.view(4, 1, 1))(x), conv(x) * scale.view(1, 4, 1, 1),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(fold_affine_into_conv(conv, scale, shift)(x),
                               conv(x) * scale.view(1, 4, 1, 1) + shift.view(1, 4, 1, 1), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="expected 4"):
        scale_conv_output(conv, torch.ones(3))


def test_conv_to_channel_affine():
    conv = nn.Conv2d(5, 5, 1, groups=5).double()
    aff = conv_to_channel_affine(conv)
    assert isinstance(aff, ChannelAffine)
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(aff(x), conv(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(aff(x.contiguous(memory_format=torch.channels_last)), conv(x), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="depthwise 1x1"):
        conv_to_channel_affine(nn.Conv2d(5, 5, 3, padding=1, groups=5))
    with pytest.raises(ValueError, match="depthwise 1x1"):
        conv_to_channel_affine(nn.Conv2d(5, 5, 1))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("cin,cout,kernel,stride,groups", [(6, 10, 1, 1, 1), (8, 8, 3, 2, 8), (4, 6, 3, 1, 2)])
def test_conv_gelu_matches_conv_then_gelu(monkeypatch, channels_last, cin, cout, kernel, stride, groups):
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups)
    fused = with_gelu(conv)
    assert isinstance(fused, ConvGELU) and fused.weight is conv.weight and fused.bias is conv.bias
    assert list(fused.state_dict()) == ["weight", "bias"]
    x = torch.randn(2, cin, 13, 11) * 3
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    reference = nn.functional.gelu(conv(x))
    # Inference: the one-kernel oneDNN path where the build has it (it is on Linux x86 wheels).
    calls = []
    if ops._CONV_POINTWISE is not None:
        real = ops._CONV_POINTWISE
        monkeypatch.setattr(ops, "_CONV_POINTWISE", lambda *a: calls.append(a[7]) or real(*a))
    with torch.inference_mode():
        out = fused(x)
        assert calls == (["gelu"] if ops._CONV_POINTWISE is not None else [])
        fused.use_onednn = False  # standard operations only (export): exactly conv then GELU
        assert torch.equal(fused(x), reference.detach()) and len(calls) <= 1
        fused.use_onednn = True
    torch.testing.assert_close(out, reference.detach(), rtol=0, atol=1e-5)
    # Training / autograd: exactly conv then GELU, gradients included.
    y = fused(x)
    assert torch.equal(y, reference) and len(calls) <= 1
    gw = torch.autograd.grad(y.sum(), conv.weight)[0]
    torch.testing.assert_close(gw, torch.autograd.grad(reference.sum(), conv.weight)[0])
    with pytest.raises(ValueError, match="numeric padding"):
        with_gelu(nn.Conv2d(2, 2, 3, padding="same"))


def test_small_ops_equal_the_plain_ones():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 5, 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(gelu_(x.clone()), nn.functional.gelu(x), rtol=0, atol=0)
    up = upsample_channels_last(x, (9, 13))
    assert up.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(up, nn.functional.interpolate(x, size=(9, 13), mode="bilinear", align_corners=False),
                               rtol=0, atol=1e-12)
    heads = nn.Conv2d(8, 8, 1).double()
    attn = torch.randn(3, 8, 10, 12, generator=g, dtype=torch.float64)
    torch.testing.assert_close(mix_heads(heads, attn), heads(attn), rtol=0, atol=1e-12)
    seq = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6)).double()
    seq[1].load_state_dict(_random_bn(6, 4).state_dict())
    seq.eval()
    folded = fold_seq(seq)
    assert isinstance(folded, nn.Conv2d)
    y = torch.randn(1, 4, 5, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(folded(y), seq(y), rtol=0, atol=1e-12)
    other = nn.Sequential(nn.Conv2d(4, 6, 1), nn.ReLU())
    assert fold_seq(other) is other


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
        self.head = nn.Conv2d(3, 1, 1)

    def forward(self, x):
        return self.head(self.block(x))


class _ToyFused(FusedModule):
    def __init__(self, seq):
        super().__init__()
        self.conv = fold_seq(seq)

    def forward(self, x):
        return self.conv(x)


def test_fuse_model_contract():
    toy = _Toy()
    with pytest.raises(RuntimeError, match="eval"):
        fuse_model(toy)
    toy.eval()
    assert fuse_model(toy) is not toy and fused_module_count(fuse_model(toy)) == 0  # nothing registered
    fused = fuse_model(toy, inplace=True)
    assert fused is toy and fused_module_count(toy) == 0
    # a registered fuser swaps its module; the copy leaves the original untouched
    toy2 = _Toy()
    with torch.no_grad():
        toy2.block[1].running_var.uniform_(0.5, 2.0)
        toy2.block[1].running_mean.uniform_(-1, 1)
    toy2.eval()
    from segdet.deploy import fuse as fuse_lib
    try:
        register_fuser(nn.Sequential)(_ToyFused)
        with pytest.raises(KeyError, match="already has the fuser"):
            register_fuser(nn.Sequential)(_ToyFused)
        fast = fuse_model(toy2)
    finally:
        fuse_lib._FUSERS.pop(nn.Sequential)
    assert isinstance(toy2.block, nn.Sequential) and isinstance(fast.block, _ToyFused)
    assert fused_module_count(fast) == 1
    x = torch.randn(2, 2, 4, 4)
    torch.testing.assert_close(fast(x), toy2(x), rtol=0, atol=1e-5)
    fast.eval()  # train(False) is fine
    with pytest.raises(RuntimeError, match="cannot be trained"):
        fast.train()


# ----------------------------------------------------------------------------- fused models


def _randomise(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics / affines, layer scales, attention biases and classifier,
    with activations kept O(1) so that a 1e-4 tolerance is meaningful."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
        for name, p in model.named_parameters():
            if "layer_scale" in name or name.endswith(".gamma"):
                p.uniform_(0.01, 0.1, generator=g)
            elif "attention_biases_seg" in name:
                p.normal_(0.0, 1.0, generator=g)
            elif "channel_mul_conv.3" in name:  # DPG gate (zero-initialised)
                p.normal_(0.0, 0.1, generator=g)
            elif name.startswith("sem_seg_head.conv_seg."):
                p.normal_(0.0, 0.3, generator=g)


_PLAIN = (Mlp, FFN, AttnFFN, Attention4D, Attention4DDownsample, LGQuery, AttnDownsample, ConvDownsample, RCA, RCM,
          ConvNormAct, CGRSegHead)


def _check_variant(variant: str, sizes):
    torch.manual_seed(0)
    model = build_model(load_config(cgrseg_ade20k_config(variant), ["MODEL.DEVICE", "cpu"]))
    keys = list(model.state_dict())
    _randomise(model)
    model.eval()
    before = _state(model)
    fast = fuse_model(model)
    assert list(model.state_dict()) == keys  # the unfused model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(m, (_BatchNorm, nn.Dropout2d)) for m in fast.modules())
    assert not any(isinstance(m, _PLAIN) for m in fast.modules())  # every plain block was swapped
    assert isinstance(fast.sem_seg_head, FusedCGRSegHead) and fused_module_count(fast) > 20
    # conv + GELU pairs became single ConvGELU modules (stem, FFNs, RCM MLPs)
    assert sum(isinstance(m, ConvGELU) for m in fast.backbone.modules()) >= 2 + 2 * 4
    assert any(isinstance(m, ConvGELU) for m in fast.sem_seg_head.modules())
    assert not any(isinstance(m, nn.GELU) for m in fast.sem_seg_head.modules())
    g = torch.Generator().manual_seed(1)
    for h, w in sizes:
        image = torch.rand(3, h, w, generator=g) * 255
        with torch.inference_mode():
            ref = model([{"image": image}])[0]["sem_seg"]
            out = fast([{"image": image}])[0]["sem_seg"]
        assert out.shape == ref.shape == (150, h, w)
        assert ref.abs().max() > 1.0  # non-trivial logits
        assert (out - ref).abs().max().item() <= 1e-4
    return model, fast


def test_fused_cgrseg_t_matches_plain():
    model, fast = _check_variant("T", [(512, 512), (500, 380)])
    # idempotent: fusing again changes nothing
    image = torch.rand(3, 256, 192, generator=torch.Generator().manual_seed(2)) * 255
    with torch.inference_mode():
        once = fast([{"image": image}])[0]["sem_seg"]
        assert torch.equal(fuse_model(fast)([{"image": image}])[0]["sem_seg"], once)  # on a copy...
        assert fuse_model(fast, inplace=True) is fast  # ...and in place
        assert torch.equal(fast([{"image": image}])[0]["sem_seg"], once)
        # standard operations only (what an export traces): the same logits
        plain_ops = fuse_model(model, onednn=False)
        assert not any(m.use_onednn for m in plain_ops.modules() if isinstance(m, ConvGELU))
        assert (plain_ops([{"image": image}])[0]["sem_seg"] - once).abs().max().item() <= 1e-4
        # channels-last model (tools/benchmark.py --channels-last): same logits
        cl = copy.deepcopy(fast).to(memory_format=torch.channels_last)
        ref = model([{"image": image}])[0]["sem_seg"]
        assert (cl([{"image": image}])[0]["sem_seg"] - ref).abs().max().item() <= 1e-4
    # fused models are inference-only; the plain one still trains
    with pytest.raises(RuntimeError, match="cannot be trained"):
        fast.train()
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        fuse_model(model.backbone)


@pytest.mark.parametrize("variant", ["B", "L"])
def test_fused_cgrseg_b_l_match_plain(variant):  # a few seconds each
    _check_variant(variant, [(512, 512), (500, 380)])
