"""Confusion-matrix metrics (hand-computed) and the mIoU evaluator, single-process and DDP."""
import json
import math
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from segdet.evaluation.sem_seg_evaluation import SegdetSemSegEvaluator
from segdet.evaluation.sem_seg_metrics import confusion_matrix, metrics_from_confusion
from _tools import free_port

# 2x3 toy: the last pixel is ignored (its prediction 2 must not count).
GT = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 0, 2]])
CONF = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])  # rows GT, columns prediction


def test_confusion_matrix_hand_computed_and_ignore():
    conf = confusion_matrix(PRED, GT, num_classes=3, ignore_label=255)
    assert conf.dtype == np.int64
    np.testing.assert_array_equal(conf, CONF)
    assert conf.sum() == 5  # 6 pixels, 1 ignored


def test_metrics_hand_computed():
    m = metrics_from_confusion(CONF)
    # IoU = TP / (GT + pred - TP): 1/3, 2/3, 0; Acc = TP / GT: 1/2, 1, 0
    np.testing.assert_allclose(m["IoU"], [1 / 3, 2 / 3, 0.0])
    np.testing.assert_allclose(m["Acc"], [0.5, 1.0, 0.0])
    assert m["mIoU"] == pytest.approx(1 / 3)
    assert m["mAcc"] == pytest.approx(0.5)
    assert m["aAcc"] == pytest.approx(3 / 5)
    assert m["fwIoU"] == pytest.approx(2 / 5 * 1 / 3 + 2 / 5 * 2 / 3 + 1 / 5 * 0)  # 0.4


def test_absent_class_is_nan_and_left_out_of_means():
    # K=5: class 3 absent everywhere; class 4 only predicted (never in GT).
    conf = np.zeros((5, 5), dtype=np.int64)
    conf[:3, :3] = CONF
    conf[0, 4] = 1  # one class-0 pixel predicted as 4
    m = metrics_from_confusion(conf)
    assert math.isnan(m["IoU"][3]) and math.isnan(m["Acc"][3])
    assert m["IoU"][4] == 0.0 and math.isnan(m["Acc"][4])  # predicted-only: IoU 0, Acc NaN
    iou0 = 1 / (3 + 2 - 1)
    assert m["mIoU"] == pytest.approx((iou0 + 2 / 3 + 0 + 0) / 4)
    assert m["mAcc"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert m["aAcc"] == pytest.approx(3 / 6)


def test_confusion_matrix_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match="ground-truth value 3 outside"):
        confusion_matrix(np.zeros((1, 2)), np.array([[0, 3]]), num_classes=3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((1, 2)), num_classes=3)


def test_all_ignored_gives_nan_without_warning():
    with np.errstate(all="raise"):
        m = metrics_from_confusion(np.zeros((2, 2)))
    assert all(math.isnan(m[k]) for k in ("mIoU", "mAcc", "aAcc", "fwIoU"))


# ---------------------------------------------------------------- evaluator ----------------
NUM_CLASSES = 4


def _make_dataset(root: str, n: int = 4):
    """n small images: label PNGs stored with ADE20K's convention (0 = unlabelled, k+1 = class
    k) and matching predictions; returns (dataset dicts, predicted class maps)."""
    rng = np.random.RandomState(0)
    dicts, preds = [], []
    for i in range(n):
        h, w = 5 + i, 7
        gt = rng.randint(0, NUM_CLASSES, size=(h, w))
        if i % 2 == 0:
            gt[gt == 3] = 2  # class 3 only in odd images: per-rank results differ from global
        stored = gt + 1
        stored[rng.rand(h, w) < 0.2] = 0  # unlabelled
        path = os.path.join(root, f"label_{i}.png")
        Image.fromarray(stored.astype(np.uint8), mode="L").save(path)
        pred = np.where(rng.rand(h, w) < 0.6, gt, rng.randint(0, NUM_CLASSES, size=(h, w)))
        dicts.append({"file_name": os.path.join(root, f"img_{i}.jpg"), "sem_seg_file_name": path,
                      "image_id": i})
        preds.append(pred)
    return dicts, preds


def _register(name: str, dicts) -> None:
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c", "d"], ignore_label=255,
                                      reduce_zero_label=True, evaluator_type="sem_seg")


def _logits(pred: np.ndarray) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(pred), NUM_CLASSES).permute(2, 0, 1).float()


def _evaluate(name, dicts, preds, distributed, output_dir=None, inputs_have_labels=True):
    ev = SegdetSemSegEvaluator(name, distributed=distributed, output_dir=output_dir)
    ev.reset()
    for d, p in zip(dicts, preds):
        inp = dict(d) if inputs_have_labels else {"file_name": d["file_name"]}
        ev.process([inp], [{"sem_seg": _logits(p)}])
    return ev.evaluate()


def _expected(dicts, preds):
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for d, p in zip(dicts, preds):
        stored = np.asarray(Image.open(d["sem_seg_file_name"])).astype(np.int64)
        valid = stored > 0
        for g, q in zip(stored[valid] - 1, p[valid]):
            conf[g, q] += 1
    return conf


