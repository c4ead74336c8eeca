"""Start-up lines about the initial weights: the backbone's ImageNet load is confirmed, and an
empty MODEL.WEIGHTS does not claim the model starts "from scratch"."""
import logging
import torch
import torchvision
from torch import nn

from segdet.engine.checkpoint_io import SafeCheckpointer
from segdet.modeling.backbone.mobilenet_v2 import MobileNetV2Backbone


def _capture(caplog, name):
    logger = logging.getLogger(name)  # may have propagate=False after setup_logger
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.DEBUG)
    return logger


def test_backbone_logs_its_weights(caplog, tmp_path):
    """A torchvision MobileNetV2 state dict (random values, written here) as the backbone weights:
    one line names the file and the number of tensors loaded."""
    path = str(tmp_path / "mobilenet_v2.pth")
    state = torchvision.models.mobilenet_v2(weights=None).state_dict()
    torch.save(state, path)
    logger = _capture(caplog, "segdet.modeling.backbone.mobilenet_v2")
    try:
        backbone = MobileNetV2Backbone(out_features=("m2",), weights=path)
    finally:
        logger.removeHandler(caplog.handler)
    lines = sorted({r.getMessage() for r in caplog.records if "MOBILENET_V2.WEIGHTS" in r.getMessage()})
    assert len(lines) == 1 and path in lines[0] and f"loaded {len(state)} tensors from " in lines[0]
    assert torch.equal(backbone.features[0][0].weight, state["features.0.0.weight"])


def test_empty_model_weights_is_not_from_scratch(caplog, tmp_path):
    checkpointer = SafeCheckpointer(nn.Linear(2, 2), save_dir=str(tmp_path))
    logger = _capture(caplog, checkpointer.logger.name)
    try:
        assert checkpointer.load("") == {}
        assert checkpointer.resume_or_load("", resume=True) == {}  # no checkpoint in save_dir either
    finally:
        logger.removeHandler(caplog.handler)
    text = caplog.text
    assert "from scratch" not in text
    assert "MODEL.WEIGHTS is empty: keeping the model's own initialisation (e.g. backbone ImageNet weights)" in text
