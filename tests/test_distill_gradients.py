"""tools/distill_gradients.py on a tiny DSD config and the synthetic data: each term's gradient
against the task gradient, scaling with the term's weight as it must, and the clear errors."""
import json
import os

import pytest
import torch

from _tools import load_tool, one_error_line
from test_kd_compare_e2e import write_tiny_comparison

tool = load_tool("distill_gradients")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(distillation config, teacher weights) of the tiny synthetic DSD comparison."""
    from detectron2.modeling import build_model

    from segdet.utils.config_io import load_config
    from segdet.utils.synthetic import register_synthetic_datasets

    folder = tmp_path_factory.mktemp("tiny")
    config, _ = write_tiny_comparison(str(folder))
    register_synthetic_datasets(os.path.join(str(folder), "data"))
    cfg = load_config(config)
    teacher_cfg = load_config(cfg.DISTILL.TEACHER.CONFIG_FILE, list(cfg.DISTILL.TEACHER.OPTS))
    torch.manual_seed(1)  # not the student's seed: identical random backbones would give PSD = 0
    weights = str(folder / "teacher.pth")
    torch.save({"model": build_model(teacher_cfg).state_dict()}, weights)
    return config, weights


def _run(tiny, *extra):
    config, weights = tiny
    return tool.main(["--config-file", config, "--teacher-weights", weights, "--batches", "1", "--threads", "1",
                      *extra])


def test_terms_against_the_task_and_their_weights(tiny, tmp_path):
    out = tmp_path / "g.json"
    base = _run(tiny, "--output", str(out))
    assert json.loads(out.read_text())["mean"] == base["mean"]
    assert base["groups"]["student"] > base["groups"]["backbone"] > 0
    for group in ("backbone", "student"):
        parts = base["mean"][group]
        assert set(parts) == {"task", "dsd_psd", "dsd_csd", "all distillation"}
        for name in ("dsd_psd", "dsd_csd"):
            e = parts[name]
            assert e["ratio"] == pytest.approx(e["norm"] / parts["task"]["norm"])
            assert -1.0 <= e["cosine"] <= 1.0 and e["norm"] > 0
    # the same batch with the distillation weights x3: each term's gradient x3, its direction kept
    tripled = _run(tiny, "DISTILL.LOSS_WEIGHTS", "(3.0, 3.0)")
    for name in ("dsd_psd", "dsd_csd"):
        a, b = base["mean"]["student"][name], tripled["mean"]["student"][name]
        assert b["norm"] == pytest.approx(3 * a["norm"], rel=1e-4) and b["value"] == pytest.approx(3 * a["value"], rel=1e-5)
        assert b["cosine"] == pytest.approx(a["cosine"], abs=1e-4)
    assert tripled["mean"]["student"]["task"]["norm"] == pytest.approx(base["mean"]["student"]["task"]["norm"], rel=1e-5)


def test_student_weights_are_loaded_and_checked(tiny, tmp_path):
    from detectron2.modeling import build_model

    from segdet.distill.model import student_config
    from segdet.utils.config_io import load_config

    torch.manual_seed(5)
    student = build_model(student_config(load_config(tiny[0])))
    path = tmp_path / "student.pth"
    torch.save({"model": student.state_dict()}, path)
    trained = _run(tiny, "--student-weights", str(path))
    base = _run(tiny)
    assert trained["student_weights"] == str(path)
    assert trained["mean"]["student"]["task"]["norm"] != pytest.approx(base["mean"]["student"]["task"]["norm"])
    # a distillation run's checkpoint (student.* + the distillation modules) loads whole: the same
    # student weights measure the same
    from segdet.utils.config_io import load_config as _load

    cfg = _load(tiny[0], ["DISTILL.TEACHER.WEIGHTS", tiny[1]])
    distill = build_model(cfg)
    distill.student.load_state_dict(student.state_dict())
    whole = tmp_path / "distill.pth"
    torch.save({"model": distill.state_dict()}, whole)
    assert any(k.startswith("student.") for k in distill.state_dict())
    from_whole = _run(tiny, "--student-weights", str(whole))
    assert from_whole["mean"]["student"]["task"]["norm"] == pytest.approx(
        trained["mean"]["student"]["task"]["norm"], rel=1e-5)
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"nope": torch.zeros(1)}}, bad)
    with pytest.raises(SystemExit):
        _run(tiny, "--student-weights", str(bad))


def test_a_plain_config_is_one_error_line(capsys):
    with pytest.raises(SystemExit):
        tool.main(["--config-file", "configs/Samples/semseg_fpn_mnv2_street.yaml", "--batches", "1"])
    line = one_error_line(capsys.readouterr().err)
    assert "distill_gradients needs a distillation config" in line
