"""--threads reaches torch (tools/train_net.py) and the train_net runs of tools/kd_compare.py."""
import os

import pytest
import torch

from _tools import load_tool

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs/Samples/retinanet_mnv2_fpn_trees.yaml")


@pytest.fixture
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    yield
    torch.set_num_threads(before)


def test_train_net_threads_reach_torch(tmp_path, restore_threads):
    train_net = load_tool("train_net")
    torch.set_num_threads(2)
    args = train_net.build_parser().parse_args(
        ["--config-file", CONFIG, "--eval-only", "--threads", "1", "OUTPUT_DIR", str(tmp_path)])
    train_net.setup(args)
    assert torch.get_num_threads() == 1
    assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["MKL_NUM_THREADS"] == "1"


def test_train_net_threads_default_and_bad_value(capsys):
    parser = load_tool("train_net").build_parser()
    assert parser.parse_args(["--config-file", CONFIG]).threads is None
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--config-file", CONFIG, "--threads", "0"])
    assert e.value.code == 2 and "expected a positive number of threads, got '0'" in capsys.readouterr().err


def test_kd_compare_passes_threads_to_train_net():
    kd = load_tool("kd_compare")
    assert kd.build_parser().parse_args(["--config-file", "x.yaml", "--threads", "1"]).threads == 1
    from kd_compare_lib.plan import Run  # importable once kd_compare is loaded
    from kd_compare_lib.runner import train_net_command

    run = Run(arm="student", seed=1, config_file=CONFIG, opts=(), run_dir="/tmp/r")
    command = train_net_command(run, threads=1)
    i = command.index("--threads")
    assert command[i + 1] == "1"
    assert "--threads" not in train_net_command(run)
    load_tool("train_net").build_parser().parse_args(command)  # train_net accepts it
