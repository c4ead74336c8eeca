"""Pure conversion functions of the sample-data preparation (numpy only, no file access).

Boxes are absolute ``XYXY`` float arrays of shape (N, 4) in continuous pixel coordinates
(``x_max = width`` for a box touching the right border); windows are ``(x0, y0, w, h)``.
"""
import math
import xml.etree.ElementTree as ET
from typing import Dict, Iterable, List, Mapping, Set, Tuple

import numpy as np

__all__ = [
    "parse_voc_boxes", "tile_starts", "tile_windows", "crop_boxes", "xyxy_to_xywh",
    "split_by_source", "remap_label",
]

Window = Tuple[int, int, int, int]


def parse_voc_boxes(xml_text: str) -> Tuple[int, int, np.ndarray, List[str]]:
    """Parse a PASCAL VOC annotation.

    Returns:
        ``(width, height, boxes, names)``: boxes (N, 4) float64 XYXY, clipped to the image;
        names (N,) the ``<name>`` of each object.

    Raises:
        ValueError: malformed XML, or a missing ``size``/``bndbox`` field (named).
    """
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as e:
        raise ValueError(f"cannot parse VOC XML: {e}") from e

    def number(node, tag: str, where: str) -> float:
        child = node.find(tag)
        if child is None or child.text is None:
            raise ValueError(f"VOC XML: missing <{tag}> in <{where}>")
        return float(child.text)

    size = root.find("size")
    if size is None:
        raise ValueError("VOC XML: missing <size>")
    width, height = int(number(size, "width", "size")), int(number(size, "height", "size"))
    boxes, names = [], []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            raise ValueError("VOC XML: an <object> has no <bndbox>")
        boxes.append([number(box, k, "bndbox") for k in ("xmin", "ymin", "xmax", "ymax")])
        names.append((obj.findtext("name") or "").strip())
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    arr[:, 0::2] = arr[:, 0::2].clip(0, width)
    arr[:, 1::2] = arr[:, 1::2].clip(0, height)
    return width, height, arr, names


def tile_starts(length: int, tile: int, min_overlap: int) -> List[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)``, evenly spread so that
    consecutive tiles overlap by at least ``min_overlap`` pixels; ``[0]`` when
    ``length <= tile`` (the tile is then the whole extent).

    Example: ``tile_starts(600, 400, 40) == [0, 200]``.
    """
    if tile <= 0 or not 0 <= min_overlap < tile:
        raise ValueError(f"need tile > 0 and 0 <= min_overlap < tile, got tile={tile}, "
                         f"min_overlap={min_overlap}")
    if length <= tile:
        return [0]
    n = math.ceil((length - min_overlap) / (tile - min_overlap))
    n = max(n, 2)
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def tile_windows(width: int, height: int, tile: int, min_overlap: int) -> List[Window]:
    """Row-major ``(x0, y0, w, h)`` windows of :func:`tile_starts` along both axes."""
    return [(x0, y0, min(tile, width), min(tile, height))
            for y0 in tile_starts(height, tile, min_overlap)
            for x0 in tile_starts(width, tile, min_overlap)]


def crop_boxes(boxes: np.ndarray, window: Window, min_kept_fraction: float = 0.5
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Clip boxes (N, 4) XYXY to ``window`` and shift them into window coordinates.

    A box is kept when the clipped part holds at least ``min_kept_fraction`` of its area.

    Returns:
        ``(cropped (M, 4) float64, kept_indices (M,) int64)``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, w, h = window
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(x0, x0 + w)
    clipped[:, 1::2] = clipped[:, 1::2].clip(y0, y0 + h)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (area > 0) & (kept_area > 0) & (kept_area >= min_kept_fraction * area)
    idx = np.nonzero(keep)[0]
    out = clipped[idx] - np.array([x0, y0, x0, y0], dtype=np.float64)
    return out, idx.astype(np.int64)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) XYXY -> (N, 4) COCO ``[x, y, w, h]``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def split_by_source(sources: Iterable[str], val_sources: Set[str]) -> Dict[str, List[str]]:
    """Assign whole source images to splits: ``{"train": [...], "val": [...]}`` in input order.

    Raises:
        ValueError: a name in ``val_sources`` is not among ``sources``, or a split would be empty.
    """
    sources = list(sources)
    unknown = sorted(set(val_sources) - set(sources))
    if unknown:
        raise ValueError(f"validation sources {unknown} are not among the sources {sources}")
    splits = {"train": [s for s in sources if s not in val_sources],
              "val": [s for s in sources if s in val_sources]}
    for name, items in splits.items():
        if not items:
            raise ValueError(f"split {name!r} would be empty (sources {sources}, val {sorted(val_sources)})")
    return splits


def remap_label(label: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """Map every value of an integer label map (H, W) through ``mapping`` to uint8.

    Raises:
        ValueError: the map holds a value with no entry in ``mapping`` (values named).
    """
    label = np.asarray(label)
    values = np.unique(label)
    if values.size and values.min() < 0:
        raise ValueError(f"negative label values {values[values < 0].tolist()}")
    unknown = [int(v) for v in values if int(v) not in mapping]
    if unknown:
        raise ValueError(f"label values {unknown} have no mapping; expected only {sorted(mapping)}")
    lut = np.zeros(int(values.max()) + 1 if values.size else 1, dtype=np.uint8)
    for src, dst in mapping.items():
        if not 0 <= dst <= 255:
            raise ValueError(f"mapping {src} -> {dst}: target must be in [0, 255]")
        if 0 <= src < lut.size:
            lut[src] = dst
    return lut[label]
