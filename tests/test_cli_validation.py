"""Config values and data that segdet cannot use stop train_net.py at once with one clear line
on stderr (exit status 2): out-of-range values, an empty dataset (issue 13)."""
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")
SAMPLE = "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml"


def _run(*args, env=None):  # as in test_cli_errors.py
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


def test_negative_max_iter_is_refused_and_an_int_learning_rate_accepted(tmp_path):
    # BASE_LR 1000 (an int for a float key) used to be refused; now only MAX_ITER is reported
    code, err = _run("--config-file", SAMPLE, "SOLVER.BASE_LR", "1000", "SOLVER.MAX_ITER", "-5",
                     "OUTPUT_DIR", str(tmp_path / "out"))
    assert code == 2
    _assert_clear(err, "SOLVER.MAX_ITER = -5: expected an integer > 0")
    assert "BASE_LR" not in err


def test_zero_checkpoint_period_is_refused_before_training(tmp_path):
    code, err = _run("--config-file", SAMPLE, "SOLVER.CHECKPOINT_PERIOD", "0", "OUTPUT_DIR", str(tmp_path / "out"))
    assert code == 2
    _assert_clear(err, "SOLVER.CHECKPOINT_PERIOD = 0", "an integer > 0")
    assert not os.path.exists(tmp_path / "out")


def test_empty_training_set_names_the_dataset(tmp_path):
    """A sample-layout trees dataset whose training index lists no images."""
    from segdet.utils.synthetic import make_synthetic_detection_dataset

    trees = tmp_path / "data" / "segdet_samples" / "trees"
    json_path, image_root = make_synthetic_detection_dataset(str(tmp_path / "val"), num_images=1)
    (trees / "images").mkdir(parents=True)
    shutil.copytree(image_root, trees / "images" / "val")
    shutil.copy(json_path, trees / "val.json")
    (trees / "images" / "train").mkdir()
    (trees / "train.json").write_text(json.dumps({"images": [], "annotations": [],
                                                  "categories": [{"id": 1, "name": "tree"}]}))
    code, err = _run("--config-file", SAMPLE, "MODEL.MOBILENET_V2.WEIGHTS", "", "DATALOADER.NUM_WORKERS", "0",
                     "OUTPUT_DIR", str(tmp_path / "out"), env={"DETECTRON2_DATASETS": str(tmp_path / "data")})
    assert code == 2
    _assert_clear(err, "DATASETS.TRAIN 'segdet_trees_train' has no images/annotations")
