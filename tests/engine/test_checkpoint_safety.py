"""No checkpoint is unpickled without the explicit flag: MODEL.WEIGHTS, teacher weights, resume, converter.

Each crafted file would create a marker file when unpickled (its ``__reduce__`` calls ``open``)."""
import os
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from segdet.distill.teacher import load_weights_strict
from segdet.engine import AtomicCheckpointer
from segdet.engine.checkpoint_io import SafeCheckpointer, UnsafeCheckpointError, read_checkpoint
from segdet.modeling.cgrseg.convert import load_checkpoint_file


class _Payload:
    """Unpickling this object creates ``path`` (what a crafted checkpoint could do, and worse)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _model_zoo_state(model):
    return {k: v.detach().numpy() + 1.0 for k, v in model.state_dict().items()}


def _crafted_pkl(path, marker, model):
    """A detectron2 model-zoo style .pkl with a payload."""
    with open(path, "wb") as f:
        pickle.dump({"model": _model_zoo_state(model), "__author__": "someone", "x": _Payload(marker)}, f)
    return str(path)


def _crafted_pth(path, marker, model):
    """A zip .pth (torch.save) with a payload next to the weights."""
    torch.save({"model": model.state_dict(), "x": _Payload(marker)}, path)
    return str(path)


def test_crafted_weights_are_refused_without_the_flag(tmp_path):
    model, marker = nn.Linear(3, 2), tmp_path / "marker"
    for make, name in ((_crafted_pkl, "evil.pkl"), (_crafted_pth, "evil.pth")):
        path = make(tmp_path / name, marker, model)
        with pytest.raises(UnsafeCheckpointError) as err:
            AtomicCheckpointer(model).resume_or_load(path, resume=False)
        message = str(err.value)
        print(message)
        assert "MODEL.WEIGHTS" in message and path in message and "--trust-pickle" in message
        assert "convert_d2_pkl.py" in message and "\n" not in message
        assert not marker.exists()


def test_pkl_url_is_refused_before_download(tmp_path):
    with pytest.raises(UnsafeCheckpointError, match="R-50.pkl.*convert_d2_pkl.py --trust-pickle "
                                                    "detectron2://ImageNetPretrained/MSRA/R-50.pkl R-50.pth"):
        AtomicCheckpointer(nn.Linear(3, 2)).load("detectron2://ImageNetPretrained/MSRA/R-50.pkl")


def test_weights_load_with_the_flag(tmp_path):
    model, marker = nn.Linear(3, 2), tmp_path / "marker"
    expected = _model_zoo_state(model)
    path = _crafted_pkl(tmp_path / "zoo.pkl", marker, model)
    AtomicCheckpointer(model, trust_pickle=True).resume_or_load(path, resume=False)
    assert marker.exists()  # really unpickled: the flag is the only gate
    assert np.array_equal(model.weight.detach().numpy(), expected["weight"])


def test_trainer_config_sets_the_flag():
    trainer = SimpleNamespace(cfg=SimpleNamespace(MODEL={"TRUST_PICKLE": True}), state_dict=dict,
                              load_state_dict=lambda state: None)
    assert AtomicCheckpointer(nn.Linear(3, 2), trainer=trainer).trust_pickle
    trainer.cfg.MODEL["TRUST_PICKLE"] = False
    assert not AtomicCheckpointer(nn.Linear(3, 2), trainer=trainer).trust_pickle
    assert not AtomicCheckpointer(nn.Linear(3, 2)).trust_pickle


def test_teacher_weights_need_the_flag(tmp_path):
    model, marker = nn.Linear(3, 2), tmp_path / "marker"
    for make, name in ((_crafted_pkl, "teacher.pkl"), (_crafted_pth, "teacher.pth")):
        path = make(tmp_path / name, marker, model)
        with pytest.raises(UnsafeCheckpointError, match="DISTILL.TEACHER.WEIGHTS.*--trust-pickle"):
            load_weights_strict(model, path)
        assert not marker.exists()
    expected = _model_zoo_state(model)
    load_weights_strict(model, _crafted_pkl(tmp_path / "ok.pkl", marker, model), trust_pickle=True)
    assert np.array_equal(model.bias.detach().numpy(), expected["bias"])


def test_resume_target_needs_the_flag(tmp_path):
    model, marker = nn.Linear(3, 2), tmp_path / "marker"
    AtomicCheckpointer(model, str(tmp_path)).save("model_0000001")  # intact, but not a fallback for this
    for make, name in ((_crafted_pkl, "evil.pkl"), (_crafted_pth, "model_0000002.pth")):
        make(tmp_path / name, marker, model)
        (tmp_path / "last_checkpoint").write_text(name)
        with pytest.raises(UnsafeCheckpointError, match="--resume.*" + name):
            AtomicCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
        assert not marker.exists()
    AtomicCheckpointer(model, str(tmp_path), trust_pickle=True).resume_or_load("", resume=True)
    assert marker.exists()


def test_converter_loader_needs_the_flag(tmp_path):
    model, marker = nn.Linear(3, 2), tmp_path / "marker"
    path = _crafted_pth(tmp_path / "official.pth", marker, model)
    with pytest.raises(ValueError, match="--trust-pickle"):
        load_checkpoint_file(path)
    assert not marker.exists()
    assert torch.equal(load_checkpoint_file(path, trust_pickle=True)["model"]["weight"], model.weight)


def test_weights_only_files_need_no_flag(tmp_path):
    model = nn.Linear(3, 2)
    path = tmp_path / "w.pth"
    torch.save({"model": {k: v + 1 for k, v in model.state_dict().items()}, "iteration": 3}, path)
    assert read_checkpoint(str(path))["iteration"] == 3
    fresh = nn.Linear(3, 2)
    SafeCheckpointer(fresh, strict=True).load(str(path))
    assert torch.equal(fresh.weight, model.weight + 1)
