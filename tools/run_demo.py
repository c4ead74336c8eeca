#!/usr/bin/env python
"""segdet's main job on the embedded sample data: for a detector and a semantic segmentor it
trains a teacher, then the same small student alone and with distillation, and compares them.

  detection     Faster R-CNN MobileNetV2-FPN on the tree crowns: teacher FPN/head 256/1024,
                student 128/512, alone and with DRKD (pixel- and instance-wise relations)
  segmentation  street frames: teacher Semantic-FPN (ImageNet MobileNetV2), student CGRSeg-T
                (EfficientFormerV2-S1 + CGRSeg head, from scratch), alone and with DSD (PSD + CSD)

Each task evaluates the untrained student, then runs tools/kd_compare.py (one seed; the 3-seed
comparisons are in projects/<Method>/README.md). Prepares the sample data first (once).

Writes into --output (default output/demo):
  summary.json                              every number of the table, times, paths
  <task>/kd_compare.json, .png, _curves.png  the comparison, its bar chart and training curves
  <task>/<arm>/seed1/                        each run: weights, metrics.json, training_curves.png,
                                             inference/<dataset>/visualizations/*.png overlays
  <task>/untrained/eval_results.json
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))  # tools/sample_data, tools/kd_compare_lib

from segdet.utils.threads import thread_count  # noqa: E402

SEED = 1
PREFIX = "[demo]"


@dataclass(frozen=True)
class DemoTask:
    name: str
    config: str  # a distillation config
    method: str  # its name in the table
    arm: str  # the kd_compare arm of the distilled student
    student_opts: List[str]  # schedule of the students (kd_compare overrides, every arm)
    teacher_opts: List[str]  # the teacher's own schedule (kd_compare --teacher-opts)
    eval_period: int  # validation curve every N iterations
    fixed_opts: List[str] = field(default_factory=list)  # input size, teacher config: also for --max-iter


# Detection runs at 288 px (the configs: 352-448) and the demo's detection teacher is the student's
# own architecture trained twice as long: on 2 CPU cores the sample FPN-256 teacher costs 2.7x a
# student iteration, which does not fit the demo's 15 minutes (the 3-seed comparison in
# projects/DRKD uses it).
DET_INPUT = ["INPUT.MIN_SIZE_TRAIN", "(288,)", "INPUT.MIN_SIZE_TEST", "288"]
TASKS = [
    DemoTask("detection", "projects/DRKD/configs/Samples/faster_rcnn_mnv2_fpn_trees_drkd.yaml", "DRKD", "drkd",
             student_opts=["SOLVER.MAX_ITER", "100", "SOLVER.STEPS", "(80, 92)", "SOLVER.WARMUP_ITERS", "25"],
             teacher_opts=["SOLVER.MAX_ITER", "200", "SOLVER.STEPS", "(160, 185)", "SOLVER.WARMUP_ITERS", "50"],
             eval_period=50,
             fixed_opts=DET_INPUT + ["DISTILL.TEACHER.CONFIG_FILE", "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml"]),
    DemoTask("segmentation", "projects/DSD/configs/Samples/cgrseg_t_street_dsd.yaml", "DSD", "psd+csd",
             student_opts=["SOLVER.MAX_ITER", "80"], teacher_opts=["SOLVER.MAX_ITER", "80"], eval_period=40),
]


def _say(message: str) -> None:
    print(f"{PREFIX} {message}", flush=True)


def _metric(results: dict, key: str) -> float:
    task, name = key.split("/", 1)
    return float(results[task][name])


def evaluate_untrained(task: DemoTask, out: str, opts: List[str], metric_key: str) -> float:
    """Evaluates the student with its initial weights (SEED 1, as the seed-1 runs start)."""
    from segdet.utils.config_io import load_config

    student_arch = load_config(os.path.join(ROOT, task.config)).DISTILL.STUDENT_META_ARCHITECTURE
    run_dir = os.path.join(out, "untrained")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", task.config, "--eval-only",
           *opts, "MODEL.META_ARCHITECTURE", student_arch, "SEED", str(SEED), "OUTPUT_DIR", run_dir,
           "TEST.VIS_NUM_IMAGES", "0"]
    _say(f"{task.name}: evaluating the untrained student ({student_arch}) in {os.path.relpath(run_dir)}")
    with open(os.path.join(out, "untrained.log"), "w") as log:
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
    with open(os.path.join(run_dir, "eval_results.json")) as f:
        return _metric(json.load(f), metric_key)


def run_task(task: DemoTask, output: str, max_iter=None, threads=None) -> dict:
    """The untrained student and the kd_compare comparison of ``task``; returns its summary."""
    import kd_compare

    out = os.path.abspath(os.path.join(output, task.name))
    os.makedirs(out, exist_ok=True)
    student_opts, teacher_opts, eval_period = list(task.student_opts), list(task.teacher_opts), task.eval_period
    if max_iter:  # quick runs: every run max_iter iterations, no LR steps, no warm-up
        student_opts = ["SOLVER.MAX_ITER", str(max_iter), "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "0"]
        teacher_opts = list(student_opts)
        eval_period = 0
    student_opts = task.fixed_opts + student_opts
    started = time.time()
    argv = ["--config-file", task.config, "--output-dir", out, "--seeds", str(SEED),
            "--arms", "student", task.arm, "teacher", "--eval-period", str(eval_period),
            "--teacher-opts", shlex.join(teacher_opts)]
    if threads:
        argv += ["--threads", str(threads)]
    # DISTILL.TEACHER.WEIGHTS "": the demo trains its own teacher even where the config's file exists
    summary = kd_compare.main(argv + student_opts + ["DISTILL.TEACHER.WEIGHTS", ""])
    metric_key = summary["metric_key"]
    untrained = evaluate_untrained(task, out, student_opts, metric_key)
    arms = summary["arms"]
    return {
        "config": task.config, "method": task.method, "metric": summary["metric"], "metric_key": metric_key,
        "seed": SEED, "untrained": untrained, "student": arms["student"]["mean"],
        "distilled": arms[task.arm]["mean"], "teacher": summary["teacher"]["value"],
        "delta_vs_student": arms[task.arm]["mean"] - arms["student"]["mean"],
        "s_per_iter": {"student": arms["student"]["s_per_iter"], task.arm: arms[task.arm]["s_per_iter"],
                       "teacher": summary["teacher"].get("s_per_iter")},
        "student_schedule": student_opts, "teacher_schedule": teacher_opts,
        "seconds": round(time.time() - started, 1), "kd_compare": os.path.join(out, "kd_compare.json"),
        "overlays": os.path.join(out, task.arm, f"seed{SEED}", "inference"),
    }


def format_table(summary: dict) -> str:
    rows = [("task", "metric", "untrained", "student", "distilled", "", "teacher", "time")]
    for name, s in summary["tasks"].items():
        rows.append((name, s["metric"], f"{s['untrained']:.2f}", f"{s['student']:.2f}", f"{s['distilled']:.2f}",
                     f"({s['method']}, {s['delta_vs_student']:+.2f})", f"{s['teacher']:.2f}", f"{s['seconds']:.0f} s"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i < 2 or i == 5 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/demo", help="where all results go (default: %(default)s)")
    parser.add_argument("--tasks", nargs="+", default=[t.name for t in TASKS], choices=[t.name for t in TASKS])
    parser.add_argument("--max-iter", type=int, help="quick runs: every run (teachers too) N iterations")
    parser.add_argument("--threads", type=thread_count, help="CPU threads per training process (default: torch's)")
    args = parser.parse_args(argv)

    from sample_data import ensure_samples

    ensure_samples(verbose=True)
    started = time.time()
    summary = {"seed": SEED, "tasks": {}}
    for task in TASKS:
        if task.name in args.tasks:
            _say(f"{task.name}: teacher, student alone, student + {task.method} (seed {SEED})")
            summary["tasks"][task.name] = run_task(task, args.output, args.max_iter, args.threads)
    summary["seconds"] = round(time.time() - started, 1)
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "summary.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\n{PREFIX} results on the sample validation splits (seed {SEED}; 3-seed comparisons: "
          f"projects/<Method>/README.md)")
    print(format_table(summary))
    _say(f"total {summary['seconds'] / 60:.1f} min; summary: {path}; charts: <task>/kd_compare.png and "
         f"kd_compare_curves.png; prediction overlays: <task>/<arm>/seed{SEED}/inference/")
    return summary


if __name__ == "__main__":
    from segdet.utils.errors import run_with_clear_errors

    run_with_clear_errors(main)
