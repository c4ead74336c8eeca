#!/usr/bin/env python
"""Draw a dataset's ground truth into PNGs: as annotated, or as the training loader gives it to the model.

Examples:
  # the raw annotations (boxes, masks) of the first 20 training images
  python tools/visualize_data.py --config-file configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml \\
      --source annotation --output-dir vis/trees

  # what the model is trained on: augmented crops, labels after reduce_zero_label and ignore handling
  python tools/visualize_data.py --config-file configs/Samples/semseg_fpn_mnv2_street.yaml \\
      --source dataloader --output-dir vis/street --num-images 8

  # the test datasets, with config overrides (trailing KEY VALUE pairs)
  python tools/visualize_data.py --config-file CONFIG --source annotation --split test \\
      --output-dir vis/val DATASETS.TEST '("my_val",)'

Drawing rules:
  boxes and masks: one colour per class (the metadata's thing_colors, else detectron2's palette),
    labelled with the class name ("crowd" added for iscrowd annotations).
  label maps: class k < len(stuff_classes) is tinted at 50% opacity with stuff_colors[k] (else
    detectron2's palette); pixels with the ignore value (the dataset's ignore_label, else
    MODEL.SEM_SEG_HEAD.IGNORE_VALUE) are black; any other value is left untinted. Annotation label
    maps are read as the mapper reads them (reduce_zero_label applied), so their values are the
    dataset's class ids.
  --source dataloader: the training loader with DATALOADER.NUM_WORKERS 0, one image per batch and
    SEED 0 unless the config sets one (the same images every run). With --split test it is the test
    loader: the resized images only, as the test mapper passes no labels to the model.
Files are NNN_<image file stem>.png, NNN the drawing order (the loader may repeat an image).
"""
import argparse
import itertools
import os
import sys
import warnings

warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*is deprecated", category=FutureWarning)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.catalog import Metadata  # noqa: E402
from detectron2.data.detection_utils import convert_image_to_rgb  # noqa: E402
from detectron2.structures import BoxMode, PolygonMasks  # noqa: E402
from detectron2.utils.colormap import colormap  # noqa: E402
from detectron2.utils.env import seed_all_rng  # noqa: E402
from detectron2.utils.visualizer import Visualizer  # noqa: E402

import segdet  # noqa: E402,F401  (registers everything)
from segdet.data.io import metadata_label_lookup, read_image_checked, read_sem_seg_label  # noqa: E402
from segdet.utils.config_io import load_config  # noqa: E402
from segdet.utils.errors import ConfigError, run_with_clear_errors  # noqa: E402


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visualize_data.py", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--source", required=True, choices=["annotation", "dataloader"],
                        help="annotation: the dataset dicts as registered; dataloader: the mapper's output")
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="folder for the PNGs (created)")
    parser.add_argument("--num-images", type=positive_int, default=20, metavar="N", help="stop after N (default 20)")
    parser.add_argument("--split", choices=["train", "test"], default="train",
                        help="draw DATASETS.TRAIN (default) or DATASETS.TEST")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides")
    return parser


def checked_names(cfg, split: str):
    """The dataset names of ``split``; ConfigError for none or an unregistered one."""
    key = f"DATASETS.{split.upper()}"
    names = list(cfg.DATASETS.TRAIN if split == "train" else cfg.DATASETS.TEST)
    if not names:
        raise ConfigError(f"{key} is empty: name at least one registered dataset")
    for name in names:
        if name not in DatasetCatalog.list():
            raise ConfigError(f"{key}: dataset {name!r} is not registered (declare it under DATASETS.DECLARE "
                              "or register it in Python before running this tool)")
    return names


def ignore_value(cfg, metadata) -> int:
    return metadata.get("ignore_label", cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)


