"""The comparison's plan: which arms a distillation config has, and one training run per arm x seed.

Arms:
  student        the distillation config with MODEL.META_ARCHITECTURE replaced by
                 DISTILL.STUDENT_META_ARCHITECTURE (DISTILL.* then unused);
  <loss>         the student with one entry of DISTILL.LOSSES (its DISTILL.LOSS_WEIGHTS value), named
                 by the loss in lower case (e.g. "psd", "drkd");
  <a>+<b>        all losses together, when DISTILL.LOSSES has more than one (e.g. "psd+csd");
  teacher        DISTILL.TEACHER.CONFIG_FILE + DISTILL.TEACHER.OPTS, trained once (first seed) unless
                 its weights are given, evaluated otherwise.

With ``folds`` (a cross-validation fold family, :mod:`segdet.data.datasets.folds`), the i-th seed
trains on fold ``i mod K``'s training set and is evaluated on its held-out set, so K seeds give
one held-out result per fold, each arm on the same (seed, fold) pairs; the teacher is trained once
per fold (with the fold's first seed), never on the images its students are evaluated on.

With a baseline config (:func:`build_baseline_plan`, for methods without a separate teacher such
as SSA's online distillation), the arms are ``student`` (the baseline config) and the method's
arm (the config itself), and there is no teacher.
"""
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from segdet.utils.config_io import load_config
from segdet.utils.errors import ConfigError

__all__ = ["Run", "Plan", "build_plan", "build_baseline_plan", "teacher_overrides", "TOOL_KEYS"]

# keys kd_compare sets itself for every run (the flag that sets them, for the error message)
TOOL_KEYS = {"OUTPUT_DIR": "--output-dir", "SEED": "--seeds"}


@dataclass(frozen=True)
class Run:
    """One tools/train_net.py run: ``train_net.py --config-file config_file [flags] opts``."""

    arm: str
    seed: Optional[int]
    config_file: str
    opts: Tuple[str, ...]
    run_dir: str
    eval_only: bool = False
    fold: Optional[int] = None  # the cross-validation fold it trains and is scored on
    declared_in: str = ""  # a config whose DATASETS.DECLARE sets the run needs (the teacher's run)

    @property
    def label(self) -> str:
        if self.eval_only:
            return f"{self.arm} (evaluation of given weights)"
        return f"{self.arm} seed {self.seed}" + ("" if self.fold is None else f" (fold {self.fold})")

    @property
    def group(self) -> str:
        """Runs of one group take about as long as each other (for the ETA)."""
        return f"{self.arm}/eval" if self.eval_only else self.arm


@dataclass
class Plan:
    config_file: str
    seeds: List[int]
    arms: List[str]  # comparison arms (no teacher), in order
    losses: Dict[str, List[str]]  # arm -> DISTILL.LOSSES of that arm ([] for the student)
    teacher_config: str
    teacher_weights: str
    teacher_source: str  # "given" (--teacher-weights), "config" (DISTILL.TEACHER.WEIGHTS), "trained", "none"
    runs: List[Run] = field(default_factory=list)  # the teacher's first, then seed by seed
    teacher_opts: List[str] = field(default_factory=list)  # --teacher-opts
    teacher_runs: List[Run] = field(default_factory=list)  # one per fold with folds, else none or one
    folds: str = ""  # the fold family ("" = the config's own DATASETS)
    fold_of_seed: Dict[int, int] = field(default_factory=dict)

    @property
    def teacher_run(self) -> Optional[Run]:
        """The (first) teacher run, None when no run needs the teacher."""
        return self.teacher_runs[0] if self.teacher_runs else None

    def runs_of(self, arm: str) -> List[Run]:
        return [r for r in self.runs if r.arm == arm]


def _as_opt(value) -> str:
    return value if isinstance(value, str) else repr(value)


def teacher_overrides(overrides: Sequence[str]) -> List[str]:
    """The overrides that also apply to the teacher: schedule, data, input and test settings,
    i.e. all but ``MODEL.*`` (the student's architecture; ``MODEL.DEVICE`` passes) and ``DISTILL.*``.
    The teacher's own architecture overrides go in ``DISTILL.TEACHER.OPTS``."""
    out = []
    for key, value in zip(overrides[::2], overrides[1::2]):
        if key.startswith("DISTILL.") or (key.startswith("MODEL.") and key != "MODEL.DEVICE"):
            continue
        out += [key, value]
    return out


