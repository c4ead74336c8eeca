"""tools/kd_compare.py without training: the plan of arms and runs, aggregation of fake run folders
(mean, sample std, JSON fields, charts), resume / skip logic, --register, and the clear errors."""
import json
import os
import sys

import pytest

from segdet.utils.errors import ConfigError
from _tools import load_tool, one_error_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DSD = "projects/DSD/configs/Samples/cgrseg_t_street_dsd.yaml"
TEACHER = "configs/Samples/semseg_fpn_mnv2_street.yaml"
NO_WEIGHTS = ["DISTILL.TEACHER.WEIGHTS", ""]  # the sample's teacher file may exist in this checkout

kd_compare = load_tool("kd_compare")  # puts tools/ on sys.path for its helper package
from kd_compare_lib import child, plan as plan_lib, report, runner  # noqa: E402


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the sample configs name their teacher config relative to the checkout


def _plan(tmp_path, seeds=(1, 2, 3), opts=NO_WEIGHTS, **kwargs):
    return plan_lib.build_plan(DSD, list(opts), list(seeds), str(tmp_path / "cmp"), **kwargs)


def _opt(run, key):
    opts = list(run.opts)
    return opts[len(opts) - 1 - opts[::-1].index(key) + 1]  # the last value given for key


def _fake_run(run, value, times=(0.5, 0.7, 0.6), task="sem_seg", name="mIoU", curve=((9, 10.0), (19, 20.0))):
    os.makedirs(run.run_dir, exist_ok=True)
    with open(os.path.join(run.run_dir, "eval_results.json"), "w") as f:
        json.dump({task: {name: value}}, f)
    with open(os.path.join(run.run_dir, "metrics.json"), "w") as f:
        for i, t in enumerate(times):
            f.write(json.dumps({"iteration": 10 * i + 9, "total_loss": 3.0 - i, "time": t}) + "\n")
        for it, v in curve:
            f.write(json.dumps({"iteration": it, f"{task}/{name}": v}) + "\n")


# ------------------------------------------------------------------------------------------ plan
def test_plan_arms_runs_and_opts(tmp_path):
    p = _plan(tmp_path, opts=NO_WEIGHTS + ["MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3",
                                           "SOLVER.IMS_PER_BATCH", "2"], max_iter=7, eval_period=3)
    assert p.arms == ["student", "psd", "csd", "psd+csd"]
    assert p.losses == {"student": [], "psd": ["PSD"], "csd": ["CSD"], "psd+csd": ["PSD", "CSD"]}
    assert p.teacher_source == "trained" and p.teacher_run is p.runs[0]
    assert len(p.runs) == 1 + 4 * 3 and [r.label for r in p.runs[1:5]] == [
        "student seed 1", "psd seed 1", "csd seed 1", "psd+csd seed 1"]  # seed by seed
    teacher = p.teacher_run
    assert teacher.config_file == os.path.abspath(TEACHER) and teacher.run_dir == str(tmp_path / "cmp" / "teacher" / "seed1")
    assert p.teacher_weights == os.path.join(teacher.run_dir, "model_final.pth")
    # the teacher: its own architecture, the comparison's data, schedule, device and seed
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES" not in teacher.opts
    assert _opt(teacher, "MODEL.DEVICE") == "cpu" and _opt(teacher, "SOLVER.IMS_PER_BATCH") == "2"
    assert _opt(teacher, "DATASETS.TEST") == "('segdet_street_sem_seg_val',)"
    assert (_opt(teacher, "SEED"), _opt(teacher, "SOLVER.MAX_ITER"), _opt(teacher, "TEST.EVAL_PERIOD")) == ("1", "7", "3")
    student, psd, both = p.runs_of("student")[1], p.runs_of("psd")[1], p.runs_of("psd+csd")[1]
    assert _opt(student, "MODEL.META_ARCHITECTURE") == "SegdetSemanticSegmentor"
    assert _opt(student, "SEED") == "2" and _opt(student, "OUTPUT_DIR") == str(tmp_path / "cmp" / "student" / "seed2")
    assert _opt(psd, "DISTILL.LOSSES") == "('PSD',)" and _opt(both, "DISTILL.LOSSES") == "('PSD', 'CSD')"
    assert _opt(psd, "DISTILL.TEACHER.WEIGHTS") == p.teacher_weights
    assert _opt(psd, "MODEL.SEM_SEG_HEAD.NUM_CLASSES") == "3"  # the student's overrides: every arm
    assert runner.train_net_command(psd)[:3] == ["--config-file", os.path.abspath(DSD), "--resume"]


