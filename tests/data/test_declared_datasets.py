"""Datasets declared only in a yaml (DATASETS.DECLARE) train and evaluate through
tools/train_net.py; bad keys and paths give one error line naming them."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from _tools import REPO_ROOT, one_error_line, run_train_net

SEG_BASE = os.path.join(REPO_ROOT, "configs", "Samples", "semseg_fpn_mnv2_street.yaml")
DET_BASE = os.path.join(REPO_ROOT, "configs", "Samples", "faster_rcnn_mnv2_fpn_trees.yaml")
SHORT = ["--threads", "1", "MODEL.MOBILENET_V2.WEIGHTS", "", "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1",
         "SOLVER.STEPS", "()", "DATALOADER.NUM_WORKERS", "0", "TEST.VIS_NUM_IMAGES", "0"]


def _sem_seg_folder(root, n=3, size=96):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"f{i}.jpg")
        label = np.zeros((size, size), np.uint8)
        label[: size // 2] = 1
        label[-4:] = 255
        Image.fromarray(label).save(root / "labels" / f"f{i}.png")
    return root


def _seg_yaml(tmp_path, extra=""):
    data = _sem_seg_folder(tmp_path / "data")
    spec = (f'      TYPE: "sem_seg_folder"\n      IMAGE_ROOT: "{data}/images"\n'
            f'      LABEL_ROOT: "{data}/labels"\n      CLASSES: ["ground", "sky"]\n{extra}')
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(f'_BASE_: "{SEG_BASE}"\nMODEL:\n  SEM_SEG_HEAD:\n    NUM_CLASSES: 2\n'
                   f'INPUT:\n  CROP:\n    SIZE: (64, 64)\n  MIN_SIZE_TRAIN: (96,)\n  MIN_SIZE_TEST: 96\n'
                   f'DATASETS:\n  DECLARE:\n    mine_train:\n{spec}    mine_val:\n{spec}'
                   f'  TRAIN: ("mine_train",)\n  TEST: ("mine_val",)\n')
    return cfg


def test_declared_sem_seg_folder_trains_and_evaluates(tmp_path):
    cfg = _seg_yaml(tmp_path)
    code, err = run_train_net("--config-file", str(cfg), *SHORT, "OUTPUT_DIR", str(tmp_path / "out"))
    assert code == 0, err[-3000:]
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())["sem_seg"]
    assert 0 <= results["mIoU"] <= 100 and "IoU-sky" in results and "IoU-ground" in results


def test_declared_coco_json_trains_and_evaluates(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    images, annotations = [], []
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 128, "width": 128})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 20, 40, 30],
                            "area": 1200, "iscrowd": 0})
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "car"}]}
    (tmp_path / "train.json").write_text(json.dumps(coco))
    spec = f'      TYPE: "coco_json"\n      JSON: "{tmp_path}/train.json"\n      IMAGE_ROOT: "{tmp_path}/images"\n'
    cfg = tmp_path / "det.yaml"
    cfg.write_text(f'_BASE_: "{DET_BASE}"\nDATASETS:\n  DECLARE:\n    cars_train:\n{spec}      CLASSES: ["car"]\n'
                   f'  TRAIN: ("cars_train",)\n  TEST: ("cars_train",)\nINPUT:\n  MIN_SIZE_TRAIN: (128,)\n'
                   f'  MIN_SIZE_TEST: 128\n')
    code, err = run_train_net("--config-file", str(cfg), *SHORT, "OUTPUT_DIR", str(tmp_path / "out"))
    assert code == 0, err[-3000:]
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert "AP" in results["bbox"]


@pytest.mark.parametrize("extra, fragments", [
    ('      IGNORE: 255\n', ["DATASETS.DECLARE.mine_train.IGNORE", "unknown key"]),
    ('      IGNORE_LABEL: "x"\n', ["DATASETS.DECLARE.mine_train.IGNORE_LABEL", "integer"]),
])
def test_bad_declared_keys_give_one_line(tmp_path, extra, fragments):
    code, err = run_train_net("--config-file", str(_seg_yaml(tmp_path, extra)), "--eval-only")
    assert code == 2
    one_error_line(err, *fragments)


def test_missing_declared_path_is_named(tmp_path):
    cfg = _seg_yaml(tmp_path)
    cfg.write_text(cfg.read_text().replace(f"{tmp_path}/data/labels", f"{tmp_path}/nope"))
    code, err = run_train_net("--config-file", str(cfg), "--eval-only")
    assert code == 2
    one_error_line(err, "DATASETS.DECLARE.mine_train.LABEL_ROOT", f"{tmp_path}/nope")
