"""MultiTaskModel: per-image task routing, zero losses with zero gradients, inference outputs."""
import os

import pytest
import torch

from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from segdet.utils.config_io import load_config
from segdet.utils.synthetic import synthetic_detection_input as _detection_image
from segdet.utils.synthetic import synthetic_sem_seg_input as _sem_seg_image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "projects/MultiTask/configs/faster_rcnn_semseg_fpn_mnv2_trees_street.yaml")
SMALL = ["MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
         "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64,
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32]
RETINANET = ["retinanet"]  # the RetinaNet + Semantic-FPN sample config


def _model(extra=()):
    torch.manual_seed(0)
    extra = list(extra)
    config = CONFIG
    if extra[:1] == RETINANET:
        config, extra = CONFIG.replace("faster_rcnn_", "retinanet_"), extra[1:]
    model = build_model(load_config(config, SMALL + extra))
    model.train()
    return model


def _grads(module):
    return [p.grad for p in module.parameters() if p.requires_grad]


def _step(model, batch):
    model.zero_grad(set_to_none=True)
    with EventStorage():
        losses = model(batch)
    sum(losses.values()).backward()
    return losses


DETECTION_LOSSES = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}


@pytest.mark.parametrize("extra", [(), RETINANET], ids=["faster_rcnn", "retinanet"])
def test_detection_only_batch_gives_a_zero_semantic_loss_with_zero_gradients(extra):
    model = _model(extra)
    losses = _step(model, [_detection_image(0), _detection_image(1)])
    assert float(losses["loss_sem_seg"]) == 0.0
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in _grads(model.sem_seg_head))
    assert all(torch.isfinite(v) for v in losses.values())
    assert any(float(v) > 0 for k, v in losses.items() if k != "loss_sem_seg")
    # the detection branch and the backbone did learn something from this batch
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in _grads(model.detector))


@pytest.mark.parametrize("extra", [(), RETINANET], ids=["faster_rcnn", "retinanet"])
def test_sem_seg_only_batch_gives_zero_detection_losses_with_zero_gradients(extra):
    model = _model(extra)
    losses = _step(model, [_sem_seg_image(0), _sem_seg_image(1)])
    expected = DETECTION_LOSSES if not extra else {"loss_cls", "loss_box_reg"}
    assert expected <= set(losses)
    assert all(float(losses[k]) == 0.0 for k in expected)
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in _grads(model.detector))
    assert float(losses["loss_sem_seg"]) > 0
    assert all(torch.count_nonzero(g) > 0 for g in _grads(model.sem_seg_head))


def test_a_mixed_batch_routes_each_image_to_its_branch():
    """Each task's losses on a mixed batch equal those on a batch of that task's images alone
    (the same padded size: the batch pads to its largest image, so all images are one size)."""
    model = _model()
    det, seg = _detection_image(0), _sem_seg_image(1)
    torch.manual_seed(5)
    with EventStorage():
        mixed = model([det, seg])
    torch.manual_seed(5)
    with EventStorage():
        det_alone = model([det])
    with EventStorage():
        seg_alone = model([seg])
    assert float(mixed["loss_sem_seg"]) == pytest.approx(float(seg_alone["loss_sem_seg"]), rel=1e-5)
    assert float(mixed["loss_rpn_loc"]) == pytest.approx(float(det_alone["loss_rpn_loc"]), rel=1e-5)
    assert float(mixed["loss_sem_seg"]) > 0 and float(mixed["loss_rpn_loc"]) > 0


def test_task_loss_weights_multiply_the_losses():
    batch = [_detection_image(0), _sem_seg_image(1)]
    plain = _model()
    torch.manual_seed(3)
    with EventStorage():
        a = plain(batch)
    weighted = _model(["MODEL.MULTI_TASK.DETECTION_LOSS_WEIGHT", 0.5, "MODEL.MULTI_TASK.SEM_SEG_LOSS_WEIGHT", 2.0])
    torch.manual_seed(3)
    with EventStorage():
        b = weighted(batch)
    assert float(b["loss_sem_seg"]) == pytest.approx(2.0 * float(a["loss_sem_seg"]), rel=1e-5)
    assert float(b["loss_rpn_loc"]) == pytest.approx(0.5 * float(a["loss_rpn_loc"]), rel=1e-5)


def test_state_dict_is_one_backbone_and_the_two_branches():
    keys = _model().state_dict().keys()
    prefixes = {k.split(".")[0] for k in keys}
    assert prefixes == {"backbone", "detector", "sem_seg_head"}
    assert any(k.startswith("detector.roi_heads.box_predictor.") for k in keys)
    assert any(k.startswith("detector.proposal_generator.") for k in keys)
    retina_keys = _model(RETINANET).state_dict().keys()
    assert any(k.startswith("detector.head.cls_score.") for k in retina_keys)
    assert not any(k.startswith("detector.backbone") for k in retina_keys)


def test_inference_gives_both_outputs_and_a_task_entry_restricts_them():
    model = _model()
    model.eval()
    image = torch.rand(3, 90, 120) * 255
    with torch.no_grad():
        both, det_only, seg_only = model([
            {"image": image, "height": 45, "width": 60},
            {"image": image, "task": "detection"},
            {"image": image, "task": "sem_seg"}])
    assert set(both) == {"instances", "sem_seg"}
    assert both["sem_seg"].shape == (3, 45, 60)  # resized to the requested output size
    assert both["instances"].image_size == (45, 60)
    assert set(det_only) == {"instances"} and set(seg_only) == {"sem_seg"}
    assert seg_only["sem_seg"].shape == (3, 90, 120)
    off = _model(["MODEL.MULTI_TASK.TEST_TASKS", "('sem_seg',)"]).eval()
    with torch.no_grad():
        assert set(off([{"image": image}])[0]) == {"sem_seg"}


def test_a_model_without_a_branch_for_a_test_task_is_refused():
    from segdet.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="TEST_TASKS"):
        _model(["MODEL.MULTI_TASK.DETECTOR", ""])
    model = _model(["MODEL.MULTI_TASK.DETECTOR", "", "MODEL.MULTI_TASK.TEST_TASKS", "('sem_seg',)"])
    assert model.detector is None and model.tasks == ["sem_seg"]


def test_a_stand_in_batch_leaves_retinanets_loss_normaliser_as_it_was():
    model = _model(RETINANET)
    _step(model, [_detection_image(0), _detection_image(1)])
    before = model.detector.loss_normalizer
    assert before != 100  # the real batch moved it from detectron2's initial value
    _step(model, [_sem_seg_image(0), _sem_seg_image(1)])
    assert model.detector.loss_normalizer == before
