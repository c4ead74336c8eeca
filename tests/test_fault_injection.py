"""Fault injection (slow): a training killed with SIGKILL 5 times, at seeded random points in the
data loader, the training step and a checkpoint save, and resumed each time with --resume, ends
with the final checkpoint of an uninterrupted run, bitwise (CPU, 1 thread, SEED fixed, 0 loader
workers), and each iteration once in metrics.json.

Each kill is SIGKILL that the training process sends itself at the chosen point (the n-th
mapped image, after the backward of iteration k, halfway through writing the n-th checkpoint),
so the points are reproducible rather than timed: the same as ``kill -9`` at that moment (no
handler, no clean-up runs).
"""
import json
import os
import random
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# metrics.json gets an entry every 20 iterations (detectron2's PeriodicWriter) and at the end;
# with checkpoints every 6, a run killed at iterations 20-22 has logged iteration 19 after its
# last checkpoint (17), which the resumed run logs again
MAX_ITER, PERIOD = 24, 6
OPTS = [
    "MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "DATASETS.TRAIN", "('synthetic_det_train',)", "DATASETS.TEST", "()",
    "INPUT.MIN_SIZE_TRAIN", "(80, 96)", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "4",
    "SOLVER.STEPS", "(16,)", "DATALOADER.NUM_WORKERS", "0", "SEED", "7",
    "SOLVER.CHECKPOINT_PERIOD", str(PERIOD), "SOLVER.MAX_ITER", str(MAX_ITER),
]

# argv: ROOT, data root, output dir, the kill point as JSON ({"phase": ..., "at": n} or null)
DRIVER = r"""
import io, json, os, signal, sys
root, data, out, kill = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
sys.path[:0] = [root, os.path.join(root, "tests")]  # segdet, and the tests' _tools
import torch
torch.set_num_threads(1)
from argparse import Namespace
import detectron2.engine.train_loop as train_loop
import segdet.engine.trainer as trainer
from _tools import train_net_main_with_synthetic_data

def die():
    os.kill(os.getpid(), signal.SIGKILL)

calls = {"n": 0}
if kill and kill["phase"] == "loader":  # while mapping the at-th image
    build_mapper = trainer.build_mapper
    def build_dying_mapper(cfg, is_train):
        mapper = build_mapper(cfg, is_train)
        def mapped(d):
            calls["n"] += 1
            if calls["n"] == kill["at"]:
                die()
            return mapper(d)
        return mapped
    trainer.build_mapper = build_dying_mapper
elif kill and kill["phase"] == "step":  # after the backward of iteration at, before the update
    def after_backward(self):
        if self.iter == kill["at"]:
            die()
    train_loop.SimpleTrainer.after_backward = after_backward
elif kill and kill["phase"] == "save":  # halfway through writing the at-th checkpoint
    save = torch.save
    def dying_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == kill["at"]:
            buffer = io.BytesIO()
            save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            die()
        return save(obj, f, *args, **kwargs)
    torch.save = dying_save

args = Namespace(config_file=os.path.join(root, "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml"),
                 resume=True, eval_only=False, eval_teacher=False, num_gpus=1, num_machines=1,
                 machine_rank=0, dist_url="auto", opts=json.loads(os.environ["FAULT_OPTS"]))
train_net_main_with_synthetic_data(args, data)
"""


def _train(data, out, kill=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "FAULT_OPTS": json.dumps(OPTS + ["OUTPUT_DIR", str(out)])}
    env.pop("SEGDET_DEBUG", None)
    return subprocess.run([sys.executable, "-c", DRIVER, ROOT, str(data), str(out), json.dumps(kill)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _start_iter(out):
    tag = out / "last_checkpoint"
    if not tag.exists():
        return 0
    return torch.load(out / tag.read_text().strip(), weights_only=False)["iteration"] + 1


def _kill_point(rng, phase, start):
    """A point in the part of the training a run resumed at ``start`` still has to do."""
    if phase == "save":  # not model_final's save: a run killed there has nothing left to train
        saves = [i for i in range(start, MAX_ITER) if (i + 1) % PERIOD == 0]
        return {"phase": phase, "at": rng.randint(1, len(saves))}
    iteration = rng.randint(start, MAX_ITER - 1)
    if phase == "step":
        return {"phase": phase, "at": iteration}
    return {"phase": phase, "at": 2 * (iteration - start) + rng.randint(1, 2)}  # 2 images per iteration


def _assert_same(a, b, where="checkpoint"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _metric_iterations(out):
    return [json.loads(line)["iteration"] for line in (out / "metrics.json").read_text().splitlines()]


@pytest.mark.slow
def test_killed_five_times_and_resumed_equals_the_uninterrupted_run(tmp_path):
    data, reference, faulty = tmp_path / "data", tmp_path / "reference", tmp_path / "faulty"
    done = _train(data, reference)
    assert done.returncode == 0, done.stderr[-3000:]

    rng = random.Random(20240617)
    phases = ["loader", "step", "save"] + [rng.choice(["loader", "step", "save"]) for _ in range(2)]
    rng.shuffle(phases)
    plan = []  # (start iteration, kill point, iterations logged beyond the next start)
    for phase in phases:
        start = _start_iter(faulty)
        kill = _kill_point(rng, phase, start)
        killed = _train(data, faulty, kill)
        assert killed.returncode == -9, (kill, killed.stderr[-3000:])
        assert (faulty / "segdet-run.lock").exists()  # a killed run cannot release its lock
        logged = _metric_iterations(faulty) if (faulty / "metrics.json").exists() else []
        plan.append((start, kill, [i for i in logged if i >= _start_iter(faulty)]))
    resumed = _train(data, faulty)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Taking over the stale lock" in resumed.stderr
    # the plan resumed from checkpoints, and once after iterations were logged past the checkpoint
    assert any(start for start, _, _ in plan) and any(beyond for _, _, beyond in plan), plan

    _assert_same(torch.load(reference / "model_final.pth", weights_only=False),
                 torch.load(faulty / "model_final.pth", weights_only=False))
    iterations = _metric_iterations(faulty)
    assert len(iterations) == len(set(iterations)), iterations
    assert sorted(iterations) == sorted(_metric_iterations(reference))
    assert not (faulty / "segdet-run.lock").exists()
