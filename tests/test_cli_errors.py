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


def test_missing_dataset_folder(tmp_path):
    code, err = _run("--config-file", SAMPLE, "--eval-only", "MODEL.MOBILENET_V2.WEIGHTS", "",
                     "OUTPUT_DIR", str(tmp_path / "out"), env={"DETECTRON2_DATASETS": str(tmp_path / "nowhere")})
    assert code == 2
    _assert_clear(err, str(tmp_path / "nowhere"), "prepare_sample_data.py")


def test_corrupt_image_is_named(tmp_path):
    """A sample-layout dataset whose validation image is garbage bytes."""
    import json
    import shutil

    from segdet.utils.synthetic import make_synthetic_detection_dataset

    root = tmp_path / "data"
    trees = root / "segdet_samples" / "trees"
    for split in ("train", "val"):
        json_path, image_root = make_synthetic_detection_dataset(str(tmp_path / split), num_images=2)
        coco = json.load(open(json_path))
        coco["categories"] = [{"id": 1, "name": "tree"}]
        (trees / "images").mkdir(parents=True, exist_ok=True)
        shutil.copytree(image_root, trees / "images" / split)
        (trees / f"{split}.json").write_text(json.dumps(coco))
    broken = trees / "images" / "val" / "0001.png"
    broken.write_bytes(b"this is not a png")
    code, err = _run("--config-file", SAMPLE, "--eval-only", "MODEL.MOBILENET_V2.WEIGHTS", "",
                     "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "out"),
                     env={"DETECTRON2_DATASETS": str(root)})
    assert code == 2
    _assert_clear(err, str(broken))
