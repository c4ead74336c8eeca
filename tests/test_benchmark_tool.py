"""tools/benchmark.py end to end on a small config: the JSON fields, and --huge-pages restarting
the script with PyTorch's THP_MEM_ALLOC_ENABLE set."""
import json
import os
import subprocess
import sys

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
