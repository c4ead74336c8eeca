"""tools/run_demo.py: every task's comparison plan is valid (configs, schedules, teacher
overrides), the table, and (slow) the whole demo with 2 iterations per run."""
import json
import os

import pytest

from _tools import REPO_ROOT, load_tool

run_demo = load_tool("run_demo")  # puts tools/ on sys.path for kd_compare_lib
from kd_compare_lib import plan as plan_lib  # noqa: E402


@pytest.mark.parametrize("task", run_demo.TASKS, ids=lambda t: t.name)
def test_each_task_is_a_valid_comparison_with_a_longer_or_equal_teacher(task, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    opts = task.fixed_opts + task.student_opts + ["DISTILL.TEACHER.WEIGHTS", ""]
    plan = plan_lib.build_plan(task.config, opts, [run_demo.SEED], str(tmp_path), eval_period=task.eval_period,
                               arms=["student", task.arm, "teacher"], teacher_opts=task.teacher_opts)
    assert plan.arms == ["student", task.arm] and plan.teacher_source == "trained"

    def last(run, key):
        opts = list(run.opts)
        return opts[len(opts) - 1 - opts[::-1].index(key) + 1]

    student, distilled = plan.runs_of("student")[0], plan.runs_of(task.arm)[0]
    assert last(student, "SOLVER.MAX_ITER") == last(distilled, "SOLVER.MAX_ITER")
    assert int(last(plan.teacher_run, "SOLVER.MAX_ITER")) >= int(last(student, "SOLVER.MAX_ITER"))
    for key in ("INPUT.MIN_SIZE_TRAIN", "INPUT.MIN_SIZE_TEST"):  # the teacher sees the students' inputs
        if key in student.opts:
            assert last(plan.teacher_run, key) == last(student, key)


def test_table_has_one_row_per_task_with_the_gain():
    summary = {"tasks": {"detection": {"metric": "AP", "method": "DRKD", "untrained": 0.1, "student": 6.44,
                                       "distilled": 8.6, "delta_vs_student": 2.16, "teacher": 13.74, "seconds": 546.0}}}
    lines = run_demo.format_table(summary).splitlines()
    assert len(lines) == 2 and lines[0].split()[:5] == ["task", "metric", "untrained", "student", "distilled"]
    assert lines[1].split() == ["detection", "AP", "0.10", "6.44", "8.60", "(DRKD,", "+2.16)", "13.74", "546", "s"]


@pytest.mark.slow
def test_demo_end_to_end_with_two_iterations(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    summary = run_demo.main(["--output", str(tmp_path / "demo"), "--max-iter", "2", "--threads", "1"])
    written = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert written["seed"] == 1 and set(written["tasks"]) == {"detection", "segmentation"}
    for name, task in summary["tasks"].items():
        assert {"untrained", "student", "distilled", "teacher", "seconds", "kd_compare"} <= set(task)
        folder = tmp_path / "demo" / name
        for chart in ("kd_compare.json", "kd_compare.png", "kd_compare_curves.png"):
            assert (folder / chart).is_file(), chart
        assert (folder / "untrained" / "eval_results.json").is_file()
        assert list((folder / "student" / "seed1" / "inference").rglob("*.png"))
        assert os.path.isfile(json.loads((folder / "kd_compare.json").read_text())["teacher"]["weights"])
