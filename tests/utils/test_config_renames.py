"""Renamed and removed config keys are refused with one line that gives the new name."""
import os
import subprocess
import sys

import pytest

from segdet.config import get_segdet_cfg
from segdet.utils.config_io import load_config
from segdet.utils.config_renames import REMOVED, RENAMED
from segdet.utils.errors import ConfigError

from _tools import one_error_line

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "configs", "Samples", "faster_rcnn_mnv2_fpn_trees.yaml")


def _yaml(key, value):
    """``key: value`` as nested yaml."""
    parts = key.split(".")
    lines = [f"_BASE_: \"{SAMPLE}\""]
    for depth, part in enumerate(parts[:-1]):
        lines.append("  " * depth + f"{part}:")
    lines.append("  " * (len(parts) - 1) + f"{parts[-1]}: {value}")
    return "\n".join(lines) + "\n"


def test_the_table_maps_old_keys_to_existing_new_ones():
    cfg = get_segdet_cfg()
    for old, new in RENAMED.items():
        new_key = new.split(" ")[0]
        node = cfg
        for part in new_key.split("."):
            assert part in node, f"{old} -> {new_key}: no such key"
            node = node[part]
    for old in list(RENAMED) + list(REMOVED):
        *parents, leaf = old.split(".")
        node = cfg
        for part in parents:
            node = node.get(part, {})
        assert leaf not in node, f"{old} still exists"
    assert "SEGDET_CONFIG_ADDED" not in cfg


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_old_name_in_a_file_is_refused_with_the_new_name(tmp_path, old):
    path = tmp_path / "old.yaml"
    path.write_text(_yaml(old, "(1, 1)"))
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert f"{old} was renamed to {RENAMED[old]}" in message, message


def test_old_name_in_a_base_file_is_refused(tmp_path):
    (tmp_path / "base.yaml").write_text(_yaml("SOLVER.POLY_LR_END_FACTOR", "0.1"))
    (tmp_path / "child.yaml").write_text('_BASE_: "base.yaml"\n')
    with pytest.raises(ConfigError, match="SOLVER.POLY_LR_END_FACTOR was renamed to "
                                          "SOLVER.POLY_LR_CONSTANT_ENDING"):
        load_config(str(tmp_path / "child.yaml"))


def test_old_name_on_the_command_line_is_refused_with_the_new_name():
    with pytest.raises(ConfigError) as err:
        load_config(SAMPLE, ["SOLVER.BASE_LR", "0.1", "SOLVER.POLY_LR_END_FACTOR", "0.1"])
    assert str(err.value) == ("command line: SOLVER.POLY_LR_END_FACTOR was renamed to "
                              "SOLVER.POLY_LR_CONSTANT_ENDING")
    with pytest.raises(ConfigError, match="INPUT.SEM_SEG.CAT_MAX_RATIO was renamed to "
                                          "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA"):
        load_config(SAMPLE, ["input.sem_seg.cat_max_ratio", "0.5"])


def test_removed_key_says_why(tmp_path):
    with pytest.raises(ConfigError, match="MODEL.SSA.ENABLED was removed: it was never read"):
        load_config(SAMPLE, ["MODEL.SSA.ENABLED", "True"])


def test_an_old_dumps_marker_is_ignored_and_new_dumps_lack_it(tmp_path):
    path = tmp_path / "dump.yaml"
    path.write_text(f'_BASE_: "{SAMPLE}"\nSEGDET_CONFIG_ADDED: true\n')
    cfg = load_config(str(path))
    assert "SEGDET_CONFIG_ADDED" not in cfg and "SEGDET_CONFIG_ADDED" not in cfg.dump()


def test_add_segdet_config_is_idempotent():
    from segdet.config import add_segdet_config

    cfg = get_segdet_cfg()
    cfg.MODEL.CGRSEG.CHANNELS = 7
    assert add_segdet_config(cfg).MODEL.CGRSEG.CHANNELS == 7


def test_train_net_refuses_an_old_name_with_one_line():
    env = {k: v for k, v in os.environ.items() if k != "SEGDET_DEBUG"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", SAMPLE,
                           "INPUT.SEM_SEG.CROP_SIZE", "(64, 64)"], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    one_error_line(proc.stderr, "INPUT.SEM_SEG.CROP_SIZE was renamed to INPUT.CROP.SIZE")
