"""Keys of training: ``SOLVER.*`` (optimizer, parameter groups, poly schedule, DDP, the
best-checkpoint keeper) and ``MODEL.TRUST_PICKLE`` (plain unpickling of weight files)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_solver_config", "add_checkpoint_config", "add_best_checkpoint_config"]


def add_solver_config(cfg: CN) -> None:
    # "SGD" (detectron2's default) or "ADAMW".
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BETAS = (0.9, 0.999)
    # PyTorch's fused optimizer kernel: one pass over parameters, gradients and momentum (about
    # 2.5x faster updates on the CPU, the same update rule). Where the torch build or the
    # parameters' device has no fused kernel, the default implementation is used.
    cfg.SOLVER.FUSED = True
    # Learning-rate multiplier for parameters whose name starts with one of HEAD_PREFIXES
    # (e.g. the semantic head: lr x10 in the CGRSeg recipe). Prefixes are matched on the full
    # parameter name, so a backbone module called "talking_head" is never caught by accident.
    cfg.SOLVER.HEAD_LR_MULTIPLIER = 1.0
    cfg.SOLVER.HEAD_PREFIXES = ("sem_seg_head.",)
    # --- Parameter-group rule (segdet/engine/optimizer.py) ---
    # "segdet": detectron2's WEIGHT_DECAY_NORM / WEIGHT_DECAY_BIAS / BIAS_LR_FACTOR, and
    # HEAD_LR_MULTIPLIER on HEAD_PREFIXES.
    # "mmcv": mmcv 1.x paramwise_cfg custom_keys (the official CGRSeg / SSA recipe); only
    # PARAMWISE_CUSTOM_KEYS applies (WEIGHT_DECAY_NORM/BIAS, BIAS_LR_FACTOR, HEAD_LR_MULTIPLIER
    # and HEAD_PREFIXES are not used): ((key, lr_mult, decay_mult), ...); a parameter whose name
    # contains keys takes the longest one (ties: alphabetically first), else base lr and decay.
    cfg.SOLVER.PARAMWISE_RULE = "segdet"
    cfg.SOLVER.PARAMWISE_CUSTOM_KEYS = ()
    # Poly schedule used when SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR", DeepLab's keys and
    # schedule (segdet/engine/lr_scheduler.py): lr = base * warmup(t) * (1 - t / MAX_ITER) ** POWER,
    # and once warm-up is over never below base * POLY_LR_CONSTANT_ENDING (a floor; mmcv's
    # min_lr instead rescales the curve to end at it: the same when 0). Set only if absent
    # (add_deeplab_config adds the same keys).
    if "POLY_LR_POWER" not in cfg.SOLVER:
        cfg.SOLVER.POLY_LR_POWER = 0.9
    if "POLY_LR_CONSTANT_ENDING" not in cfg.SOLVER:
        cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0
    # Passed to DistributedDataParallel (needed only by models that skip parameters in a step).
    cfg.SOLVER.DDP_FIND_UNUSED_PARAMETERS = False


def add_checkpoint_config(cfg: CN) -> None:
    # Allow plain (code-executing) unpickling of MODEL.WEIGHTS, DISTILL.TEACHER.WEIGHTS and the
    # --resume checkpoint: .pkl files and .pth files holding Python objects besides tensors.
    # Only for files of trusted origin (tools/train_net.py --trust-pickle sets it); otherwise
    # convert them once with tools/convert_d2_pkl.py.
    cfg.MODEL.TRUST_PICKLE = False


def add_best_checkpoint_config(cfg: CN) -> None:
    # Keep OUTPUT_DIR/model_best.pth: the weights of the evaluation (every TEST.EVAL_PERIOD
    # iterations, which must then be > 0, and at the end) with the best METRIC so far.
    cfg.SOLVER.BEST_CHECKPOINT = CN()
    cfg.SOLVER.BEST_CHECKPOINT.ENABLED = False
    # The metric's name as in metrics.json, e.g. "bbox/AP50" ("<dataset>/bbox/AP50" when
    # DATASETS.TEST has several sets). "" = the first test set's main metric: "bbox/AP" (coco) or
    # "sem_seg/mIoU" (sem_seg).
    cfg.SOLVER.BEST_CHECKPOINT.METRIC = ""
    # "max": higher is better; "min": lower is better.
    cfg.SOLVER.BEST_CHECKPOINT.MODE = "max"