def test_evaluator_single_process(tmp_path):
    dicts, preds = _make_dataset(str(tmp_path))
    _register("segdet_test_eval_single", dicts)
    out = _evaluate("segdet_test_eval_single", dicts, preds, distributed=False,
                    output_dir=str(tmp_path / "eval"))["sem_seg"]
    m = metrics_from_confusion(_expected(dicts, preds))
    assert out["mIoU"] == pytest.approx(100 * m["mIoU"])
    assert out["fwIoU"] == pytest.approx(100 * m["fwIoU"])
    assert out["aAcc"] == pytest.approx(100 * m["aAcc"])
    assert out["IoU-d"] == pytest.approx(100 * m["IoU"][3])
    assert out["Acc-a"] == pytest.approx(100 * m["Acc"][0])
    per_class = {f"{k}-{c}" for k in ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall")
                 for c in "abcd"}
    means = {"mIoU", "fwIoU", "mAcc", "aAcc", "mDice", "mFscore", "mPrecision", "mRecall"}
    assert set(out) == means | per_class
    written = json.loads((tmp_path / "eval" / "sem_seg_metrics.json").read_text())
    assert written["mIoU"] == pytest.approx(out["mIoU"])
    # labels found through the dataset when the inputs do not carry sem_seg_file_name
    again = _evaluate("segdet_test_eval_single", dicts, preds, distributed=False,
                      inputs_have_labels=False)["sem_seg"]
    assert again == out


def test_evaluator_writes_nan_as_null(tmp_path):
    label = tmp_path / "l.png"
    Image.fromarray(np.array([[1, 1], [2, 0]], dtype=np.uint8), mode="L").save(label)  # classes 0, 1
    dicts = [{"file_name": str(tmp_path / "x.jpg"), "sem_seg_file_name": str(label)}]
    _register("segdet_test_eval_nan", dicts)
    pred = np.array([[0, 0], [1, 1]])
    res = _evaluate("segdet_test_eval_nan", dicts, [pred], False, str(tmp_path))["sem_seg"]
    assert math.isnan(res["IoU-c"]) and math.isnan(res["IoU-d"])
    assert res["mIoU"] == pytest.approx(100.0)  # classes 2, 3 excluded; pixel (1, 1) ignored
    written = json.loads((tmp_path / "sem_seg_metrics.json").read_text())
    assert written["IoU-c"] is None and written["IoU-a"] == pytest.approx(100.0)


def test_evaluator_agrees_with_detectron2_when_every_class_is_in_the_gt(tmp_path):
    """detectron2's SemSegEvaluator (no reduce_zero_label) as an independent reference; it
    differs from mmseg only for classes predicted but absent from the GT (NaN there, 0 here),
    which this data avoids."""
    from detectron2.evaluation import SemSegEvaluator

    rng = np.random.RandomState(1)
    dicts, preds = [], []
    for i in range(3):
        gt = rng.randint(0, NUM_CLASSES, size=(6, 8))
        gt[0, :NUM_CLASSES] = np.arange(NUM_CLASSES)
        gt[rng.rand(6, 8) < 0.15] = 255
        path = _save_gt(tmp_path / f"gt_{i}.png", gt)
        dicts.append({"file_name": str(tmp_path / f"img_{i}.jpg"), "sem_seg_file_name": path})
        preds.append(np.where(rng.rand(6, 8) < 0.5, np.where(gt == 255, 0, gt),
                              rng.randint(0, NUM_CLASSES, size=(6, 8))))
    name = "segdet_test_eval_vs_d2"
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c", "d"], ignore_label=255)
    ours = _evaluate(name, dicts, preds, distributed=False)["sem_seg"]
    ref = SemSegEvaluator(name, distributed=False)
    ref.reset()
    for d, p in zip(dicts, preds):
        ref.process([{"file_name": d["file_name"]}], [{"sem_seg": _logits(p)}])
    theirs = ref.evaluate()["sem_seg"]
    assert ours["mIoU"] == pytest.approx(theirs["mIoU"])
    assert ours["fwIoU"] == pytest.approx(theirs["fwIoU"])
    assert ours["mAcc"] == pytest.approx(theirs["mACC"])
    assert ours["aAcc"] == pytest.approx(theirs["pACC"])
    assert ours["IoU-c"] == pytest.approx(theirs["IoU-c"])


def _save_gt(path, gt) -> str:
    Image.fromarray(gt.astype(np.uint8), mode="L").save(path)
    return str(path)


def _ddp_worker(root: str, result_path: str) -> None:
    from detectron2.utils import comm

    dicts, preds = _make_dataset(root)
    _register("segdet_test_eval_ddp", dicts)
    rank, world = comm.get_rank(), comm.get_world_size()
    res = _evaluate("segdet_test_eval_ddp", dicts[rank::world], preds[rank::world], distributed=True)
    with open(f"{result_path}.{rank}", "wb") as f:
        pickle.dump(res, f)
    # Leave together: a rank that exits while the other still holds the gloo group (rank 0 works on
    # after the gather) can abort in gloo's teardown ("terminate called without an active exception").
    comm.synchronize()
    torch.distributed.destroy_process_group()


def test_evaluator_two_process_gloo_matches_single_process(tmp_path):
    from detectron2.engine import launch

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    result = str(tmp_path / "result.pkl")
    # CPU-only (conftest hides GPUs): detectron2's launch picks the GLOO backend.
    launch(_ddp_worker, num_gpus_per_machine=2, dist_url=f"tcp://127.0.0.1:{free_port()}",
           args=(str(data_dir), result))
    with open(result + ".0", "rb") as f:
        main = pickle.load(f)
    with open(result + ".1", "rb") as f:
        other = pickle.load(f)
    assert other == {}
    single_dir = tmp_path / "single"
    single_dir.mkdir()
    dicts, preds = _make_dataset(str(single_dir))
    _register("segdet_test_eval_ddp_single", dicts)
    single = _evaluate("segdet_test_eval_ddp_single", dicts, preds, distributed=False)
    assert main.keys() == single.keys()
    for key, value in single["sem_seg"].items():
        assert main["sem_seg"][key] == pytest.approx(value, nan_ok=True), key
    # each rank alone would give a different answer: the gather matters
    half = _evaluate("segdet_test_eval_ddp_single", dicts[::2], preds[::2], distributed=False)
    assert half["sem_seg"]["mIoU"] != pytest.approx(single["sem_seg"]["mIoU"])

