"""Semantic-segmentation metrics from a confusion matrix (pure functions, mmseg conventions).

``conf[g, p]`` counts the valid pixels of ground-truth class ``g`` predicted as ``p``. Per class
``IoU = TP / (TP + FP + FN)`` (NaN when the class is absent from both GT and prediction) and
``Acc = TP / (TP + FN)`` (NaN when absent from GT); ``mIoU``/``mAcc`` are NaN-means over classes,
``aAcc = trace / total`` and ``fwIoU = sum_c (GT pixels of c / total) * IoU_c``.

Beside them, mmseg's ``mDice`` / ``mFscore`` / ``mPrecision`` / ``mRecall`` family: per class
``Dice = 2TP / (2TP + FP + FN)`` (NaN when absent from both GT and prediction, like IoU),
``Precision = TP / (TP + FP)`` (NaN when never predicted), ``Recall = TP / (TP + FN)`` (the same
number as ``Acc``) and ``Fscore``, the harmonic mean of precision and recall. For semantic
segmentation F-score and Dice are one number, ``2PR / (P + R) = 2TP / (2TP + FP + FN)``, so
``Fscore`` is computed from the counts and equals ``Dice`` for every class; that also covers the
classes whose precision or recall is undefined (only in GT, or only predicted), where mmseg's
``2PR / (P + R)`` reads NaN and this module gives 0 (the pixels of that class are all wrong).
The means are NaN-means over classes. All values are fractions in [0, 1]; the evaluator reports
them in percent.
"""
from typing import Dict, Union

import numpy as np

__all__ = ["confusion_matrix", "metrics_from_confusion"]


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int,
                     ignore_label: int = 255) -> np.ndarray:
    """(K, K) int64 confusion matrix, rows = ground truth, columns = prediction.

    Args:
        pred: (H, W) integer predicted class ids in [0, K).
        gt: (H, W) integer ground truth; pixels equal to ``ignore_label`` are skipped.
        num_classes: K.
        ignore_label: the "not labelled" value of ``gt``.

    Raises:
        ValueError: shapes differ, or a non-ignored value lies outside [0, K).
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    valid = gt != ignore_label
    g = gt[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    for name, values in (("ground-truth", g), ("prediction", p)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            bad = values.min() if values.min() < 0 else values.max()
            raise ValueError(
                f"{name} value {bad} outside [0, {num_classes}) (ignore label {ignore_label}); "
                "wrong num_classes or reduce_zero_label?"
            )
    counts = np.bincount(g * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def metrics_from_confusion(conf: np.ndarray) -> Dict[str, Union[float, np.ndarray]]:
    """Metrics of a (K, K) confusion matrix (rows GT, columns prediction).

    Returns:
        ``{"IoU", "Acc", "Dice", "Fscore", "Precision", "Recall"}`` as (K,) float64 arrays and
        ``"mIoU", "mAcc", "aAcc", "fwIoU", "mDice", "mFscore", "mPrecision", "mRecall"`` as floats, all
        fractions; NaN marks an undefined value (per class: see module docstring; the scalars
        are NaN only when every pixel was ignored).
    """
    conf = np.asarray(conf, dtype=np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion matrix must be square (K, K), got shape {conf.shape}")
    tp = np.diag(conf)
    gt_count = conf.sum(axis=1)
    pred_count = conf.sum(axis=0)
    total = conf.sum()
    iou = _safe_divide(tp, gt_count + pred_count - tp)
    acc = _safe_divide(tp, gt_count)
    dice = _safe_divide(2 * tp, gt_count + pred_count)  # 2TP / (2TP + FP + FN)
    precision = _safe_divide(tp, pred_count)
    recall = acc
    fscore = dice.copy()  # 2PR / (P + R) == 2TP / (2TP + FP + FN): see the module docstring
    present = gt_count > 0
    return {
        "IoU": iou,
        "Acc": acc,
        "Dice": dice,
        "Fscore": fscore,
        "Precision": precision,
        "Recall": recall.copy(),
        "mIoU": _nanmean(iou),
        "mAcc": _nanmean(acc),
        "aAcc": float(tp.sum() / total) if total > 0 else float("nan"),
        "fwIoU": float((gt_count[present] / total * iou[present]).sum()) if total > 0 else float("nan"),
        "mDice": _nanmean(dice),
        "mFscore": _nanmean(fscore),
        "mPrecision": _nanmean(precision),
        "mRecall": _nanmean(recall),
    }
