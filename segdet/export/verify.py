"""The check every export gets: the exported model run on the same inputs as PyTorch."""
from typing import Sequence

import numpy as np

__all__ = ["ExportMismatchError", "compare_outputs", "compare_detections"]


class ExportMismatchError(ValueError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance."""


def compare_outputs(reference: Sequence[np.ndarray], exported: Sequence[np.ndarray], what: str,
                    rtol: float = 1e-4) -> dict:
    """Max abs difference of each pair of outputs, and relative to the largest reference value.

    Raises:
        ExportMismatchError: a shape differs, an output is not finite, or a max abs difference
            exceeds ``rtol`` x max |reference| (message names ``what`` and the numbers).
    """
    worst = {"max_abs_diff": 0.0, "max_abs_reference": 0.0, "relative": 0.0}
    for i, (ref, out) in enumerate(zip(reference, exported)):
        ref, out = np.asarray(ref, dtype=np.float64), np.asarray(out, dtype=np.float64)
        if ref.shape != out.shape:
            raise ExportMismatchError(f"{what}: output {i} has shape {out.shape}, PyTorch's {ref.shape}")
        if not np.isfinite(out).all():
            raise ExportMismatchError(f"{what}: output {i} has non-finite values")
        diff, scale = float(np.abs(ref - out).max(initial=0.0)), float(np.abs(ref).max(initial=0.0))
        relative = diff / scale if scale > 0 else diff
        if relative >= worst["relative"]:
            worst = {"max_abs_diff": diff, "max_abs_reference": scale, "relative": relative}
    if worst["relative"] > rtol:
        raise ExportMismatchError(
            f"{what}: max abs difference {worst['max_abs_diff']:.3g} against PyTorch is {worst['relative']:.3g} "
            f"of the largest output value {worst['max_abs_reference']:.3g}, above the tolerance {rtol:g}")
    return worst


def _pair_near_ties(ref_boxes, ref_scores, ref_classes, boxes, scores, classes, score_tol: float) -> np.ndarray:
    """For each reference detection, the index of the exported one it is compared with: the same
    position, or where the two runs order detections whose scores are equal to within
    ``score_tol`` differently, the detection of the same class with a score within ``score_tol``
    and the nearest box. -1: none (the detections differ)."""
    pairs = np.full(len(ref_scores), -1)
    used = np.zeros(len(scores), dtype=bool)
    for i in range(len(ref_scores)):
        near = np.abs(scores - ref_scores[i]) <= score_tol
        candidates = np.flatnonzero(~used & (classes == ref_classes[i]) & near)
        if len(candidates):
            j = candidates[np.abs(boxes[candidates] - ref_boxes[i]).max(axis=1).argmin()]
            pairs[i], used[j] = j, True
    return pairs


def compare_detections(reference: Sequence[Sequence[np.ndarray]], exported: Sequence[Sequence[np.ndarray]],
                       what: str, rtol: float = 1e-4) -> dict:
    """Compares detections (boxes (N, 4), scores (N,), classes (N,), by decreasing score) of the
    same inputs: the same number, the same classes, and boxes and scores within ``rtol`` x their
    largest reference value (:func:`compare_outputs`). Detections are compared position by
    position, except that two runs may order detections whose scores differ by less than the
    score tolerance either way (a float rounding apart): those are paired by class and nearest
    box. A different detection (an NMS or top-k choice that flips) is a mismatch, not re-paired.

    Returns ``{"detections": [N per input], "boxes": ..., "scores": ...}`` (each as
    :func:`compare_outputs`'s result).

    Raises:
        ExportMismatchError: a count, a class or a difference is off (message names ``what``).
    """
    counts, paired = [], []
    for i, (ref, out) in enumerate(zip(reference, exported)):
        ref_boxes, ref_scores, ref_classes = (np.asarray(x) for x in ref)
        boxes, scores, classes = (np.asarray(x) for x in out)
        if len(scores) != len(ref_scores) or boxes.shape != ref_boxes.shape or classes.shape != ref_classes.shape:
            raise ExportMismatchError(f"{what}: input {i} gives {len(scores)} detections, PyTorch {len(ref_scores)}")
        score_tol = rtol * float(np.abs(ref_scores).max(initial=0.0))
        pairs = np.arange(len(scores))
        off = (classes != ref_classes) | (np.abs(scores - ref_scores) > score_tol)
        if off.any() or np.abs(boxes - ref_boxes).max(initial=0.0) > rtol * float(np.abs(ref_boxes).max(initial=0.0)):
            pairs = _pair_near_ties(ref_boxes, ref_scores, ref_classes, boxes, scores, classes, score_tol)
            if (pairs < 0).any():
                k = int(np.flatnonzero(pairs < 0)[0])
                raise ExportMismatchError(
                    f"{what}: input {i}: PyTorch's detection {k} (class {int(ref_classes[k])}, score "
                    f"{float(ref_scores[k]):.4g}) has no counterpart of the same class and score within "
                    f"{score_tol:.3g}")
        counts.append(len(scores))
        paired.append((ref_boxes, ref_scores, boxes[pairs], scores[pairs]))
    result = {"detections": counts}
    for name, r, e in (("boxes", 0, 2), ("scores", 1, 3)):
        result[name] = compare_outputs([p[r] for p in paired], [p[e] for p in paired], f"{what}: {name}", rtol=rtol)
    return result
