#!/usr/bin/env python
"""Compare a distillation config against its student alone: the same schedule, data order and
seeds for every arm, each arm x seed a tools/train_net.py run in its own folder.

Arms (--arms picks some; names are printed by a run and listed in errors):
  student     the student alone: MODEL.META_ARCHITECTURE = DISTILL.STUDENT_META_ARCHITECTURE
  <loss>      the student with one DISTILL.LOSSES entry (lower case: psd, csd, drkd, featuremse, ...)
  <a>+<b>     all of them together (only when DISTILL.LOSSES has several, e.g. psd+csd)
  teacher     DISTILL.TEACHER.CONFIG_FILE + DISTILL.TEACHER.OPTS on the same data (first seed),
              trained here unless --teacher-weights or DISTILL.TEACHER.WEIGHTS names an existing
              file (then only evaluated); the distilled arms use these weights.

With --baseline-config (a method without a separate teacher, e.g. SSA's online distillation):
  student     the baseline config (e.g. the plain CGRSeg head)
  <name>      --config-file itself (--arm-name, default "method"); both are plain configs.

Trailing KEY VALUE overrides apply to every arm; to the teacher only those outside MODEL.* (but
MODEL.DEVICE) and DISTILL.* (its architecture: DISTILL.TEACHER.OPTS). SEED is each run's seed.

Examples:
  # DSD on the sample street frames, 3 seeds (1 2 3), the teacher trained first
  python tools/kd_compare.py --config-file projects/DSD/configs/Samples/cgrseg_t_street_dsd.yaml \\
      --output-dir output/kd_compare/dsd_street

  # DRKD on the trees, 2 seeds, 100 iterations, validation curve every 25 iterations
  python tools/kd_compare.py --config-file projects/DRKD/configs/Samples/faster_rcnn_mnv2_fpn_trees_drkd.yaml \\
      --seeds 1 2 --max-iter 100 --eval-period 25 --output-dir output/kd_compare/drkd_trees

  # only the student and the full DSD objective, with given teacher weights
  python tools/kd_compare.py --config-file CFG --arms student psd+csd --teacher-weights teacher.pth

  # SSA's head against the plain CGRSeg head, 3 seeds (no teacher to train)
  python tools/kd_compare.py --config-file projects/SSA/configs/Samples/cgrseg_t_ssa_street.yaml \
      --baseline-config projects/CGRSeg/configs/Samples/cgrseg_t_street.yaml --arm-name ssa \
      --output-dir output/kd_compare/ssa_street

  # every sample street frame held out once: 5 folds, seed i on fold i-1 (a teacher per fold)
  python tools/kd_compare.py --config-file projects/DSD/configs/Samples/cgrseg_t_street_dsd.yaml \
      --folds segdet_street_sem_seg_cv --seeds 1 2 3 4 5 --output-dir output/kd_compare/dsd_street_cv

  # your own datasets, registered in the module my_datasets (or a file, or MODULE:FUNCTION)
  python tools/kd_compare.py --config-file CFG --register my_datasets DATASETS.TRAIN "('mine_train',)"

Rerun the same command to resume: finished runs (eval_results.json in their folder) are skipped,
interrupted ones continue from their last checkpoint.

Writes into --output-dir: kd_compare.json (metric, seeds, per-seed values, mean, std (sample,
ddof=1), s/iter per arm, teacher value), kd_compare.png (bars: mean ± std, dots: seeds, dashed:
teacher), kd_compare_curves.png (validation metric and total loss vs iteration, mean over seeds),
and <arm>/seed<N>/ (each run: checkpoints, metrics.json, eval_results.json, kd_compare_train.log).
"""
import argparse
import os
import shlex
import sys
import time
import warnings

# Known, harmless deprecation noise from torch/detectron2 internals (as in tools/train_net.py).
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*is deprecated", category=FutureWarning)

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TOOLS))
sys.path.insert(0, TOOLS)