def draw(image, metadata, ignore: int, boxes=None, classes=(), crowd=(), masks=None, sem_seg=None) -> np.ndarray:
    """``image`` (H, W, 3) RGB uint8 with the ground truth drawn (rules in the module docstring).

    Args:
        boxes: (N, 4) XYXY_ABS; classes: N contiguous class ids; crowd: N iscrowd flags (or empty);
        masks: N masks in any form detectron2's Visualizer takes (polygon lists, RLE, (H, W) arrays);
        sem_seg: (H, W) integer class ids.
    Returns: (H, W, 3) RGB uint8.
    """
    if sem_seg is not None:
        sem_seg = np.asarray(sem_seg, dtype=np.int64)
        image = np.where((sem_seg == ignore)[..., None], 0, image).astype(np.uint8)
        sem_seg = np.where(sem_seg == ignore, np.iinfo(np.int64).max, sem_seg)  # no class: not tinted
    palette = colormap(rgb=True, maximum=255)
    stuff_classes = metadata.get("stuff_classes", None)
    if stuff_classes and not metadata.get("stuff_colors", None):  # else detectron2 picks random ones
        colours = [palette[k % len(palette)].tolist() for k in range(len(stuff_classes))]
        metadata = Metadata(**{**metadata.as_dict(), "stuff_colors": colours})
    vis = Visualizer(image, metadata)
    if boxes is not None and len(boxes):
        names = metadata.get("thing_classes", None) or [str(c) for c in range(max(classes) + 1)]
        thing_colors = metadata.get("thing_colors", None) or palette
        colors = [np.asarray(thing_colors[c % len(thing_colors)]) / 255 for c in classes]
        labels = [names[c] + (" crowd" if crowd and crowd[i] else "") for i, c in enumerate(classes)]
        vis.overlay_instances(boxes=np.asarray(boxes), labels=labels, masks=masks, assigned_colors=colors)
    if sem_seg is not None and stuff_classes:
        vis.draw_sem_seg(sem_seg, area_threshold=0, alpha=0.5)
    return vis.output.get_image()


def annotation_pictures(cfg, names):
    """(file_name, drawn (H, W, 3) RGB at the original size) for each dataset dict of ``names``."""
    for name in names:
        metadata = MetadataCatalog.get(name)
        ignore = ignore_value(cfg, metadata)
        for d in DatasetCatalog.get(name):
            annos = d.get("annotations") or []
            boxes = [BoxMode.convert(a["bbox"], a.get("bbox_mode", BoxMode.XYXY_ABS), BoxMode.XYXY_ABS) for a in annos]
            masks = [a["segmentation"] for a in annos] if annos and "segmentation" in annos[0] else None
            sem_seg = None
            if "sem_seg_file_name" in d:
                reduce = bool(d.get("reduce_zero_label", metadata.get("reduce_zero_label", False)))
                sem_seg = read_sem_seg_label(d["sem_seg_file_name"], reduce_zero_label=reduce, ignore_label=ignore,
                                             lookup=metadata_label_lookup(metadata, ignore))
            image = read_image_checked(d["file_name"], format="RGB")
            yield d["file_name"], draw(image, metadata, ignore, boxes, [a["category_id"] for a in annos],
                                       [a.get("iscrowd", 0) for a in annos], masks, sem_seg)


def dataloader_pictures(cfg, names, split: str):
    """(file_name, drawn (H', W', 3) RGB at the mapper's output size) for each mapped dict that the
    training loader (``split="train"``, endless) or the test loaders yield."""
    from segdet.engine import Trainer

    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 1
    if cfg.SEED < 0:
        cfg.SEED = 0
    seed_all_rng(cfg.SEED)  # the augmentations draw from the global RNGs
    metadata = MetadataCatalog.get(names[0])  # as the mappers read reduce_zero_label / ignore_label
    ignore = ignore_value(cfg, metadata)
    loaders = [Trainer.build_train_loader(cfg)] if split == "train" else [
        Trainer.build_test_loader(cfg, name) for name in names]
    for loader in loaders:
        for batch in loader:
            for d in batch:
                image = convert_image_to_rgb(d["image"].permute(1, 2, 0), cfg.INPUT.FORMAT)
                boxes, classes, masks = None, (), None
                if "instances" in d:
                    inst = d["instances"]
                    boxes, classes = inst.gt_boxes.tensor.numpy(), inst.gt_classes.tolist()
                    if inst.has("gt_masks"):
                        gt = inst.gt_masks
                        masks = gt.polygons if isinstance(gt, PolygonMasks) else list(gt.tensor.numpy())
                yield d["file_name"], draw(np.asarray(image, dtype=np.uint8), metadata, ignore, boxes, classes,
                                           (), masks, d.get("sem_seg"))


def visualize(args) -> list:
    """Write the PNGs; returns their paths."""
    cfg = load_config(args.config_file, args.opts)
    names = checked_names(cfg, args.split)
    pictures = (annotation_pictures(cfg, names) if args.source == "annotation"
                else dataloader_pictures(cfg, names, args.split))
    os.makedirs(args.output_dir, exist_ok=True)
    paths = []
    for index, (file_name, picture) in enumerate(itertools.islice(pictures, args.num_images)):
        stem = os.path.splitext(os.path.basename(file_name))[0]
        path = os.path.join(args.output_dir, f"{index:03d}_{stem}.png")
        Image.fromarray(picture).save(path)
        paths.append(path)
        print(f"wrote {path} ({picture.shape[1]}x{picture.shape[0]})", flush=True)
    print(f"{len(paths)} image(s) of {', '.join(names)} ({args.source}) in {args.output_dir}")
    return paths


def main(argv=None) -> list:
    return run_with_clear_errors(visualize, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
