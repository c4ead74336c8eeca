"""Image and semantic-label readers with errors that name the offending file.

``read_image_checked`` wraps detectron2's ``read_image`` and also reads 16/32-bit grayscale
images correctly (see :func:`high_bit_depth_to_8bit`); ``read_sem_seg_label`` reads a label
PNG and, for datasets whose label 0 means "unlabelled" (ADE20K), applies mmseg's
``reduce_zero_label`` shift on load (0 -> ignore, k -> k-1), or, for datasets whose file values
are not the contiguous class ids (COCO-Stuff's raw maps), a lookup table built from the dataset
metadata's ``label_map`` ({file value: class id}, :func:`label_lookup_table`), so the official
files are used as they are, with no preprocessing pass.
"""
from typing import Mapping, Optional

import numpy as np
from PIL import Image

from detectron2.data.detection_utils import _apply_exif_orientation, convert_PIL_to_numpy
from detectron2.utils.file_io import PathManager

__all__ = ["CorruptImageError", "high_bit_depth_to_8bit", "label_lookup_table", "metadata_label_lookup",
           "read_image_checked", "read_sem_seg_label", "reduce_zero_label_map"]


class CorruptImageError(ValueError):
    """An image or label file that exists but cannot be decoded."""


def _integer_bit_depth(image: Image.Image) -> int:
    """Bits per sample of a mode "I;16*" / "I" image: 16 for "I;16*" and for PNGs (older Pillow
    opens 16-bit PNGs as "I"), the TIFF BitsPerSample tag where present, else 32."""
    if image.mode.startswith("I;16") or image.format == "PNG":
        return 16
    bits = getattr(image, "tag_v2", {}).get(258) if image.format == "TIFF" else None
    bits = bits[0] if isinstance(bits, tuple) and bits else bits
    return int(bits) if isinstance(bits, int) and 8 < bits <= 32 else 32


def _is_high_bit_integer(image: Image.Image) -> bool:
    return image.mode == "I" or image.mode.startswith("I;16")


def high_bit_depth_to_8bit(image: Image.Image, bits: Optional[int] = None) -> Image.Image:
    """A mode-"L" (8-bit grayscale) copy of a 16/32-bit integer or 32-bit float grayscale image
    (PIL modes "I;16*", "I", "F"); any other image is returned as it is.

    The scale is fixed by the type's range, not by each image's min/max, so the same pixel value
    gives the same 8-bit value in every image of a dataset (as OpenCV's ``imread`` does):
    a ``b``-bit integer value ``v`` becomes ``v >> (b - 8)`` (16-bit: ``v >> 8``, 65535 -> 255;
    negative values -> 0); a float value ``x`` is taken to lie in [0, 1] and becomes
    ``round(255 * x)``, clipped to [0, 255] (NaN -> 0). PIL itself would clip every value above
    255 to 255, turning a typical 16-bit image all white.

    Args:
        bits: bits per integer sample; None reads them from ``image`` (:func:`_integer_bit_depth`).
    """
    if image.mode == "F":
        x = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        out = np.clip(np.rint(x * 255.0), 0, 255)
    elif _is_high_bit_integer(image):
        shift = (bits or _integer_bit_depth(image)) - 8
        out = np.clip(np.asarray(image).astype(np.int64), 0, None) >> shift
        out = np.minimum(out, 255)
    else:
        return image
    return Image.fromarray(out.astype(np.uint8), mode="L")


def read_image_checked(path: str, format: Optional[str] = None) -> np.ndarray:
    """Read an image as (H, W, C) uint8 (or (H, W, 1) for ``format="L"``) in ``format``
    ("RGB", "BGR", "L", ... as detectron2's ``read_image``, EXIF orientation applied; None keeps
    the file's mode). 16/32-bit grayscale files are first scaled to 8 bits by their type's range
    (:func:`high_bit_depth_to_8bit`), then converted to ``format``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptImageError: the file exists but cannot be decoded (message names the file and
            the decoder's reason).
    """
    if not PathManager.exists(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with PathManager.open(path, "rb") as f:
            image = Image.open(f)
            bits = _integer_bit_depth(image) if _is_high_bit_integer(image) else None  # before EXIF
            image = high_bit_depth_to_8bit(_apply_exif_orientation(image), bits)
            return convert_PIL_to_numpy(image, format)
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


def label_lookup_table(label_map: Mapping[int, int], ignore_label: int = 255, size: int = 256) -> np.ndarray:
    """A (size,) table ``t`` (uint8 when every entry fits, else int64) with ``t[v] = label_map[v]`` for every file value ``v`` of
    ``label_map`` and ``t[v] = ignore_label`` for every other value (unused ids, the unlabelled
    value). ``size`` = 256 covers 8-bit label files.

    Raises:
        ValueError: a key outside [0, size), or a class id that is negative.
    """
    table = np.full(size, ignore_label, dtype=np.int64)
    for value, class_id in label_map.items():
        if not 0 <= int(value) < size or int(class_id) < 0:
            raise ValueError(f"label_map entry {value} -> {class_id}: expected a file value in "
                             f"[0, {size}) and a class id >= 0")
        table[int(value)] = int(class_id)
    return table.astype(np.uint8) if 0 <= table.min() and table.max() <= 255 else table


def metadata_label_lookup(metadata, ignore_label: int = 255) -> Optional[np.ndarray]:
    """The lookup table of a dataset's ``label_map`` metadata ({file value: class id}), or None
    when the dataset has none (its files hold the class ids, possibly after reduce_zero_label)."""
    label_map = getattr(metadata, "label_map", None) if metadata is not None else None
    return None if not label_map else label_lookup_table(label_map, ignore_label)


def read_sem_seg_label(path: str, reduce_zero_label: bool = False, ignore_label: int = 255,
                       lookup: Optional[np.ndarray] = None) -> np.ndarray:
    """Read a single-channel label PNG as (H, W) uint8 (8-bit files) or int64 (16/32-bit files);
    with ``lookup``, the table's dtype.

    Args:
        path: label file; its pixel values are class ids (palette PNGs give the palette index).
        reduce_zero_label: apply :func:`reduce_zero_label_map` (0 -> ignore, k -> k-1).
        ignore_label: the "not labelled" value.
        lookup: a table from :func:`label_lookup_table`: file value ``v`` becomes ``lookup[v]``
            (applied instead of reduce_zero_label; the two cannot be combined).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptImageError: the file cannot be decoded, it has colour channels (a label map
            must be single-channel: mode L, P, I or I;16), or it has a value outside ``lookup``.
        ValueError: both ``reduce_zero_label`` and ``lookup`` given.
    """
    if reduce_zero_label and lookup is not None:
        raise ValueError(f"label {path}: reduce_zero_label and a label lookup table cannot be combined; "
                         "fold the shift into the dataset's label_map")
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
    if lookup is not None:
        if label.size and (label.min() < 0 or label.max() >= len(lookup)):
            raise CorruptImageError(
                f"label {path} has value {int(label.max() if label.max() >= len(lookup) else label.min())}"
                f" outside the dataset's label_map table [0, {len(lookup)})")
        label = lookup[label]
    return label
