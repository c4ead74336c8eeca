"""DistillationModel with two teachers on the multi-task student: a detector teacher (DRKD) on the
detection images and a segmentor teacher (DSD) on the label-map images."""
import json
import os
from argparse import Namespace

import pytest
import torch

from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from _tools import train_net_main_with_synthetic_data
from segdet.utils.config_io import load_config
from segdet.utils.synthetic import synthetic_detection_input, synthetic_sem_seg_input

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "projects/MultiTask/configs/faster_rcnn_semseg_fpn_mnv2_trees_street_drkd_dsd.yaml")
STUDENT_CONFIG = os.path.join(ROOT, "projects/MultiTask/configs/faster_rcnn_semseg_fpn_mnv2_trees_street.yaml")
SMALL = ["MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
         "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64,
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32, "DISTILL.DRKD.GLORE_MID", (8, 8, 16, 16, 16)]
DET_TEACHER_OPTS = ["MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64]
SEG_TEACHER_OPTS = ["MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32]


@pytest.fixture(scope="module")
def teacher_opts(tmp_path_factory):
    """Opts naming two randomly initialised teachers saved to files."""
    base = load_config(CONFIG, SMALL)
    root = tmp_path_factory.mktemp("teachers")
    opts = []
    for name, teacher_opts in (("DETECTOR", DET_TEACHER_OPTS), ("SEGMENTOR", SEG_TEACHER_OPTS)):
        node = base.DISTILL.TEACHERS[name]
        torch.manual_seed(1)
        path = root / f"{name.lower()}.pth"
        torch.save({"model": build_model(load_config(node.CONFIG_FILE, teacher_opts)).state_dict()}, path)
        opts += [f"DISTILL.TEACHERS.{name}.WEIGHTS", str(path), f"DISTILL.TEACHERS.{name}.OPTS", teacher_opts]
    return opts


def _model(teacher_opts):
    torch.manual_seed(0)
    return build_model(load_config(CONFIG, SMALL + teacher_opts)).train()


def _batch_sizes_seen(model):
    seen = {}
    for t in model.teachers:
        t.model.backbone.register_forward_pre_hook(
            lambda m, args, n=t.name: seen.setdefault(n, []).append(args[0].shape[0]))
    return seen


def test_each_teacher_sees_only_the_images_of_its_task(teacher_opts):
    model = _model(teacher_opts)
    assert [(t.name, t.task, t.losses) for t in model.teachers] == [
        ("DETECTOR", "detection", ["detector_drkd"]), ("SEGMENTOR", "sem_seg", ["segmentor_psd", "segmentor_csd"])]
    seen = _batch_sizes_seen(model)
    batch = [synthetic_detection_input(0), synthetic_sem_seg_input(1), synthetic_detection_input(2)]
    with EventStorage():
        losses = model(batch)
    assert seen == {"DETECTOR": [2], "SEGMENTOR": [1]}
    distill = {k: float(v.detach()) for k, v in losses.items() if k.startswith("loss_distill_")}
    assert {"loss_distill_drkd_pixel", "loss_distill_dsd_psd", "loss_distill_dsd_csd"} <= set(distill)
    assert all(v > 0 for k, v in distill.items() if k in ("loss_distill_drkd_pixel", "loss_distill_dsd_psd",
                                                            "loss_distill_dsd_csd"))


def test_a_teacher_without_images_in_the_batch_gives_zero_losses_with_zero_gradients(teacher_opts):
    model = _model(teacher_opts)
    with EventStorage():
        losses = model([synthetic_sem_seg_input(0), synthetic_sem_seg_input(1)])
    drkd = {k: v for k, v in losses.items() if k.startswith("loss_distill_drkd")}
    assert drkd and all(float(v.detach()) == 0.0 for v in drkd.values())
    assert float(losses["loss_distill_dsd_psd"].detach()) > 0
    sum(losses.values()).backward()
    grads = [p.grad for p in model.distill_losses["detector_drkd"].parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.count_nonzero(g) == 0 for g in grads)

    model.zero_grad(set_to_none=True)
    with EventStorage():
        losses = model([synthetic_detection_input(0), synthetic_detection_input(1)])
    assert float(losses["loss_distill_dsd_psd"].detach()) == 0.0 and float(losses["loss_distill_dsd_csd"].detach()) == 0.0
    assert float(losses["loss_distill_drkd_pixel"].detach()) > 0


def test_teachers_are_frozen_and_outside_the_state_dict(teacher_opts):
    model = _model(teacher_opts)
    for t in model.teachers:
        assert not t.model.training and not any(p.requires_grad for p in t.model.parameters())
    params = {id(p) for p in model.parameters()}
    assert not any(id(p) in params for t in model.teachers for p in t.model.parameters())
    assert all(k.startswith(("student.", "distill_losses.")) for k in model.state_dict())
    model.train()
    assert all(not t.model.training for t in model.teachers)


def test_a_teacher_entry_with_an_unknown_task_or_missing_weights_is_refused(teacher_opts):
    from segdet.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"DISTILL.TEACHERS.DETECTOR.TASK must be one of"):
        _model(teacher_opts + ["DISTILL.TEACHERS.DETECTOR.TASK", "panoptic"])
    with pytest.raises(FileNotFoundError, match=r"DISTILL.TEACHERS.SEGMENTOR.WEIGHTS: no file at /no/such"):
        _model(teacher_opts + ["DISTILL.TEACHERS.SEGMENTOR.WEIGHTS", "/no/such/teacher.pth"])


def test_an_unknown_key_of_a_teacher_entry_is_refused_when_the_config_loads(tmp_path):
    from segdet.utils.errors import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{CONFIG}"\nDISTILL:\n  TEACHERS:\n    DETECTOR:\n      WEIGHT: "x.pth"\n')
    with pytest.raises(ConfigError, match=r"DISTILL.TEACHERS.DETECTOR: unknown keys \['WEIGHT'\]"):
        load_config(str(bad))


def _args(out, max_iter, teacher_opts, resume=False):
    opts = [str(v) if not isinstance(v, str) else v for v in SMALL + teacher_opts]
    opts += [
        "DATASETS.TRAIN", "('synthetic_det_train', 'synthetic_sem_seg_train')",
        "DATASETS.TEST", "('synthetic_det_val', 'synthetic_sem_seg_val')",
        "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MIN_SIZE_TEST", "96", "INPUT.SEM_SEG.RESIZE_SCALE", "(128, 96)",
        "INPUT.CROP.SIZE", "(64, 64)", "INPUT.SEM_SEG.TEST_RESIZE_SCALE", "(128, 96)",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "()", "SOLVER.BASE_LR", "0.001",
        "DATALOADER.NUM_WORKERS", "0", "TEST.VIS_NUM_IMAGES", "0", "SEED", "4", "DISTILL.EVAL_TEACHER", "True",
        "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", str(max_iter), "SOLVER.CHECKPOINT_PERIOD", "2"]
    return Namespace(config_file=CONFIG, resume=resume, eval_only=False, eval_teacher=False, num_gpus=1,
                     num_machines=1, machine_rank=0, dist_url="auto", opts=opts)


def test_two_teacher_training_checkpoints_resumes_and_exports_the_student_alone(tmp_path, monkeypatch, teacher_opts):
    from segdet.distill.teacher import load_weights_strict

    monkeypatch.chdir(ROOT)
    out, data = tmp_path / "run", str(tmp_path / "data")
    train_net_main_with_synthetic_data(_args(out, 4, teacher_opts), data)
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 3
    results = train_net_main_with_synthetic_data(_args(out, 6, teacher_opts, resume=True), data)
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 5
    assert (out / "model_0000003.pth").is_file()
    # both tasks of the student, and each teacher on the test sets of its task only
    assert {"synthetic_det_val", "synthetic_sem_seg_val", "teacher_DETECTOR/synthetic_det_val",
            "teacher_SEGMENTOR/synthetic_sem_seg_val"} == set(results)
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert [m["iteration"] for m in metrics if "total_loss" in m][-1] == 5
    assert any("distill_teacher_detector_ms" in m and "distill_teacher_segmentor_ms" in m for m in metrics)
    student = build_model(load_config(STUDENT_CONFIG, SMALL[:-2]))
    load_weights_strict(student, str(out / "model_student_final.pth"), what="student")
