"""Checkpointing that never leaves a truncated file behind."""
import os
import tempfile

import torch

from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["AtomicCheckpointer", "atomic_torch_save"]


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace``: a
    reader sees either the old file or the complete new one, even if the process dies."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pth", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class AtomicCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` whose checkpoints and ``last_checkpoint`` tag are written
    atomically, so ``--resume`` after a crash always finds a complete checkpoint."""

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_torch_save(data, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(last_filename_basename)
        os.replace(tmp, path)
