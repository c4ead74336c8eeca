"""The check every export gets: the exported model run on the same inputs as PyTorch."""
from typing import Sequence

import numpy as np

__all__ = ["ExportMismatchError", "compare_outputs"]


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
