"""SSA heads (CGRSegSSAHead, SemSegFPNSSAHead): parameter counts against the official numbers,
wiring of feature / coarse mask / classifier, the eight loss terms, teacher-free inference and
export, degenerate labels through a real optimizer step, the logits tap, the DDP mask count and
the official SSA checkpoint converter."""
import os

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead
from detectron2.utils.events import EventStorage

from segdet.config import get_segdet_cfg
from segdet.distill.taps import FeatureRecorder
from segdet.engine import build_optimizer
from segdet.modeling.cgrseg.head import CGRSegHead
from segdet.modeling.sem_seg.losses import sem_seg_cross_entropy
from segdet.modeling.ssa.classifier import TEACHER_MODULES
from segdet.modeling.ssa.criterion import SSACriterion
from segdet.modeling.ssa.heads import (
    CGRSegSSAHead,
    SemSegFPNSSAHead,
    global_num_masks,
    is_ssa_teacher_key,
    strip_ssa_teacher,
)
from segdet.modeling.ssa.losses import SSA_LOSS_NAMES, count_masks, ssa_losses
from segdet.modeling.cgrseg.convert import compare_state_dicts, convert_checkpoint, map_official_key
from segdet.utils.config_io import load_config
from _tools import cgrseg_ade20k_config, load_tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "cgrseg_official_state_dict_shapes.json")
ALL_NAMES = set(SSA_LOSS_NAMES.values())
STUDENT_ONLY_NAMES = {"loss_sem_seg", "loss_ssa_coarse_ce", "loss_ssa_dice"}
SHAPES = {"res3": ShapeSpec(channels=8, stride=8), "res4": ShapeSpec(channels=16, stride=16),
          "res5": ShapeSpec(channels=24, stride=32)}


def _count(module: nn.Module, teacher=None) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if teacher is None or is_ssa_teacher_key(n) == teacher)


def _head(dropout=0.0, with_teacher=True, avg_non_ignore=True, **weights) -> CGRSegSSAHead:
    """A tiny CGRSeg+SSA head: C=16, K=3, inputs (8, 16, 24) channels at strides 8/16/32."""
    criterion = SSACriterion(weights=weights, avg_non_ignore=avg_non_ignore)
    return CGRSegSSAHead(SHAPES, num_classes=3, channels=16, next_repeat=1, dw_size=3, neck_size=3,
                         dropout=dropout, norm="BN", criterion=criterion, with_teacher=with_teacher)


