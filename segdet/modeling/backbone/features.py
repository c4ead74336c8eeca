"""Checking that a head's input features are among those a backbone produces."""
from typing import Dict, Sequence

from detectron2.layers import ShapeSpec

__all__ = ["check_in_features"]


def check_in_features(key: str, names: Sequence[str], input_shape: Dict[str, ShapeSpec]) -> None:
    """Raise a ``KeyError`` naming the config ``key`` when one of its feature ``names`` is not in
    the backbone's ``input_shape`` (listing what the backbone gives)."""
    missing = [f for f in names if f not in input_shape]
    if missing:
        raise KeyError(f"{key}: {missing} not produced by the backbone (it gives {sorted(input_shape)})")
