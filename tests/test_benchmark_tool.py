"""tools/benchmark.py end to end on a small config: the JSON fields, --huge-pages restarting
the script with PyTorch's THP_MEM_ALLOC_ENABLE set, and --runtime (eager, fused, onnxruntime,
torch_compile interleaved; ratios to eager, onnxruntime's logits, a failing runtime, refusals)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.abspath(__file__ + "/.."))


def test_benchmark_huge_pages_and_fused_path(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ)
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--config-file",
         os.path.join(ROOT, "projects", "CGRSeg", "configs", "Samples", "cgrseg_t_street.yaml"), "--input-size", "96", "128",
         "--iters", "2", "--warmup", "1", "--optimize", "--channels-last", "--no-flops", "--huge-pages",
         "--output", str(out)],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=300)
    report = json.loads(out.read_text())
    assert report["huge_page_allocations"] is True
    assert report["optimized"]["latency_s"]["runs"] == 2
    assert report["optimized"]["max_abs_diff_vs_plain"] <= 1e-4


def test_train_step_breakdown_on_the_training_data(tmp_path):
    """--train-step --train-data on a distillation config: the first training batch (its sizes
    and GT boxes reported), steps with and without the distillation losses, the breakdown."""
    import torch

    from _tools import load_tool
    from segdet.utils.synthetic import register_synthetic_datasets

    register_synthetic_datasets(str(tmp_path / "data"))
    tool = load_tool("benchmark")
    threads = torch.get_num_threads()
    try:
        report = tool.main([
            "--config-file", os.path.join(ROOT, "projects", "DRKD", "configs", "Samples",
                                          "faster_rcnn_mnv2_fpn_trees_drkd.yaml"),
            "--train-step", "--train-data", "--iters", "2", "--warmup", "1", "--output", str(tmp_path / "b.json"),
            "DATASETS.TRAIN", "('synthetic_det_train',)", "DISTILL.TEACHER.WEIGHTS", "",
            "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128", "MODEL.ROI_HEADS.NUM_CLASSES", "1"])
    finally:
        torch.set_num_threads(threads)
    step = report["train_step"]
    assert report["input_size"] is None and step["data"] == "first batch of synthetic_det_train"
    assert step["images_per_step"] == 2 and all(min(s) == 96 for s in step["image_sizes"])
    assert len(step["gt_boxes_per_image"]) == 2 and min(step["gt_boxes_per_image"]) >= 1
    # the fields other tools read (values are timings: no order between them is asserted)
    parts = step["breakdown_s"]
    assert set(parts) == {"teacher_forward", "student_forward", "distill_losses_forward", "backward_and_optimizer"}
    assert all(parts[k] > 0 for k in ("teacher_forward", "student_forward", "distill_losses_forward"))
    for key in ("step_without_distill_losses_s", "distill_losses_fwd_bwd_s", "distill_losses_alone_fraction_of_step"):
        assert key in step
    assert set(step["distill_losses_alone_s"]) >= {"forward_no_grad", "fwd_bwd_update", "fwd_bwd_update_min"}
    assert json.loads((tmp_path / "b.json").read_text())["train_step"]["images_per_step"] == 2


CGRSEG = os.path.join(ROOT, "projects", "CGRSeg", "configs", "Samples", "cgrseg_t_street.yaml")
FPN = os.path.join(ROOT, "configs", "Samples", "semseg_fpn_mnv2_street.yaml")


def _bench(*argv):
    import torch

    from _tools import load_tool

    threads = torch.get_num_threads()
    try:
        return load_tool("benchmark").main(list(map(str, argv)))
    finally:
        torch.set_num_threads(threads)


def _check_runtimes(report, requested):
    entries = report["runtimes"]
    assert list(entries) == requested
    eager = entries["eager"]["latency_s"]["median"]
    for name, entry in entries.items():
        if "error" in entry:
            continue
        assert entry["latency_s"]["runs"] == 2 and entry["first_call_s"] > 0 and entry["setup_s"] >= 0
        assert entry["ratio_to_eager"] == eager / entry["latency_s"]["median"]
        assert entry["relative_diff_vs_eager"] <= 1e-4  # every runtime computes the same logits
    return entries


def test_runtimes_interleaved_onnxruntime_matches_and_a_failing_compile_is_reported(tmp_path, monkeypatch):
    """CGRSeg-T at 64x96: eager, fused and onnxruntime timed in one run; torch.compile made to
    fail, as where inductor has no compiler, is an error string for its runtime only."""
    import torch

    def no_compile(*args, **kwargs):
        raise RuntimeError("inductor: no C++ compiler found\nsecond line")

    monkeypatch.setattr(torch, "compile", no_compile)
    report = _bench("--config-file", CGRSEG, "--input-size", "64", "96", "--iters", "2", "--warmup", "1",
                    "--threads", "1", "--runtime", "onnxruntime", "fused", "torch_compile",
                    "--output", tmp_path / "r.json")
    entries = _check_runtimes(report, ["eager", "onnxruntime", "fused", "torch_compile"])
    assert entries["torch_compile"] == {"error": "RuntimeError: inductor: no C++ compiler found"}
    ort = entries["onnxruntime"]
    assert ort["within_export_tolerance"] is True and ort["intra_op_num_threads"] == 1
    assert ort["max_abs_diff_vs_eager"] > 0  # onnxruntime's own kernels, not the PyTorch model again
    assert "error" not in entries["fused"] and entries["fused"]["max_abs_diff_vs_eager"] > 0  # BatchNorm folded
    assert json.loads((tmp_path / "r.json").read_text())["runtimes"]["onnxruntime"]["latency_s"]["runs"] == 2


def test_unknown_runtime_and_a_detector_are_refused_overrides_may_follow_the_names(capsys):
    from _tools import load_tool
    from segdet.utils.errors import ConfigError

    with pytest.raises(SystemExit):
        _bench("--config-file", FPN, "--runtime", "tensorrt")
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err
    args = load_tool("benchmark").parse_args(["--config-file", FPN, "--runtime", "eager", "onnxruntime",
                                              "MODEL.WEIGHTS", "", "INPUT.FORMAT", "BGR"])
    assert args.runtime == ["eager", "onnxruntime"] and args.opts == ["MODEL.WEIGHTS", "", "INPUT.FORMAT", "BGR"]
    detector = os.path.join(ROOT, "configs", "Samples", "faster_rcnn_mnv2_fpn_trees.yaml")
    with pytest.raises(ConfigError, match="is a GeneralizedRCNN; the runtime comparison supports semantic segmentors"):
        _bench("--config-file", detector, "--runtime", "eager", "--no-flops", "MODEL.MOBILENET_V2.WEIGHTS", "")


@pytest.mark.slow
def test_torch_compile_runtime_runs(tmp_path):
    """The real torch.compile (inductor; about a minute of compilation on 2 CPU cores)."""
    report = _bench("--config-file", FPN, "--input-size", "64", "96", "--iters", "2", "--warmup", "1",
                    "--threads", "1", "--no-flops", "--runtime", "torch_compile", "MODEL.MOBILENET_V2.WEIGHTS", "")
    entry = _check_runtimes(report, ["eager", "torch_compile"])["torch_compile"]
    assert "error" not in entry and entry["max_abs_diff_vs_eager"] >= 0


def test_compare_runtimes_times_another_implementation_in_the_same_rounds():
    """``others``: a callable timed in the same rounds (ratio to eager, no logit difference, as its
    weights may differ); fused_cl is the fused model in channels-last layout, same logits."""
    import numpy as np
    import torch
    from detectron2.modeling import build_model

    from segdet.export.runtimes import compare_runtimes
    from segdet.export.segmentor import ExportableSegmentor
    from segdet.utils.config_io import load_config

    torch.manual_seed(0)
    model = build_model(load_config(CGRSEG, ["MODEL.DEVICE", "cpu"])).eval()
    wrapper = ExportableSegmentor(model).eval()
    calls = []

    def twin(x):
        calls.append(tuple(x.shape))
        with torch.inference_mode():
            return wrapper(x).numpy() + 1.0  # another function: no difference is reported for it

    image = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 255
    report = compare_runtimes(model, image, ["fused_cl"], rounds=2, warmup=1, threads=1, others={"twin": twin})
    entries = report["runtimes"]
    assert list(entries) == ["eager", "fused_cl", "twin"]
    assert calls == [(1, 3, 64, 96)] * 4  # first call + 1 warm-up + 2 timed rounds
    assert entries["twin"]["latency_s"]["runs"] == 2 and entries["twin"]["ratio_to_eager"] > 0
    assert "max_abs_diff_vs_eager" not in entries["twin"]
    assert 0 < entries["fused_cl"]["relative_diff_vs_eager"] <= 1e-4
    with pytest.raises(ValueError, match="both a runtime and another implementation"):
        compare_runtimes(model, image, ["fused"], rounds=1, warmup=0, threads=1, others={"fused": twin})
    assert np.isfinite(entries["eager"]["latency_s"]["median"])
