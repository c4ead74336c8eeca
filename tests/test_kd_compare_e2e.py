"""tools/kd_compare.py end to end (slow): a tiny DSD (PSD + CSD) comparison on the synthetic
segmentation data, 2 seeds, 3 iterations per run (the first with a time per iteration), the teacher
trained by the tool; then a rerun that skips every finished run. And the same data as 2
cross-validation folds declared in the config (--folds): a teacher per fold, each seed on its fold."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEMSEG = os.path.join(ROOT, "configs/Samples/semseg_fpn_mnv2_street.yaml")

TINY_DSD = f"""# the sample Semantic-FPN as student (FPN width 16) and teacher (width 32), random init
_BASE_: "{SEMSEG}"
MODEL:
  META_ARCHITECTURE: "DistillationModel"
  MOBILENET_V2:
    WEIGHTS: ""
  FPN:
    OUT_CHANNELS: 16
  SEM_SEG_HEAD:
    CONVS_DIM: 32
DISTILL:
  STUDENT_META_ARCHITECTURE: "SegdetSemanticSegmentor"
  TEACHER:
    CONFIG_FILE: "{SEMSEG}"
    OPTS: ["MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32"]
  LOSSES: ("PSD", "CSD")
  DSD:
    STUDENT_LAYERS: ("backbone.bottom_up",)
    TEACHER_LAYERS: ("backbone.bottom_up",)
    STUDENT_LOGITS: "sem_seg_head.predictor"
    TEACHER_LOGITS: "sem_seg_head.predictor"
DATASETS:
  TRAIN: ("synthetic_sem_seg_train",)
  TEST: ("synthetic_sem_seg_val",)
INPUT:
  CROP:
    SIZE: (64, 64)
  SEM_SEG:
    RESIZE_SCALE: (128, 96)
    TEST_RESIZE_SCALE: (128, 96)
SOLVER:
  IMS_PER_BATCH: 2
  WARMUP_ITERS: 1
DATALOADER:
  NUM_WORKERS: 0
TEST:
  VIS_NUM_IMAGES: 0
"""

REGISTER = """from segdet.utils.synthetic import register_synthetic_datasets


def register():
    register_synthetic_datasets({root!r})
"""


def write_tiny_comparison(folder):
    """The distillation config and the --register file of the synthetic data; returns both paths."""
    os.makedirs(folder, exist_ok=True)
    config, register = os.path.join(folder, "dsd_tiny.yaml"), os.path.join(folder, "synthetic_data.py")
    with open(config, "w") as f:
        f.write(TINY_DSD)
    with open(register, "w") as f:
        f.write(REGISTER.format(root=os.path.join(folder, "data")))
    return config, register


def _kd_compare(*args):
    env = {k: v for k, v in os.environ.items() if k != "SEGDET_DEBUG"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "kd_compare.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_comparison_end_to_end_and_rerun_skips(tmp_path):
    config, register = write_tiny_comparison(str(tmp_path))
    out = tmp_path / "cmp"
    args = ["--config-file", config, "--register", f"{register}:register", "--seeds", "1", "2",
            "--max-iter", "3", "--output-dir", str(out)]
    first = _kd_compare(*args)
    print(first)
    assert "run 1/9 teacher seed 1: training" in first and "run 9/9 psd+csd seed 2: done" in first
    assert "ETA" in first

    result = json.loads((out / "kd_compare.json").read_text())
    assert result["metric"] == "mIoU" and result["seeds"] == [1, 2] and result["std"] == "sample (ddof=1)"
    assert result["complete"] and result["teacher"]["source"] == "trained"
    assert isinstance(result["teacher"]["value"], float)
    assert list(result["arms"]) == ["student", "psd", "csd", "psd+csd"]
    for arm, entry in result["arms"].items():
        assert len(entry["per_seed"]) == 2 and all(isinstance(v, float) for v in entry["per_seed"]), arm
        assert entry["mean"] == pytest.approx(sum(entry["per_seed"]) / 2)
        assert entry["std"] == pytest.approx(abs(entry["per_seed"][0] - entry["per_seed"][1]) / 2 ** 0.5)
        assert entry["s_per_iter"] > 0
        assert [p[0] for p in result["curves"][arm]["metric"]] == [3]  # the final evaluation
    # the distilled arms were trained with the teacher the tool trained
    teacher_weights = out / "teacher" / "seed1" / "model_final.pth"
    assert result["teacher"]["weights"] == str(teacher_weights) and teacher_weights.is_file()
    record = json.loads((out / "psd+csd" / "seed2" / "kd_compare_run.json").read_text())
    assert str(teacher_weights) in record["train_net_args"] and "('PSD', 'CSD')" in record["train_net_args"]
    for name in ("kd_compare.png", "kd_compare_curves.png"):
        assert (out / name).stat().st_size > 1000, name
    assert "student" in first.split("mean ± std")[-1]  # the table

    finished = (out / "csd" / "seed1" / "eval_results.json").stat().st_mtime_ns
    again = _kd_compare(*args)
    print(again)
    assert again.count("finished before, skipped") == 9 and ": training" not in again
    assert (out / "csd" / "seed1" / "eval_results.json").stat().st_mtime_ns == finished
    assert json.loads((out / "kd_compare.json").read_text())["arms"] == result["arms"]


FOLDS = """DATASETS:
  DECLARE:
    synthetic_cv:
      TYPE: "folds"
      SOURCES: ["synthetic_sem_seg_train", "synthetic_sem_seg_val"]
      NUM_FOLDS: 2
"""


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_cross_validated_comparison_end_to_end(tmp_path):
    config, register = write_tiny_comparison(str(tmp_path))
    with open(config, "w") as f:  # the synthetic train + val images as 2 folds, declared in the config
        f.write(TINY_DSD.replace("DATASETS:\n", FOLDS, 1))
    out = tmp_path / "cmp"
    stdout = _kd_compare("--config-file", config, "--register", f"{register}:register", "--seeds", "1", "2",
                         "--arms", "student", "psd", "teacher", "--folds", "synthetic_cv", "--max-iter", "2",
                         "--output-dir", str(out))
    print(stdout)
    assert "run 1/6 teacher seed 1 (fold 0): training" in stdout and "run 6/6 psd seed 2 (fold 1): done" in stdout
    result = json.loads((out / "kd_compare.json").read_text())
    assert result["complete"] and result["folds"]["fold_of_seed"] == {"1": 0, "2": 1}
    assert len(result["teacher"]["per_fold"]) == 2 and result["teacher"]["value"] == pytest.approx(
        sum(result["teacher"]["per_fold"]) / 2)
    record = json.loads((out / "psd" / "seed2" / "kd_compare_run.json").read_text())
    args = record["train_net_args"]
    assert "('synthetic_cv_fold1_val',)" in args
    assert str(out / "teacher" / "fold1_seed2" / "model_final.pth") in args  # fold 1's own teacher
    for arm in ("student", "psd"):
        assert all(isinstance(v, float) for v in result["arms"][arm]["per_seed"]), arm
