"""User mistakes end with one clear line on stderr (exit status 2), not a traceback."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")
SAMPLE = "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml"


def _run(*args, env=None):
    full_env = {**os.environ, **(env or {})}
    full_env.pop("SEGDET_DEBUG", None)
    proc = subprocess.run([sys.executable, TRAIN_NET, *args], cwd=ROOT, capture_output=True, text=True,
                          env=full_env, timeout=300)
    return proc.returncode, proc.stderr


def _assert_clear(stderr, *fragments):
    assert "Traceback" not in stderr, stderr[-2000:]
    error_lines = [line for line in stderr.splitlines() if line.startswith("segdet: error:")]
    assert len(error_lines) == 1, stderr[-2000:]
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]


def test_bad_config_path():
    code, err = _run("--config-file", "configs/nope.yaml")
    assert code == 2
    _assert_clear(err, "config file not found: configs/nope.yaml")


def test_unknown_config_key_in_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{os.path.join(ROOT, SAMPLE)}"\nMODEL:\n  BACKBONE:\n    NAMEE: "x"\n')
    code, err = _run("--config-file", str(bad))
    assert code == 2
    _assert_clear(err, str(bad), "MODEL.BACKBONE.NAMEE")


def test_unknown_config_key_on_command_line():
    code, err = _run("--config-file", SAMPLE, "SOLVER.BASE_LRR", "0.1")
    assert code == 2
    _assert_clear(err, "command line", "SOLVER.BASE_LRR")


def test_odd_number_of_overrides():
    code, err = _run("--config-file", SAMPLE, "SOLVER.BASE_LR")
    assert code == 2
    _assert_clear(err, "KEY VALUE pairs")
