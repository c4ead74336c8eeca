"""TEST.COCO_EVAL_IMPL: faster-coco-eval gives pycocotools' COCO AP (every field to 1e-4).

The required checks run on data every clone has: a multi-class synthetic COCO set written here
(non-contiguous category ids, small/medium/large boxes, so every AP field is defined) and the
synthetic ``synthetic_det_{train,val}`` sets. The embedded sample trees are an extra case, skipped
where ``tools/prepare_sample_data.py`` has not been run (as on a clean CI clone).
"""
import importlib.util
import json
import math
import os

import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import Boxes, BoxMode, Instances

from segdet.config import get_segdet_cfg
from segdet.data.datasets.sample_layout import index_path
from segdet.engine.trainer import Trainer
from segdet.evaluation.coco_evaluation import SegdetCOCOEvaluator, resolve_coco_eval_impl
from segdet.utils.config_io import load_config
from segdet.utils.errors import ConfigError
from segdet.utils.synthetic import register_synthetic_datasets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "configs", "Samples", "faster_rcnn_mnv2_fpn_trees.yaml")
FASTER_INSTALLED = importlib.util.find_spec("faster_coco_eval") is not None

MULTI = "coco_eval_impl_multiclass"  # the bigger synthetic set this file writes
MULTI_CATEGORIES = [{"id": 1, "name": "alpha"}, {"id": 3, "name": "beta"}, {"id": 7, "name": "gamma"}]
AP_FIELDS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def sample_json(split):
    """The index JSON the sample loader reads for ``segdet_trees_<split>`` (relative to the
    repository root, where the tests run, unless $DETECTRON2_DATASETS is absolute)."""
    return os.path.join(ROOT, index_path("trees", split))


def sample_case(split, seed):
    path = sample_json(split)
    return pytest.param(f"segdet_trees_{split}", seed, id=f"segdet_trees_{split}-{seed}", marks=pytest.mark.skipif(
        not os.path.isfile(path),
        reason=f"sample data not prepared ({path} missing; run python tools/prepare_sample_data.py)"))


