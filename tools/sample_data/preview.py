"""Preview pictures of the sample data (PIL only): boxes on detection images, coloured label
overlays on segmentation images, to check by eye that labels line up with the pixels."""
import json
import os
from typing import List, Optional

import numpy as np
from PIL import Image, ImageDraw

from .layout import DETECTION_COMPONENTS, SEM_SEG_COMPONENTS, index_path, sample_root

__all__ = ["render_previews", "label_colors"]


def label_colors(n: int) -> np.ndarray:
    """(256, 3) uint8 palette: class 0 black, classes 1..n-1 distinct bright colours, 255 white
    (the same as the datasets' ``stuff_colors``, ``segdet/data/datasets/sample_layout.py``)."""
    rng = np.random.default_rng(0)
    pal = rng.integers(64, 256, size=(256, 3)).astype(np.uint8)
    fixed = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)]
    for i, c in enumerate(fixed[:n]):
        pal[i] = c
    pal[255] = (255, 255, 255)
    return pal


def _detection_preview(component: str, split: str, root: str, out: str, max_images: int = 4) -> str:
    folder = os.path.dirname(index_path(component, split, root))
    with open(index_path(component, split, root)) as f:
        coco = json.load(f)
    images = sorted(coco["images"], key=lambda im: -sum(a["image_id"] == im["id"] for a in coco["annotations"]))
    tiles = []
    for im in images[:max_images]:
        pic = Image.open(os.path.join(folder, "images", split, im["file_name"])).convert("RGB")
        draw = ImageDraw.Draw(pic)
        for a in coco["annotations"]:
            if a["image_id"] == im["id"]:
                x, y, w, h = a["bbox"]
                draw.rectangle([x, y, x + w, y + h], outline=(255, 40, 40), width=2)
        tiles.append(pic)
    return _save_row(tiles, out)


def _sem_seg_preview(component: str, split: str, root: str, out: str, n_classes: int) -> str:
    folder = os.path.dirname(index_path(component, split, root))
    with open(index_path(component, split, root)) as f:
        records = json.load(f)["records"]
    pal = label_colors(n_classes)
    tiles = []
    for rec in records[:2]:
        image = np.asarray(Image.open(os.path.join(folder, rec["file_name"])).convert("RGB"), dtype=np.float32)
        label = np.asarray(Image.open(os.path.join(folder, rec["sem_seg_file_name"])))
        color = pal[label].astype(np.float32)
        alpha = np.where(label == 0, 0.0, 0.5)[..., None]
        tiles.append(Image.fromarray((image * (1 - alpha) + color * alpha).astype(np.uint8)))
        tiles.append(Image.fromarray(pal[label]))  # the label map alone (255 = ignore: white)
    return _save_row(tiles, out)


def _save_row(tiles: List[Image.Image], out: str, height: int = 400) -> str:
    tiles = [t.resize((max(1, round(t.width * height / t.height)), height)) for t in tiles]
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + 8 * (len(tiles) - 1), height), (255, 255, 255))
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width + 8
    canvas.save(out)
    return out


def render_previews(out_dir: str, root: Optional[str] = None, split: str = "val") -> List[str]:
    """Write ``samples_preview_<component>_<split>.png`` for every dataset into ``out_dir``."""
    root = root if root is not None else sample_root()
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for comp in DETECTION_COMPONENTS:
        written.append(_detection_preview(comp, split, root, os.path.join(out_dir, f"samples_preview_{comp}_{split}.png")))
    for comp, classes in SEM_SEG_COMPONENTS.items():
        written.append(_sem_seg_preview(comp, split, root, os.path.join(out_dir, f"samples_preview_{comp}_{split}.png"),
                                        len(classes)))
    return written