def _feats(b=2, size=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(b, s.channels, size // s.stride, size // s.stride, generator=g) for k, s in SHAPES.items()}


def _labels(b=2, size=128, seed=0, k=3):
    g = torch.Generator().manual_seed(seed)
    gt = torch.randint(0, k, (b, size, size), generator=g)
    gt[:, :8] = 255
    return gt


# ------------------------------------------------------------------------------ parameter counts
@pytest.mark.parametrize("variant,inference,official", [("B", 19_286_134, 19.29), ("L", 35_848_966, 35.85)])
def test_parameter_counts_match_the_official_ssa_models(variant, inference, official):
    model = build_model(load_config(cgrseg_ade20k_config(f"{variant}-SSA"), ["MODEL.DEVICE", "cpu"]))
    head = model.sem_seg_head
    assert isinstance(head, CGRSegSSAHead) and head.decoder.lgc is None and head.with_teacher
    assert _count(model) == inference + 262_656  # 19.549 / 36.112 M with the teacher (B / L)
    assert _count(model, teacher=True) == 262_656  # 2 * (512*128 + 128*256 + 256) + 256*256
    deploy = build_model(load_config(cgrseg_ade20k_config(f"{variant}-SSA"),
                                     ["MODEL.DEVICE", "cpu", "MODEL.SSA.WITH_TEACHER", "False"]))
    assert _count(deploy) == inference  # 19.286 / 35.849 M (B / L)
    assert abs(inference / 1e6 - official) / official < 1e-3  # the README's 19.3 / 35.8 (paper 19.29 / 35.85)
    assert not any(is_ssa_teacher_key(k) for k in deploy.state_dict())
    # the plain CGRSeg model minus DPG plus the SSA inference modules (303,616 for C=256, K=150)
    plain = {"B": 19_114_871, "L": 35_677_703}[variant]
    assert inference == plain - 132_353 + 303_616


# ------------------------------------------------------------------------------ wiring and losses
def test_feature_coarse_mask_and_inference_output():
    head = _head().eval()
    feats = _feats()
    with torch.no_grad():
        feat = head.linear_fuse(head.decoder.decode_features(feats))
        expected = head.ssa(feat, head.conv_seg(feat), head.conv_seg.weight)["logits"]
        logits = head.layers(feats)
        full, extra = head(feats)
    assert tuple(feat.shape) == (2, 16, 16, 16) and tuple(logits.shape) == (2, 3, 16, 16)
    torch.testing.assert_close(logits, expected)
    assert extra == {} and tuple(full.shape) == (2, 3, 128, 128)
    torch.testing.assert_close(full, F.interpolate(logits, size=(128, 128), mode="bilinear", align_corners=False))
    # cosine x 15 logits
    assert logits.abs().max() <= 15.0 + 1e-4
    assert head.classifier is head.conv_seg is head.decoder.conv_seg


@pytest.mark.parametrize("avg_non_ignore", [True, False])
def test_training_returns_the_eight_weighted_terms(avg_non_ignore):
    head = _head(avg_non_ignore=avg_non_ignore).train()
    feats, gt = _feats(), _labels()
    none, losses = head(feats, gt)
    assert none is None and set(losses) == ALL_NAMES and len(losses) == 8
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    # recompute from the parts (dropout 0, so the coarse mask is conv_seg(feat))
    feat = head.linear_fuse(head.decoder.decode_features(feats))
    coarse = head.conv_seg(feat)
    out = head.ssa(feat, coarse, head.conv_seg.weight)
    teacher = head.ssa.teacher_forward(feat, out["pos_feat"], head.conv_seg.weight, gt)
    expected = ssa_losses(out, teacher, coarse, gt, avg_non_ignore=avg_non_ignore)
    for name in ALL_NAMES:
        torch.testing.assert_close(losses[name], expected[name], msg=name)
    ce = sem_seg_cross_entropy(F.interpolate(out["logits"], size=(128, 128), mode="bilinear", align_corners=True),
                               gt, 255, avg_non_ignore)
    torch.testing.assert_close(losses["loss_sem_seg"], ce)
    # weights come from MODEL.SSA.LOSS_WEIGHTS (lower-cased keys)
    heavier = _head(avg_non_ignore=avg_non_ignore, semantic_kd=5.0, dice=0.0)
    heavier.load_state_dict(head.state_dict())
    _, weighted = heavier.train()(feats, gt)
    assert "loss_ssa_dice" not in weighted and len(weighted) == 7
    torch.testing.assert_close(weighted["loss_ssa_semantic_kd"], losses["loss_ssa_semantic_kd"] / 2)
    with pytest.raises(ValueError, match="targets"):
        head(feats)


def test_weights_and_settings_read_from_the_config():
    cfg = load_config(cgrseg_ade20k_config("B-SSA"), ["MODEL.DEVICE", "cpu", "MODEL.SSA.LOSS_WEIGHTS.SPATIAL_KD", "2.0",
                                               "MODEL.SEM_SEG_HEAD.LOSS_AVG_NON_IGNORE", "False",
                                               "MODEL.SSA.TEMPERATURE", "10.0"])
    args = CGRSegSSAHead.from_config(cfg, {"res3": ShapeSpec(channels=64, stride=8),
                                           "res4": ShapeSpec(channels=144, stride=16),
                                           "res5": ShapeSpec(channels=288, stride=32)})
    assert args["use_dpg"] is False and args["channels"] == 256 and args["num_classes"] == 150
    dpg_on = load_config(cgrseg_ade20k_config("B-SSA"), ["MODEL.CGRSEG.USE_DPG", "True"])
    with pytest.raises(ValueError, match="USE_DPG"):
        CGRSegSSAHead.from_config(dpg_on, args["input_shape"])
    criterion = args["criterion"]
    assert isinstance(criterion, SSACriterion) and "loss_weight" not in args and "avg_non_ignore" not in args
    assert criterion.weights["spatial_kd"] == 2.0 and criterion.weights["semantic_kd"] == 10.0
    assert criterion.avg_non_ignore is False and criterion.ignore_index == 255
    assert args["temperature"] == 10.0 and args["with_teacher"] is True
    cfg.defrost()
    cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 2.0
    with pytest.raises(ValueError, match="LOSS_WEIGHT"):
        CGRSegSSAHead.from_config(cfg, args["input_shape"])
    with pytest.raises(ValueError, match="use_dpg"):
        CGRSegSSAHead(SHAPES, num_classes=3, channels=16, use_dpg=True)
    with pytest.raises(KeyError, match="KD_WEIGHT"):
        _head(kd_weight=1.0)


# ------------------------------------------------------------------------------ teacher at inference
def test_eval_forward_does_not_touch_the_teacher_branch():
    head = _head()
    calls = []
    for name in TEACHER_MODULES:
        getattr(head.ssa, name).register_forward_hook(lambda m, i, o, n=name: calls.append(n))
    feats = _feats()
    with torch.no_grad():
        head.eval()(feats)
        head.layers(feats)
    assert calls == []
    head.train()(feats, _labels())  # the hooks do fire in training
    assert sorted(set(calls)) == sorted(TEACHER_MODULES)


def test_without_teacher_no_gt_keys_and_checkpoints_load():
    trained = _head()
    deploy = _head(with_teacher=False)
    teacher_params = 2 * (32 * 8 + 8 * 16 + 16) + 16 * 16  # C=16: two MLPs 2C->C/2->C and Linear(C, C)
    assert _count(trained, teacher=True) == teacher_params == 1056
    assert _count(trained) - _count(deploy) == teacher_params
    assert not any(is_ssa_teacher_key(k) for k in deploy.state_dict())
    # strip_ssa_teacher gives exactly the deploy keys; a full training state dict also loads strictly
    state = trained.state_dict()
    assert sorted(strip_ssa_teacher(state)) == sorted(deploy.state_dict())
    assert len(state) - len(strip_ssa_teacher(state)) == 7  # 2 MLPs x (0.weight, 2.weight, 2.bias) + gt_center_proj
    deploy.load_state_dict(state, strict=True)
    deploy.load_state_dict(strip_ssa_teacher(state), strict=True)
    assert torch.equal(deploy.ssa.center_proj.weight, trained.ssa.center_proj.weight)
    # a head with a teacher still reports missing teacher keys
    missing = _head().load_state_dict(strip_ssa_teacher(state), strict=False).missing_keys
    assert sorted(missing) == sorted(k for k in state if is_ssa_teacher_key(k))
    # drop_teacher(): same outputs, same keys as a head built without it
    feats = _feats()
    with torch.no_grad():
        before = trained.eval().layers(feats)
        assert trained.drop_teacher() is trained and not trained.with_teacher
        torch.testing.assert_close(trained.layers(feats), before)
    assert sorted(trained.state_dict()) == sorted(deploy.state_dict())
    # training without the teacher keeps the student terms only
    _, losses = deploy.train()(feats, _labels())
    assert set(losses) == STUDENT_ONLY_NAMES


# ------------------------------------------------------------------------------ degenerate labels
def _finite_grads(module):
    grads = [(n, p.grad) for n, p in module.named_parameters() if p.grad is not None]
    return grads and all(torch.isfinite(g).all() for _, g in grads)


def test_all_ignore_and_absent_class_at_the_head():
    head = _head(dropout=0.1, avg_non_ignore=False).train()
    feats = _feats()
    all_ignore = torch.full((2, 128, 128), 255, dtype=torch.long)
    _, losses = head(feats, all_ignore)
    assert set(losses) == ALL_NAMES
    for name in ("loss_sem_seg", "loss_ssa_coarse_ce", "loss_ssa_teacher_ce", "loss_ssa_response_kd",
                 "loss_ssa_dice", "loss_ssa_teacher_dice"):
        assert losses[name].item() == 0.0, name
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert _finite_grads(head)
    head.zero_grad()
    absent = _labels()
    absent[absent == 2] = 1  # class 2 never present
    _, losses = head(feats, absent)
    assert all(torch.isfinite(v) and v.item() >= 0 for v in losses.values())
    assert losses["loss_sem_seg"].item() > 0
    sum(losses.values()).backward()
    assert _finite_grads(head)


def _ssa_segmentor_cfg():
    """CGRSeg-T + SSA segmentor, K=3, plain BN (single CPU process)."""
    return load_config(cgrseg_ade20k_config("T"), [
        "MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.NAME", "CGRSegSSAHead", "MODEL.CGRSEG.USE_DPG", "False",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", "MODEL.CGRSEG.NORM", "BN"])


def _batch(labels):
    g = torch.Generator().manual_seed(1)
    return [{"image": torch.rand(3, *lab.shape, generator=g) * 255, "sem_seg": lab} for lab in labels]


def test_segmentor_step_with_all_ignore_image_and_absent_class():
    cfg = _ssa_segmentor_cfg()
    model = build_model(cfg).train()
    assert isinstance(model.sem_seg_head, CGRSegSSAHead)
    optimizer = build_optimizer(cfg, model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    only_01 = torch.randint(0, 2, (128, 128), generator=torch.Generator().manual_seed(0))
    batches = [
        [torch.full((128, 128), 255, dtype=torch.long)] * 2,  # every pixel ignored
        [torch.full((128, 128), 255, dtype=torch.long), only_01],  # one image ignored, class 2 absent
    ]
    for labels in batches:
        with EventStorage(0):
            losses = model(_batch(labels))
        assert set(losses) == ALL_NAMES
        total = sum(losses.values())
        assert torch.isfinite(total), {k: float(v) for k, v in losses.items()}
        optimizer.zero_grad()
        total.backward()
        assert _finite_grads(model)
        optimizer.step()
        assert all(torch.isfinite(p).all() for p in model.parameters())
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("sem_seg_head.ssa.") for n in changed)
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 128, 96) * 255, "height": 64, "width": 48}])
    assert tuple(out[0]["sem_seg"].shape) == (3, 64, 48) and torch.isfinite(out[0]["sem_seg"]).all()


