"""Empty or truncated checkpoints: one clear error, and --resume falls back to an intact one."""
import logging
import os

import pytest
import torch
from torch import nn

from segdet.distill.teacher import load_weights_strict
from segdet.engine import AtomicCheckpointer
from segdet.engine.checkpoint_io import CorruptCheckpointError, SafeCheckpointer
from segdet.modeling.cgrseg.convert import load_checkpoint_file


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _broken_files(tmp_path, model):
    """An empty file, and zip checkpoints cut at several points."""
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    files = [empty]
    for keep in (0.01, 0.5, 0.99):
        path = tmp_path / f"cut{int(keep * 100)}.pth"
        torch.save({"model": model.state_dict()}, path)
        _truncate(path, keep)
        files.append(path)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all " * 8)
    return files + [garbage]


def test_broken_weights_and_teacher_weights_are_named(tmp_path):
    model = nn.Linear(64, 32)
    for path in _broken_files(tmp_path, model):
        for load in (lambda p: AtomicCheckpointer(model).resume_or_load(p, resume=False),
                     lambda p: load_weights_strict(model, p), load_checkpoint_file):
            with pytest.raises(CorruptCheckpointError) as err:
                load(str(path))
            message = str(err.value)
            assert str(path) in message and ("truncated or corrupt" in message), message
            assert "\n" not in message


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS: no checkpoint file at .*nope.pth"):
        SafeCheckpointer(nn.Linear(2, 2)).load(str(tmp_path / "nope.pth"))


def _run(tmp_path, iters):
    """Checkpoints of a 'training' whose weight equals the iteration number."""
    model = nn.Linear(2, 2)
    checkpointer = AtomicCheckpointer(model, str(tmp_path))
    for i, name in enumerate(iters):
        with torch.no_grad():
            model.weight.fill_(i)
        checkpointer.save(name, iteration=i)
        os.utime(tmp_path / f"{name}.pth", ns=(10 ** 18 + i * 10 ** 9,) * 2)  # newest: latest saved
    return model


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, caplog):
    _run(tmp_path, ["model_0000009", "model_0000019", "model_final"])
    torch.save({"model": {}}, tmp_path / "model_student_final.pth")  # a student export: never resumed from
    os.utime(tmp_path / "model_student_final.pth", ns=(2 * 10 ** 18,) * 2)
    _truncate(tmp_path / "model_final.pth")
    _truncate(tmp_path / "model_0000019.pth", 0.9)
    model = nn.Linear(2, 2)
    with caplog.at_level(logging.WARNING, logger="segdet.engine.checkpoint"):
        extra = AtomicCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 0 and torch.all(model.weight == 0)
    warning = [r.getMessage() for r in caplog.records if "Resumed from" in r.getMessage()]
    assert len(warning) == 1
    assert str(tmp_path / "model_0000009.pth") in warning[0] and str(tmp_path / "model_final.pth") in warning[0]


def test_resume_with_no_intact_checkpoint_is_a_clear_error(tmp_path):
    _run(tmp_path, ["model_0000009", "model_final"])
    _truncate(tmp_path / "model_final.pth")
    (tmp_path / "model_0000009.pth").write_bytes(b"")
    with pytest.raises(CorruptCheckpointError) as err:
        AtomicCheckpointer(nn.Linear(2, 2), str(tmp_path)).resume_or_load("", resume=True)
    message = str(err.value)
    assert str(tmp_path / "model_final.pth") in message and "truncated or corrupt" in message
    assert "no other model_*.pth" in message and "\n" not in message


def test_resume_when_the_tagged_file_is_missing(tmp_path):
    _run(tmp_path, ["model_0000009"])
    (tmp_path / "last_checkpoint").write_text("model_0000019.pth")
    extra = AtomicCheckpointer(nn.Linear(2, 2), str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 0


def test_strict_loading_names_the_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"weight": torch.zeros(5, 3), "extra": torch.zeros(1)}}, path)
    with pytest.raises(ValueError) as err:
        SafeCheckpointer(nn.Linear(3, 2), strict=True).load(str(path))
    message = str(err.value)
    assert "MODEL.WEIGHTS" in message and str(path) in message
    assert "missing keys (1): bias" in message and "unexpected keys (1): extra" in message
    assert "weight (checkpoint (5, 3) vs model (2, 3))" in message
    SafeCheckpointer(nn.Linear(3, 2)).load(str(path))  # lenient (fine-tuning init): warnings only
