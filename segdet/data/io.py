"""Image and semantic-label readers with errors that name the offending file.

``read_image_checked`` wraps detectron2's ``read_image``; ``read_sem_seg_label`` reads a label
PNG and, for datasets whose label 0 means "unlabelled" (ADE20K), applies mmseg's
``reduce_zero_label`` shift on load (0 -> ignore, k -> k-1), so the official files are used as
they are, with no preprocessing pass.
"""
from typing import Optional

import numpy as np
from PIL import Image

from detectron2.data.detection_utils import read_image
from detectron2.utils.file_io import PathManager

__all__ = ["CorruptImageError", "read_image_checked", "read_sem_seg_label", "reduce_zero_label_map"]


class CorruptImageError(ValueError):
    """An image or label file that exists but cannot be decoded."""


def read_image_checked(path: str, format: Optional[str] = None) -> np.ndarray:
    """Read an image as (H, W, C) uint8 (or (H, W, 1) for ``format="L"``) in ``format``
    ("RGB", "BGR", "L", ... as detectron2's ``read_image``; None keeps the file's mode).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptImageError: the file exists but cannot be decoded (message names the file and
            the decoder's reason).
    """
    if not PathManager.exists(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        return read_image(path, format=format)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL: UnidentifiedImageError, truncated data
        raise CorruptImageError(f"cannot read image {path}: {type(e).__name__}: {e}") from e


def reduce_zero_label_map(label: np.ndarray, ignore_label: int = 255) -> np.ndarray:
    """mmseg's ``reduce_zero_label`` on an integer label map (H, W): 0 -> ``ignore_label``,
    ``ignore_label`` stays ``ignore_label``, every other k -> k-1. Same dtype as ``label``
    (uint8 stays uint8 when ``ignore_label`` <= 255)."""
    if label.dtype == np.uint8 and not 0 <= ignore_label <= 255:
        label = label.astype(np.int64)
    out = label.copy()
    keep = (label != 0) & (label != ignore_label)
    out[keep] = label[keep] - 1
    out[~keep] = ignore_label
    return out


def read_sem_seg_label(path: str, reduce_zero_label: bool = False, ignore_label: int = 255) -> np.ndarray:
    """Read a single-channel label PNG as (H, W) uint8 (8-bit files) or int64 (16/32-bit files).

    Args:
        path: label file; its pixel values are class ids (palette PNGs give the palette index).
        reduce_zero_label: apply :func:`reduce_zero_label_map` (0 -> ignore, k -> k-1).
        ignore_label: the "not labelled" value.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptImageError: the file cannot be decoded, or it has colour channels (a label map
            must be single-channel: mode L, P, I or I;16).
    """
    if not PathManager.exists(path):
        raise FileNotFoundError(f"label file not found: {path}")
    try:
        with PathManager.open(path, "rb") as f:
            image = Image.open(f)
            mode = image.mode
            label = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as e:
        raise CorruptImageError(f"cannot read label {path}: {type(e).__name__}: {e}") from e
    if label.ndim != 2:
        raise CorruptImageError(
            f"label {path} has mode {mode} with shape {label.shape}; expected a single-channel "
            "(H, W) class-id map (PNG mode L, P, I or I;16)"
        )
    label = label.astype(np.uint8 if label.dtype == np.uint8 else np.int64)
    if reduce_zero_label:
        label = reduce_zero_label_map(label, ignore_label)
    return label