def _arm_losses(config_file: str, cfg) -> Tuple[Dict[str, List[str]], Dict[str, List[float]]]:
    losses = [str(n) for n in cfg.DISTILL.LOSSES]
    if not losses:
        raise ConfigError(f"{config_file}: DISTILL.LOSSES is empty; kd_compare needs at least one "
                          "distillation loss to compare against the student alone")
    weights = [float(w) for w in cfg.DISTILL.LOSS_WEIGHTS]
    if weights and len(weights) != len(losses):
        raise ConfigError(f"{config_file}: DISTILL.LOSS_WEIGHTS has {len(weights)} values for "
                          f"{len(losses)} DISTILL.LOSSES {losses}")
    names = [n.lower() for n in losses]
    if len(set(names)) != len(names):
        raise ConfigError(f"{config_file}: DISTILL.LOSSES names a loss twice: {losses}")
    arm_losses = {name: [loss] for name, loss in zip(names, losses)}
    arm_weights = {name: [w] for name, w in zip(names, weights)} if weights else {n: [] for n in names}
    if len(losses) > 1:
        arm_losses["+".join(names)] = losses
        arm_weights["+".join(names)] = weights
    return arm_losses, arm_weights


def _select(requested: Optional[Sequence[str]], comparison_arms: List[str]) -> Tuple[List[str], bool]:
    """(chosen comparison arms, whether the teacher is reported) for ``--arms``."""
    if not requested:
        return list(comparison_arms), True
    valid = comparison_arms + ["teacher"]
    unknown = [a for a in requested if a not in valid]
    if unknown:
        raise ConfigError(f"--arms: unknown arm(s) {', '.join(unknown)}; this config has: {' '.join(valid)}")
    return [a for a in comparison_arms if a in requested], "teacher" in requested


def _check_overrides(overrides: Sequence[str]) -> List[str]:
    overrides = [str(o) for o in overrides]
    if len(overrides) % 2:
        raise ConfigError(f"command-line overrides must be KEY VALUE pairs, got {overrides}")
    for key in overrides[::2]:
        if key in TOOL_KEYS:
            raise ConfigError(f"{key} is set by kd_compare for every run; use {TOOL_KEYS[key]} instead of "
                              f"the override {key}")
    return overrides


def _check_schedule(seeds: Sequence[int], max_iter: Optional[int], eval_period: Optional[int]) -> List[int]:
    seeds = [int(s) for s in seeds]
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: expected distinct non-negative integers, got {seeds}")
    if max_iter is not None and max_iter < 1:
        raise ConfigError(f"--max-iter: expected a positive number of iterations, got {max_iter}")
    if eval_period is not None and eval_period < 0:
        raise ConfigError(f"--eval-period: expected 0 (final evaluation only) or a positive period, got {eval_period}")
    return seeds


def _check_folds(folds: Optional[str], seeds: Sequence[int], overrides: Sequence[str]) -> Dict[int, int]:
    """``{seed: fold}`` for ``folds`` ({} without): seed i gets fold i mod K.

    Raises:
        ConfigError: no such fold family, a number of seeds that is not a multiple of its folds, or
            DATASETS.TRAIN / TEST overrides (the folds set them)."""
    if not folds:
        return {}
    from segdet.data.datasets.folds import fold_count

    count = fold_count(folds)
    if count == 0:
        raise ConfigError(f"--folds {folds}: no folds registered under that name (expected {folds}_fold0_train, "
                          f"{folds}_fold0_val, ...); declare them with DATASETS.DECLARE TYPE \"folds\" (e.g. the "
                          "sample segdet_street_sem_seg_cv)")
    if len(seeds) % count:
        raise ConfigError(f"--seeds: --folds {folds} has {count} folds; give a multiple of {count} seeds (one per "
                          f"fold, seed i on fold i mod {count}), got {len(seeds)}")
    for key in overrides[::2]:
        if key in ("DATASETS.TRAIN", "DATASETS.TEST"):
            raise ConfigError(f"{key} is set by --folds for every run; drop the override {key}")
    return {seed: i % count for i, seed in enumerate(seeds)}


