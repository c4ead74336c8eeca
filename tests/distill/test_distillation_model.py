"""DistillationModel: teacher frozen and hidden, strict loading, taps, loss weighting."""
import copy

import pytest
import torch
from torch.nn import functional as F

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from segdet.distill import DistillationModel
from segdet.distill.teacher import load_weights_strict
from segdet.engine import build_optimizer
from segdet.utils.config_io import load_config

SAMPLE_CFG = "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml"


def _cfg(fpn_channels, fmt="RGB", extra=()):
    return load_config(SAMPLE_CFG, [
        "MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", fpn_channels,
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
        "INPUT.FORMAT", fmt, *extra], freeze=False)


def _inputs(n=2, size=64):
    out = []
    for i in range(n):
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(torch.tensor([[4.0, 4.0, 30.0, 30.0], [20.0, 10.0, 60.0, 50.0]]))
        inst.gt_classes = torch.zeros(2, dtype=torch.long)
        out.append({"image": torch.rand(3, size, size) * 255, "instances": inst, "height": size, "width": size})
    return out


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher")
    cfg = _cfg(32)
    cfg_path = folder / "teacher.yaml"
    cfg_path.write_text(cfg.dump())
    torch.manual_seed(1)
    teacher = build_model(cfg)
    weights = folder / "teacher.pth"
    torch.save({"model": teacher.state_dict()}, weights)
    return str(cfg_path), str(weights), teacher.state_dict()


def _store(store, key, pick):
    """A forward (pre-)hook saving ``pick(inputs[, output])`` once; it returns None so the
    module's output is left alone."""
    def hook(module, *args):
        if isinstance(store, list):
            store.append(pick(*args))
        else:
            store.setdefault(key, pick(*args))
    return hook


def _distill_cfg(teacher_files, extra=()):
    cfg_path, weights, _ = teacher_files
    return _cfg(16, extra=[
        "MODEL.META_ARCHITECTURE", "DistillationModel",
        "DISTILL.STUDENT_META_ARCHITECTURE", "GeneralizedRCNN",
        "DISTILL.TEACHER.CONFIG_FILE", cfg_path, "DISTILL.TEACHER.WEIGHTS", weights,
        "DISTILL.LOSSES", ("FeatureMSE",),
        "DISTILL.FEATURE_MSE.STUDENT_TAPS", ("backbone.fpn_output3",),
        "DISTILL.FEATURE_MSE.TEACHER_TAPS", ("backbone.fpn_output3",), *extra])


def test_teacher_frozen_hidden_and_unchanged_by_training(teacher_files):
    model = build_model(_distill_cfg(teacher_files))
    assert isinstance(model, DistillationModel)
    teacher = model.teacher
    before = copy.deepcopy(teacher.state_dict())
    optimizer = build_optimizer(model.student.cfg if hasattr(model.student, "cfg") else _cfg(16), model)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in teacher.parameters()}
    assert all(not p.requires_grad for p in teacher.parameters())
    model.train()
    assert model.training and model.student.training and not teacher.training
    with EventStorage(0) as storage:
        for it in range(3):
            storage.iter = it
            losses = model(_inputs())
            assert "loss_distill_feature_mse" in losses and "loss_rpn_cls" in losses
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    keys = model.state_dict().keys()
    assert keys and all(k.startswith(("student.", "distill_losses.")) for k in keys)
    # the adapter 16 -> 32 channels is a distillation module, trained and checkpointed
    assert model.state_dict()["distill_losses.featuremse.adapters.0.weight"].shape == (32, 16, 1, 1)
    assert set(model.export_student_state_dict()) == {k[len("student."):] for k in keys if k.startswith("student.")}


def test_eval_forward_is_the_student_alone(teacher_files):
    model = build_model(_distill_cfg(teacher_files)).eval()
    calls = []
    handle = model.teacher.register_forward_hook(_store(calls, len(calls), lambda *a: 1))
    handle_bb = model.teacher.backbone.register_forward_hook(_store(calls, len(calls), lambda *a: 1))
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 64) * 255, "height": 64, "width": 64}])
    handle.remove(), handle_bb.remove()
    assert "instances" in out[0] and not calls


def test_loss_weight_warmup_and_channel_flip(teacher_files):
    model = build_model(_distill_cfg(teacher_files, extra=[
        "DISTILL.LOSS_WEIGHTS", (3.0,), "DISTILL.WARMUP_ITERS", 10])).train()
    seen = {}
    model.teacher.backbone.register_forward_pre_hook(_store(seen, "t", lambda a: a[0]))
    model.student.backbone.register_forward_hook(_store(seen, "s", lambda a, o: o["p3"]))
    model.teacher.backbone.register_forward_hook(_store(seen, "tp3", lambda a, o: o["p3"]))
    inputs = _inputs()
    with EventStorage(4):
        losses = model(inputs)
    adapter = model.distill_losses["featuremse"].adapters[0]
    expected = 3.0 * 0.5 * F.mse_loss(adapter(seen["s"]), seen["tp3"])  # fpn_output3 is p3; factor (4+1)/10
    assert losses["loss_distill_feature_mse"].item() == pytest.approx(expected.item(), rel=1e-5)
    # same channel order as the student: teacher input = its own normalisation of the same image
    t = model.teacher
    manual = (inputs[0]["image"] - t.pixel_mean) / t.pixel_std
    assert torch.allclose(seen["t"][0], manual, atol=1e-5)