def test_plan_teacher_opts_apply_to_the_teacher_alone_and_last(tmp_path):
    p = _plan(tmp_path, seeds=[1], max_iter=7, teacher_opts=["SOLVER.MAX_ITER", "30", "SOLVER.BASE_LR", "0.01"])
    assert _opt(p.teacher_run, "SOLVER.MAX_ITER") == "30" and _opt(p.teacher_run, "SOLVER.BASE_LR") == "0.01"
    assert all(_opt(r, "SOLVER.MAX_ITER") == "7" and "SOLVER.BASE_LR" not in r.opts for r in p.runs[1:])
    with pytest.raises(ConfigError, match="--teacher-opts: SEED is set by kd_compare"):
        _plan(tmp_path, seeds=[1], teacher_opts=["SEED", "3"])
    with pytest.raises(ConfigError, match="the teacher's config"):
        _plan(tmp_path, seeds=[1], teacher_opts=["SOLVER.NOPE", "3"])
    for key in ("MODEL.WEIGHTS", "INPUT.MIN_SIZE_TEST", "DISTILL.TEACHER.OPTS"):
        with pytest.raises(ConfigError, match=f"--teacher-opts: {key}: only the teacher's schedule"):
            _plan(tmp_path, seeds=[1], teacher_opts=[key, "x"])


def test_plan_loss_weights_follow_their_loss(tmp_path):
    p = _plan(tmp_path, seeds=[0], opts=NO_WEIGHTS + ["DISTILL.LOSS_WEIGHTS", "(0.5, 2.0)"])
    assert _opt(p.runs_of("csd")[0], "DISTILL.LOSS_WEIGHTS") == "(2.0,)"
    assert _opt(p.runs_of("psd+csd")[0], "DISTILL.LOSS_WEIGHTS") == "(0.5, 2.0)"


def test_plan_given_teacher_weights_are_evaluated_not_trained(tmp_path):
    weights = tmp_path / "t.pth"
    weights.write_bytes(b"x")
    p = _plan(tmp_path, seeds=[1], teacher_weights=str(weights))
    assert p.teacher_source == "given" and p.teacher_run.eval_only
    assert _opt(p.teacher_run, "MODEL.WEIGHTS") == str(weights) and "SEED" not in p.teacher_run.opts
    assert runner.train_net_command(p.teacher_run)[2] == "--eval-only"
    assert _opt(p.runs_of("csd")[0], "DISTILL.TEACHER.WEIGHTS") == str(weights)
    # DISTILL.TEACHER.WEIGHTS naming an existing file counts as given
    p = _plan(tmp_path, seeds=[1], opts=["DISTILL.TEACHER.WEIGHTS", str(weights)], arms=["student", "csd"])
    assert p.teacher_source == "config" and p.teacher_run is None and p.arms == ["student", "csd"]


def test_plan_subset_of_arms(tmp_path):
    p = _plan(tmp_path, seeds=[1, 2], arms=["student"])
    assert p.arms == ["student"] and p.teacher_run is None and len(p.runs) == 2  # nothing needs the teacher
    p = _plan(tmp_path, seeds=[1, 2], arms=["psd+csd"])
    assert [r.label for r in p.runs] == ["teacher seed 1", "psd+csd seed 1", "psd+csd seed 2"]


