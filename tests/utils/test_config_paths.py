"""DISTILL.TEACHER.CONFIG_FILE is resolved like _BASE_, from any working directory."""
import os

from segdet.utils.config_io import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRKD = os.path.join(REPO, "projects/DRKD/configs/Samples/faster_rcnn_mnv2_fpn_trees_drkd.yaml")
STUDENT = os.path.join(REPO, "configs/Samples/retinanet_mnv2_fpn_trees.yaml")


def test_project_config_from_another_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(DRKD)
    path = cfg.DISTILL.TEACHER.CONFIG_FILE
    assert os.path.isabs(path) and os.path.isfile(path)
    assert path.endswith("faster_rcnn_mnv2_fpn256_trees_teacher.yaml")
    # and the teacher config itself loads from there (what DistillationModel.from_config does)
    load_config(path, list(cfg.DISTILL.TEACHER.OPTS))


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_relative_to_the_file_that_sets_it(tmp_path, monkeypatch):
    _write(tmp_path / "mine/teacher.yaml", f"_BASE_: {STUDENT}\n")
    user = _write(tmp_path / "mine/kd.yaml",
                  f"_BASE_: {STUDENT}\nDISTILL:\n  TEACHER:\n    CONFIG_FILE: teacher.yaml\n")
    monkeypatch.chdir(REPO)  # not the config's folder
    cfg = load_config(user)
    assert cfg.DISTILL.TEACHER.CONFIG_FILE == str(tmp_path / "mine/teacher.yaml")


def test_key_set_in_a_base_file_is_relative_to_that_base(tmp_path, monkeypatch):
    _write(tmp_path / "base/teacher.yaml", f"_BASE_: {STUDENT}\n")
    _write(tmp_path / "base/kd_base.yaml",
           f"_BASE_: {STUDENT}\nDISTILL:\n  TEACHER:\n    CONFIG_FILE: teacher.yaml\n")
    user = _write(tmp_path / "runs/kd.yaml", "_BASE_: ../base/kd_base.yaml\n")
    monkeypatch.chdir(tmp_path / "runs")
    cfg = load_config(user)
    assert cfg.DISTILL.TEACHER.CONFIG_FILE == str(tmp_path / "base/teacher.yaml")


def test_cwd_fallback_and_command_line(tmp_path, monkeypatch):
    _write(tmp_path / "teacher.yaml", f"_BASE_: {STUDENT}\n")
    user = _write(tmp_path / "cfgs/kd.yaml",
                  f"_BASE_: {STUDENT}\nDISTILL:\n  TEACHER:\n    CONFIG_FILE: teacher.yaml\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(user).DISTILL.TEACHER.CONFIG_FILE == str(tmp_path / "teacher.yaml")
    cfg = load_config(STUDENT, ["DISTILL.TEACHER.CONFIG_FILE", "teacher.yaml"])
    assert cfg.DISTILL.TEACHER.CONFIG_FILE == str(tmp_path / "teacher.yaml")
