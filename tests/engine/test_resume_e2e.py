"""tools/train_net.py resumes as if it had not stopped, refuses a second run on its OUTPUT_DIR,
and lets a changed SOLVER.BASE_LR win over the checkpoint's."""
import json
import logging
import os
import shutil
from argparse import Namespace

import pytest
import torch

from segdet.engine.run_lock import LOCK_NAME, OutputDirInUseError, RunLock
from _tools import train_net_main_with_synthetic_data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPTS = [
    "MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "DATASETS.TRAIN", "('synthetic_det_train',)", "DATASETS.TEST", "()",
    "INPUT.MIN_SIZE_TRAIN", "(80, 96)", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.STEPS", "()", "DATALOADER.NUM_WORKERS", "0", "SEED", "3", "SOLVER.CHECKPOINT_PERIOD", "4",
]


def _args(output_dir, max_iter, resume=False, extra=()):
    opts = OPTS + ["OUTPUT_DIR", str(output_dir), "SOLVER.MAX_ITER", str(max_iter), *extra]
    return Namespace(config_file=os.path.join(ROOT, "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml"),
                     resume=resume, eval_only=False, eval_teacher=False, num_gpus=1, num_machines=1,
                     machine_rank=0, dist_url="auto", opts=opts)


@pytest.fixture
def one_thread(monkeypatch):
    """Bitwise comparisons: the same kernels with the same partition of the work."""
    monkeypatch.chdir(ROOT)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _loss_iterations(run_dir):
    return [json.loads(line)["iteration"] for line in (run_dir / "metrics.json").read_text().splitlines()
            if "total_loss" in line]


def _resume_copy(src, dst, checkpoint):
    """``dst``: ``src``'s metrics.json, and ``checkpoint`` as the last one (as after a kill)."""
    dst.mkdir()
    shutil.copy(src / checkpoint, dst / checkpoint)
    shutil.copy(src / "metrics.json", dst / "metrics.json")
    (dst / "last_checkpoint").write_text(checkpoint)


def test_a_second_training_on_the_folder_fails_before_writing_into_it(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    with RunLock(str(out)):
        with pytest.raises(OutputDirInUseError, match=f"OUTPUT_DIR {out} is in use"):
            train_net_main_with_synthetic_data(_args(out, 4), str(tmp_path / "data"))
        assert sorted(os.listdir(out)) == [LOCK_NAME]  # no config.yaml, log.txt of the refused run


def test_resume_reproduces_the_uninterrupted_run(tmp_path, one_thread):
    """Same data order (the sampler resumes its position) and random numbers (reseeded at
    checkpoint boundaries): the final weights are bitwise those of the uninterrupted run, and
    metrics.json has each iteration once. The lock is released after each run."""
    data, full, resumed = tmp_path / "data", tmp_path / "full", tmp_path / "resumed"
    train_net_main_with_synthetic_data(_args(full, 8), str(data))
    assert _loss_iterations(full) == [7]
    _resume_copy(full, resumed, "model_0000003.pth")  # "killed" after iteration 7 was logged
    train_net_main_with_synthetic_data(_args(resumed, 8, resume=True), str(data))
    assert _loss_iterations(resumed) == [7]
    a = torch.load(full / "model_final.pth", weights_only=False)
    b = torch.load(resumed / "model_final.pth", weights_only=False)
    assert a["iteration"] == b["iteration"] == 7
    assert a["model"].keys() == b["model"].keys()
    different = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not different, different
    assert not (full / LOCK_NAME).exists() and not (resumed / LOCK_NAME).exists()


def test_a_run_killed_while_saving_model_final_writes_it_on_resume(tmp_path, monkeypatch):
    """The last periodic checkpoint is the final state: nothing to train, model_final is written."""
    monkeypatch.chdir(ROOT)
    data, full, resumed = tmp_path / "data", tmp_path / "full", tmp_path / "resumed"
    train_net_main_with_synthetic_data(_args(full, 4), str(data))
    _resume_copy(full, resumed, "model_0000003.pth")
    train_net_main_with_synthetic_data(_args(resumed, 4, resume=True), str(data))
    a = torch.load(full / "model_final.pth", weights_only=False)
    b = torch.load(resumed / "model_final.pth", weights_only=False)
    assert a["iteration"] == b["iteration"] == 3
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (resumed / "last_checkpoint").read_text() == "model_final.pth"


def test_a_changed_base_lr_wins_on_resume_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(ROOT)
    data, first, second = tmp_path / "data", tmp_path / "first", tmp_path / "second"
    train_net_main_with_synthetic_data(_args(first, 4, extra=["SOLVER.BASE_LR", "0.02"]), str(data))
    _resume_copy(first, second, "model_final.pth")
    logger = logging.getLogger("segdet.engine.trainer")  # train_net's setup_logger stops "segdet" propagating
    logger.addHandler(caplog.handler)
    try:
        train_net_main_with_synthetic_data(_args(second, 6, resume=True, extra=["SOLVER.BASE_LR", "0.005"]),
                                           str(data))
    finally:
        logger.removeHandler(caplog.handler)
    assert "SOLVER.BASE_LR changed from 0.02 (checkpoint) to 0.005 (config)" in caplog.text
    lrs = {json.loads(line)["iteration"]: json.loads(line)["lr"]
           for line in (second / "metrics.json").read_text().splitlines() if '"lr"' in line}
    assert lrs[3] == pytest.approx(0.02) and lrs[5] == pytest.approx(0.005)  # after the 2 warm-up iterations
