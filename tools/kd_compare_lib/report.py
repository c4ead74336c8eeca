"""The comparison's results from finished run folders: kd_compare.json, the table, the charts.

Per run: the metric of its ``eval_results.json`` (``bbox/AP`` of the COCO evaluator,
``sem_seg/mIoU`` of the semantic-segmentation one), the median of ``metrics.json``'s ``time``
(seconds per iteration; detectron2 skips the first 3 iterations, so very short runs have none)
and the curves (validation metric and ``total_loss`` per iteration).
"""
import json
import math
import os
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from .plan import Plan, Run

__all__ = ["METRICS", "metric_from_results", "read_metric", "seconds_per_iter", "read_curves", "mean_std",
           "summarize", "write_json", "format_table", "plot_bars", "plot_curves"]

# (task key in eval_results.json, metric name) in the order they are looked for
METRICS = (("bbox", "AP"), ("sem_seg", "mIoU"))


def _number(value) -> Optional[float]:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def metric_from_results(results: Dict, where: str = "eval_results.json") -> Tuple[str, Optional[float]]:
    """(``"bbox/AP"`` or ``"sem_seg/mIoU"``, value or None for NaN) of train_net's results; with
    several test datasets, the first dataset's.

    Raises:
        ValueError: naming ``where``, when the results hold neither metric.
    """
    tables = [results] + [v for v in results.values() if isinstance(v, dict)]
    for table in tables:
        for task, name in METRICS:
            if isinstance(table.get(task), dict) and name in table[task]:
                return f"{task}/{name}", _number(table[task][name])
    raise ValueError(f"{where}: expected COCO 'bbox' AP or 'sem_seg' mIoU results, got keys {sorted(results)}")


def read_metric(run_dir: str) -> Tuple[str, Optional[float]]:
    path = os.path.join(run_dir, "eval_results.json")
    with open(path) as f:
        return metric_from_results(json.load(f), path)


def _metrics_lines(run_dir: str) -> List[Dict]:
    lines = []
    try:
        with open(os.path.join(run_dir, "metrics.json")) as f:
            for line in f:
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue  # a line cut off by a kill
    except OSError:
        pass
    return [line for line in lines if isinstance(line, dict)]


def seconds_per_iter(run_dir: str) -> Optional[float]:
    times = [t for t in (_number(m.get("time")) for m in _metrics_lines(run_dir)) if t is not None]
    return statistics.median(times) if times else None


def read_curves(run_dir: str, metric_key: str) -> Dict[str, List[Tuple[int, float]]]:
    """``{"metric": [(iterations done, value)], "total_loss": [...]}`` from ``metrics.json`` (eval
    entries are matched by the key's end, so ``<dataset>/bbox/AP`` counts too). detectron2 logs
    losses and periodic evaluations at the 0-based iteration, the final evaluation at MAX_ITER:
    all become the number of iterations done."""
    lines = [m for m in _metrics_lines(run_dir) if isinstance(m.get("iteration"), int)]
    losses = [(m["iteration"] + 1, _number(m.get("total_loss"))) for m in lines]
    losses = [(it, v) for it, v in losses if v is not None]
    last_step = max((it for it, _ in losses), default=0)
    metric = []
    for m in lines:
        value = next((_number(v) for k, v in m.items() if k == metric_key or k.endswith("/" + metric_key)), None)
        if value is not None:
            it = m["iteration"]
            metric.append((it if it >= last_step else it + 1, value))
    return {"metric": metric, "total_loss": losses}


def mean_std(values: Sequence[Optional[float]]) -> Tuple[Optional[float], Optional[float]]:
    """Mean and sample std (ddof=1; 0 for one value) of the finite values; (None, None) if none."""
    finite = [v for v in values if v is not None]
    if not finite:
        return None, None
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else 0.0)


def _mean_curve(curves: Sequence[List[Tuple[int, float]]]) -> List[Tuple[int, float]]:
    by_iter: Dict[int, List[float]] = {}
    for curve in curves:
        for it, value in curve:
            by_iter.setdefault(it, []).append(value)
    return [(it, statistics.fmean(vs)) for it, vs in sorted(by_iter.items())]


def _mean_curves(runs: Sequence[Run], metric_key: str) -> Dict[str, List[Tuple[int, float]]]:
    """:func:`read_curves` of each run, averaged over the runs iteration by iteration."""
    per_run = [read_curves(r.run_dir, metric_key) for r in runs]
    return {k: _mean_curve([c[k] for c in per_run]) for k in ("metric", "total_loss")}


