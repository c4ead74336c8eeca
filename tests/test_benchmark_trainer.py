"""tools/benchmark_trainer.py on a tiny run (1 round of 1 step): the JSON fields, and that both
trainers stepped as often from the same weights on the same batch (their first-step losses are
equal, which they would not be with different inputs or weights). No timing is asserted."""
import json
import os

from _tools import REPO_ROOT, load_tool

CONFIG = os.path.join(REPO_ROOT, "configs", "Samples", "faster_rcnn_mnv2_fpn_trees.yaml")


def _bench(*argv):
    import torch

    threads = torch.get_num_threads()
    try:
        return load_tool("benchmark_trainer").main(list(map(str, argv)))
    finally:
        torch.set_num_threads(threads)


def _check_same_start(report, steps):
    a, b = report["trainers"]["segdet"], report["trainers"]["detectron2"]
    assert a["class"] == "segdet.engine.trainer.Trainer"
    assert b["class"] == "detectron2.engine.defaults.DefaultTrainer"
    assert a["steps"] == b["steps"] == steps
    assert a["initial_state_sum"] == b["initial_state_sum"]
    assert set(a["first_step_losses"]) >= {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc", "total_loss"}
    assert a["first_step_losses"] == b["first_step_losses"]
    for t in (a, b):
        assert t["param_groups"] >= 1 and t["optimizer"]
        assert len(t["s_per_iter"]["per_round"]) == report["rounds"]
        assert t["s_per_iter"]["median"] > 0


def test_training_loader_batches(tmp_path):
    from segdet.utils.synthetic import register_synthetic_datasets

    register_synthetic_datasets(str(tmp_path / "data"))
    out = tmp_path / "bench.json"
    report = _bench("--config-file", CONFIG, "--rounds", 1, "--steps", 1, "--warmup", 0, "--batches", 1,
                    "--threads", 1, "--seed", 3, "--output", out,
                    "DATASETS.TRAIN", "('synthetic_det_train',)", "INPUT.MIN_SIZE_TRAIN", "(96,)",
                    "INPUT.MAX_SIZE_TRAIN", "128")
    assert json.loads(out.read_text()) == report
    _check_same_start(report, steps=1)
    assert report["threads"] == 1 and report["seed"] == 3 and report["timed"] == "run_step"
    assert report["rounds"] == report["steps_per_round"] == 1 and report["first_in_round"] == ["segdet"]
    assert report["opts"][:2] == ["DATASETS.TRAIN", "('synthetic_det_train',)"]
    batches = report["batches"]
    assert batches["source"] == "segdet training loader of synthetic_det_train"
    assert batches["count"] == 1 and batches["images_per_step"] == 2
    assert all(min(size) == 96 for size in batches["image_sizes"][0])
    assert report["ratio"] > 0 and report["ratio_per_round"]["values"] == [report["ratio"]]
    assert set(report["versions"]) >= {"torch", "detectron2"}


def test_synthetic_batches_two_rounds():
    report = _bench("--config-file", CONFIG, "--synthetic", "--input-size", 64, 96, "--rounds", 2, "--steps", 1,
                    "--warmup", 0, "--batches", 2, "--threads", 1)
    _check_same_start(report, steps=2)
    assert report["first_in_round"] == ["segdet", "detectron2"]
    assert report["batches"]["source"] == "synthetic"
    assert report["batches"]["image_sizes"] == [[[64, 96]] * 2] * 2
    assert len(report["ratio_per_round"]["values"]) == 2
