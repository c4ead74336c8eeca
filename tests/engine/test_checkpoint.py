"""Atomic checkpoint writes."""
import os

import pytest
import torch
from torch import nn

from segdet.engine import AtomicCheckpointer, atomic_torch_save


def test_atomic_save_roundtrip_and_tag(tmp_path):
    model = nn.Linear(3, 2)
    ckpt = AtomicCheckpointer(model, save_dir=str(tmp_path))
    ckpt.save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    data = torch.load(tmp_path / "model_0000009.pth", weights_only=False)
    assert data["iteration"] == 9
    assert torch.equal(data["model"]["weight"], model.weight)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_failed_save_keeps_previous_file(tmp_path):
    path = tmp_path / "m.pth"
    atomic_torch_save({"a": torch.ones(2)}, str(path))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"a": Unpicklable()}, str(path))
    assert torch.equal(torch.load(path)["a"], torch.ones(2))  # old content intact
    assert os.listdir(tmp_path) == ["m.pth"]  # no temporary file left behind