def write_multiclass_coco(path, num_images=20, height=256, width=320, seed=0):
    """COCO instances JSON: ``num_images`` images, categories 1/3/7, 3-7 boxes per image (all
    iscrowd=0), cycling through every category x area range (small < 32², medium, large > 96²)."""
    rng = np.random.default_rng(seed)
    sides = {"small": (6, 30), "medium": (40, 90), "large": (110, 200)}  # area < 1024, in [1024, 9216], > 9216
    images, annotations = [], []
    for i in range(num_images):
        images.append({"id": 100 + i, "file_name": f"{i:04d}.png", "height": height, "width": width})
        for _ in range(int(rng.integers(3, 8))):
            k = len(annotations)
            category = MULTI_CATEGORIES[k % 3]["id"]
            low, high = sides[("small", "medium", "large")[(k // 3) % 3]]
            w, h = (int(v) for v in rng.integers(low, high + 1, 2))
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            annotations.append({"id": k + 1, "image_id": 100 + i, "category_id": category, "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": 0})
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": MULTI_CATEGORIES}, f)


@pytest.fixture(scope="module")
def synthetic_sets(tmp_path_factory):
    """Registers ``synthetic_det_{train,val}`` and the multi-class set ``MULTI`` (no sample data)."""
    root = tmp_path_factory.mktemp("coco_eval_impl")
    register_synthetic_datasets(str(root))
    if MULTI not in DatasetCatalog.list():
        json_path = str(root / "multiclass.json")
        write_multiclass_coco(json_path)
        register_coco_instances(MULTI, {}, json_path, str(root / "multiclass_images"))  # images never read
    return root


def perturbed_predictions(dicts, seed, num_classes):
    """Per image: its ground-truth boxes jittered (some dropped, a few given another class), plus
    random false positives of random classes, each with a random score; [(input, output)] as a
    model's evaluation would give them."""
    rng = np.random.default_rng(seed)
    pairs = []
    for d in dicts:
        kept = [a for a in d["annotations"] if rng.random() > 0.1]
        boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in kept],
                         dtype=np.float64).reshape(-1, 4)
        classes = np.array([a["category_id"] for a in kept], dtype=np.int64)
        relabel = rng.random(len(classes)) < 0.1
        classes[relabel] = rng.integers(0, num_classes, int(relabel.sum()))
        size = np.maximum(boxes[:, 2:] - boxes[:, :2], 1.0)
        boxes += rng.normal(0.0, 0.1, boxes.shape) * np.tile(size, 2)
        corners = rng.uniform(0, min(d["height"], d["width"]) - 40, (int(rng.integers(1, 10)), 2))
        false = np.hstack([corners, corners + rng.uniform(5, 40, corners.shape)])
        instances = Instances((d["height"], d["width"]))
        instances.pred_boxes = Boxes(torch.tensor(np.vstack([boxes, false]), dtype=torch.float32))
        instances.scores = torch.tensor(rng.random(len(instances.pred_boxes)), dtype=torch.float32)
        instances.pred_classes = torch.tensor(
            np.concatenate([classes, rng.integers(0, num_classes, len(false))]), dtype=torch.int64)
        pairs.append(({"image_id": d["image_id"]}, {"instances": instances}))
    return pairs


def evaluate(dataset_name, pairs, impl, output_dir):
    evaluator = SegdetCOCOEvaluator(dataset_name, impl=impl, output_dir=str(output_dir))
    evaluator.reset()
    for inputs, outputs in pairs:
        evaluator.process([inputs], [outputs])
    return evaluator.evaluate()["bbox"]


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-4


@pytest.mark.skipif(not FASTER_INSTALLED, reason="faster-coco-eval is not installed")
@pytest.mark.parametrize("dataset_name,seed", [
    (MULTI, 0), (MULTI, 1), (MULTI, 2), ("synthetic_det_val", 0), ("synthetic_det_train", 1),
    sample_case("val", 0), sample_case("val", 1), sample_case("train", 2),
])
def test_faster_coco_eval_gives_pycocotools_ap(dataset_name, seed, synthetic_sets, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    dicts = DatasetCatalog.get(dataset_name)  # also sets the metadata (classes, id map, json_file)
    classes = MetadataCatalog.get(dataset_name).thing_classes
    pairs = perturbed_predictions(dicts, seed, len(classes))
    official = evaluate(dataset_name, pairs, "pycocotools", tmp_path / "pycocotools")
    faster = evaluate(dataset_name, pairs, "faster_coco_eval", tmp_path / "faster")
    # detectron2 adds the per-category fields (AP-<name>) where there is more than one class
    per_category = {f"AP-{name}" for name in classes} if len(classes) > 1 else set()
    assert set(faster) == set(official) == set(AP_FIELDS) | per_category
    assert 0 < official["AP"] < 100
    if dataset_name == MULTI:  # every field is defined there, the parity is not NaN == NaN
        assert classes == [c["name"] for c in MULTI_CATEGORIES]
        assert not any(math.isnan(v) for v in official.values()), official
        assert all(0 < official[f] < 100 for f in ("APs", "APm", "APl", *per_category)), official
    wrong = {f: (official[f], faster[f]) for f in official if not same(official[f], faster[f])}
    assert not wrong, f"faster-coco-eval != pycocotools (pycocotools, faster): {wrong}"
    # detectron2's results file is written either way, the same (dataset category ids)
    written = [json.loads((tmp_path / impl / "coco_instances_results.json").read_text())
               for impl in ("pycocotools", "faster")]
    assert written[0] == written[1] and len(written[0]) == sum(len(o["instances"]) for _, o in pairs)
    dataset_ids = set(MetadataCatalog.get(dataset_name).thing_dataset_id_to_contiguous_id)
    assert {r["category_id"] for r in written[0]} <= dataset_ids


def test_auto_is_faster_coco_eval_when_installed(monkeypatch):
    assert resolve_coco_eval_impl("auto") == ("faster_coco_eval" if FASTER_INSTALLED else "pycocotools")
    assert resolve_coco_eval_impl("pycocotools") == "pycocotools"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    assert resolve_coco_eval_impl("auto") == "pycocotools"
    with pytest.raises(ConfigError, match=r"^TEST\.COCO_EVAL_IMPL = 'faster_coco_eval': faster-coco-eval is not "
                                          r"installed"):
        resolve_coco_eval_impl("faster_coco_eval")


@pytest.mark.parametrize("impl", ["pycocotools", "auto", "faster_coco_eval"])
def test_trainer_evaluator_follows_the_config(impl, synthetic_sets, tmp_path, monkeypatch):
    if impl == "faster_coco_eval" and not FASTER_INSTALLED:
        pytest.skip("faster-coco-eval is not installed")
    monkeypatch.chdir(ROOT)
    DatasetCatalog.get("synthetic_det_val")
    cfg = get_segdet_cfg()
    cfg.TEST.COCO_EVAL_IMPL = impl
    evaluators = Trainer.build_evaluator(cfg, "synthetic_det_val", str(tmp_path))
    assert [e.impl for e in evaluators._evaluators if isinstance(e, SegdetCOCOEvaluator)] == \
        [resolve_coco_eval_impl(impl)]


def test_bad_value_is_one_line():
    with pytest.raises(ConfigError) as err:
        load_config(SAMPLE, ["TEST.COCO_EVAL_IMPL", "'fast'"])
    assert "\n" not in str(err.value)
    assert "TEST.COCO_EVAL_IMPL = 'fast': expected one of 'auto', 'faster_coco_eval', 'pycocotools'" in str(err.value)
