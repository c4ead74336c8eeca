"""Start-up validation of config values: ranges, lengths and choices, from a table of rules.

yacs checks a value's type against its default; it cannot know that ``SOLVER.MAX_ITER -5`` runs
nothing or that ``SOLVER.CHECKPOINT_PERIOD 0`` divides by zero after the first iteration.
:data:`RULES` maps a key (or an ``fnmatch`` pattern such as ``MODEL.*.NUM_CLASSES``) to what its
value must be; :func:`check_config` reports every value that breaks a rule in one line.
Add a rule here for any key users are likely to get wrong.
"""
import fnmatch
import math
from typing import Any, Dict, List, Optional

from detectron2.config import CfgNode

from .errors import ConfigError

__all__ = ["Number", "Seq", "OneOf", "RULES", "config_problems", "check_config"]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Number:
    """A finite number (``integer=True``: an int) within optional bounds; ``none_ok``: or None."""

    def __init__(self, *, integer: bool = False, gt=None, ge=None, lt=None, le=None, none_ok: bool = False):
        self.integer, self.gt, self.ge, self.lt, self.le, self.none_ok = integer, gt, ge, lt, le, none_ok

    def describe(self) -> str:
        bounds = [f"{op} {b}" for op, b in ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
                  if b is not None]
        text = ("an integer" if self.integer else "a finite number") + (" " + " and ".join(bounds) if bounds else "")
        return text + (" (or None)" if self.none_ok else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.none_ok
        if not _is_number(value) or (self.integer and not isinstance(value, int)) or not math.isfinite(value):
            return False
        return ((self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
                and (self.lt is None or value < self.lt) and (self.le is None or value <= self.le))


class Seq:
    """A list/tuple whose elements each satisfy ``item``, optionally of a given length and in
    (non-strictly with ``increasing="non-strict"``) increasing order."""

    def __init__(self, item: Number, *, length: Optional[int] = None, min_length: int = 0,
                 increasing=False, none_ok: bool = False):
        self.item, self.length, self.min_length = item, length, min_length
        self.increasing, self.none_ok = increasing, none_ok

    def describe(self) -> str:
        size = f"{self.length} values" if self.length is not None else (
            f"at least {self.min_length} value(s)" if self.min_length else "a list")
        order = {True: ", increasing", "non-strict": ", in non-decreasing order"}.get(self.increasing, "")
        return f"{size}, each {self.item.describe()}{order}" + (" (or None)" if self.none_ok else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.none_ok
        if not isinstance(value, (list, tuple)) or not all(self.item.accepts(v) for v in value):
            return False
        if (self.length is not None and len(value) != self.length) or len(value) < self.min_length:
            return False
        pairs = list(zip(value, value[1:]))
        if self.increasing is True:
            return all(a < b for a, b in pairs)
        if self.increasing == "non-strict":
            return all(a <= b for a, b in pairs)
        return True


class OneOf:
    def __init__(self, *choices: str):
        self.choices = choices

    def describe(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def accepts(self, value: Any) -> bool:
        return value in self.choices


POSITIVE_INT, NON_NEGATIVE_INT = Number(integer=True, gt=0), Number(integer=True, ge=0)
POSITIVE, NON_NEGATIVE = Number(gt=0), Number(ge=0)
FRACTION = Number(ge=0, le=1)  # a probability / ratio in [0, 1]
DROPOUT = Number(ge=0, lt=1)
SIZE_PAIR = Seq(POSITIVE_INT, length=2)

#: key (or fnmatch pattern over the dotted key) -> rule its value must satisfy
RULES: Dict[str, Any] = {
    # solver
    "SOLVER.MAX_ITER": POSITIVE_INT,
    "SOLVER.CHECKPOINT_PERIOD": POSITIVE_INT,
    "SOLVER.IMS_PER_BATCH": POSITIVE_INT,
    "SOLVER.BASE_LR": POSITIVE,
    "SOLVER.BASE_LR_END": NON_NEGATIVE,
    "SOLVER.MOMENTUM": Number(ge=0, lt=1),
    "SOLVER.BETAS": Seq(Number(ge=0, lt=1), length=2),
    "SOLVER.WEIGHT_DECAY": NON_NEGATIVE,
    "SOLVER.WEIGHT_DECAY_NORM": NON_NEGATIVE,
    "SOLVER.WEIGHT_DECAY_BIAS": Number(ge=0, none_ok=True),
    "SOLVER.BIAS_LR_FACTOR": NON_NEGATIVE,
    "SOLVER.HEAD_LR_MULTIPLIER": NON_NEGATIVE,
    "SOLVER.GAMMA": POSITIVE,
    "SOLVER.STEPS": Seq(POSITIVE_INT, increasing=True),
    "SOLVER.WARMUP_ITERS": NON_NEGATIVE_INT,
    "SOLVER.WARMUP_FACTOR": FRACTION,
    "SOLVER.WARMUP_METHOD": OneOf("linear", "constant"),
    "SOLVER.POLY_LR_POWER": NON_NEGATIVE,
    "SOLVER.POLY_LR_CONSTANT_ENDING": FRACTION,
    "SOLVER.REFERENCE_WORLD_SIZE": NON_NEGATIVE_INT,
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": OneOf("value", "norm"),
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": POSITIVE,
    "SOLVER.BEST_CHECKPOINT.MODE": OneOf("max", "min"),
    # evaluation
    "TEST.EVAL_PERIOD": NON_NEGATIVE_INT,
    "TEST.DETECTIONS_PER_IMAGE": POSITIVE_INT,
    "TEST.VIS_NUM_IMAGES": NON_NEGATIVE_INT,
    "TEST.VIS_SCORE_THRESH": FRACTION,
    "TEST.VIS_TOPK": NON_NEGATIVE_INT,
    "TEST.COCO_EVAL_IMPL": OneOf("auto", "faster_coco_eval", "pycocotools"),
    "TEST.SEM_SEG.MODE": OneOf("whole", "slide"),
    "TEST.SEM_SEG.CROP_SIZE": SIZE_PAIR,
    "TEST.SEM_SEG.STRIDE": SIZE_PAIR,
    # data
    "DATALOADER.NUM_WORKERS": NON_NEGATIVE_INT,
    "DATALOADER.REPEAT_THRESHOLD": NON_NEGATIVE,
    "INPUT.DATASET_MAPPER_NAME": OneOf("default", "sem_seg", "multi_task"),
    "DATASETS.TRAIN_SAMPLING_RATIOS": Seq(POSITIVE),
    "INPUT.MIN_SIZE_TRAIN": Seq(POSITIVE_INT, min_length=1),
    "INPUT.MAX_SIZE_TRAIN": POSITIVE_INT,
    "INPUT.MIN_SIZE_TEST": NON_NEGATIVE_INT,  # 0 disables the test resize
    "INPUT.MAX_SIZE_TEST": POSITIVE_INT,
    "INPUT.CROP.TYPE": OneOf("relative_range", "relative", "absolute", "absolute_range"),
    "INPUT.CROP.SIZE": Seq(POSITIVE, length=2),
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": Number(gt=0, le=1),
    "INPUT.SEM_SEG.RESIZE_SCALE": SIZE_PAIR,
    "INPUT.SEM_SEG.RESIZE_RATIO_RANGE": Seq(POSITIVE, length=2, increasing="non-strict", none_ok=True),
    "INPUT.SEM_SEG.FLIP_PROB": FRACTION,
    "INPUT.SEM_SEG.TEST_RESIZE_SCALE": SIZE_PAIR,
    # model
    "MODEL.*.NUM_CLASSES": POSITIVE_INT,
    "MODEL.PIXEL_MEAN": Seq(Number(), min_length=1),
    "MODEL.PIXEL_STD": Seq(POSITIVE, min_length=1),
    "MODEL.*.SCORE_THRESH_TEST": FRACTION,
    "MODEL.*.NMS_THRESH_TEST": FRACTION,
    "MODEL.*.BATCH_SIZE_PER_IMAGE": POSITIVE_INT,
    "MODEL.*.POSITIVE_FRACTION": FRACTION,
    "MODEL.EFFICIENTFORMER_V2.DROP_PATH_RATE": Number(ge=0, lt=1, none_ok=True),
    "MODEL.CGRSEG.DROPOUT": DROPOUT,
    "MODEL.SSA.DROPOUT": DROPOUT,
    "MODEL.SSA.TEMPERATURE": POSITIVE,
    "MODEL.SSA.RELATION_TEMPERATURE": POSITIVE,
    "MODEL.SSA.KD_SMOOTHNESS": FRACTION,
    "MODEL.SSA.LOSS_WEIGHTS.*": NON_NEGATIVE,
    "MODEL.MULTI_TASK.DETECTOR": OneOf("GeneralizedRCNN", "RetinaNet", ""),
    "MODEL.MULTI_TASK.DETECTION_LOSS_WEIGHT": NON_NEGATIVE,
    "MODEL.MULTI_TASK.SEM_SEG_LOSS_WEIGHT": NON_NEGATIVE,
    "MODEL.MULTI_TASK.TEST_TASKS": Seq(OneOf("detection", "sem_seg"), min_length=1),
    # distillation
    "DISTILL.WARMUP_ITERS": NON_NEGATIVE_INT,
    "DISTILL.LOSS_WEIGHTS": Seq(NON_NEGATIVE),
    "DISTILL.DRKD.ROI_SIZE": POSITIVE_INT,
    "DISTILL.DRKD.RELATION_FILTER": OneOf("random_fc", "learned", "none"),
    "DISTILL.DRKD.W_*": NON_NEGATIVE,
    "DISTILL.DSD.PAIRS": OneOf("adjacent", "all"),
    "DISTILL.DSD.PSD_RESIZE_TO": OneOf("student_logits", "largest"),
    "DISTILL.DSD.CSD_FORM": OneOf("paper", "cirkd"),
    "DISTILL.DSD.TAU": POSITIVE,
    "DISTILL.DSD.CSD_POOL": POSITIVE_INT,
    "DISTILL.DSD.W_*": NON_NEGATIVE,
}


def _flatten(node: CfgNode, prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for k, v in node.items():
        if isinstance(v, CfgNode):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _cross_key_problems(flat: Dict[str, Any]) -> List[str]:
    problems = []
    mean, std = flat.get("MODEL.PIXEL_MEAN"), flat.get("MODEL.PIXEL_STD")
    if isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple)) and len(mean) != len(std):
        problems.append(f"MODEL.PIXEL_MEAN {list(mean)} and MODEL.PIXEL_STD {list(std)}: expected the same "
                        "number of values (one per input channel)")
    if flat.get("SOLVER.BEST_CHECKPOINT.ENABLED") and flat.get("TEST.EVAL_PERIOD") == 0:
        problems.append("SOLVER.BEST_CHECKPOINT.ENABLED True with TEST.EVAL_PERIOD = 0: expected TEST.EVAL_PERIOD "
                        "> 0 (the best checkpoint is chosen among the periodic evaluations)")
    return problems


def config_problems(cfg: CfgNode, rules: Optional[Dict[str, Any]] = None) -> List[str]:
    """One ``"KEY = value: expected ..."`` line per value that breaks its rule (empty if none).
    A key matches its exact rule, else the first pattern rule that matches it."""
    rules = RULES if rules is None else rules
    patterns = [(p, r) for p, r in rules.items() if any(c in p for c in "*?[")]
    flat = _flatten(cfg)
    problems = []
    for key, value in flat.items():
        rule = rules.get(key)
        if rule is None:
            rule = next((r for p, r in patterns if fnmatch.fnmatchcase(key, p)), None)
        if rule is not None and not rule.accepts(value):
            problems.append(f"{key} = {value!r}: expected {rule.describe()}")
    return problems + _cross_key_problems(flat)


def check_config(cfg: CfgNode, source: str = "config", rules: Optional[Dict[str, Any]] = None) -> None:
    """Raise :class:`ConfigError` listing (on one line) every value of ``cfg`` that breaks a rule.

    Args:
        source: what the values came from, for the message (the config file, overrides).
    """
    problems = config_problems(cfg, rules)
    if problems:
        raise ConfigError(f"{source}: invalid value{'s' if len(problems) > 1 else ''}: " + "; ".join(problems))
