"""SOLVER.BEST_CHECKPOINT: model_best.pth holds the best evaluation of a run (BestCheckpointer)."""
import json
import os
from argparse import Namespace
from types import SimpleNamespace

import pytest
import torch

from detectron2.utils.events import EventStorage

from segdet.config import get_segdet_cfg
from segdet.engine.best_checkpoint import SegdetBestCheckpointer, best_checkpoint_metric
from segdet.utils.config_io import load_config
from segdet.utils.errors import ConfigError

from _tools import train_net_main_with_synthetic_data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEM_SEG = os.path.join(ROOT, "configs", "Samples", "semseg_fpn_mnv2_street.yaml")
SEM_SEG_OPTS = [
    "MODEL.MOBILENET_V2.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
    "DATASETS.TRAIN", "('synthetic_sem_seg_train',)", "DATASETS.TEST", "('synthetic_sem_seg_val',)",
    "INPUT.SEM_SEG.RESIZE_SCALE", "(128, 96)", "INPUT.CROP.SIZE", "(64, 64)",
    "INPUT.SEM_SEG.TEST_RESIZE_SCALE", "(128, 96)", "TEST.VIS_NUM_IMAGES", "0", "SOLVER.WARMUP_ITERS", "0",
]


def _args(output_dir, opts, eval_only=False, resume=False):
    return Namespace(config_file=SEM_SEG, resume=resume, eval_only=eval_only, eval_teacher=False, num_gpus=1,
                     num_machines=1, machine_rank=0, dist_url="auto",
                     opts=SEM_SEG_OPTS + ["OUTPUT_DIR", str(output_dir), *opts])


