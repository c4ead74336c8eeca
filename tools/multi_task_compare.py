#!/usr/bin/env python
"""Compare a multi-task model with the two single-task models it replaces (and optionally its
distilled version): the same recipe, seeds and number of images per task -> JSON + bar chart.

Arms, each trained and evaluated with tools/train_net.py once per seed:
  detector   the config's detection branch on its backbone (MODEL.MULTI_TASK.DETECTOR), trained
             on the detection sets of DATASETS.TRAIN for share_det x MAX_ITER iterations;
  segmentor  the semantic head on its backbone (SegdetSemanticSegmentor) on the label-map sets,
             for share_seg x MAX_ITER iterations;
  joint      the multi-task model, MAX_ITER iterations (share_det / share_seg of its images from
             each task, by DATASETS.TRAIN_SAMPLING_RATIOS);
  distilled  with --distill-config: that config (e.g. the joint model with two teachers), MAX_ITER.
So every model sees as many images of its task as the joint model does, and the two single-task
models together train for as many iterations as the joint one. The learning-rate steps are
placed at 80% and 93% of each run's iterations. Finished runs are skipped (resumed when
interrupted); a line per run with the ETA.

  python tools/multi_task_compare.py \\
      --config-file projects/MultiTask/configs/faster_rcnn_semseg_fpn_mnv2_trees_street.yaml \\
      --seeds 1 2 3 --max-iter 160 --output-dir output/multi_task_compare
"""
import argparse
import json
import os
import shlex
import sys
import time
import warnings

warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*is deprecated", category=FutureWarning)

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TOOLS))
sys.path.insert(0, TOOLS)

from kd_compare_lib.plan import Run  # noqa: E402
from kd_compare_lib.report import mean_std, seconds_per_iter  # noqa: E402
from kd_compare_lib.runner import Eta, execute, format_duration, is_finished, train_net_command  # noqa: E402

PREFIX = "[multi_task_compare]"
METRICS = {"detection": ("bbox", "AP"), "sem_seg": ("sem_seg", "mIoU")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a MultiTaskModel config")
    parser.add_argument("--distill-config", default=None, help="also train this config (arm 'distilled')")
    parser.add_argument("--distill-opts", default="", help="overrides for the distilled arm only, one string "
                        "(e.g. its teachers' weights: \"DISTILL.TEACHERS.DETECTOR.WEIGHTS det.pth ...\")")
    parser.add_argument("--distilled-name", default="distilled",
                        help="the distilled arm's name (its folder; several distilled variants can share "
                        "--output-dir, the other arms' runs are then reused)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--max-iter", type=int, required=True, help="iterations of the joint model")
    parser.add_argument("--output-dir", default="output/multi_task_compare")
    parser.add_argument("--threads", type=int, default=None, help="tools/train_net.py's --threads")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="overrides for every run, KEY VALUE ...")
    return parser


def _say(message: str) -> None:
    print(f"{PREFIX} {message}", flush=True)


def _schedule(iters: int):
    return ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", str((max(1, int(0.8 * iters)), max(2, int(0.93 * iters)))),
            "SOLVER.CHECKPOINT_PERIOD", str(10 * iters)]


def plan_runs(args):
    """(runs, {arm: iterations}, {task: test sets}) of the comparison."""
    import segdet  # noqa: F401  (registers the datasets)
    from segdet.data.multi_task import dataset_task
    from segdet.utils.config_io import load_config
    from segdet.utils.errors import ConfigError

    opts = list(args.opts)
    cfg = load_config(args.config_file, opts)
    if cfg.MODEL.META_ARCHITECTURE != "MultiTaskModel" or not cfg.MODEL.MULTI_TASK.DETECTOR:
        raise ConfigError(f"{args.config_file}: expected a MultiTaskModel config with a detection branch")
    train, test = list(cfg.DATASETS.TRAIN), list(cfg.DATASETS.TEST)
    ratios = list(cfg.DATASETS.TRAIN_SAMPLING_RATIOS) or [1.0] * len(train)
    if len(ratios) != len(train):
        raise ConfigError(f"DATASETS.TRAIN_SAMPLING_RATIOS has {len(ratios)} values for {len(train)} sets")
    sets = {t: [n for n in train if dataset_task(n) == t] for t in METRICS}
    tests = {t: [n for n in test if dataset_task(n) == t] for t in METRICS}
    if not all(sets.values()) or not all(tests.values()):
        raise ConfigError(f"{args.config_file}: DATASETS.TRAIN and DATASETS.TEST need sets of both tasks, "
                          f"got {sets} and {tests}")
    share = {t: sum(r for n, r in zip(train, ratios) if n in sets[t]) / sum(ratios) for t in METRICS}
    iters = {"detector": max(1, round(share["detection"] * args.max_iter)),
             "segmentor": max(1, round(share["sem_seg"] * args.max_iter)), "joint": args.max_iter}
    single = {
        "detector": ["MODEL.META_ARCHITECTURE", cfg.MODEL.MULTI_TASK.DETECTOR, "INPUT.DATASET_MAPPER_NAME", "default",
                     "INPUT.CROP.ENABLED", "False", "DATASETS.TRAIN", str(tuple(sets["detection"])),
                     "DATASETS.TEST", str(tuple(tests["detection"]))],
        "segmentor": ["MODEL.META_ARCHITECTURE", "SegdetSemanticSegmentor", "INPUT.DATASET_MAPPER_NAME", "sem_seg",
                      "DATASETS.TRAIN", str(tuple(sets["sem_seg"])), "DATASETS.TEST", str(tuple(tests["sem_seg"]))],
        "joint": []}
    for arm in ("detector", "segmentor"):
        single[arm] += ["DATASETS.TRAIN_SAMPLING_RATIOS", "()"]
    configs = {"detector": args.config_file, "segmentor": args.config_file, "joint": args.config_file}
    if args.distill_config:
        name = args.distilled_name
        configs[name], iters[name] = args.distill_config, args.max_iter
        single[name] = shlex.split(args.distill_opts)
    out = os.path.abspath(args.output_dir)
    runs = [Run(arm, seed, configs[arm],
                tuple(opts + single[arm] + _schedule(iters[arm]) +
                      ["SEED", str(seed), "OUTPUT_DIR", os.path.join(out, arm, f"seed{seed}")]),
                os.path.join(out, arm, f"seed{seed}"))
            for seed in args.seeds for arm in configs]
    return runs, iters, tests


