"""Checkpointing that never leaves a truncated file behind, and resumes past one."""
import logging
import os
import re
import secrets
from typing import List

import torch

from .checkpoint_io import CorruptCheckpointError, SafeCheckpointer
from .run_lock import pid_alive

__all__ = ["AtomicCheckpointer", "atomic_torch_save", "remove_stale_temp_files"]

logger = logging.getLogger(__name__)

# ``.tmp-<pid>-<random>.pth`` (``<pid>``: the writing process); ``.tmp-<random>.pth`` from
# versions that did not record it.
_TEMP_FILE = re.compile(r"^\.tmp-(?:(\d+)-)?[A-Za-z0-9_]+\.pth$")
# Checkpoints ``--resume`` may fall back to (not ``model_student_final.pth``, a student export).
_RESUMABLE = re.compile(r"^model_(\d+|final)\.pth$")


def _open_temp_file(folder: str) -> str:
    """Create a new empty temporary file in ``folder`` with the umask's default mode (0644 under
    umask 022, as ``open`` would, not mkstemp's 0600) and return its path."""
    while True:
        path = os.path.join(folder, f".tmp-{os.getpid()}-{secrets.token_hex(4)}.pth")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace``: a
    reader sees either the old file or the complete new one, even if the process dies."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = _open_temp_file(folder)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_stale_temp_files(folder: str) -> List[str]:
    """Remove the temporary files of :func:`atomic_torch_save` in ``folder`` that no live process
    on this machine is writing (left by a save that was killed); return their names."""
    removed = []
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return removed
    for name in names:
        match = _TEMP_FILE.match(name)
        if match is None or (match.group(1) is not None and pid_alive(int(match.group(1)))):
            continue
        try:
            size = os.path.getsize(os.path.join(folder, name))
            os.remove(os.path.join(folder, name))
        except FileNotFoundError:
            continue
        removed.append(name)
        logger.warning(f"Removed {os.path.join(folder, name)} ({size / 2 ** 20:.1f} MiB), the partial file "
                       "of a checkpoint save that was interrupted")
    return removed


class AtomicCheckpointer(SafeCheckpointer):
    """:class:`SafeCheckpointer` whose checkpoints and ``last_checkpoint`` tag are written
    atomically, so ``--resume`` after a crash always finds a complete checkpoint.

    On start it removes the partial files that killed saves left in ``save_dir``. On resume,
    when the checkpoint ``last_checkpoint`` names is missing, truncated or corrupt, it resumes
    from the newest intact ``model_<iter>.pth`` / ``model_final.pth`` instead, with a warning."""

    def __init__(self, model, save_dir: str = "", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        if self.save_dir and self.save_to_disk:
            remove_stale_temp_files(self.save_dir)

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

    def resume_or_load(self, path: str, *, resume: bool = True):
        if resume and self.has_checkpoint():
            return self._resume()
        return self.load(path, checkpointables=[])

    def _fallbacks(self, broken: str) -> List[str]:
        """Resumable checkpoints in ``save_dir`` other than ``broken``, newest first."""
        found = []
        for name in os.listdir(self.save_dir):
            full = os.path.join(self.save_dir, name)
            if _RESUMABLE.match(name) and os.path.abspath(full) != os.path.abspath(broken) and os.path.isfile(full):
                found.append((os.stat(full).st_mtime_ns, name, full))
        return [full for _, _, full in sorted(found, reverse=True)]

    def _resume(self):
        tag = os.path.join(self.save_dir, "last_checkpoint")
        tagged = self.get_checkpoint_file()
        what, self.what = self.what, f"--resume ({tag})"
        try:
            try:
                return self.load(tagged)
            except (CorruptCheckpointError, FileNotFoundError) as exc:
                reason = str(exc)
            for candidate in self._fallbacks(tagged):
                try:
                    result = self.load(candidate)
                except CorruptCheckpointError as exc:
                    logger.warning(f"Not resuming from {candidate} either: {exc}")
                    continue
                logger.warning(f"Resumed from {candidate}, the newest intact checkpoint in {self.save_dir}: "
                               f"{tagged}, named by last_checkpoint, is missing, truncated or corrupt")
                return result
        finally:
            self.what = what
        raise CorruptCheckpointError(
            f"{reason}; no other model_*.pth in {self.save_dir} is intact to resume from: remove {tag} "
            "to train from MODEL.WEIGHTS instead, or point OUTPUT_DIR elsewhere")
