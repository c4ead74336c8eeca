"""tools/train_net.py end to end on synthetic data: train, checkpoint, resume, eval-only, DDP."""
import json
import os
from argparse import Namespace

import pytest
import torch

from _tools import free_port, train_net_main_with_synthetic_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DET_OPTS = [
    "MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", "32",
    "DATASETS.TRAIN", "('synthetic_det_train',)", "DATASETS.TEST", "('synthetic_det_val',)",
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MIN_SIZE_TEST", "96", "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "()", "DATALOADER.NUM_WORKERS", "0",
    "TEST.VIS_NUM_IMAGES", "1",
]


def _args(output_dir, max_iter, eval_only=False, resume=False, extra=(), num_gpus=1):
    opts = DET_OPTS + ["OUTPUT_DIR", str(output_dir), "SOLVER.MAX_ITER", str(max_iter),
                       "SOLVER.CHECKPOINT_PERIOD", "4", *extra]
    return Namespace(config_file=os.path.join(ROOT, "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml"),
                     resume=resume, eval_only=eval_only, eval_teacher=False, num_gpus=num_gpus,
                     num_machines=1, machine_rank=0, dist_url="auto", opts=opts)


def test_train_checkpoint_resume_and_eval_only(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    data, out = tmp_path / "data", tmp_path / "run"
    results = train_net_main_with_synthetic_data(_args(out, 6), str(data))
    assert set(results["bbox"]) >= {"AP", "AP50", "AP75"}
    for name in ("model_0000003.pth", "model_final.pth", "last_checkpoint", "metrics.json",
                 "training_curves.png", "eval_results.json"):
        assert (out / name).is_file(), name
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert list((out / "inference" / "synthetic_det_val" / "visualizations").glob("*.png"))
    iterations = [json.loads(line)["iteration"] for line in (out / "metrics.json").read_text().splitlines()
                  if "total_loss" in line]
    assert iterations[-1] == 5

    # --resume continues from the last checkpoint (iteration 6) up to the new MAX_ITER: the
    # checkpoint of iteration 3 is not written again, the one of iteration 7 is new.
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 5
    first_checkpoint_mtime = (out / "model_0000003.pth").stat().st_mtime_ns
    train_net_main_with_synthetic_data(_args(out, 10, resume=True), str(data))
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 9
    assert (out / "model_0000007.pth").is_file()
    assert (out / "model_0000003.pth").stat().st_mtime_ns == first_checkpoint_mtime

    # --eval-only with the final weights reproduces the training run's final evaluation
    trained = json.loads((out / "eval_results.json").read_text())
    eval_dir = tmp_path / "eval"
    again = train_net_main_with_synthetic_data(
        _args(eval_dir, 10, eval_only=True, extra=["MODEL.WEIGHTS", str(out / "model_final.pth")]), str(data))
    assert again["bbox"]["AP"] == pytest.approx(trained["bbox"]["AP"], abs=1e-6)


def test_two_process_ddp_distillation_on_cpu(tmp_path, monkeypatch):
    """2 CPU processes (gloo) train the sample DRKD config (student + frozen teacher)."""
    from detectron2.modeling import build_model
    from detectron2.engine import launch

    from segdet.utils.config_io import load_config

    monkeypatch.chdir(ROOT)
    teacher_cfg = "projects/DRKD/configs/Samples/faster_rcnn_mnv2_fpn256_trees_teacher.yaml"
    teacher_opts = ["MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64"]
    weights = tmp_path / "teacher.pth"
    torch.save({"model": build_model(load_config(teacher_cfg, teacher_opts)).state_dict()}, weights)
    out = tmp_path / "ddp"
    args = _args(out, 3, num_gpus=2, extra=[
        "SOLVER.IMS_PER_BATCH", "4", "TEST.VIS_NUM_IMAGES", "0",
        "DISTILL.TEACHER.WEIGHTS", str(weights), "DISTILL.TEACHER.OPTS", str(teacher_opts),
        "DISTILL.DRKD.GLORE_MID", "(8, 8, 16, 16, 16)"])
    args.config_file = os.path.join(ROOT, "projects/DRKD/configs/Samples/faster_rcnn_mnv2_fpn_trees_drkd.yaml")
    launch(train_net_main_with_synthetic_data, 2, dist_url=f"tcp://127.0.0.1:{free_port()}",
           args=(args, str(tmp_path / "data")))
    final = torch.load(out / "model_final.pth", weights_only=False)
    assert final["iteration"] == 2
    keys = final["model"].keys()
    assert any(k.startswith("distill_losses.drkd.") for k in keys)  # resumable distillation state
    assert all(k.startswith(("student.", "distill_losses.")) for k in keys)  # never the teacher
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert any("loss_distill_drkd_pixel" in m and "distill_teacher_ms" in m for m in metrics)
    assert "bbox" in json.loads((out / "eval_results.json").read_text())
    # the exported student loads strictly into the plain student model
    from segdet.distill.teacher import load_weights_strict

    student_cfg = load_config("configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml", [
        "MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", "32"])
    load_weights_strict(build_model(student_cfg), str(out / "model_student_final.pth"), what="student")


def test_semantic_segmentation_train_and_eval(tmp_path, monkeypatch):
    """The segmentation path: sem-seg mapper, SegdetSemanticSegmentor, mIoU evaluator, overlays."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "seg"
    args = Namespace(
        config_file=os.path.join(ROOT, "configs/Samples/semseg_fpn_mnv2_street.yaml"), resume=False,
        eval_only=False, eval_teacher=False, num_gpus=1, num_machines=1, machine_rank=0, dist_url="auto",
        opts=["MODEL.MOBILENET_V2.WEIGHTS", "", "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "3",
              "DATASETS.TRAIN", "('synthetic_sem_seg_train',)", "DATASETS.TEST", "('synthetic_sem_seg_val',)",
              "INPUT.SEM_SEG.RESIZE_SCALE", "(128, 96)", "INPUT.CROP.SIZE", "(64, 64)",
              "INPUT.SEM_SEG.TEST_RESIZE_SCALE", "(128, 96)", "SOLVER.IMS_PER_BATCH", "2",
              "DATALOADER.NUM_WORKERS", "0", "TEST.VIS_NUM_IMAGES", "1"])
    results = train_net_main_with_synthetic_data(args, str(tmp_path / "data"))
    metrics = results["sem_seg"]
    assert {"mIoU", "mAcc", "aAcc", "IoU-rectangle", "IoU-disk"} <= set(metrics)
    assert 0.0 <= metrics["aAcc"] <= 100.0
    assert (out / "model_final.pth").is_file() and (out / "training_curves.png").is_file()
    overlays = list((out / "inference" / "synthetic_sem_seg_val" / "visualizations").glob("*.png"))
    assert len(overlays) == 1
    from PIL import Image

    assert Image.open(overlays[0]).size == (2 * 128, 96)  # ground truth | prediction
