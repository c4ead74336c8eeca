"""Config values: range/choice validation at start-up and numeric type coercion."""
import math
import os

import pytest

from segdet.config import get_segdet_cfg
from segdet.utils.config_check import RULES, Number, OneOf, Seq, check_config, config_problems
from segdet.utils.config_io import load_config
from segdet.utils.config_types import coerce_to_default
from segdet.utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "configs", "Samples", "faster_rcnn_mnv2_fpn_trees.yaml")


def test_defaults_pass_every_rule():
    assert config_problems(get_segdet_cfg()) == []


@pytest.mark.parametrize("key,value,expected", [
    ("SOLVER.MAX_ITER", "-5", "an integer > 0"),
    ("SOLVER.CHECKPOINT_PERIOD", "0", "an integer > 0"),
    ("SOLVER.BASE_LR", "0.0", "a finite number > 0"),
    ("SOLVER.BASE_LR", "-1e-3", "a finite number > 0"),
    ("SOLVER.IMS_PER_BATCH", "0", "an integer > 0"),
    ("TEST.EVAL_PERIOD", "-1", "an integer >= 0"),
    ("SOLVER.WARMUP_ITERS", "-10", "an integer >= 0"),
    ("DATALOADER.NUM_WORKERS", "-1", "an integer >= 0"),
    ("MODEL.ROI_HEADS.NUM_CLASSES", "0", "an integer > 0"),
    ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "-3", "an integer > 0"),
    ("SOLVER.STEPS", "(200, 100)", "increasing"),
    ("SOLVER.MAX_ITER", "None", "an integer > 0"),
    ("TEST.SEM_SEG.MODE", "'sliding'", "one of 'whole', 'slide'"),
    ("INPUT.CROP.SIZE", "(512,)", "2 values"),
    ("MODEL.PIXEL_STD", "[1.0, 0.0, 1.0]", "each a finite number > 0"),
])
def test_out_of_range_value_is_one_line_naming_key_value_and_expectation(key, value, expected):
    with pytest.raises(ConfigError) as err:
        load_config(SAMPLE, [key, value])
    message = str(err.value)
    assert "\n" not in message and SAMPLE in message and "command line" in message
    assert f"{key} = " in message and expected in message, message


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(SAMPLE, ["SOLVER.MAX_ITER", "-5", "DATALOADER.NUM_WORKERS", "-1"])
    assert "SOLVER.MAX_ITER = -5" in str(err.value) and "DATALOADER.NUM_WORKERS = -1" in str(err.value)


def test_values_in_the_yaml_file_are_checked_too(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{SAMPLE}"\nSOLVER:\n  CHECKPOINT_PERIOD: 0\n')
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid value: SOLVER\.CHECKPOINT_PERIOD = 0"):
        load_config(str(bad))


def test_non_finite_float_and_cross_key_rule():
    cfg = get_segdet_cfg()
    cfg.SOLVER.BASE_LR = math.inf
    cfg.MODEL.PIXEL_STD = [1.0, 1.0]
    problems = config_problems(cfg)
    assert any(p.startswith("SOLVER.BASE_LR = inf") for p in problems)
    assert any("PIXEL_MEAN" in p and "same number of values" in p for p in problems)


def test_pattern_rules_and_custom_table():
    cfg = get_segdet_cfg()
    cfg.MODEL.RETINANET.NUM_CLASSES = 0  # matched by the MODEL.*.NUM_CLASSES pattern
    assert "MODEL.*.NUM_CLASSES" in RULES
    assert [p.split(" =")[0] for p in config_problems(cfg)] == ["MODEL.RETINANET.NUM_CLASSES"]
    rules = {"SOLVER.OPTIMIZER": OneOf("SGD"), "SOLVER.BETAS": Seq(Number(gt=0.95), length=2)}
    with pytest.raises(ConfigError, match=r"^mine: invalid value: SOLVER\.BETAS = \(0\.9, 0\.999\)"):
        check_config(cfg, "mine", rules)


# ---------------------------------------------------------------- type coercion ------------

def test_int_for_float_key_on_the_command_line():
    cfg = load_config(SAMPLE, ["SOLVER.BASE_LR", "1000", "SOLVER.MAX_ITER", "1e4",
                               "MODEL.PIXEL_STD", "[1, 2, 3]", "INPUT.SEM_SEG.RESIZE_RATIO_RANGE", "[1, 2]"])
    assert cfg.SOLVER.BASE_LR == 1000.0 and type(cfg.SOLVER.BASE_LR) is float
    assert cfg.SOLVER.MAX_ITER == 10000 and type(cfg.SOLVER.MAX_ITER) is int
    assert cfg.MODEL.PIXEL_STD == [1.0, 2.0, 3.0] and all(type(v) is float for v in cfg.MODEL.PIXEL_STD)
    assert cfg.INPUT.SEM_SEG.RESIZE_RATIO_RANGE == (1.0, 2.0) and type(cfg.INPUT.SEM_SEG.RESIZE_RATIO_RANGE) is tuple


def test_int_for_float_key_in_a_yaml_file(tmp_path):
    path = tmp_path / "ints.yaml"
    path.write_text(f'_BASE_: "{SAMPLE}"\nSOLVER:\n  BASE_LR: 1\n  STEPS: [10, 20]\n'
                    "MODEL:\n  PIXEL_STD: [1, 1, 1]\n")
    cfg = load_config(str(path))
    assert type(cfg.SOLVER.BASE_LR) is float and cfg.SOLVER.BASE_LR == 1.0
    assert cfg.SOLVER.STEPS == (10, 20)
    assert all(type(v) is float for v in cfg.MODEL.PIXEL_STD)


@pytest.mark.parametrize("key,value,fragment", [
    ("SOLVER.BASE_LR", "abc", "SOLVER.BASE_LR must be a number, got 'abc' (a string)"),
    ("SOLVER.AMP.ENABLED", "1", "SOLVER.AMP.ENABLED must be True or False, got 1"),
    ("SOLVER.MAX_ITER", "True", "SOLVER.MAX_ITER must be an integer, got True"),
    ("SOLVER.MAX_ITER", "2.5", "SOLVER.MAX_ITER must be an integer, got 2.5"),
    ("OUTPUT_DIR", "3", "OUTPUT_DIR must be a string, got 3"),
    ("DATASETS.TRAIN", "my_set", "write ('my_set',)"),
])
def test_bool_and_str_mismatches_still_error_clearly(key, value, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(SAMPLE, [key, value])
    assert str(err.value).startswith("command line: ") and fragment in str(err.value), str(err.value)


def test_type_mismatch_in_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad_type.yaml"
    path.write_text(f'_BASE_: "{SAMPLE}"\nSOLVER:\n  AMP:\n    ENABLED: "yes please"\n')
    with pytest.raises(ConfigError, match=r"bad_type\.yaml: SOLVER\.AMP\.ENABLED must be True or False"):
        load_config(str(path))


@pytest.mark.parametrize("text", ["", "- 1\n- 2\n"])
def test_a_yaml_file_that_is_not_a_mapping(tmp_path, text):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"odd\.yaml: expected a mapping of config keys"):
        load_config(str(path))


def test_coerce_keeps_yacs_rules():
    assert coerce_to_default(None, 3, "K", "s") is None and coerce_to_default(4, None, "K", "s") == 4
    assert coerce_to_default([1, 2], (0, 0), "K", "s") == (1, 2)  # int tuple: ints stay ints
    assert coerce_to_default((1.5,), [], "K", "s") == [1.5]
    assert coerce_to_default("x", "y", "K", "s") == "x"