@pytest.mark.parametrize("config, kwargs, opts, fragment", [
    (TEACHER, {}, [], "MODEL.META_ARCHITECTURE is 'SegdetSemanticSegmentor'; kd_compare needs a distillation config"),
    ("configs/nope.yaml", {}, [], "config file not found: configs/nope.yaml"),
    (DSD, {"arms": ["student", "dsd"]}, [], "--arms: unknown arm(s) dsd; this config has: student psd csd psd+csd teacher"),
    (DSD, {}, ["SEED", "3"], "use --seeds instead"),
    (DSD, {}, ["OUTPUT_DIR", "x"], "use --output-dir instead"),
    (DSD, {}, ["DISTILL.LOSSES", "()"], "DISTILL.LOSSES is empty"),
    (DSD, {}, ["DISTILL.TEACHER.CONFIG_FILE", "nope.yaml"], "DISTILL.TEACHER.CONFIG_FILE: config file not found: nope.yaml"),
    (DSD, {"teacher_weights": "nope.pth"}, [], "--teacher-weights: no file at nope.pth"),
    (DSD, {}, ["DISTILL.TEACHER.OPTS", "['MODEL.NOPE', 1]"], "the teacher's config (" + os.path.abspath("configs/Samples/semseg")),
    (DSD, {"max_iter": 0}, [], "--max-iter"),
    ("projects/MultiTask/configs/faster_rcnn_semseg_fpn_mnv2_trees_street_drkd_dsd.yaml", {}, [],
     "DISTILL.TEACHERS names 2 teachers; kd_compare compares the losses of one DISTILL.TEACHER"),
])
def test_plan_errors(tmp_path, config, kwargs, opts, fragment):
    with pytest.raises(ConfigError) as e:
        plan_lib.build_plan(config, NO_WEIGHTS + opts, [1], str(tmp_path), **kwargs)
    assert fragment in str(e.value)


def test_plan_error_for_bad_seeds(tmp_path):
    for seeds in ([1, 1], [-1], []):
        with pytest.raises(ConfigError, match="--seeds"):
            _plan(tmp_path, seeds=seeds)


