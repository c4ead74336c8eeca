"""Dice / F-score / precision / recall on a hand-computed 3-class case, and the confusion
matrix files (``confusion_matrix.npy``, ``confusion_matrix.png``) the evaluator writes."""
import json
import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from segdet.evaluation import sem_seg_evaluation
from segdet.evaluation.sem_seg_evaluation import SegdetSemSegEvaluator
from segdet.evaluation.sem_seg_metrics import metrics_from_confusion

# 2x3 toy; the last pixel is ignored. Rows GT, columns prediction:
#   GT 0: 1 right, 1 predicted as 1;  GT 1: 2 right;  GT 2: 1 predicted as 0.
GT = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 0, 2]])
CONF = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
# TP = (1, 2, 0), GT pixels = (2, 2, 1), predicted pixels = (2, 3, 0)
DICE = [2 * 1 / (2 + 2), 2 * 2 / (2 + 3), 0.0]  # 2TP / (GT + pred) = 2TP / (2TP + FP + FN)
PRECISION = [1 / 2, 2 / 3, math.nan]  # class 2 never predicted
RECALL = [1 / 2, 2 / 2, 0 / 1]


def _harmonic(p, r):
    return 2 * p * r / (p + r)


def test_dice_fscore_precision_recall_hand_computed():
    m = metrics_from_confusion(CONF)
    np.testing.assert_allclose(m["Dice"], DICE)
    np.testing.assert_allclose(m["Precision"], PRECISION)
    np.testing.assert_allclose(m["Recall"], RECALL)
    np.testing.assert_allclose(m["Recall"], m["Acc"])
    # F-score is the harmonic mean of precision and recall where both are defined ...
    assert m["Fscore"][0] == pytest.approx(_harmonic(1 / 2, 1 / 2)) == pytest.approx(0.5)
    assert m["Fscore"][1] == pytest.approx(_harmonic(2 / 3, 1.0)) == pytest.approx(0.8)
    # ... and, for semantic segmentation, the same number as Dice everywhere
    np.testing.assert_allclose(m["Fscore"], m["Dice"])
    assert m["Fscore"][2] == 0.0  # in GT, never predicted: all its pixels wrong
    assert m["mDice"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m["mFscore"] == pytest.approx(m["mDice"])
    assert m["mPrecision"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # NaN class left out
    assert m["mRecall"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["mRecall"] == pytest.approx(m["mAcc"])


def test_class_absent_from_gt_and_prediction_is_nan_and_left_out():
    conf = np.zeros((4, 4), dtype=np.int64)
    conf[:3, :3] = CONF  # class 3: no GT pixel, never predicted
    m = metrics_from_confusion(conf)
    for key in ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall"):
        assert math.isnan(m[key][3]), key
    ref = metrics_from_confusion(CONF)
    for key in ("mIoU", "mAcc", "mDice", "mFscore", "mPrecision", "mRecall", "aAcc", "fwIoU"):
        assert m[key] == pytest.approx(ref[key]), key


def test_predicted_only_class_has_zero_dice_and_nan_recall():
    conf = np.array([[1, 1], [0, 0]])  # class 1 predicted once, never in GT
    m = metrics_from_confusion(conf)
    assert m["Dice"][1] == 0.0 and m["Fscore"][1] == 0.0 and m["Precision"][1] == 0.0
    assert math.isnan(m["Recall"][1])
    assert m["Dice"][0] == pytest.approx(2 / 3)


def _run_evaluator(tmp_path, name):
    label = tmp_path / "gt.png"
    Image.fromarray(GT.astype(np.uint8), mode="L").save(label)
    dicts = [{"file_name": str(tmp_path / "x.jpg"), "sem_seg_file_name": str(label)}]
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(stuff_classes=["road", "car", "sky"], ignore_label=255)
    ev = SegdetSemSegEvaluator(name, distributed=False, output_dir=str(tmp_path / "eval"))
    ev.reset()
    logits = torch.nn.functional.one_hot(torch.as_tensor(PRED), 3).permute(2, 0, 1).float()
    ev.process([dicts[0]], [{"sem_seg": logits}])
    return ev.evaluate()["sem_seg"]


def test_evaluator_reports_every_number_and_writes_confusion_files(tmp_path, caplog):
    logger = logging.getLogger(sem_seg_evaluation.__name__)
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=sem_seg_evaluation.__name__):
            res = _run_evaluator(tmp_path, "segdet_test_dice_confusion")
    finally:
        logger.removeHandler(caplog.handler)
    names = ["road", "car", "sky"]
    for i, c in enumerate(names):
        assert res[f"Dice-{c}"] == pytest.approx(100 * DICE[i])
        assert res[f"Fscore-{c}"] == pytest.approx(100 * DICE[i])
        assert res[f"Recall-{c}"] == pytest.approx(100 * RECALL[i])
        assert res[f"Precision-{c}"] == pytest.approx(100 * PRECISION[i], nan_ok=True)
    assert math.isnan(res["Precision-sky"])
    assert res["mDice"] == pytest.approx(100 * 1.3 / 3)
    assert res["mFscore"] == pytest.approx(res["mDice"])
    assert res["mPrecision"] == pytest.approx(100 * 7 / 12)
    assert res["mRecall"] == pytest.approx(50.0)
    assert res["mIoU"] == pytest.approx(100 / 3)
    # the per-class table carries the new columns
    text = caplog.text
    assert "Dice" in text and "Fscore" in text and "Precision" in text and "Recall" in text
    assert "mDice 43.33" in text
    out = tmp_path / "eval"
    written = json.loads((out / "sem_seg_metrics.json").read_text())
    assert written["Precision-sky"] is None and written["mDice"] == pytest.approx(res["mDice"])
    conf = np.load(out / "confusion_matrix.npy")
    assert conf.dtype == np.int64
    np.testing.assert_array_equal(conf, CONF)  # rows GT, columns prediction
    with Image.open(out / "confusion_matrix.png") as im:
        assert im.format == "PNG" and im.size[0] >= 200 and im.size[1] >= 200


def test_heatmap_row_normalised_and_tolerates_empty_rows(tmp_path):
    conf = np.array([[3, 1, 0], [0, 0, 0], [2, 0, 2]])  # class 1 has no GT pixel
    path = tmp_path / "cm.png"
    sem_seg_evaluation.save_confusion_heatmap(conf, ["a", "b", "c"], str(path))
    with Image.open(path) as im:
        assert im.format == "PNG"