def read_task_metrics(run_dir: str, tests) -> dict:
    """{"AP": value, "mIoU": value} of a finished run (the first test set of each task it has)."""
    with open(os.path.join(run_dir, "eval_results.json")) as f:
        results = json.load(f)
    out = {}
    for task, (table, name) in METRICS.items():
        if isinstance(results.get(table), dict):  # one test set: detectron2's flat results
            out[name] = results[table].get(name)
            continue
        for dataset in tests[task]:
            if isinstance(results.get(dataset, {}).get(table), dict):
                out[name] = results[dataset][table].get(name)
                break
    return out


def summarize(runs, iters, tests, seeds) -> dict:
    arms = {}
    for arm in dict.fromkeys(r.arm for r in runs):
        mine = [r for r in runs if r.arm == arm]
        values = [read_task_metrics(r.run_dir, tests) for r in mine]
        entry = {"iterations": iters[arm], "s_per_iter": None}
        for _, name in METRICS.values():
            per_seed = [v.get(name) for v in values]
            if any(x is not None for x in per_seed):
                mean, std = mean_std(per_seed)
                entry[name] = {"per_seed": per_seed, "mean": mean, "std": std}
        times = [t for t in (seconds_per_iter(r.run_dir) for r in mine) if t is not None]
        entry["s_per_iter"] = sorted(times)[len(times) // 2] if times else None
        arms[arm] = entry
    return {"metrics": ["AP", "mIoU"], "seeds": list(seeds), "test_sets": tests, "arms": arms,
            "seed_note": "SEED = each run's seed (weights init, data order, augmentation)"}


def format_table(summary: dict) -> str:
    def cell(entry, name):
        v = entry.get(name)
        return "-" if not v or v["mean"] is None else f"{v['mean']:.2f} ± {v['std']:.2f}"

    lines = ["| arm | iterations | AP | mIoU | s/iter |", "|---|---|---|---|---|"]
    for arm, e in summary["arms"].items():
        t = "-" if e["s_per_iter"] is None else f"{e['s_per_iter']:.2f}"
        lines.append(f"| {arm} | {e['iterations']} | {cell(e, 'AP')} | {cell(e, 'mIoU')} | {t} |")
    return "\n".join(lines)


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, name in zip(axes, ("AP", "mIoU")):
        arms = [a for a, e in summary["arms"].items() if e.get(name) and e[name]["mean"] is not None]
        means = [summary["arms"][a][name]["mean"] for a in arms]
        stds = [summary["arms"][a][name]["std"] or 0.0 for a in arms]
        ax.bar(arms, means, yerr=stds, capsize=4, color=["#4c72b0", "#dd8452", "#55a868", "#c44e52"][:len(arms)])
        for i, a in enumerate(arms):
            ax.scatter([i] * len(summary["arms"][a][name]["per_seed"]), summary["arms"][a][name]["per_seed"],
                       color="black", s=10, zorder=3)
        ax.set_title(f"{name} (mean ± std, {len(summary['seeds'])} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    runs, iters, tests = plan_runs(args)
    out = os.path.abspath(args.output_dir)
    _say(f"arms {' '.join(iters)} (iterations {iters}); seeds {args.seeds}; {len(runs)} runs under {out}")
    eta, started = Eta(), time.time()
    for index, run in enumerate(runs, 1):
        head = f"run {index}/{len(runs)} {run.label}"
        if is_finished(run):
            eta.add_recorded(run)
            _say(f"{head}: finished before, skipped {read_task_metrics(run.run_dir, tests)}")
            continue
        rest = [r for r in runs[index - 1:] if not is_finished(r)]
        remaining = eta.remaining(rest)
        _say(f"{head}: training ... ETA {'unknown' if remaining is None else format_duration(remaining)}")
        seconds = execute(run, train_net_command(run, threads=args.threads),
                          on_progress=lambda text, h=head: _say(f"{h}: {text}"))
        eta.add(run, seconds)
        _say(f"{head}: done in {format_duration(seconds)}, {read_task_metrics(run.run_dir, tests)}")
    summary = summarize(runs, iters, tests, args.seeds)
    os.makedirs(out, exist_ok=True)
    stem = "multi_task_compare" + ("" if args.distilled_name == "distilled" else f"_{args.distilled_name}")
    with open(os.path.join(out, f"{stem}.json"), "w") as f:
        json.dump(summary, f, indent=2)
    plot(summary, os.path.join(out, f"{stem}.png"))
    print(format_table(summary), flush=True)
    _say(f"wrote {out}/{stem}.json and .png ({format_duration(time.time() - started)})")
    return summary


if __name__ == "__main__":
    main()
