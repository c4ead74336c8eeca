"""SOLVER.PARAMWISE_RULE "mmcv": the parameter groups of mmcv 1.x's DefaultOptimizerConstructor
with ``paramwise_cfg=dict(custom_keys=...)``, the official CGRSeg / SSA optimizer.

The reference below is written from mmcv's rule, not from segdet's code: it walks the modules
as mmcv's ``add_params`` does (``f"{prefix}.{name}"`` per module, ``recurse=False``), sorts the
keys alphabetically and then by length, longest first, and lets the first key that is a
substring of the name decide (lr = base * lr_mult, decay = base * decay_mult, defaults 1); a
parameter without a key keeps the base values (no bias/norm option is set in the official config).
"""
import pytest
import torch
from torch import nn

from detectron2.modeling import build_model

from segdet.config import get_segdet_cfg
from segdet.engine import build_optimizer
from segdet.engine.optimizer import build_mmcv_param_groups
from segdet.utils.config_io import load_config

from _tools import cgrseg_ade20k_config

# local_configs/cgrseg/cgrseg-t_ade20k_160k.py (and the SSA repo's cgrseg configs)
OFFICIAL_LR, OFFICIAL_WD = 0.00012, 0.01
OFFICIAL_CUSTOM_KEYS = {"absolute_pos_embed": dict(decay_mult=0.0), "head": dict(lr_mult=10.0),
                        "norm": dict(decay_mult=0.0)}


def _mmcv_reference(model: nn.Module, base_lr: float, base_wd: float, custom_keys: dict) -> dict:
    """{parameter name: (lr, weight decay)} by mmcv's add_params."""
    keys = sorted(sorted(custom_keys), key=len, reverse=True)
    out = {}

    def add(module, prefix):
        for name, param in module.named_parameters(recurse=False):
            lr, wd = base_lr, base_wd
            for key in keys:
                if key in f"{prefix}.{name}":
                    lr = base_lr * custom_keys[key].get("lr_mult", 1.0)
                    wd = base_wd * custom_keys[key].get("decay_mult", 1.0)
                    break
            out[f"{prefix}.{name}" if prefix else name] = (lr, wd)
        for child_name, child in module.named_children():
            add(child, f"{prefix}.{child_name}" if prefix else child_name)

    add(model, "")
    return out


def _optimizer_settings(optimizer) -> dict:
    return {n: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for n in g["param_names"]}


@pytest.fixture(scope="module")
def cgrseg_t():
    cfg = load_config(cgrseg_ade20k_config("T"), ["MODEL.DEVICE", "cpu"])
    return cfg, build_model(cfg)


def test_cgrseg_t_groups_are_the_official_ones(cgrseg_t):
    cfg, model = cgrseg_t
    assert cfg.SOLVER.PARAMWISE_RULE == "mmcv"
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY) == (OFFICIAL_LR, OFFICIAL_WD)
    ours = _optimizer_settings(build_optimizer(cfg, model))
    ref = _mmcv_reference(model, OFFICIAL_LR, OFFICIAL_WD, OFFICIAL_CUSTOM_KEYS)
    assert set(ours) == set(ref) == {n for n, _ in model.named_parameters()}
    for name, (lr, wd) in ref.items():
        assert ours[name][0] == pytest.approx(lr, rel=1e-12) and ours[name][1] == pytest.approx(wd, abs=1e-15), name

    # A few parameters by hand (lr, decay):
    expected = {
        "sem_seg_head.linear_fuse.bn.weight": (1.2e-3, 0.01),  # head SyncBN: head x10 wins over norm
        "sem_seg_head.SIM.0.fuse1.bn.bias": (1.2e-3, 0.01),
        "sem_seg_head.meta.0.norm.weight": (1.2e-3, 0.01),  # RCM BN named "norm", in the head
        "sem_seg_head.lgc.channel_mul_conv.1.weight": (1.2e-3, 0.01),  # DPG LayerNorm
        "sem_seg_head.conv_seg.weight": (1.2e-3, 0.01),  # head conv
        "backbone.patch_embed.0.weight": (1.2e-4, 0.01),  # backbone conv
        "backbone.patch_embed.1.weight": (1.2e-4, 0.01),  # backbone BN not named *norm*: keeps decay
        "backbone.network.4.7.token_mixer.q.1.bias": (1.2e-4, 0.01),  # likewise
        "backbone.network.0.0.mlp.norm1.weight": (1.2e-4, 0.0),  # backbone *norm*: no decay
        "backbone.network.0.0.mlp.mid_norm.bias": (1.2e-4, 0.0),
        "backbone.network.4.7.token_mixer.talking_head1.weight": (1.2e-3, 0.01),  # "head" in the backbone
        "backbone.network.4.7.token_mixer.attention_biases_seg": (1.2e-4, 0.01),
    }
    for name, (lr, wd) in expected.items():
        assert ours[name][0] == pytest.approx(lr, rel=1e-12) and ours[name][1] == pytest.approx(wd, abs=1e-15), name

    # Tensors per (lr, decay): 16 talking-head tensors (4 attention blocks x 2 convs x
    # weight/bias) join the head's; 30 of the 95 backbone BNs are not named *norm*.
    counts = {}
    for lr, wd in ours.values():
        counts[(round(lr, 9), wd)] = counts.get((round(lr, 9), wd), 0) + 1
    assert counts == {(1.2e-4, 0.01): 282, (1.2e-4, 0.0): 130, (1.2e-3, 0.01): 171}
    assert sum(1 for n, (lr, _) in ours.items() if n.startswith("backbone.") and lr > 2e-4) == 16
    no_norm_bns = [n for n, m in model.backbone.named_modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm) and "norm" not in n]
    assert len(no_norm_bns) == 30