def test_model_best_is_the_best_recorded_evaluation(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    data, out = str(tmp_path / "data"), tmp_path / "run"
    opts = ["TEST.EVAL_PERIOD", "2", "SOLVER.BEST_CHECKPOINT.ENABLED", "True"]
    train_net_main_with_synthetic_data(_args(out, ["SOLVER.MAX_ITER", "4", *opts]), data)
    evaluations = _evaluations(out / "metrics.json")
    assert [it for _, it in evaluations] == [1, 4]  # after iteration 2, and the final one
    best_value, best_iteration = _best(evaluations)

    best = torch.load(out / "model_best.pth", weights_only=True, mmap=True)  # as a resume reads it
    assert best["iteration"] == best_iteration
    assert best["best_metric"] == {"sem_seg/mIoU": pytest.approx(best_value, abs=1e-9)}
    assert (out / "last_checkpoint").read_text() == "model_final.pth"  # --resume never picks model_best

    # its weights reproduce the best evaluation
    again = train_net_main_with_synthetic_data(
        _args(tmp_path / "eval", ["MODEL.WEIGHTS", str(out / "model_best.pth")], eval_only=True), data)
    assert again["sem_seg"]["mIoU"] == pytest.approx(best_value, abs=1e-6)

    # a resumed run keeps the best of all its evaluations, before and after the resume
    # (the resume drops the final evaluation's entry, logged at iteration 4, from metrics.json)
    train_net_main_with_synthetic_data(_args(out, ["SOLVER.MAX_ITER", "8", *opts], resume=True), data)
    resumed = [(v, it) for v, it in _evaluations(out / "metrics.json") if it >= 4]
    assert [it for _, it in resumed] == [5, 8]
    assert torch.load(out / "model_best.pth", weights_only=True)["iteration"] == _best(evaluations + resumed)[1]


def _evaluations(metrics_json):
    """(mIoU, iteration) of each evaluation recorded in ``metrics_json``."""
    return [(m["sem_seg/mIoU"], m["iteration"]) for m in map(json.loads, metrics_json.read_text().splitlines())
            if "sem_seg/mIoU" in m]


def _best(evaluations):
    """The best (value, iteration), the first of a tie (BestCheckpointer saves only on improvement)."""
    value = max(v for v, _ in evaluations)
    return value, next(it for v, it in evaluations if v == value)


class _Trainer(SimpleNamespace):
    """What the hook reads of a trainer: storage, iter, max_iter, start_iter, eval results."""


def _evaluate(hook, trainer, storage, iteration, value):
    trainer.iter = storage.iter = iteration
    storage.put_scalars(**{"sem_seg/mIoU": value}, smoothing_hint=False)
    trainer._last_eval_results = {"sem_seg": {"mIoU": value}}
    hook.after_step()


class _Checkpointer:
    """Records its saves (and writes them) and tags last_checkpoint, as detectron2's checkpointers do."""

    def __init__(self, save_dir):
        self.save_dir, self.saved = str(save_dir), []

    def save(self, name, **kwargs):
        self.saved.append((name, kwargs["iteration"]))
        torch.save({"model": {}, **kwargs}, os.path.join(self.save_dir, f"{name}.pth"))
        self.tag_last_checkpoint(f"{name}.pth")

    def tag_last_checkpoint(self, basename):
        with open(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(basename)


def test_resumed_run_keeps_the_saved_best_and_the_last_checkpoint_tag(tmp_path):
    checkpointer = _Checkpointer(tmp_path)
    checkpointer.save("model_best", iteration=3, best_metric={"sem_seg/mIoU": 50.0})
    checkpointer.tag_last_checkpoint("model_0000005.pth")
    hook = SegdetBestCheckpointer(2, checkpointer, "sem_seg/mIoU", "max")
    with EventStorage(6) as storage:
        hook.trainer = trainer = _Trainer(storage=storage, start_iter=6, max_iter=20)
        hook.before_train()
        assert (hook.best_metric, hook.best_iter) == (50.0, 3)
        _evaluate(hook, trainer, storage, 7, 45.0)  # worse than before the resume: not saved
        _evaluate(hook, trainer, storage, 9, float("nan"))
        _evaluate(hook, trainer, storage, 11, 55.0)
    assert checkpointer.saved[1:] == [("model_best", 11)]
    assert torch.load(tmp_path / "model_best.pth")["best_metric"] == {"sem_seg/mIoU": 55.0}
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000005.pth"


def test_a_metric_the_evaluation_lacks_is_one_clear_error(tmp_path):
    hook = SegdetBestCheckpointer(2, _Checkpointer(tmp_path), "bbox/AP", "max")
    with EventStorage(0) as storage:
        hook.trainer = trainer = _Trainer(storage=storage, start_iter=0, max_iter=20)
        with pytest.raises(ConfigError, match=r"^SOLVER\.BEST_CHECKPOINT\.METRIC = 'bbox/AP': not among the "
                                              r"evaluation's metrics \(sem_seg/mIoU\)$"):
            _evaluate(hook, trainer, storage, 1, 45.0)


def test_default_metric_is_the_first_test_sets_main_metric():
    cfg = get_segdet_cfg()
    cfg.DATASETS.TEST = ("segdet_trees_val",)
    assert best_checkpoint_metric(cfg, per_dataset=False) == "bbox/AP"
    cfg.DATASETS.TEST = ("segdet_street_sem_seg_val", "segdet_trees_val")
    assert best_checkpoint_metric(cfg, per_dataset=True) == "segdet_street_sem_seg_val/sem_seg/mIoU"
    cfg.SOLVER.BEST_CHECKPOINT.METRIC = "segdet_trees_val/bbox/AP50"
    assert best_checkpoint_metric(cfg, per_dataset=True) == "segdet_trees_val/bbox/AP50"


@pytest.mark.parametrize("opts,expected", [
    (["SOLVER.BEST_CHECKPOINT.MODE", "best"], "SOLVER.BEST_CHECKPOINT.MODE = 'best': expected one of 'max', 'min'"),
    (["SOLVER.BEST_CHECKPOINT.ENABLED", "True", "TEST.EVAL_PERIOD", "0"],
     "SOLVER.BEST_CHECKPOINT.ENABLED True with TEST.EVAL_PERIOD = 0: expected TEST.EVAL_PERIOD > 0"),
])
def test_bad_values_are_one_line(opts, expected):
    with pytest.raises(ConfigError) as err:
        load_config(SEM_SEG, opts)
    assert "\n" not in str(err.value) and expected in str(err.value), str(err.value)