from kd_compare_lib.plan import build_baseline_plan, build_plan  # noqa: E402
from kd_compare_lib.report import format_table, plot_bars, plot_curves, read_metric, summarize, write_json  # noqa: E402
from kd_compare_lib.runner import (Eta, RunFailedError, check_record, execute, format_duration,  # noqa: E402
                                   is_finished, train_net_command)
from segdet.utils.errors import ConfigError  # noqa: E402
from segdet.utils.threads import thread_count  # noqa: E402

PREFIX = "[kd_compare]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kd_compare.py", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="a distillation config (MODEL.META_ARCHITECTURE \"DistillationModel\"), or a plain "
                             "config with --baseline-config")
    parser.add_argument("--output-dir", default="output/kd_compare", metavar="DIR",
                        help="where every run's folder and the results go (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], metavar="N",
                        help="one run per arm and seed; SEED sets weights init, data order and augmentation "
                             "(default: %(default)s)")
    parser.add_argument("--arms", nargs="+", metavar="ARM",
                        help="only these arms (default: all, with the teacher)")
    parser.add_argument("--max-iter", type=int, metavar="N", help="SOLVER.MAX_ITER of every run (teacher included)")
    parser.add_argument("--eval-period", type=int, metavar="N",
                        help="TEST.EVAL_PERIOD of every training run, for the validation curves "
                             "(default: the configs'; 0 = final evaluation only)")
    parser.add_argument("--teacher-weights", metavar="FILE",
                        help="trained teacher weights: the teacher is evaluated, not trained")
    parser.add_argument("--teacher-opts", default="", metavar="'KEY VALUE ...'",
                        help="overrides for the teacher's run only, in one quoted string, applied last, e.g. "
                             "'SOLVER.MAX_ITER 450 SOLVER.STEPS (360,420)' (a teacher trained longer)")
    parser.add_argument("--baseline-config", metavar="FILE",
                        help="compare --config-file (a plain config) against this plain config, the 'student' "
                             "arm; no teacher")
    parser.add_argument("--arm-name", default="method", metavar="NAME",
                        help="with --baseline-config: the name of --config-file's arm (default: %(default)s)")
    parser.add_argument("--folds", metavar="NAME",
                        help="cross-validation: NAME_fold<k>_{train,val} (DATASETS.DECLARE TYPE \"folds\", or the "
                             "sample segdet_street_sem_seg_cv); seed i trains on fold i mod K and is scored on its "
                             "held-out images, the teacher is trained per fold; give K (or 2K, ...) seeds")
    parser.add_argument("--register", action="append", default=[], metavar="SPEC",
                        help="MODULE, path/to/file.py, or either with :FUNCTION: imported (and FUNCTION() "
                             "called) in every training process before training, to register datasets; "
                             "repeatable")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per run (tools/train_net.py's)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="tools/train_net.py's --trust-pickle for every run (pickled weights you trust)")
    parser.add_argument("--threads", type=thread_count, metavar="N",
                        help="tools/train_net.py's --threads for every run (CPU threads per process)")
    parser.add_argument("--verbose", action="store_true", help="show every run's full output")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides for every arm, e.g. MODEL.DEVICE cpu SOLVER.IMS_PER_BATCH 2")
    return parser


def _say(message: str) -> None:
    print(f"{PREFIX} {message}", flush=True)


def _where(path: str) -> str:
    """``path`` relative to the current directory when it lies inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _value(value) -> str:
    return "NaN" if value is None else f"{value:.2f}"


def _eta_text(eta: Eta, remaining) -> str:
    seconds = eta.remaining(remaining)
    return "ETA unknown until a run has finished" if seconds is None else f"ETA {format_duration(seconds)}"


def run_comparison(args) -> dict:
    from kd_compare_lib.child import apply_register

    for spec in args.register:  # fails early, and the parent sees the same datasets
        apply_register(spec)
    if args.baseline_config:
        if args.teacher_weights or args.teacher_opts:
            raise ConfigError("--teacher-weights / --teacher-opts: a --baseline-config comparison has no teacher")
        plan = build_baseline_plan(args.config_file, args.baseline_config, args.arm_name, args.opts, args.seeds,
                                   args.output_dir, max_iter=args.max_iter, eval_period=args.eval_period,
                                   arms=args.arms, folds=args.folds)
    else:
        plan = build_plan(args.config_file, args.opts, args.seeds, args.output_dir, max_iter=args.max_iter,
                          eval_period=args.eval_period, arms=args.arms, teacher_weights=args.teacher_weights,
                          teacher_opts=shlex.split(args.teacher_opts), folds=args.folds)
    out = os.path.abspath(args.output_dir)
    commands = [train_net_command(r, args.num_gpus, args.trust_pickle, args.threads) for r in plan.runs]
    for run, command in zip(plan.runs, commands):
        check_record(run, command)  # a folder of other settings: one line before anything runs
    teacher = {"trained": "trained here first", "given": "given (--teacher-weights)",
               "config": "DISTILL.TEACHER.WEIGHTS", "none": "none"}[plan.teacher_source]
    where = f": {plan.teacher_weights}" if plan.teacher_weights else f" (baseline {args.baseline_config})"
    if plan.folds:
        teacher += f" (one per fold of {plan.folds})" if plan.teacher_runs else ""
        where = "" if plan.teacher_runs else where
    seeds = " ".join(f"{s} (fold {plan.fold_of_seed[s]})" if plan.folds else str(s) for s in plan.seeds)
    _say(f"{args.config_file}: arms {' '.join(plan.arms)}; seeds {seeds}; "
         f"teacher {teacher}{where}; {len(plan.runs)} runs under {out}")

    eta = Eta()
    for run in plan.runs:
        if is_finished(run):
            eta.add_recorded(run)
    started = time.time()
    for index, (run, command) in enumerate(zip(plan.runs, commands), 1):
        head = f"run {index}/{len(plan.runs)} {run.label}"
        if is_finished(run):
            key, value = read_metric(run.run_dir)
            _say(f"{head}: finished before, skipped ({key} {_value(value)})")
            continue
        resumed = os.path.isfile(os.path.join(run.run_dir, "last_checkpoint"))
        _say(f"{head}: {'resuming' if resumed else 'evaluating' if run.eval_only else 'training'} in "
             f"{_where(run.run_dir)} ... {_eta_text(eta, [r for r in plan.runs[index - 1:] if not is_finished(r)])}")
        seconds = execute(run, command, args.register, verbose=args.verbose,
                          on_progress=lambda text, h=head: _say(f"{h}: {text}"))
        eta.add(run, seconds)
        key, value = read_metric(run.run_dir)
        rest = [r for r in plan.runs[index:] if not is_finished(r)]
        _say(f"{head}: done in {format_duration(seconds)}, {key} {_value(value)}"
             + (f"; {len(rest)} run{'s' * (len(rest) > 1)} left, {_eta_text(eta, rest)}" if rest else ""))

    summary = summarize(plan, args.opts, args.max_iter)
    summary["seed_note"] = ("SEED = each run's seed (weights init, data order, augmentation); the teacher: "
                            + ("each fold's first seed" if plan.folds else "the first seed"))
    paths = {name: os.path.join(out, name) for name in ("kd_compare.json", "kd_compare.png", "kd_compare_curves.png")}
    write_json(summary, paths["kd_compare.json"])
    plot_bars(summary, paths["kd_compare.png"])
    plot_curves(summary, paths["kd_compare_curves.png"])
    _say(f"{summary['metric_key']} on {len(plan.seeds)} seed(s), std: {summary['std']} "
         f"({format_duration(time.time() - started)} this time)")
    print(format_table(summary), flush=True)
    _say("wrote " + ", ".join(_where(p) for p in paths.values()))
    return summary


def main(argv=None) -> dict:
    from segdet.utils.errors import run_with_clear_errors

    args = build_parser().parse_args(argv)
    try:
        return run_with_clear_errors(run_comparison, args)
    except RunFailedError as e:
        print(f"segdet: error: {e}\n(rerun the same command to resume; finished runs are skipped)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
