"""Every config under configs/ and projects/*/configs builds and trains one step on CPU."""
import glob
import os

import pytest
import torch

from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from segdet.engine import build_optimizer
from segdet.utils.synthetic import save_random_teacher_weights, synthetic_batch
from segdet.utils.config_io import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True)
    + glob.glob(os.path.join(ROOT, "projects", "*", "configs", "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)
NO_DOWNLOADS = ["MODEL.WEIGHTS", "", "MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.DEVICE", "cpu"]


def _random_teacher_weights(cfg, tmp_path):
    """For a distillation config: random weights for its teacher(s), so the build can load them."""
    if not len(cfg.DISTILL.TEACHERS):
        path = str(tmp_path / "teacher.pth")
        opts = save_random_teacher_weights(cfg, path, NO_DOWNLOADS)
        return ["DISTILL.TEACHER.WEIGHTS", path, "DISTILL.TEACHER.OPTS", opts]
    out = []
    for name in cfg.DISTILL.TEACHERS:
        path = str(tmp_path / f"teacher_{name}.pth")
        opts = save_random_teacher_weights(cfg, path, NO_DOWNLOADS, name=name)
        out += [f"DISTILL.TEACHERS.{name}.WEIGHTS", path, f"DISTILL.TEACHERS.{name}.OPTS", opts]
    return out


def test_configs_were_found():
    assert len(CONFIGS) >= 10, CONFIGS


@pytest.mark.parametrize("config", CONFIGS)
def test_config_builds_and_trains_one_step(config, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(config, NO_DOWNLOADS)
    if cfg.MODEL.META_ARCHITECTURE == "DistillationModel":
        cfg = load_config(config, NO_DOWNLOADS + _random_teacher_weights(cfg, tmp_path))
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    with EventStorage(0):
        losses = model(synthetic_batch(cfg))
    assert losses and all(k.startswith("loss_") for k in losses), sorted(losses)
    total = sum(losses.values())
    assert torch.isfinite(total), {k: float(v) for k, v in losses.items()}
    optimizer.zero_grad()
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    optimizer.step()
