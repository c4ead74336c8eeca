"""Optimizer parameter groups and the poly learning-rate schedule."""
import math
import os

import pytest
import torch
from torch import nn

from segdet.config import get_segdet_cfg
from segdet.engine import WarmupPolyParamScheduler, build_lr_scheduler, build_optimizer, build_param_groups


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.backbone.talking_head1 = nn.Conv2d(4, 4, 1)  # must not be caught by "sem_seg_head."
        self.sem_seg_head = nn.Sequential(nn.Conv2d(4, 2, 1), nn.LayerNorm(2))


def _groups_by_name(**kwargs):
    defaults = dict(base_lr=0.1, weight_decay=0.01, weight_decay_norm=0.0, weight_decay_bias=0.01,
                    head_lr_multiplier=10.0, head_prefixes=("sem_seg_head.",))
    defaults.update(kwargs)
    return {g["param_names"][0]: g for g in build_param_groups(_Net(), **defaults)}


def test_head_multiplier_and_norm_decay():
    g = _groups_by_name()
    assert g["backbone.0.weight"]["lr"] == pytest.approx(0.1)
    assert g["backbone.0.weight"]["weight_decay"] == 0.01
    assert g["backbone.1.weight"]["weight_decay"] == 0.0  # BN
    assert g["backbone.1.bias"]["weight_decay"] == 0.0  # BN bias: the norm rule wins
    assert g["backbone.talking_head1.weight"]["lr"] == pytest.approx(0.1)  # not the head
    assert g["sem_seg_head.0.weight"]["lr"] == pytest.approx(1.0)
    assert g["sem_seg_head.1.weight"]["lr"] == pytest.approx(1.0)  # head norm: lr x10 ...
    assert g["sem_seg_head.1.weight"]["weight_decay"] == 0.0  # ... and no decay
    assert len(g) == 10  # 5 modules x (weight, bias)


def test_prefix_matches_inside_a_wrapper():
    model = nn.Module()
    model.student = _Net()
    names = {g["param_names"][0]: g["lr"] for g in build_param_groups(
        model, base_lr=1.0, weight_decay=0, weight_decay_norm=0, weight_decay_bias=0,
        head_lr_multiplier=10.0, head_prefixes=("sem_seg_head.",))}
    assert names["student.sem_seg_head.0.weight"] == 10.0
    assert names["student.backbone.0.weight"] == 1.0


def test_build_optimizer_adamw_and_bad_name():
    cfg = get_segdet_cfg()
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BETAS = (0.8, 0.9)
    opt = build_optimizer(cfg, _Net())
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.9)
    cfg.SOLVER.OPTIMIZER = "LION"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(cfg, _Net())


def test_optimizer_merges_groups_with_the_same_hyper_parameters():
    """One group per distinct (lr, decay), as detectron2's reduce_param_groups: 10 parameters,
    4 kinds (backbone conv weight+bias 0.1/0.01; BN 0.1/0; head conv 1.0/0.01; head LN 1.0/0)."""
    cfg = get_segdet_cfg()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WEIGHT_DECAY_NORM = 0.1, 0.01, 0.0
    cfg.SOLVER.HEAD_LR_MULTIPLIER = 10.0
    net = _Net()
    opt = build_optimizer(cfg, net)
    kinds = {(round(g["lr"], 9), g["weight_decay"]): sorted(g["param_names"]) for g in opt.param_groups}
    assert kinds == {
        (0.1, 0.01): ["backbone.0.bias", "backbone.0.weight", "backbone.talking_head1.bias",
                      "backbone.talking_head1.weight"],
        (0.1, 0.0): ["backbone.1.bias", "backbone.1.weight"],
        (1.0, 0.01): ["sem_seg_head.0.bias", "sem_seg_head.0.weight"],
        (1.0, 0.0): ["sem_seg_head.1.bias", "sem_seg_head.1.weight"],
    }
    params = {id(p) for g in opt.param_groups for p in g["params"]}
    assert params == {id(p) for p in net.parameters()}
    for g in opt.param_groups:  # names stay aligned with their tensors
        named = dict(net.named_parameters())
        assert all(named[n] is p for n, p in zip(g["param_names"], g["params"]))


def test_poly_schedule_matches_mmcv_formula():
    sched = WarmupPolyParamScheduler(power=1.0, warmup_length=1500 / 160000, warmup_factor=1e-6)
    for t in (0, 10, 750, 1499, 1500, 80000, 159999):
        where = t / 160000
        regular = (1 - where) ** 1.0
        expected = regular * (1 - (1 - t / 1500) * (1 - 1e-6)) if t < 1500 else regular
        assert sched(where) == pytest.approx(expected, rel=1e-9), t
    assert WarmupPolyParamScheduler(power=0.9, constant_ending=0.1)(1.0) == pytest.approx(0.1)