def _fold_data(folds: str, fold: Optional[int]) -> List[str]:
    """The DATASETS overrides of a run on ``fold`` ([] without folds)."""
    if fold is None:
        return []
    from segdet.data.datasets.folds import fold_names

    names = fold_names(folds, fold)
    return ["DATASETS.TRAIN", repr((names["train"],)), "DATASETS.TEST", repr((names["val"],))]


def _tool_opts(max_iter: Optional[int], eval_period: Optional[int]):
    """The overrides kd_compare adds to a run: its seed, the schedule flags and its folder."""
    schedule = []
    if max_iter is not None:
        schedule += ["SOLVER.MAX_ITER", str(max_iter)]
    if eval_period is not None:
        schedule += ["TEST.EVAL_PERIOD", str(eval_period)]

    def tool_opts(run_dir: str, seed: Optional[int]) -> List[str]:
        return (["SEED", str(seed)] if seed is not None else []) + schedule + ["OUTPUT_DIR", run_dir]
    return tool_opts


def build_baseline_plan(config_file: str, baseline_config: str, arm_name: str, overrides: Sequence[str],
                        seeds: Sequence[int], output_dir: str, max_iter: Optional[int] = None,
                        eval_period: Optional[int] = None, arms: Optional[Sequence[str]] = None,
                        folds: Optional[str] = None) -> Plan:
    """Arms ``student`` (``baseline_config``) and ``arm_name`` (``config_file``), two plain configs
    (not distillation configs) trained with the same overrides, schedule and seeds (and folds);
    no teacher.

    Raises:
        ConfigError: a missing or invalid config, a distillation config, a bad arm name, unknown
            ``arms``, bad seeds, or overrides of the keys the tool sets itself.
    """
    overrides = _check_overrides(overrides)
    seeds = _check_schedule(seeds, max_iter, eval_period)
    if not arm_name or arm_name in ("student", "teacher") or "/" in arm_name:
        raise ConfigError(f"--arm-name: expected a name other than student / teacher, without '/', got {arm_name!r}")
    configs = {"student": baseline_config, arm_name: config_file}
    for arm, path in configs.items():
        cfg = load_config(path, overrides)
        if cfg.MODEL.META_ARCHITECTURE == "DistillationModel":
            raise ConfigError(f"{path}: a distillation config; with --baseline-config both configs are plain "
                              "models (compare a distillation config without --baseline-config)")
    fold_of_seed = _check_folds(folds, seeds, overrides)  # after the configs registered their declared sets
    requested = list(arms) if arms else list(configs)
    unknown = [a for a in requested if a not in configs]
    if unknown:
        raise ConfigError(f"--arms: unknown arm(s) {', '.join(unknown)}; this comparison has: {' '.join(configs)}")
    chosen = [a for a in configs if a in requested]
    output_dir = os.path.abspath(output_dir)
    tool_opts = _tool_opts(max_iter, eval_period)
    runs = []
    for seed in seeds:
        for arm in chosen:
            run_dir = os.path.join(output_dir, arm, f"seed{seed}")
            data = _fold_data(folds, fold_of_seed.get(seed))
            runs.append(Run(arm, seed, configs[arm], tuple(overrides + data + tool_opts(run_dir, seed)), run_dir,
                            fold=fold_of_seed.get(seed)))
    return Plan(config_file=config_file, seeds=seeds, arms=chosen, losses={a: [] for a in chosen},
                teacher_config="", teacher_weights="", teacher_source="none", runs=runs,
                folds=folds or "", fold_of_seed=fold_of_seed)


