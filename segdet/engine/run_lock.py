"""One training per ``OUTPUT_DIR``: a lock file that a second run on the same folder fails on.

``OUTPUT_DIR/segdet-run.lock`` holds the holder's pid, host, start time and command line. It is
locked with ``fcntl.flock``, which the kernel releases when the holder dies, so the lock of a
killed run (``kill -9``, out of memory, a lost node) is stale by construction: the next run takes
it over with a warning naming the dead holder. On a filesystem without ``flock`` (some network
filesystems answer ``ENOLCK``/``ENOSYS``) the file is created with ``O_CREAT | O_EXCL`` instead,
and a lock whose pid no longer lives on this host is stale (a lock of another host is then taken
over only by deleting the file).

In DDP only the global main process (rank 0 of machine 0) takes the lock; every process learns
whether it got it, so all of them fail at once. ``tools/train_net.py`` takes it for training
(not for ``--eval-only``, which may evaluate a running training's checkpoints in its folder)
before anything is written into the folder, and releases it when ``main`` returns or raises.
"""
import errno
import fcntl
import functools
import json
import logging
import os
import socket
import sys
import time
from typing import Callable, List, Optional

from segdet.utils.errors import ConfigError

__all__ = ["LOCK_NAME", "OutputDirInUseError", "RunLock", "lock_output_dir", "release_output_dir_locks",
           "releases_output_dir_locks"]

logger = logging.getLogger(__name__)

LOCK_NAME = "segdet-run.lock"
_NO_FLOCK = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}
_held: List["RunLock"] = []  # locks this process took with lock_output_dir


class OutputDirInUseError(ConfigError):
    """Another run holds the lock of this ``OUTPUT_DIR``."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (ours or another user's)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if started else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}{when}"


class RunLock:
    """The lock of one output folder; :meth:`acquire` takes it or raises
    :class:`OutputDirInUseError`, :meth:`release` removes the file. Also a context manager."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_NAME)
        self._fd: Optional[int] = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _info(self) -> bytes:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                           "command": " ".join(sys.argv)}).encode()

    def _in_use(self, holder: dict) -> OutputDirInUseError:
        command = f" ({holder['command']})" if holder.get("command") else ""
        return OutputDirInUseError(
            f"OUTPUT_DIR {self.output_dir} is in use by another training: {_describe(holder)}{command}; "
            f"wait for it to end or choose another OUTPUT_DIR (if no such run exists, delete {self.path})")

    def _read(self, fd: int) -> dict:
        os.lseek(fd, 0, os.SEEK_SET)
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        try:
            holder = json.loads(data.decode())
        except ValueError:  # empty (killed while writing it) or not ours
            return {}
        return holder if isinstance(holder, dict) else {}

    def _take_over(self, fd: int, previous: dict) -> "RunLock":
        if previous:
            logger.warning(f"Taking over the stale lock {self.path} of a run that ended without releasing it "
                           f"({_describe(previous)})")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, self._info())
        os.fsync(fd)
        self._fd = fd
        return self

    def acquire(self) -> "RunLock":
        if self.held:
            return self
        os.makedirs(self.output_dir, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                raise self._in_use(holder) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno not in _NO_FLOCK:
                    raise
                return self._acquire_exclusive()
            try:
                same_file = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same_file = False
            if same_file:
                return self._take_over(fd, self._read(fd))
            os.close(fd)  # the holder released (removed) it while we waited for it: open it again

    def _acquire_exclusive(self) -> "RunLock":
        """Without flock: create the file exclusively; a lock of a dead pid on this host is stale."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    fd = os.open(self.path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                holder = self._read(fd)
                os.close(fd)
                pid = holder.get("pid")
                if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid_alive(pid):
                    raise self._in_use(holder) from None
                logger.warning(f"Taking over the stale lock {self.path} of a run that ended without releasing it "
                               f"({_describe(holder)}, no longer running)")
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            return self._take_over(fd, {})

    def release(self) -> None:
        """Remove the lock file (while still holding it, so no other run can take the old file)."""
        if self._fd is None:
            return
        try:
            if os.path.samestat(os.fstat(self._fd), os.stat(self.path)):
                os.remove(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None


def lock_output_dir(output_dir: str) -> Optional[RunLock]:
    """Take ``output_dir``'s lock on the global main process and return it (None elsewhere); raise
    :class:`OutputDirInUseError` on every process if another run holds it. Released by
    :func:`release_output_dir_locks` (see :func:`releases_output_dir_locks`); if the process
    dies first, the next run takes the file it left over as stale."""
    from detectron2.utils import comm

    lock, error = None, None
    if comm.is_main_process():
        try:
            lock = RunLock(output_dir).acquire()
            _held.append(lock)
        except OutputDirInUseError as exc:
            error = str(exc)
    error = comm.all_gather(error)[0]  # rank 0's outcome, so that all processes stop together
    if error is not None:
        raise OutputDirInUseError(error)
    return lock


def release_output_dir_locks(keep: int = 0) -> None:
    """Release the locks :func:`lock_output_dir` took in this process (all but the first ``keep``)."""
    while len(_held) > keep:
        _held.pop().release()


def releases_output_dir_locks(fn: Callable) -> Callable:
    """Decorator: release the locks that ``fn`` took with :func:`lock_output_dir` when it returns
    or raises."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        held_before = len(_held)
        try:
            return fn(*args, **kwargs)
        finally:
            release_output_dir_locks(keep=held_before)

    return wrapper