@pytest.mark.parametrize("warmup_method,constant_ending", [("linear", 0.0), ("linear", 0.3), ("constant", 0.3)])
def test_warmup_poly_lr_is_deeplabs(warmup_method, constant_ending):
    """segdet's "WarmupPolyLR" steps an optimizer as detectron2 DeepLab's WarmupPolyLR does
    (same name, same SOLVER.POLY_LR_POWER / POLY_LR_CONSTANT_ENDING keys)."""
    deeplab = pytest.importorskip("detectron2.projects.deeplab.lr_scheduler")
    cfg = get_segdet_cfg()
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR = 100, 10, 0.01
    cfg.SOLVER.WARMUP_METHOD, cfg.SOLVER.POLY_LR_POWER = warmup_method, 0.9
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING, cfg.SOLVER.BASE_LR = constant_ending, 0.5
    ours_opt, ref_opt = (torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.5) for _ in range(2))
    ours = build_lr_scheduler(cfg, ours_opt)
    ref = deeplab.WarmupPolyLR(ref_opt, max_iters=100, warmup_factor=0.01, warmup_iters=10,
                               warmup_method=warmup_method, power=0.9, constant_ending=constant_ending)
    for t in range(100):
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9), t
        ours_opt.step(), ref_opt.step()
        ours.step(), ref.step()


def test_lr_scheduler_steps_an_optimizer():
    cfg = get_segdet_cfg()
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.POLY_LR_POWER = 100, 0, 2.0
    cfg.SOLVER.BASE_LR = 0.5
    opt = build_optimizer(cfg, _Net())
    sched = build_lr_scheduler(cfg, opt)
    for _ in range(50):
        opt.step()
        sched.step()
    lrs = {name: g["lr"] for g in opt.param_groups for name in g["param_names"]}
    assert lrs["backbone.0.weight"] == pytest.approx(0.5 * (1 - 50 / 100) ** 2)
    assert math.isclose(lrs["sem_seg_head.0.weight"], lrs["backbone.0.weight"])  # multiplier 1


def _fused_and_default_after_steps(cfg, make_net, loss_fn, steps=3):
    """Two copies of ``make_net()`` (float64) stepped by ``cfg``'s optimizer, default and fused,
    on the same losses; returns (start state, default net, fused net)."""
    torch.manual_seed(0)
    nets = [make_net().double() for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    start = {k: v.clone() for k, v in nets[0].state_dict().items()}
    opts = []
    for net, fused in zip(nets, (False, True)):
        c = cfg.clone()
        c.defrost()
        c.SOLVER.FUSED = fused
        opts.append(build_optimizer(c, net))
    assert not opts[0].defaults.get("fused") and opts[1].defaults["fused"] is True
    for step in range(steps):
        for net, opt in zip(nets, opts):
            torch.manual_seed(100 + step)  # the same dropout masks for both
            opt.zero_grad()
            loss_fn(net).backward()
            opt.step()
    return start, nets[0], nets[1]


@pytest.mark.parametrize("name", ["SGD", "ADAMW"])
def test_fused_optimizer_gives_the_default_update(name):
    """SOLVER.FUSED picks torch's fused kernel and changes nothing but the speed.

    Compared in float64 on a loss whose every parameter has an O(0.01-1) gradient. (In float32,
    a parameter whose true gradient is ~0, e.g. the output of a LayerNorm over 2 channels or a
    bias before a BatchNorm, gets a gradient of pure rounding noise, and Adam's normalisation
    turns that noise into lr-sized steps in any direction: no tolerance fits every CPU.)"""
    class Net(_Net):
        def __init__(self):
            super().__init__()
            self.backbone[0] = nn.Conv2d(3, 4, 3, bias=False)  # a bias before BN has no gradient
            self.sem_seg_head = nn.Sequential(nn.Conv2d(4, 8, 1), nn.LayerNorm(8))

    x, target = torch.randn(2, 3, 8, 8).double(), torch.randn(2, 6, 6, 8).double()

    def loss_fn(net):
        y = net.sem_seg_head[0](net.backbone.talking_head1(net.backbone(x)))
        return (net.sem_seg_head[1](y.permute(0, 2, 3, 1)) - target).square().mean()

    cfg = get_segdet_cfg()
    cfg.SOLVER.OPTIMIZER = name
    cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY = 0.1, 0.9, 0.01
    start, default, fused = _fused_and_default_after_steps(cfg, Net, loss_fn)
    for (key, a), b in zip(default.state_dict().items(), fused.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=key)
        if key.endswith("weight") or key.endswith("bias"):
            assert (a - start[key]).abs().min() > 1e-4, key  # every weight did move


def test_fused_adamw_on_cgrseg_gives_the_default_update():
    """The same on a real model: the sample CGRSeg-T config's AdamW parameter groups (head lr x10,
    norm decay 0), three training steps on a random batch."""
    from detectron2.modeling import build_model

    from segdet.utils.config_io import load_config
    from segdet.utils.synthetic import synthetic_batch

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = load_config(os.path.join(repo, "projects/CGRSeg/configs/Samples/cgrseg_t_street.yaml"), ["MODEL.CGRSEG.NORM", "BN"])
    assert cfg.SOLVER.OPTIMIZER == "ADAMW"
    batch = synthetic_batch(cfg, 64, 64, n=2)
    for item in batch:
        item["image"] = item["image"].double()

    start, default, fused = _fused_and_default_after_steps(
        cfg, lambda: build_model(cfg), lambda net: sum(net(batch).values()))
    moved = 0
    for (key, a), b in zip(default.named_parameters(), fused.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=key)
        moved += int(not torch.equal(a, start[key]))
    assert moved > 0.9 * len(list(default.parameters()))