def build_plan(config_file: str, overrides: Sequence[str], seeds: Sequence[int], output_dir: str,
               max_iter: Optional[int] = None, eval_period: Optional[int] = None,
               arms: Optional[Sequence[str]] = None, teacher_weights: Optional[str] = None,
               teacher_opts: Sequence[str] = (), folds: Optional[str] = None) -> Plan:
    """Check the distillation config and every arm's config (without building a model) and list
    the runs, each in ``output_dir/<arm>/seed<seed>`` (the teacher in ``output_dir/teacher/...``).
    ``teacher_opts`` (KEY VALUE ...) apply to the teacher's run only, after everything else (e.g. a
    longer schedule for the teacher than ``max_iter``). ``folds``: see the module docstring (the
    teacher is then trained per fold, in ``output_dir/teacher/fold<k>_seed<seed>``).

    Raises:
        ConfigError: a missing or invalid config (the distillation config, an arm's, the teacher's),
            one that is not a distillation config, unknown ``arms``, bad seeds, overrides of the
            keys the tool sets itself, or ``teacher_weights`` that do not exist.
    """
    overrides = _check_overrides(overrides)
    teacher_opts = [str(o) for o in teacher_opts]
    if len(teacher_opts) % 2:
        raise ConfigError(f"--teacher-opts must be KEY VALUE pairs, got {teacher_opts}")
    for key in teacher_opts[::2]:
        if key in TOOL_KEYS:
            raise ConfigError(f"--teacher-opts: {key} is set by kd_compare for every run; use {TOOL_KEYS[key]}")
        if key.startswith(("MODEL.", "DISTILL.", "INPUT.", "DATASETS.")) and key != "MODEL.DEVICE":
            raise ConfigError(f"--teacher-opts: {key}: only the teacher's schedule goes here (SOLVER.*, TEST.*); "
                              "its architecture goes in DISTILL.TEACHER.OPTS (the distilled arms rebuild the "
                              "teacher from it), its inputs and data are the comparison's")
    seeds = _check_schedule(seeds, max_iter, eval_period)
    if folds and teacher_weights:
        raise ConfigError(f"--teacher-weights: with --folds {folds} the teacher is trained on each fold's training "
                          "images (given weights may have seen the held-out ones); drop one of the two")

    cfg = load_config(config_file, overrides)  # registers its DATASETS.DECLARE sets (folds included)
    fold_of_seed = _check_folds(folds, seeds, overrides)
    if cfg.MODEL.META_ARCHITECTURE != "DistillationModel":
        raise ConfigError(
            f"{config_file}: MODEL.META_ARCHITECTURE is {cfg.MODEL.META_ARCHITECTURE!r}; kd_compare needs a "
            "distillation config (MODEL.META_ARCHITECTURE \"DistillationModel\", e.g. "
            "projects/DSD/configs/Samples/cgrseg_t_street_dsd.yaml)")
    if len(cfg.DISTILL.TEACHERS):
        raise ConfigError(
            f"{config_file}: DISTILL.TEACHERS names {len(cfg.DISTILL.TEACHERS)} teachers; kd_compare compares the "
            "losses of one DISTILL.TEACHER (for a multi-task student with several teachers use "
            "tools/multi_task_compare.py --distill-config)")
    arm_losses, arm_weights = _arm_losses(config_file, cfg)
    chosen, report_teacher = _select(arms, ["student", *arm_losses])

    teacher_config = cfg.DISTILL.TEACHER.CONFIG_FILE
    if not teacher_config:
        raise ConfigError(f"{config_file}: DISTILL.TEACHER.CONFIG_FILE is empty; it must name the teacher's config")
    if not os.path.isfile(teacher_config):
        raise ConfigError(f"{config_file}: DISTILL.TEACHER.CONFIG_FILE: config file not found: {teacher_config} "
                          f"(a relative path is looked for next to the config file that sets it, then in the current "
                          f"directory {os.getcwd()}, then in the repo root)")

    output_dir = os.path.abspath(output_dir)
    tool_opts = _tool_opts(max_iter, eval_period)

    # the teacher: its own config and recipe, on the comparison's data, schedule overrides and seed
    t_opts = ([_as_opt(o) for o in cfg.DISTILL.TEACHER.OPTS] + teacher_overrides(overrides)
              + ["DATASETS.TRAIN", repr(tuple(cfg.DATASETS.TRAIN)), "DATASETS.TEST", repr(tuple(cfg.DATASETS.TEST))])
    # the teacher trains from its own config on the data of this one: the sets this one declares
    declared_in = config_file if len(cfg.DATASETS.get("DECLARE", {}) or {}) else ""
    needs_teacher = report_teacher or len(chosen) > ("student" in chosen)  # reported, or a distilled arm
    teacher_runs: List[Run] = []
    if folds:  # one teacher per fold, trained with the fold's first seed
        source, weights_of_fold = "trained", {}
        for fold in sorted(set(fold_of_seed.values())):
            seed = next(s for s in seeds if fold_of_seed[s] == fold)
            run_dir = os.path.join(output_dir, "teacher", f"fold{fold}_seed{seed}")
            weights_of_fold[fold] = os.path.join(run_dir, "model_final.pth")
            teacher_runs.append(Run("teacher", seed, teacher_config, tuple(
                t_opts + _fold_data(folds, fold) + tool_opts(run_dir, seed) + teacher_opts), run_dir, fold=fold,
                declared_in=declared_in))
        weights = os.path.join(output_dir, "teacher", "fold<k>_seed<seed>", "model_final.pth")
    else:
        weights_of_fold = {}
        if teacher_weights:
            if not os.path.isfile(teacher_weights):
                raise ConfigError(f"--teacher-weights: no file at {teacher_weights}")
            weights, source = os.path.abspath(teacher_weights), "given"
        elif cfg.DISTILL.TEACHER.WEIGHTS and os.path.isfile(cfg.DISTILL.TEACHER.WEIGHTS):
            weights, source = os.path.abspath(cfg.DISTILL.TEACHER.WEIGHTS), "config"
        else:
            source = "trained"
            run_dir = os.path.join(output_dir, "teacher", f"seed{seeds[0]}")
            weights = os.path.join(run_dir, "model_final.pth")
            teacher_runs.append(Run("teacher", seeds[0], teacher_config,
                                    tuple(t_opts + tool_opts(run_dir, seeds[0]) + teacher_opts), run_dir,
                                    declared_in=declared_in))
        if source != "trained" and report_teacher:
            run_dir = os.path.join(output_dir, "teacher", "eval")
            teacher_runs.append(Run("teacher", None, teacher_config,
                                    tuple(t_opts + ["MODEL.WEIGHTS", weights] + tool_opts(run_dir, None) + teacher_opts),
                                    run_dir, eval_only=True, declared_in=declared_in))
    if not needs_teacher:
        teacher_runs = []
    if teacher_runs:  # a bad teacher override: one line, now
        try:
            load_config(teacher_config, list(teacher_runs[0].opts))
        except ConfigError as e:
            raise ConfigError(f"the teacher's config ({teacher_config} + DISTILL.TEACHER.OPTS + the overrides "
                              f"outside MODEL.*/DISTILL.*): {e}") from None

    def arm_opts(arm: str, seed: int) -> List[str]:
        fold = fold_of_seed.get(seed)
        data = _fold_data(folds, fold)
        if arm == "student":
            return ["MODEL.META_ARCHITECTURE", cfg.DISTILL.STUDENT_META_ARCHITECTURE] + data
        return data + ["DISTILL.LOSSES", repr(tuple(arm_losses[arm])), "DISTILL.LOSS_WEIGHTS",
                       repr(tuple(arm_weights[arm])), "DISTILL.TEACHER.WEIGHTS", weights_of_fold.get(fold, weights)]

    runs = list(teacher_runs)
    for seed in seeds:
        for arm in chosen:
            run_dir = os.path.join(output_dir, arm, f"seed{seed}")
            runs.append(Run(arm, seed, config_file, tuple(overrides + arm_opts(arm, seed) + tool_opts(run_dir, seed)),
                            run_dir, fold=fold_of_seed.get(seed)))
    for run in runs[len(runs) - len(chosen):]:  # each arm's config loads (no model is built): errors
        try:  # come now, not after hours of training
            load_config(config_file, list(run.opts))
        except ConfigError as e:
            raise ConfigError(f"arm {run.arm}: {e}") from None
    return Plan(config_file=config_file, seeds=seeds, arms=chosen,
                losses={a: ([] if a == "student" else list(arm_losses[a])) for a in chosen},
                teacher_config=teacher_config, teacher_weights=weights, teacher_source=source,
                runs=runs, teacher_opts=teacher_opts,
                teacher_runs=teacher_runs, folds=folds or "", fold_of_seed=fold_of_seed)