def test_the_segdet_rule_differs_there(cgrseg_t):
    """The "segdet" rule (no decay on any norm, x10 on sem_seg_head.* only) gives other values
    exactly where the official rule is particular, so the test above can tell them apart."""
    cfg, model = cgrseg_t
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.PARAMWISE_RULE = "segdet"
    ours = _optimizer_settings(build_optimizer(cfg, model))
    assert ours["sem_seg_head.linear_fuse.bn.weight"][1] == 0.0
    assert ours["backbone.patch_embed.1.weight"][1] == 0.0
    assert ours["backbone.network.4.7.token_mixer.talking_head1.weight"][0] == pytest.approx(1.2e-4)


def test_ssa_configs_use_the_same_rule():
    for variant in ("B-SSA", "L-SSA"):
        cfg = load_config(cgrseg_ade20k_config(variant), [])
        assert cfg.SOLVER.PARAMWISE_RULE == "mmcv"
        assert {k: (lr, wd) for k, lr, wd in cfg.SOLVER.PARAMWISE_CUSTOM_KEYS} == {
            "absolute_pos_embed": (1.0, 0.0), "head": (10.0, 1.0), "norm": (1.0, 0.0)}


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1))  # top level: mmcv matches ".scale"
        self.backbone = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1))
        self.backbone.norm_abcd = nn.LayerNorm(1)
        self.sem_seg_head = nn.Module()
        self.sem_seg_head.fuse = nn.Conv2d(1, 1, 1)
        self.sem_seg_head.fuse_norm = nn.BatchNorm2d(1)


@pytest.mark.parametrize("keys", [
    (("head", 10.0, 1.0), ("norm", 1.0, 0.0), ("fuse_norm", 2.0, 0.5), ("abcd", 3.0, 1.0), ("bcde", 1.0, 1.0),
     (".scale", 4.0, 0.0)),
    (("bcde", 1.0, 1.0), (".scale", 4.0, 0.0), ("abcd", 3.0, 1.0), ("fuse_norm", 2.0, 0.5), ("norm", 1.0, 0.0),
     ("head", 10.0, 1.0)),
])
def test_longest_key_wins_then_alphabetical_whatever_the_order(keys):
    model = _Toy()
    model.backbone.norm_abcd.bcde = nn.Parameter(torch.zeros(1))  # name holds "abcd" and "bcde"
    got = {g["param_names"][0]: (g["lr"], g["weight_decay"])
           for g in build_mmcv_param_groups(model, base_lr=1.0, weight_decay=0.1, custom_keys=keys)}
    ref = _mmcv_reference(model, 1.0, 0.1, {k: dict(lr_mult=lr, decay_mult=wd) for k, lr, wd in keys})
    assert set(got) == set(ref)
    for name in ref:
        assert got[name] == pytest.approx(ref[name]), name
    assert got["sem_seg_head.fuse_norm.weight"] == pytest.approx((2.0, 0.05))  # longest: fuse_norm
    assert got["sem_seg_head.fuse.weight"] == pytest.approx((10.0, 0.1))
    assert got["backbone.norm_abcd.weight"] == pytest.approx((3.0, 0.1))  # "abcd" (4) = "norm" (4): alphabetical
    assert got["backbone.norm_abcd.bcde"] == pytest.approx((3.0, 0.1))  # "abcd" before "bcde"
    assert got["backbone.1.weight"] == pytest.approx((1.0, 0.1))  # a BN without a key: base values
    assert got["backbone.0.bias"] == pytest.approx((1.0, 0.1))
    assert got["scale"] == pytest.approx((4.0, 0.0))


@pytest.mark.parametrize("rule,keys,match", [
    ("mmcv", (("head", 10.0),), r"SOLVER.PARAMWISE_CUSTOM_KEYS: expected entries \(key, lr_mult, decay_mult\)"),
    ("mmcv", (("", 1.0, 1.0),), "SOLVER.PARAMWISE_CUSTOM_KEYS: expected"),
    ("mmcv", (("head", -1.0, 1.0),), "SOLVER.PARAMWISE_CUSTOM_KEYS: expected"),
    ("mmcv", (("head", 10.0, 1.0), ("head", 1.0, 1.0)), "key 'head' is listed twice"),
    ("official", (), r"SOLVER.PARAMWISE_RULE must be one of \['segdet', 'mmcv'\], got 'official'"),
])
def test_bad_settings_are_refused(rule, keys, match):
    cfg = get_segdet_cfg()
    cfg.SOLVER.PARAMWISE_RULE, cfg.SOLVER.PARAMWISE_CUSTOM_KEYS = rule, keys
    with pytest.raises(ValueError, match=match):
        build_optimizer(cfg, _Toy())