# ------------------------------------------------------------------------------ Semantic FPN + SSA
def _fpn_cfg(dropout=0.1):
    cfg = get_segdet_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "SegdetSemanticSegmentor"
    cfg.MODEL.BACKBONE.NAME = "build_mobilenet_v2_fpn_backbone"
    cfg.MODEL.MOBILENET_V2.OUT_FEATURES = ["m2", "m3", "m4", "m5"]
    cfg.MODEL.FPN.IN_FEATURES = ["m2", "m3", "m4", "m5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    h = cfg.MODEL.SEM_SEG_HEAD
    h.NAME, h.IN_FEATURES, h.NUM_CLASSES, h.CONVS_DIM, h.COMMON_STRIDE, h.NORM = \
        "SemSegFPNSSAHead", ["p2", "p3", "p4", "p5"], 3, 32, 4, "GN"
    cfg.MODEL.SSA.DROPOUT = dropout
    return cfg


def test_semantic_fpn_ssa_head_through_the_segmentor():
    cfg = _fpn_cfg()
    model = build_model(cfg).train()
    head = model.sem_seg_head
    assert isinstance(head, SemSegFPNSSAHead) and head.classifier is head.predictor
    assert isinstance(head.dropout, nn.Dropout2d) and head.dropout.p == 0.1
    assert head.ssa.channels == 32 and head.ssa.num_classes == 3
    # the base head's keys are kept: a trained SemSegFPNHead initialises it
    base = SemSegFPNHead(cfg, model.backbone.output_shape())
    assert set(base.state_dict()) <= set(head.state_dict())
    assert {k for k in head.state_dict() if k not in base.state_dict()} == {f"ssa.{k}" for k in head.ssa.state_dict()}
    optimizer = build_optimizer(cfg, model)
    labels = [_labels(1, 128, seed=s)[0] for s in range(2)]
    with EventStorage(0):
        losses = model(_batch(labels))
    assert set(losses) == ALL_NAMES and all(torch.isfinite(v) for v in losses.values())
    optimizer.zero_grad()
    sum(losses.values()).backward()
    assert head.ssa.center_pos.weight.grad.abs().sum() > 0 and head.predictor.weight.grad.abs().sum() > 0
    optimizer.step()
    model.eval()
    with torch.no_grad():
        feats = model.backbone((torch.rand(1, 3, 128, 96) * 255 - model.pixel_mean) / model.pixel_std)
        feat = head.ssa_feature(feats)
        logits = head.layers(feats)
        out = model([{"image": torch.rand(3, 128, 96) * 255, "height": 128, "width": 96}])
    assert tuple(feat.shape) == (1, 32, 32, 24) and tuple(logits.shape) == (1, 3, 32, 24)
    torch.testing.assert_close(logits, head.ssa(feat, head.predictor(feat), head.predictor.weight)["logits"])
    assert tuple(out[0]["sem_seg"].shape) == (3, 128, 96) and torch.isfinite(out[0]["sem_seg"]).all()
    assert isinstance(build_model(_fpn_cfg(dropout=0.0)).sem_seg_head.dropout, nn.Identity)


# ------------------------------------------------------------------------------ logits taps
def test_logits_tap_records_the_final_logits():
    cfg = get_segdet_cfg()
    assert cfg.DISTILL.DSD.STUDENT_LOGITS == cfg.DISTILL.DSD.TEACHER_LOGITS == "sem_seg_head.logits_tap"
    wrapper = nn.Module()
    wrapper.sem_seg_head = _head().eval()
    feats = _feats()
    recorder = FeatureRecorder(wrapper, ["sem_seg_head.logits_tap"])
    with torch.no_grad(), recorder:
        logits = wrapper.sem_seg_head.layers(feats)
    assert torch.equal(recorder.outputs["sem_seg_head.logits_tap"], logits)  # O, not the coarse mask
    plain = nn.Module()
    plain.sem_seg_head = CGRSegHead(SHAPES, num_classes=3, channels=16, next_repeat=1, dw_size=3, neck_size=3,
                                    norm="BN").eval()
    recorder = FeatureRecorder(plain, ["sem_seg_head.logits_tap", "sem_seg_head.conv_seg"])
    with torch.no_grad(), recorder:
        logits = plain.sem_seg_head.layers(feats)
    assert tuple(logits.shape) == (2, 3, 16, 16)
    assert torch.equal(recorder.outputs["sem_seg_head.logits_tap"], logits)
    assert not any("logits_tap" in k for k in plain.state_dict())


# ------------------------------------------------------------------------------ DDP mask count
def _num_masks_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        gt = torch.full((2, 4, 4), 255, dtype=torch.long)
        if rank == 0:
            gt[0, 0, :3] = torch.tensor([0, 1, 2])  # 3 masks
            gt[1, 1, 0] = 1  # 1 mask
        torch.save({"local": count_masks(gt, 3), "global": global_num_masks(gt, 3, 255)},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def test_num_masks_is_all_reduced_over_processes(tmp_path):
    # one process: the local count, clamped at 1
    gt = torch.full((1, 4, 4), 255, dtype=torch.long)
    assert global_num_masks(gt, 3, 255).item() == 1.0
    gt[0, 0, 0] = 2
    gt[0, 3, 3] = 0
    assert global_num_masks(gt, 3, 255).item() == 2.0
    # two gloo processes: rank 0 has 4 masks, rank 1 none -> both use (4 + 0) / 2 = 2
    torch.multiprocessing.spawn(_num_masks_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["local"].item() for r in results] == [4.0, 0.0]
    assert [r["global"].item() for r in results] == [2.0, 2.0]


# ------------------------------------------------------------------------------ converter
SSA_OFFICIAL_SHAPES = {  # the official head's shapes with C=256, K=150 (decode_head.*)
    "get_feat_pos.weight": (256, 1, 3, 3), "get_feat_pos.bias": (256,), "center_pos.weight": (150, 256),
    **{f"{m}.{p}": s for m in ("center_content_proj", "center_pos_proj", "gt_center_content_proj",
                               "gt_center_pos_proj")
       for p, s in (("0.weight", (128, 512)), ("2.weight", (256, 128)), ("2.bias", (256,)))},
    "center_proj.weight": (256, 256), "gt_center_proj.weight": (256, 256),
}


def _official_ssa_checkpoint(model_state):
    """A synthetic official CGRSeg-B+SSA state dict: the CGRSeg-B keys minus DPG (lgc) plus the
    SSA modules, random values (integer index buffers copied)."""
    import json

    with open(FIXTURE) as f:
        shapes = {k: tuple(v) for k, v in json.load(f)["cgrseg_b"]["state_dict_shapes"].items()
                  if not k.startswith("decode_head.lgc.")}
    shapes.update({f"decode_head.{k}": v for k, v in SSA_OFFICIAL_SHAPES.items()})
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        ref = model_state.get(map_official_key(key))
        state[key] = ref.clone() if ref is not None and ref.dtype == torch.long else torch.randn(shape, generator=g)
    return state


def _load_tool():
    return load_tool("convert_cgrseg_weights")


def test_official_ssa_checkpoint_converts_and_loads_strictly(tmp_path):
    model = build_model(load_config(cgrseg_ade20k_config("B-SSA"), ["MODEL.DEVICE", "cpu"]))
    official = _official_ssa_checkpoint(model.state_dict())
    assert map_official_key("decode_head.gt_center_proj.weight") == "sem_seg_head.ssa.gt_center_proj.weight"
    assert map_official_key("decode_head.conv_seg.weight") == "sem_seg_head.conv_seg.weight"
    # a training-only loss-module tensor, if a checkpoint holds one, is dropped
    obj = {"state_dict": {**official, "decode_head.criterion.empty_weight": torch.ones(151)}, "meta": {}}
    converted, kind = convert_checkpoint(obj)
    assert kind == "cgrseg" and len(converted) == len(official)
    assert compare_state_dicts(converted, model.state_dict()) == ([], [], [])
    model.load_state_dict(converted, strict=True)
    assert torch.equal(model.sem_seg_head.ssa.center_pos.weight, official["decode_head.center_pos.weight"])
    assert torch.equal(model.sem_seg_head.ssa.gt_center_pos_proj[0].weight,
                       official["decode_head.gt_center_pos_proj.0.weight"])
    assert torch.equal(model.sem_seg_head.conv_seg.weight, official["decode_head.conv_seg.weight"])

    deploy = build_model(load_config(cgrseg_ade20k_config("B-SSA"),
                                     ["MODEL.DEVICE", "cpu", "MODEL.SSA.WITH_TEACHER", "False"]))
    stripped, _ = convert_checkpoint({"state_dict": official}, drop_teacher=True)
    assert len(official) - len(stripped) == 7  # gt_center_{content,pos}_proj x 3 tensors + gt_center_proj
    assert not any(is_ssa_teacher_key(k) for k in stripped)
    deploy.load_state_dict(stripped, strict=True)
    # a segdet training checkpoint -> deploy weights
    again, kind = convert_checkpoint({"model": model.state_dict(), "iteration": 10}, drop_teacher=True)
    assert kind == "segdet" and sorted(again) == sorted(deploy.state_dict())

    # the CLI: --drop-teacher, checked against the config's deploy model
    tool = _load_tool()
    src, dst = str(tmp_path / "cgrseg_b_ssa.pth"), str(tmp_path / "deploy.pth")
    torch.save({"state_dict": official}, src)
    assert tool.main([src, dst, "--drop-teacher", "--config-file", cgrseg_ade20k_config("B-SSA")]) == 0
    saved = torch.load(dst, weights_only=True)["model"]
    assert sorted(saved) == sorted(stripped)
    full = str(tmp_path / "full.pth")
    assert tool.main([src, full, "--config-file", cgrseg_ade20k_config("B-SSA")]) == 0
    assert sorted(torch.load(full, weights_only=True)["model"]) == sorted(converted)
    with pytest.raises(ValueError, match="do not fit"):  # SSA weights against the plain (DPG) CGRSeg-B
        tool.main([src, str(tmp_path / "x.pth"), "--config-file", cgrseg_ade20k_config("B")])
