"""Optimizer parameter groups and the poly learning-rate schedule."""
import math

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
    return {g["name"]: g for g in build_param_groups(_Net(), **defaults)}


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
    names = {g["name"]: g["lr"] for g in build_param_groups(
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


def test_poly_schedule_matches_mmcv_formula():
    sched = WarmupPolyParamScheduler(power=1.0, warmup_length=1500 / 160000, warmup_factor=1e-6)
    for t in (0, 10, 750, 1499, 1500, 80000, 159999):
        where = t / 160000
        regular = (1 - where) ** 1.0
        expected = regular * (1 - (1 - t / 1500) * (1 - 1e-6)) if t < 1500 else regular
        assert sched(where) == pytest.approx(expected, rel=1e-9), t
    assert WarmupPolyParamScheduler(power=0.9, end_factor=0.1)(1.0) == pytest.approx(0.1)


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
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["backbone.0.weight"] == pytest.approx(0.5 * (1 - 50 / 100) ** 2)
    assert math.isclose(lrs["sem_seg_head.0.weight"], lrs["backbone.0.weight"])  # multiplier 1


@pytest.mark.parametrize("name", ["SGD", "ADAMW"])
def test_fused_optimizer_gives_the_default_update(name):
    """SOLVER.FUSED picks torch's fused kernel and changes nothing but the speed."""
    torch.manual_seed(0)
    nets = [_Net() for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    x = torch.randn(2, 3, 8, 8)
    start = {k: v.clone() for k, v in nets[0].state_dict().items()}
    opts = []
    for net, fused in zip(nets, (False, True)):
        cfg = get_segdet_cfg()
        cfg.SOLVER.OPTIMIZER, cfg.SOLVER.FUSED = name, fused
        cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY = 0.1, 0.9, 0.01
        opts.append(build_optimizer(cfg, net))
    assert not opts[0].defaults.get("fused") and opts[1].defaults["fused"] is True
    for _ in range(3):
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            y = net.sem_seg_head[0](net.backbone.talking_head1(net.backbone(x)))
            net.sem_seg_head[1](y.permute(0, 2, 3, 1)).sin().mean().backward()
            opt.step()
    for (key, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
        # Adam's normalised steps amplify rounding where gradients are tiny: 1e-4 of 0.1-0.3 moves
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4 if name == "ADAMW" else 1e-6, msg=key)
        if key.endswith("weight"):
            assert not torch.equal(a, start[key]), key  # the steps did move the weights
