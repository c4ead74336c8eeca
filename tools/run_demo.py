#!/usr/bin/env python
"""segdet's main job on the embedded sample data: prepares the data (once), then for a detector
and a semantic segmentor evaluates the untrained model, trains it with tools/train_net.py,
evaluates it again, and writes a summary.

Outputs (under --output, default output/demo):
  summary.json                         before/after metrics and timings of every job
  <job>/model_final.pth, last_checkpoint, metrics.json, training_curves.png, log.txt
  <job>/inference/<dataset>/visualizations/*.png    prediction overlays
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))  # tools/sample_data

JOBS = [
    # (name, config, metric path in eval_results.json, metric label)
    ("detection", "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml", ("bbox", "AP"), "COCO AP"),
    ("segmentation", "configs/Samples/semseg_fpn_mnv2_street.yaml", ("sem_seg", "mIoU"), "mIoU"),
]


def run_train_net(args, log_prefix):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), *args]
    print(f"[demo] {log_prefix}: {' '.join(cmd[1:])}", flush=True)
    start = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    return time.time() - start


def read_metric(output_dir, path):
    with open(os.path.join(output_dir, "eval_results.json")) as f:
        results = json.load(f)
    value = results
    for key in path:
        value = value[key]
    return float(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/demo", help="where all results go")
    parser.add_argument("--jobs", nargs="+", default=[j[0] for j in JOBS], choices=[j[0] for j in JOBS])
    parser.add_argument("--max-iter", type=int, default=None, help="override SOLVER.MAX_ITER (quick runs)")
    args = parser.parse_args()

    from sample_data import ensure_samples

    ensure_samples(verbose=True)
    summary = {}
    for name, config, metric_path, label in JOBS:
        if name not in args.jobs:
            continue
        out = os.path.join(args.output, name)
        opts = ["OUTPUT_DIR", out]
        if args.max_iter:
            opts += ["SOLVER.MAX_ITER", str(args.max_iter)]
        before_dir = os.path.join(out, "untrained")
        t_eval = run_train_net(["--config-file", config, "--eval-only", "OUTPUT_DIR", before_dir,
                                "TEST.VIS_NUM_IMAGES", "0"], f"{name}: evaluating the untrained model")
        t_train = run_train_net(["--config-file", config, *opts], f"{name}: training")
        summary[name] = {
            "config": config,
            "metric": label,
            "untrained": read_metric(before_dir, metric_path),
            "trained": read_metric(out, metric_path),
            "train_seconds": round(t_train, 1),
            "eval_seconds_untrained": round(t_eval, 1),
            "output_dir": out,
        }
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print("\n[demo] results on the sample validation splits")
    print(f"{'job':<14}{'metric':<10}{'untrained':>11}{'trained':>10}{'train time':>12}")
    for name, s in summary.items():
        print(f"{name:<14}{s['metric']:<10}{s['untrained']:>11.2f}{s['trained']:>10.2f}{s['train_seconds']:>11.0f}s")
    print(f"[demo] summary: {os.path.join(args.output, 'summary.json')}; checkpoints, metrics.json, "
          "training_curves.png and prediction overlays under each job's folder")


if __name__ == "__main__":
    from segdet.utils.errors import run_with_clear_errors

    run_with_clear_errors(main)