def test_teacher_with_other_channel_order_gets_flipped_input(teacher_files, tmp_path):
    cfg_path, weights, _ = teacher_files
    bgr_cfg = tmp_path / "teacher_bgr.yaml"
    bgr_cfg.write_text(open(cfg_path).read().replace("FORMAT: RGB", "FORMAT: BGR"))
    model = build_model(_distill_cfg(teacher_files, extra=["DISTILL.TEACHER.CONFIG_FILE", str(bgr_cfg)])).train()
    assert model.flip_teacher_channels
    seen = {}
    model.teacher.backbone.register_forward_pre_hook(_store(seen, "t", lambda a: a[0]))
    inputs = _inputs()
    with EventStorage(0):
        model(inputs)
    t = model.teacher
    manual = (inputs[0]["image"].flip(0) - t.pixel_mean) / t.pixel_std
    assert torch.allclose(seen["t"][0], manual, atol=1e-5)


def test_strict_teacher_loading_names_the_keys(teacher_files, tmp_path):
    cfg_path, weights, state = teacher_files
    model = build_model(load_config(cfg_path, freeze=False))
    broken = dict(state)
    missing_key = "roi_heads.box_predictor.cls_score.weight"
    del broken[missing_key]
    broken["extra.weight"] = torch.zeros(1)
    broken["backbone.fpn_output2.weight"] = torch.zeros(5, 5, 3, 3)
    path = tmp_path / "broken.pth"
    torch.save({"model": broken}, path)
    with pytest.raises(ValueError) as err:
        load_weights_strict(model, str(path))
    message = str(err.value)
    assert missing_key in message and "extra.weight" in message and "backbone.fpn_output2.weight" in message
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_weights_strict(model, str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="DISTILL.TEACHER.WEIGHTS is empty"):
        load_weights_strict(model, "")


def test_unknown_tap_name_fails_at_build_with_suggestions(teacher_files):
    cfg = _distill_cfg(teacher_files, extra=["DISTILL.FEATURE_MSE.STUDENT_TAPS", ("backbone.fpn_outptu3",)])
    with pytest.raises(KeyError) as err:
        build_model(cfg)
    message = str(err.value)
    assert "'backbone.fpn_outptu3'" in message and "Did you mean 'backbone.fpn_output3'" in message
    # not the full list (hundreds of names): the sub-modules of the valid prefix and how to list all
    assert "Sub-modules of 'backbone'" in message and "bottom_up" in message
    assert "tools/list_modules.py" in message and "roi_heads.box_head" not in message


def test_unknown_loss_name_lists_registered_losses(teacher_files):
    from segdet.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="FeatureMSE"):
        build_model(_distill_cfg(teacher_files, extra=["DISTILL.LOSSES", ("NoSuchLoss",)]))


def test_distill_timer_reports_the_three_parts_and_the_model_has_no_timer(teacher_files):
    """A fake clock advanced by 1 s in the teacher, 2 s in the student, 4 s in the loss: the
    timer attributes exactly those to its three parts; without the losses they cost 0."""
    import inspect

    import segdet.distill.model as model_module
    from segdet.engine.distill_timer import DistillTimer

    assert "perf_counter" not in inspect.getsource(model_module) and "log_every" not in inspect.getsource(model_module)
    model = build_model(_distill_cfg(teacher_files)).train()
    assert not hasattr(model, "_timings")
    now = [0.0]

    def advance(seconds):
        def hook(*args):
            now[0] += seconds
        return hook

    # registered before the timer's hooks, so they run inside its boundaries
    model.teacher.backbone.register_forward_hook(advance(1.0))
    model.student.register_forward_hook(advance(2.0))
    model.distill_losses["featuremse"].register_forward_hook(advance(4.0))
    with EventStorage(0) as storage, DistillTimer(model, clock=lambda: now[0], log_period_s=0) as timer:
        losses = model(_inputs())
        assert timer.last_s == {"teacher": 1.0, "student": 2.0, "losses": 4.0}
        latest = {k: v for k, (v, _) in storage.latest().items() if k.startswith("distill_")}
        assert latest == {"distill_teacher_ms": 1000.0, "distill_student_ms": 2000.0, "distill_losses_ms": 4000.0}
        with model.without_distill_losses():
            no_distill = model(_inputs())
        assert model.distill_losses_enabled
        assert timer.last_s == {"teacher": 1.0, "student": 2.0, "losses": 0.0}
        model.eval()
        with torch.no_grad():
            model(_inputs(1))  # evaluation: the student alone, not timed
        assert timer.last_s["losses"] == 0.0 and len(timer.history_s["teacher"]) == 2
    assert "loss_distill_feature_mse" in losses and "loss_rpn_cls" in losses
    assert not any(k.startswith("loss_distill") for k in no_distill) and "loss_rpn_cls" in no_distill
    model.train()
    before = now[0]
    with EventStorage(0) as storage:
        model(_inputs())  # detached: not timed
    assert now[0] - before == 7.0 and len(timer.history_s["teacher"]) == 2
    assert not any(k.startswith("distill_") for k in storage.latest())
