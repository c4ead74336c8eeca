"""Checkpoint files on disk: partial files of killed saves are removed, modes follow the umask."""
import logging
import os
import stat
import subprocess
import sys

import pytest
import torch
from torch import nn

from segdet.engine import AtomicCheckpointer, atomic_torch_save


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_are_removed_when_a_checkpointer_starts(tmp_path, caplog):
    dead = f".tmp-{_dead_pid()}-0a1b2c3d.pth"
    legacy = ".tmp-k2j4_x9q.pth"  # mkstemp name of earlier versions (no pid)
    live = f".tmp-{os.getppid()}-deadbeef.pth"  # a save in progress in a live process
    keep = ["model_0000009.pth", ".tmp-notes.txt", live]
    for name in [dead, legacy] + keep:
        (tmp_path / name).write_bytes(b"\0" * 1024)
    with caplog.at_level(logging.WARNING, logger="segdet.engine.checkpoint"):
        AtomicCheckpointer(nn.Linear(2, 2), str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(keep)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert str(tmp_path / dead) in logged and str(tmp_path / legacy) in logged
    AtomicCheckpointer(nn.Linear(2, 2), "")  # no folder: nothing to clean, no error


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoints_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_torch_save({"a": torch.ones(2)}, str(tmp_path / "m.pth"))
        AtomicCheckpointer(nn.Linear(2, 2), str(tmp_path)).save("model_final")
    finally:
        os.umask(old)
    for name in ("m.pth", "model_final.pth"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name


def test_temp_file_names_record_the_writer(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: seen.append(os.path.basename(src)) or real_replace(src, dst))
    atomic_torch_save({"a": torch.ones(2)}, str(tmp_path / "m.pth"))
    assert seen[0].startswith(f".tmp-{os.getpid()}-") and seen[0].endswith(".pth")