def summarize(plan: Plan, overrides: Sequence[str] = (), max_iter: Optional[int] = None) -> Dict:
    """kd_compare.json's content from the plan's finished runs (unfinished ones count as None)."""
    metric_key, arms, curves = None, {}, {}

    def metric_of(run: Run) -> Optional[float]:
        nonlocal metric_key
        if not os.path.isfile(os.path.join(run.run_dir, "eval_results.json")):
            return None
        key, value = read_metric(run.run_dir)
        metric_key = metric_key or key
        return value

    for arm in plan.arms:
        runs = plan.runs_of(arm)
        per_seed = [metric_of(r) for r in runs]
        mean, std = mean_std(per_seed)
        times = [t for t in (seconds_per_iter(r.run_dir) for r in runs) if t is not None]
        arms[arm] = {"per_seed": per_seed, "mean": mean, "std": std,
                     "s_per_iter": statistics.median(times) if times else None,
                     "losses": plan.losses[arm], "run_dirs": [r.run_dir for r in runs]}
    teacher = {"value": None, "weights": plan.teacher_weights, "source": plan.teacher_source,
               "config_file": plan.teacher_config, "opts": list(plan.teacher_opts)}
    teacher_runs = plan.teacher_runs
    if teacher_runs:
        values = [metric_of(r) for r in teacher_runs]
        teacher["value"] = mean_std(values)[0] if all(v is not None for v in values) else None
        teacher["run_dir"] = teacher_runs[0].run_dir
        if len(teacher_runs) > 1:  # one teacher per fold: the value is their mean
            teacher["per_fold"], teacher["run_dirs"] = values, [r.run_dir for r in teacher_runs]
        if not teacher_runs[0].eval_only:
            times = [t for t in (seconds_per_iter(r.run_dir) for r in teacher_runs) if t is not None]
            teacher["s_per_iter"] = statistics.median(times) if times else None
    metric_key = metric_key or "?/?"
    for arm in plan.arms:
        curves[arm] = _mean_curves(plan.runs_of(arm), metric_key)
    if teacher_runs and not teacher_runs[0].eval_only:
        curves["teacher"] = _mean_curves(teacher_runs, metric_key)
    student_mean = arms.get("student", {}).get("mean")
    for arm, entry in arms.items():
        if arm != "student":
            entry["delta_vs_student"] = (entry["mean"] - student_mean
                                         if entry["mean"] is not None and student_mean is not None else None)
    finished = all(os.path.isfile(os.path.join(r.run_dir, "eval_results.json")) for r in plan.runs)
    folds = {}
    if plan.folds:
        from segdet.data.datasets.folds import fold_names

        folds = {"folds": {
            "name": plan.folds, "num_folds": len(set(plan.fold_of_seed.values())),
            "fold_of_seed": {str(s): k for s, k in plan.fold_of_seed.items()},
            "held_out_sets": {str(s): fold_names(plan.folds, k)["val"] for s, k in plan.fold_of_seed.items()},
            "note": "seed i trains on fold i mod K's training images and is scored on its held-out images; "
                    "per_seed = per fold; std spans seeds and folds; the teacher: one per fold, value = their mean"}}
    return {
        "metric": metric_key.split("/")[-1], "metric_key": metric_key, "config_file": plan.config_file,
        "seeds": plan.seeds, "std": "sample (ddof=1)" if len(plan.seeds) > 1 else "0 (one seed)",
        "max_iter": max_iter, "overrides": list(overrides), "complete": finished,
        "teacher": teacher, "arms": arms, "curves": curves, **folds,
    }


def write_json(summary: Dict, path: str) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(summary, f, indent=2, allow_nan=False)
    os.replace(path + ".tmp", path)


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(summary: Dict) -> str:
    """arm | mean ± std | per-seed values | s/iter, then the teacher."""
    seeds = " ".join(str(s) for s in summary["seeds"])
    rows = [("arm", f"{summary['metric']} mean ± std", f"per seed ({seeds})", "s/iter")]
    for arm, e in summary["arms"].items():
        rows.append((arm, f"{_fmt(e['mean'])} ± {_fmt(e['std'])}", " ".join(_fmt(v) for v in e["per_seed"]),
                     _fmt(e["s_per_iter"], 3)))
    t = summary["teacher"]
    rows.append(("teacher", _fmt(t["value"]), f"({t['source'] if 'run_dir' in t else 'not run'})",
                 _fmt(t.get("s_per_iter"), 3)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def plot_bars(summary: Dict, path: str) -> None:
    """Bars: each arm's mean, error bars: std, dots: the seeds, dashed line: the teacher."""
    plt = _pyplot()
    arms = list(summary["arms"])
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(arms) + 1.5), 4))
    for i, arm in enumerate(arms):
        e = summary["arms"][arm]
        if e["mean"] is not None:
            ax.bar(i, e["mean"], yerr=e["std"], capsize=6, color="#9ecae1" if arm == "student" else "#fdae6b",
                   edgecolor="black")
        points = [v for v in e["per_seed"] if v is not None]
        offsets = [0.0] if len(points) == 1 else [-0.15 + 0.3 * k / (len(points) - 1) for k in range(len(points))]
        ax.scatter([i + o for o in offsets], points, color="black", s=14, zorder=3)
    if summary["teacher"]["value"] is not None:
        ax.axhline(summary["teacher"]["value"], color="tab:green", linestyle="--",
                   label=f"teacher {summary['teacher']['value']:.2f}")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(arms)))
    ax.set_xticklabels(arms, rotation=20)
    ax.set_ylabel(summary["metric_key"])
    ax.set_title(f"{summary['metric']}: mean ± std ({summary['std']}) over seeds "
                 f"{' '.join(str(s) for s in summary['seeds'])}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_curves(summary: Dict, path: str) -> None:
    """Validation metric and total loss vs iteration, one line per arm (mean over seeds)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for panel, key, title in ((axes[0], "metric", summary["metric_key"]), (axes[1], "total_loss", "total_loss")):
        for arm, curves in summary["curves"].items():
            points = curves[key]
            if points:
                xs, ys = zip(*points)
                panel.plot(xs, ys, label=arm, linestyle="--" if arm == "teacher" else "-",
                           marker="o" if len(points) < 20 else None)
        if key == "total_loss" and all(y > 0 for c in summary["curves"].values() for _, y in c[key]):
            panel.set_yscale("log")
        panel.set_title(f"{title} (mean over seeds)")
        panel.set_xlabel("iterations done")
        panel.grid(alpha=0.3)
        if panel.get_legend_handles_labels()[0]:
            panel.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
