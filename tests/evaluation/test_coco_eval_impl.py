"""TEST.COCO_EVAL_IMPL: faster-coco-eval gives pycocotools' COCO AP (to 1e-4) on the sample trees."""
import importlib.util
import json
import math
import os

import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from segdet.config import get_segdet_cfg
from segdet.engine.trainer import Trainer
from segdet.evaluation.coco_evaluation import SegdetCOCOEvaluator, resolve_coco_eval_impl
from segdet.utils.config_io import load_config
from segdet.utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "configs", "Samples", "faster_rcnn_mnv2_fpn_trees.yaml")
FASTER_INSTALLED = importlib.util.find_spec("faster_coco_eval") is not None


def perturbed_predictions(dicts, seed):
    """Per image: its ground-truth boxes jittered (some dropped), plus random false positives,
    each with a random score; [(input, output)] as a model's evaluation would give them."""
    rng = np.random.default_rng(seed)
    pairs = []
    for d in dicts:
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]
                 if rng.random() > 0.1]
        boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        size = np.maximum(boxes[:, 2:] - boxes[:, :2], 1.0)
        boxes += rng.normal(0.0, 0.1, boxes.shape) * np.tile(size, 2)
        corners = rng.uniform(0, min(d["height"], d["width"]) - 40, (int(rng.integers(1, 10)), 2))
        false = np.hstack([corners, corners + rng.uniform(5, 40, corners.shape)])
        instances = Instances((d["height"], d["width"]))
        instances.pred_boxes = Boxes(torch.tensor(np.vstack([boxes, false]), dtype=torch.float32))
        instances.scores = torch.tensor(rng.random(len(instances.pred_boxes)), dtype=torch.float32)
        instances.pred_classes = torch.zeros(len(instances.pred_boxes), dtype=torch.int64)
        pairs.append(({"image_id": d["image_id"]}, {"instances": instances}))
    return pairs


def evaluate(dataset_name, pairs, impl, output_dir):
    evaluator = SegdetCOCOEvaluator(dataset_name, impl=impl, output_dir=str(output_dir))
    evaluator.reset()
    for inputs, outputs in pairs:
        evaluator.process([inputs], [outputs])
    return evaluator.evaluate()["bbox"]


@pytest.mark.skipif(not FASTER_INSTALLED, reason="faster-coco-eval is not installed")
@pytest.mark.parametrize("dataset_name,seed", [("segdet_trees_val", 0), ("segdet_trees_val", 1),
                                               ("segdet_trees_train", 2)])
def test_faster_coco_eval_gives_pycocotools_ap(dataset_name, seed, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    pairs = perturbed_predictions(DatasetCatalog.get(dataset_name), seed)
    official = evaluate(dataset_name, pairs, "pycocotools", tmp_path / "pycocotools")
    faster = evaluate(dataset_name, pairs, "faster_coco_eval", tmp_path / "faster")
    assert set(faster) == set(official) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert 0 < official["AP"] < 100
    for field, value in official.items():
        assert (math.isnan(value) and math.isnan(faster[field])) or abs(faster[field] - value) <= 1e-4, field
    # detectron2's results file is written either way, the same
    written = [json.loads((tmp_path / impl / "coco_instances_results.json").read_text())
               for impl in ("pycocotools", "faster")]
    assert written[0] == written[1] and len(written[0]) == sum(len(o["instances"]) for _, o in pairs)


def test_auto_is_faster_coco_eval_when_installed(monkeypatch):
    assert resolve_coco_eval_impl("auto") == ("faster_coco_eval" if FASTER_INSTALLED else "pycocotools")
    assert resolve_coco_eval_impl("pycocotools") == "pycocotools"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    assert resolve_coco_eval_impl("auto") == "pycocotools"
    with pytest.raises(ConfigError, match=r"^TEST\.COCO_EVAL_IMPL = 'faster_coco_eval': faster-coco-eval is not "
                                          r"installed"):
        resolve_coco_eval_impl("faster_coco_eval")


def test_trainer_evaluator_follows_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    DatasetCatalog.get("segdet_trees_val")  # sets the metadata's json_file
    cfg = get_segdet_cfg()
    cfg.TEST.COCO_EVAL_IMPL = "pycocotools"
    evaluators = Trainer.build_evaluator(cfg, "segdet_trees_val", str(tmp_path))
    assert [e.impl for e in evaluators._evaluators if isinstance(e, SegdetCOCOEvaluator)] == ["pycocotools"]


def test_bad_value_is_one_line():
    with pytest.raises(ConfigError) as err:
        load_config(SAMPLE, ["TEST.COCO_EVAL_IMPL", "'fast'"])
    assert "\n" not in str(err.value)
    assert "TEST.COCO_EVAL_IMPL = 'fast': expected one of 'auto', 'faster_coco_eval', 'pycocotools'" in str(err.value)
