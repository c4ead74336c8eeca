"""DeepLab's poly learning-rate schedule ("WarmupPolyLR") as an fvcore ``ParamScheduler``."""
from fvcore.common.param_scheduler import ParamScheduler

from detectron2.solver import build_lr_scheduler as d2_build_lr_scheduler
from detectron2.solver.lr_scheduler import LRMultiplier

__all__ = ["WarmupPolyParamScheduler", "build_lr_scheduler"]


class WarmupPolyParamScheduler(ParamScheduler):
    """LR multiplier at relative progress ``where = t / max_iter``, detectron2 DeepLab's
    ``WarmupPolyLR`` (``detectron2.projects.deeplab``, the same config keys):

    ``warmup(where) * (1 - where) ** power``, and ``constant_ending`` instead whenever warm-up is
    over (``warmup == 1``) and the poly value falls below it (a floor; DeepLab's
    ``POLY_LR_CONSTANT_ENDING``). Linear warm-up (``where < warmup_length``) is detectron2's
    ``warmup_factor * (1 - a) + a`` with ``a = where / warmup_length``; this scales the scheduled
    value and equals mmcv's linear warm-up (``1 - (1 - a) * (1 - warmup_ratio)``), so mmseg's
    ``poly`` recipes with ``min_lr=0`` are reproduced exactly. (mmcv's ``min_lr > 0`` rescales the
    curve to ``min + (base - min) * (1 - where) ** power`` instead of flooring it.)
    Unlike DeepLab's class, ``where`` is clamped to [0, 1]: past ``max_iter`` the end value holds.
    """

    def __init__(self, power: float, constant_ending: float = 0.0, warmup_length: float = 0.0,
                 warmup_factor: float = 1.0, warmup_method: str = "linear"):
        if warmup_method not in ("linear", "constant"):
            raise ValueError(f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got {warmup_method!r}")
        self.power, self.constant_ending = power, constant_ending
        self.warmup_length, self.warmup_factor = warmup_length, warmup_factor
        self.warmup_method = warmup_method

    def _warmup(self, where: float) -> float:
        if where >= self.warmup_length:
            return 1.0
        if self.warmup_method == "constant":
            return self.warmup_factor
        alpha = where / self.warmup_length
        return self.warmup_factor * (1.0 - alpha) + alpha

    def __call__(self, where: float) -> float:
        where = min(max(where, 0.0), 1.0)
        warmup = self._warmup(where)
        poly = (1.0 - where) ** self.power
        if self.constant_ending > 0 and warmup == 1.0 and poly < self.constant_ending:
            return self.constant_ending
        return warmup * poly


def build_lr_scheduler(cfg, optimizer):
    """``WarmupPolyLR`` (DeepLab's poly schedule, above) or any of detectron2's schedulers."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return d2_build_lr_scheduler(cfg, optimizer)
    max_iter = cfg.SOLVER.MAX_ITER
    sched = WarmupPolyParamScheduler(
        power=cfg.SOLVER.POLY_LR_POWER,
        constant_ending=cfg.SOLVER.POLY_LR_CONSTANT_ENDING,
        warmup_length=min(cfg.SOLVER.WARMUP_ITERS / max_iter, 1.0),
        warmup_factor=cfg.SOLVER.WARMUP_FACTOR,
        warmup_method=cfg.SOLVER.WARMUP_METHOD,
    )
    return LRMultiplier(optimizer, multiplier=sched, max_iter=max_iter)
