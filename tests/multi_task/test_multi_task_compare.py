"""tools/multi_task_compare.py: the arms' plan and the summary of their results."""
import json
import os

import pytest

from _tools import load_tool
from segdet.utils.synthetic import register_synthetic_datasets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "projects/MultiTask/configs/faster_rcnn_semseg_fpn_mnv2_trees_street.yaml")
SYNTHETIC = ["DATASETS.TRAIN", "('synthetic_det_train', 'synthetic_sem_seg_train')",
             "DATASETS.TEST", "('synthetic_det_val', 'synthetic_sem_seg_val')",
             "DATASETS.TRAIN_SAMPLING_RATIOS", "(3.0, 1.0)"]


@pytest.fixture()
def tool(tmp_path):
    register_synthetic_datasets(str(tmp_path / "data"))
    return load_tool("multi_task_compare")


def _opts(run, key):
    opts = list(run.opts)
    return opts[len(opts) - 1 - opts[::-1].index(key) + 1]


def test_each_single_task_model_gets_its_tasks_share_of_the_iterations(tool, tmp_path):
    args = tool.build_parser().parse_args(["--config-file", CONFIG, "--seeds", "1", "2", "--max-iter", "100",
                                           "--output-dir", str(tmp_path / "out"), *SYNTHETIC])
    runs, iters, tests = tool.plan_runs(args)
    assert iters == {"detector": 75, "segmentor": 25, "joint": 100}  # ratios 3 : 1
    assert [(r.arm, r.seed) for r in runs] == [("detector", 1), ("segmentor", 1), ("joint", 1),
                                               ("detector", 2), ("segmentor", 2), ("joint", 2)]
    det, seg, joint = runs[:3]
    assert _opts(det, "MODEL.META_ARCHITECTURE") == "GeneralizedRCNN"
    assert _opts(det, "DATASETS.TRAIN") == "('synthetic_det_train',)"
    assert _opts(seg, "MODEL.META_ARCHITECTURE") == "SegdetSemanticSegmentor"
    assert _opts(seg, "DATASETS.TEST") == "('synthetic_sem_seg_val',)"
    assert _opts(seg, "SOLVER.MAX_ITER") == "25" and _opts(seg, "SOLVER.STEPS") == "(20, 23)"
    assert _opts(joint, "SOLVER.MAX_ITER") == "100" and _opts(joint, "SEED") == "1"
    assert tests == {"detection": ["synthetic_det_val"], "sem_seg": ["synthetic_sem_seg_val"]}


def test_summary_reads_flat_and_per_dataset_results(tool, tmp_path):
    args = tool.build_parser().parse_args(["--config-file", CONFIG, "--seeds", "1", "2", "--max-iter", "10",
                                           "--output-dir", str(tmp_path / "out"), *SYNTHETIC])
    runs, iters, tests = tool.plan_runs(args)
    values = {("detector", 1): 10.0, ("detector", 2): 14.0, ("segmentor", 1): 50.0, ("segmentor", 2): 60.0,
              ("joint", 1): (9.0, 70.0), ("joint", 2): (11.0, 80.0)}
    for run in runs:
        os.makedirs(run.run_dir)
        v = values[(run.arm, run.seed)]
        if run.arm == "detector":
            results = {"bbox": {"AP": v}}
        elif run.arm == "segmentor":
            results = {"sem_seg": {"mIoU": v}}
        else:
            results = {"synthetic_det_val": {"bbox": {"AP": v[0]}}, "synthetic_sem_seg_val": {"sem_seg": {"mIoU": v[1]}}}
        with open(os.path.join(run.run_dir, "eval_results.json"), "w") as f:
            json.dump(results, f)
    summary = tool.summarize(runs, iters, tests, [1, 2])
    assert summary["arms"]["detector"]["AP"] == {"per_seed": [10.0, 14.0], "mean": 12.0,
                                                "std": pytest.approx(2 ** 0.5 * 2)}
    assert "mIoU" not in summary["arms"]["detector"]
    assert summary["arms"]["joint"]["AP"]["mean"] == 10.0 and summary["arms"]["joint"]["mIoU"]["mean"] == 75.0
    table = tool.format_table(summary)
    assert "| joint | 10 | 10.00 ± 1.41 | 75.00 ± 7.07 |" in table
    tool.plot(summary, str(tmp_path / "bars.png"))
    assert (tmp_path / "bars.png").stat().st_size > 1000


def test_a_config_without_both_tasks_is_refused(tool, tmp_path):
    from segdet.utils.errors import ConfigError

    args = tool.build_parser().parse_args(["--config-file", CONFIG, "--max-iter", "10", "--output-dir",
                                           str(tmp_path), "DATASETS.TRAIN", "('synthetic_det_train',)",
                                           "DATASETS.TRAIN_SAMPLING_RATIOS", "()"])
    with pytest.raises(ConfigError, match="sets of both tasks"):
        tool.plan_runs(args)


def test_a_named_distilled_arm_gets_its_config_and_own_overrides(tool, tmp_path):
    distill = CONFIG.replace(".yaml", "_drkd_dsd.yaml")
    args = tool.build_parser().parse_args([
        "--config-file", CONFIG, "--distill-config", distill, "--distilled-name", "weak_drkd",
        "--distill-opts", "DISTILL.TEACHERS.DETECTOR.LOSS_WEIGHTS (0.1,)", "--seeds", "1", "--max-iter", "10",
        "--output-dir", str(tmp_path / "out"), *SYNTHETIC])
    runs, iters, _ = tool.plan_runs(args)
    run = next(r for r in runs if r.arm == "weak_drkd")
    assert run.config_file == distill and iters["weak_drkd"] == 10
    assert run.run_dir == str(tmp_path / "out" / "weak_drkd" / "seed1")
    assert _opts(run, "DISTILL.TEACHERS.DETECTOR.LOSS_WEIGHTS") == "(0.1,)"
    assert not any("DISTILL.TEACHERS" in o for r in runs if r.arm != "weak_drkd" for o in r.opts)
