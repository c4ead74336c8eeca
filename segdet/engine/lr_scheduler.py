"""Poly learning-rate schedule with mmcv-style multiplicative linear warm-up."""
from fvcore.common.param_scheduler import ParamScheduler

from detectron2.solver import build_lr_scheduler as d2_build_lr_scheduler
from detectron2.solver.lr_scheduler import LRMultiplier

__all__ = ["WarmupPolyParamScheduler", "build_lr_scheduler"]


class WarmupPolyParamScheduler(ParamScheduler):
    """LR multiplier at relative progress ``where = t / max_iter``:

    ``poly(where) = end + (1 - end) * (1 - where) ** power`` (mmcv's ``PolyLrUpdaterHook`` with
    ``min_lr = end * base_lr``), multiplied during warm-up (``where < warmup_length``) by
    ``1 - (1 - where / warmup_length) * (1 - warmup_factor)`` (mmcv's linear warm-up, which
    scales the scheduled value rather than ramping to it).
    """

    def __init__(self, power: float, end_factor: float = 0.0, warmup_length: float = 0.0,
                 warmup_factor: float = 1.0, warmup_method: str = "linear"):
        if warmup_method not in ("linear", "constant"):
            raise ValueError(f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got {warmup_method!r}")
        self.power, self.end_factor = power, end_factor
        self.warmup_length, self.warmup_factor = warmup_length, warmup_factor
        self.warmup_method = warmup_method

    def __call__(self, where: float) -> float:
        where = min(max(where, 0.0), 1.0)
        value = self.end_factor + (1.0 - self.end_factor) * (1.0 - where) ** self.power
        if where < self.warmup_length:
            if self.warmup_method == "constant":
                return value * self.warmup_factor
            progress = where / self.warmup_length
            value *= 1.0 - (1.0 - progress) * (1.0 - self.warmup_factor)
        return value


def build_lr_scheduler(cfg, optimizer):
    """``WarmupPolyLR`` (segdet) or any of detectron2's schedulers."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return d2_build_lr_scheduler(cfg, optimizer)
    max_iter = cfg.SOLVER.MAX_ITER
    sched = WarmupPolyParamScheduler(
        power=cfg.SOLVER.POLY_LR_POWER,
        end_factor=cfg.SOLVER.POLY_LR_END_FACTOR,
        warmup_length=min(cfg.SOLVER.WARMUP_ITERS / max_iter, 1.0),
        warmup_factor=cfg.SOLVER.WARMUP_FACTOR,
        warmup_method=cfg.SOLVER.WARMUP_METHOD,
    )
    return LRMultiplier(optimizer, multiplier=sched, max_iter=max_iter)