@pytest.mark.parametrize("argv, fragment", [
    (["--config-file", TEACHER], "kd_compare needs a distillation config"),
    (["--config-file", "configs/nope.yaml"], "config file not found: configs/nope.yaml"),
    (["--config-file", DSD, "--arms", "dsd"], "--arms: unknown arm(s) dsd"),
    (["--config-file", DSD, "--register", "no_such_module_xyz"], "--register no_such_module_xyz: no module named"),
])
def test_cli_errors_are_one_line(argv, fragment, capsys, monkeypatch):
    monkeypatch.delenv("SEGDET_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        kd_compare.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    one_error_line(err, fragment)


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        kd_compare.main(["--help"])
    out = capsys.readouterr().out
    assert "Examples:" in out and "--seeds 1 2 --max-iter 100" in out and "--register" in out


# ----------------------------------------------------------------------------------- aggregation
def test_summary_mean_sample_std_and_fields(tmp_path):
    p = _plan(tmp_path, seeds=[1, 2, 3])
    values = {"student": [40.0, 42.0, 44.0], "psd": [45.0, 46.0, 47.0], "csd": [41.0, None, 43.0],
              "psd+csd": [50.0, 50.0, 50.0]}
    for arm, vs in values.items():
        for run, v in zip(p.runs_of(arm), vs):
            _fake_run(run, v if v is not None else float("nan"), times=(0.2, 0.4, 0.3) if arm == "student" else (1.0,))
    _fake_run(p.teacher_run, 60.0)
    s = report.summarize(p, NO_WEIGHTS, max_iter=20)
    assert s["metric"] == "mIoU" and s["metric_key"] == "sem_seg/mIoU" and s["seeds"] == [1, 2, 3]
    assert s["std"] == "sample (ddof=1)" and s["complete"] and s["teacher"]["value"] == 60.0
    st = s["arms"]["student"]
    assert st["per_seed"] == [40.0, 42.0, 44.0] and st["mean"] == 42.0 and st["std"] == pytest.approx(2.0)
    assert st["s_per_iter"] == pytest.approx(0.3)  # median of metrics.json's time
    assert s["arms"]["psd"]["delta_vs_student"] == pytest.approx(4.0)
    assert s["arms"]["csd"]["per_seed"] == [41.0, None, 43.0] and s["arms"]["csd"]["mean"] == 42.0  # NaN -> None
    assert s["arms"]["psd+csd"]["std"] == 0.0 and s["arms"]["psd+csd"]["losses"] == ["PSD", "CSD"]
    # curves: iterations done (losses and periodic evaluations are logged 0-based)
    assert s["curves"]["student"]["total_loss"] == [(10, 3.0), (20, 2.0), (30, 1.0)]
    assert s["curves"]["student"]["metric"] == [(10, 10.0), (20, 20.0)]
    path = tmp_path / "kd_compare.json"
    report.write_json(s, str(path))
    loaded = json.loads(path.read_text())  # strict JSON (no NaN)
    assert set(loaded) >= {"metric", "seeds", "teacher", "arms"} and set(loaded["arms"]["student"]) >= {
        "per_seed", "mean", "std", "s_per_iter"}
    table = report.format_table(s)
    assert "student  42.00 ± 2.00" in table and "40.00 42.00 44.00" in table and "41.00 - 43.00" in table
    report.plot_bars(s, str(tmp_path / "bars.png"))
    report.plot_curves(s, str(tmp_path / "curves.png"))
    assert (tmp_path / "bars.png").stat().st_size > 0 and (tmp_path / "curves.png").stat().st_size > 0


def test_summary_one_seed_std_zero_and_unfinished_runs(tmp_path):
    p = _plan(tmp_path, seeds=[5])
    _fake_run(p.runs_of("student")[0], 30.0, task="bbox", name="AP")
    s = report.summarize(p)
    assert s["std"] == "0 (one seed)" and s["metric"] == "AP" and not s["complete"]
    assert s["arms"]["student"]["std"] == 0.0 and s["arms"]["psd"]["mean"] is None
    assert s["teacher"]["value"] is None and s["arms"]["psd"]["delta_vs_student"] is None
    assert "teacher  -" in report.format_table(s) and "(trained)" in report.format_table(s)  # not finished yet
    p = _plan(tmp_path, seeds=[5], arms=["student"])
    assert "(not run)" in report.format_table(report.summarize(p))


def test_metric_from_results():
    assert report.metric_from_results({"bbox": {"AP": 12.5, "AP50": 30}}) == ("bbox/AP", 12.5)
    assert report.metric_from_results({"sem_seg": {"mIoU": 50}}) == ("sem_seg/mIoU", 50.0)
    assert report.metric_from_results({"ds_a": {"sem_seg": {"mIoU": 7}}, "ds_b": {"sem_seg": {"mIoU": 9}}}) == (
        "sem_seg/mIoU", 7.0)
    assert report.metric_from_results({"bbox": {"AP": None}}) == ("bbox/AP", None)
    with pytest.raises(ValueError, match="x.json: expected COCO 'bbox' AP or 'sem_seg' mIoU"):
        report.metric_from_results({"segm": {"AP": 1}}, "x.json")


# ------------------------------------------------------------------------------- resume and skip
def test_rerun_skips_finished_runs_and_resumes_the_rest(tmp_path, monkeypatch, capsys):
    argv = ["--config-file", DSD, "--seeds", "1", "2", "--arms", "student", "csd", "teacher",
            "--output-dir", str(tmp_path / "cmp"), *NO_WEIGHTS]
    p = _plan(tmp_path, seeds=[1, 2], arms=["student", "csd", "teacher"])
    commands = {r.run_dir: runner.train_net_command(r) for r in p.runs}
    for run in p.runs[:3]:  # teacher, student 1, csd 1: finished by an earlier invocation
        runner._write_record(run, {"train_net_args": commands[run.run_dir], "duration_s": 10.0})
        _fake_run(run, 50.0)
    partial = p.runs_of("student")[1]
    runner._write_record(partial, {"train_net_args": commands[partial.run_dir]})
    (tmp_path / "cmp" / "student" / "seed2" / "last_checkpoint").write_text("model_0000009.pth")
    executed = []

    def fake_execute(run, command, register=(), verbose=False, on_progress=None):
        executed.append((run.label, command))
        _fake_run(run, 40.0)
        return 12.0

    monkeypatch.setattr(kd_compare, "execute", fake_execute)
    summary = kd_compare.main(argv)
    assert [label for label, _ in executed] == ["student seed 2", "csd seed 2"]
    assert all("--resume" in command for _, command in executed)
    out = capsys.readouterr().out
    assert out.count("finished before, skipped") == 3
    assert "run 4/5 student seed 2: resuming" in out and "ETA 20 s" in out  # 2 runs x median 10 s
    assert "run 5/5 csd seed 2: training" in out
    assert summary["arms"]["student"]["per_seed"] == [50.0, 40.0] and summary["teacher"]["value"] == 50.0
    for name in ("kd_compare.json", "kd_compare.png", "kd_compare_curves.png"):
        assert (tmp_path / "cmp" / name).is_file(), name
    # a run folder made with other settings is refused before anything runs
    executed.clear()
    with pytest.raises(SystemExit) as e:
        kd_compare.main(argv + ["SOLVER.MAX_ITER", "3"])
    assert e.value.code == 2 and not executed
    err = capsys.readouterr().err
    assert "holds a run of other settings" in err and "teacher" in err and "delete that folder" in err


def test_execute_reports_a_failed_run_in_one_line(tmp_path):
    run = plan_lib.Run("student", 1, DSD, ("OUTPUT_DIR", str(tmp_path / "r")), str(tmp_path / "r"))
    with pytest.raises(runner.RunFailedError) as e:
        runner.execute(run, ["--config-file", "configs/nope.yaml"])
    message = str(e.value)
    assert message.startswith("run student seed 1 failed (exit status 2): ConfigError: config file not found")
    assert message.endswith(os.path.join(str(tmp_path / "r"), "kd_compare_train.log"))
    assert json.loads((tmp_path / "r" / runner.RECORD).read_text())["train_net_args"][1] == "configs/nope.yaml"


def test_eta():
    eta = runner.Eta()
    a1, a2 = (plan_lib.Run("student", s, "c", (), f"/x/{s}") for s in (1, 2))
    b = plan_lib.Run("psd", 1, "c", (), "/y")
    ev = plan_lib.Run("teacher", None, "c", (), "/t", eval_only=True)
    assert eta.remaining([a1]) is None
    eta.add(a1, 10.0)
    eta.add(a2, 30.0)
    assert eta.remaining([a1, b]) == 40.0  # psd: no run yet, the median of all training runs
    eta.add(b, 100.0)
    assert eta.remaining([a1, b]) == 120.0 and eta.remaining([ev]) is None
    assert [runner.format_duration(s) for s in (45, 720, 9000)] == ["45 s", "12 min", "2 h 30 min"]


# ---------------------------------------------------------------------------------------- child
def test_register_specs(tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    (tmp_path / "my_datasets.py").write_text(
        f"open({str(calls)!r}, 'a').write('import\\n')\n"
        f"def register():\n    open({str(calls)!r}, 'a').write('register\\n')\n")
    child.apply_register(str(tmp_path / "my_datasets.py") + ":register")
    assert calls.read_text() == "import\nregister\n"
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)  # MODULE specs are found from the current directory
    child.apply_register("my_datasets")
    assert calls.read_text() == "import\nregister\nimport\n"
    monkeypatch.delitem(sys.modules, "my_datasets")
    for spec, fragment in [("nope.py", "no file at nope.py"), ("my_datasets:nope", "has no function 'nope'"),
                           ("nope_module_xyz:f", "no module named 'nope_module_xyz'")]:
        with pytest.raises(ConfigError, match=fragment):
            child.apply_register(spec)
    assert child.split_argv(["--register", "a", "--declare", "c.yaml", "--register", "b.py:f", "--",
                             "--config-file", "x"]) == (
        [("register", "a"), ("declare", "c.yaml"), ("register", "b.py:f")], ["--config-file", "x"])


SSA = "projects/SSA/configs/Samples/cgrseg_t_ssa_street.yaml"
CGRSEG = "projects/CGRSeg/configs/Samples/cgrseg_t_street.yaml"


def test_baseline_plan_two_plain_configs_no_teacher_and_its_summary(tmp_path):
    p = plan_lib.build_baseline_plan(SSA, CGRSEG, "ssa", ["SOLVER.MAX_ITER", "7"], [1, 2], str(tmp_path),
                                     eval_period=3)
    assert p.arms == ["student", "ssa"] and p.teacher_run is None and p.teacher_source == "none"
    assert [(r.label, r.config_file) for r in p.runs] == [("student seed 1", CGRSEG), ("ssa seed 1", SSA),
                                                          ("student seed 2", CGRSEG), ("ssa seed 2", SSA)]
    run = p.runs_of("ssa")[1]
    assert run.opts == ("SOLVER.MAX_ITER", "7", "SEED", "2", "TEST.EVAL_PERIOD", "3", "OUTPUT_DIR",
                        str(tmp_path / "ssa" / "seed2"))
    for arm, values in (("student", (40.0, 44.0)), ("ssa", (47.0, 45.0))):
        for r, v in zip(p.runs_of(arm), values):
            _fake_run(r, v)
    s = report.summarize(p)
    assert s["arms"]["ssa"]["delta_vs_student"] == pytest.approx(4.0) and s["teacher"]["value"] is None
    assert s["arms"]["ssa"]["losses"] == [] and "teacher  -" in report.format_table(s)
    only = plan_lib.build_baseline_plan(SSA, CGRSEG, "ssa", [], [1], str(tmp_path), arms=["ssa"])
    assert [r.arm for r in only.runs] == ["ssa"]


@pytest.mark.parametrize("config, baseline, name, kwargs, fragment", [
    (DSD, CGRSEG, "dsd", {}, "a distillation config; with --baseline-config both configs are plain"),
    (SSA, "nope.yaml", "ssa", {}, "config file not found: nope.yaml"),
    (SSA, CGRSEG, "student", {}, "--arm-name: expected a name other than student / teacher"),
    (SSA, CGRSEG, "ssa", {"arms": ["teacher"]}, "--arms: unknown arm(s) teacher; this comparison has: student ssa"),
])
def test_baseline_plan_errors(tmp_path, config, baseline, name, kwargs, fragment):
    with pytest.raises(ConfigError) as e:
        plan_lib.build_baseline_plan(config, baseline, name, NO_WEIGHTS if config == DSD else [], [1], str(tmp_path),
                                     **kwargs)
    assert fragment in str(e.value)


def test_baseline_comparison_refuses_teacher_flags(capsys, tmp_path):
    with pytest.raises(SystemExit):
        kd_compare.main(["--config-file", SSA, "--baseline-config", CGRSEG, "--teacher-opts", "SOLVER.MAX_ITER 5",
                         "--output-dir", str(tmp_path)])
    assert "a --baseline-config comparison has no teacher" in capsys.readouterr().err


# ------------------------------------------------------------------------------ cross-validation
CV = "segdet_street_sem_seg_cv"


def test_folds_plan_pairs_seeds_with_folds_and_trains_a_teacher_per_fold(tmp_path):
    p = _plan(tmp_path, seeds=[1, 2, 3, 4, 5], folds=CV)
    assert p.fold_of_seed == {1: 0, 2: 1, 3: 2, 4: 3, 5: 4}
    assert [r.run_dir for r in p.teacher_runs] == [str(tmp_path / "cmp" / "teacher" / f"fold{k}_seed{k + 1}")
                                                   for k in range(5)]
    assert p.runs[:5] == p.teacher_runs and p.teacher_run is p.teacher_runs[0]
    for seed in (1, 4):
        fold = seed - 1
        teacher = p.teacher_runs[fold]
        assert _opt(teacher, "DATASETS.TRAIN") == f"('{CV}_fold{fold}_train',)"
        assert _opt(teacher, "DATASETS.TEST") == f"('{CV}_fold{fold}_val',)" and _opt(teacher, "SEED") == str(seed)
        for arm in p.arms:  # every arm of this seed: the same fold; distilled arms: that fold's teacher
            run = next(r for r in p.runs_of(arm) if r.seed == seed)
            assert _opt(run, "DATASETS.TRAIN") == f"('{CV}_fold{fold}_train',)"
            assert _opt(run, "DATASETS.TEST") == f"('{CV}_fold{fold}_val',)"
            if arm != "student":
                assert _opt(run, "DISTILL.TEACHER.WEIGHTS") == os.path.join(teacher.run_dir, "model_final.pth")
    # 10 seeds on 5 folds: seed i on fold i mod 5, one teacher per fold (its first seed)
    p = _plan(tmp_path, seeds=list(range(10, 20)), folds=CV, arms=["student", "psd"])
    assert p.fold_of_seed[15] == 0 and [_opt(r, "SEED") for r in p.teacher_runs] == ["10", "11", "12", "13", "14"]


def test_folds_summary_teacher_is_the_mean_of_its_folds(tmp_path):
    p = _plan(tmp_path, seeds=[1, 2, 3, 4, 5], folds=CV, arms=["student", "psd"])
    for k, run in enumerate(p.teacher_runs):
        _fake_run(run, 50.0 + k)
    for arm, base in (("student", 40.0), ("psd", 44.0)):
        for k, run in enumerate(p.runs_of(arm)):
            _fake_run(run, base + k)
    s = report.summarize(p)
    assert s["teacher"]["value"] == pytest.approx(52.0) and s["teacher"]["per_fold"] == [50.0, 51.0, 52.0, 53.0, 54.0]
    assert s["arms"]["psd"]["delta_vs_student"] == pytest.approx(4.0)
    assert s["folds"]["fold_of_seed"] == {"1": 0, "2": 1, "3": 2, "4": 3, "5": 4}
    assert s["folds"]["held_out_sets"]["3"] == f"{CV}_fold2_val" and s["complete"]


@pytest.mark.parametrize("kwargs, opts, fragment", [
    ({"folds": "no_such_family"}, NO_WEIGHTS, "no folds registered under that name"),
    ({"folds": CV, "seeds": [1, 2, 3]}, NO_WEIGHTS, "give a multiple of 5 seeds"),
    ({"folds": CV, "seeds": [1, 2, 3, 4, 5]}, NO_WEIGHTS + ["DATASETS.TRAIN", "('x',)"], "set by --folds"),
])
def test_folds_errors(tmp_path, kwargs, opts, fragment):
    seeds = kwargs.pop("seeds", [1, 2, 3, 4, 5])
    with pytest.raises(ConfigError, match=fragment):
        _plan(tmp_path, seeds=seeds, opts=opts, **kwargs)


def test_folds_refuse_given_teacher_weights(tmp_path):
    weights = tmp_path / "t.pth"
    weights.write_bytes(b"x")
    with pytest.raises(ConfigError, match="--teacher-weights: with --folds"):
        _plan(tmp_path, seeds=[1, 2, 3, 4, 5], folds=CV, teacher_weights=str(weights))


def test_baseline_plan_with_folds(tmp_path):
    p = plan_lib.build_baseline_plan(SSA, CGRSEG, "ssa", [], [1, 2, 3, 4, 5], str(tmp_path / "cmp"), folds=CV)
    assert not p.teacher_runs and p.fold_of_seed[5] == 4
    run = p.runs_of("ssa")[4]
    assert _opt(run, "DATASETS.TEST") == f"('{CV}_fold4_val',)" and run.config_file == SSA


def test_folds_run_labels_name_the_fold(tmp_path):
    p = _plan(tmp_path, seeds=[1, 2, 3, 4, 5], folds=CV, arms=["student", "psd"])
    assert p.teacher_runs[2].label == "teacher seed 3 (fold 2)" and p.runs_of("psd")[4].label == "psd seed 5 (fold 4)"
    assert _plan(tmp_path).runs_of("student")[0].label == "student seed 1"


def test_folds_declared_in_the_config_itself(tmp_path):
    from PIL import Image

    for folder in ("images", "labels"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (32, 32)).save(tmp_path / "data" / "images" / f"f{i}.jpg")
        Image.new("L", (32, 32)).save(tmp_path / "data" / "labels" / f"f{i}.png")
    cfg = tmp_path / "cv.yaml"
    cfg.write_text(f'_BASE_: "{os.path.join(ROOT, DSD)}"\nDATASETS:\n  DECLARE:\n'
                   f'    t_cv_src:\n      TYPE: "sem_seg_folder"\n      IMAGE_ROOT: "{tmp_path}/data/images"\n'
                   f'      LABEL_ROOT: "{tmp_path}/data/labels"\n      CLASSES: ["a", "b", "c"]\n'
                   '    t_cv:\n      TYPE: "folds"\n      SOURCES: ["t_cv_src"]\n      NUM_FOLDS: 2\n')
    p = plan_lib.build_plan(str(cfg), NO_WEIGHTS, [7, 8], str(tmp_path / "cmp"), folds="t_cv", arms=["student", "psd"])
    assert p.fold_of_seed == {7: 0, 8: 1} and len(p.teacher_runs) == 2
    # the teacher trains from its own config: its process registers this config's declared sets
    assert all(r.declared_in == str(cfg) for r in p.teacher_runs)
    assert _plan(tmp_path).teacher_run.declared_in == ""  # the sample config declares nothing
    assert _opt(p.runs_of("psd")[1], "DATASETS.TEST") == "('t_cv_fold1_val',)"
