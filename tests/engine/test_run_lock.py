"""The OUTPUT_DIR lock: one training per folder, stale locks of killed runs taken over."""
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from segdet.engine import run_lock
from segdet.engine.run_lock import LOCK_NAME, OutputDirInUseError, RunLock
from segdet.utils.errors import user_error_message

from _tools import one_error_line

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def log(caplog):
    """The lock's warnings (also once train_net's setup_logger stopped "segdet" propagating)."""
    logger = logging.getLogger("segdet.engine.run_lock")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has it (pids are not reused this fast)


def test_second_acquisition_fails_with_one_clear_line(tmp_path):
    out = tmp_path / "run"
    with RunLock(str(out)) as first:
        assert first.held
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(OutputDirInUseError) as info:
            RunLock(str(out)).acquire()
    message = user_error_message(info.value)
    assert "\n" not in message
    for fragment in (f"OUTPUT_DIR {out} is in use", f"pid {os.getpid()}", socket.gethostname(),
                     "choose another OUTPUT_DIR", str(out / LOCK_NAME)):
        assert fragment in message, message


def test_released_on_exit_and_on_exceptions(tmp_path):
    with RunLock(str(tmp_path)):
        pass
    assert not (tmp_path / LOCK_NAME).exists()
    with pytest.raises(RuntimeError):
        with RunLock(str(tmp_path)):
            raise RuntimeError("boom")
    assert not (tmp_path / LOCK_NAME).exists()
    RunLock(str(tmp_path)).acquire().release()  # free again


def test_decorator_releases_what_the_call_took(tmp_path):
    @run_lock.releases_output_dir_locks
    def train(fail):
        run_lock.lock_output_dir(str(tmp_path))
        assert (tmp_path / LOCK_NAME).exists()
        if fail:
            raise ValueError("bad config")

    train(False)
    assert not (tmp_path / LOCK_NAME).exists()
    with pytest.raises(ValueError):
        train(True)
    assert not (tmp_path / LOCK_NAME).exists()


def test_stale_lock_of_a_dead_pid_is_taken_over(tmp_path, log):
    pid = _dead_pid()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": 0}))
    with RunLock(str(tmp_path)):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"pid {pid}" in log.text and "stale" in log.text


def test_without_flock_a_live_pid_holds_and_a_dead_one_is_stale(tmp_path, monkeypatch, log):
    """Filesystems without flock: O_CREAT | O_EXCL and the holder's pid decide."""
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_lock.fcntl, "flock", no_flock)
    lock_file = tmp_path / LOCK_NAME
    lock_file.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(OutputDirInUseError, match=f"pid {os.getppid()}"):
        RunLock(str(tmp_path)).acquire()
    lock_file.write_text(json.dumps({"pid": os.getpid(), "host": "another-host"}))
    with pytest.raises(OutputDirInUseError, match="another-host"):
        RunLock(str(tmp_path)).acquire()
    pid = _dead_pid()
    lock_file.write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    with RunLock(str(tmp_path)):
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        with pytest.raises(OutputDirInUseError):
            RunLock(str(tmp_path)).acquire()
    assert f"pid {pid}" in log.text and not lock_file.exists()


# run_lock.py and errors.py loaded by path: importing segdet would take seconds
_HOLDER = textwrap.dedent("""
    import importlib.util, sys, types
    root = sys.argv[1]
    for name in ("segdet", "segdet.utils", "segdet.engine"):
        sys.modules[name] = types.ModuleType(name)
    def load(name, path):
        spec = importlib.util.spec_from_file_location(name, root + "/" + path)
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    load("segdet.utils.errors", "segdet/utils/errors.py")
    lock = load("segdet.engine.run_lock", "segdet/engine/run_lock.py").RunLock(sys.argv[2]).acquire()
    print("locked", flush=True)
    sys.stdin.read()  # hold it until killed
""")


def test_two_processes(tmp_path, log):
    """A real second process holds the folder; once it is killed (-9), its lock is taken over."""
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, ROOT, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputDirInUseError, match=f"pid {holder.pid} on host"):
            RunLock(str(out)).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_NAME).exists()  # a killed holder cannot remove its file
    with RunLock(str(out)):
        pass
    assert f"pid {holder.pid}" in log.text and "stale" in log.text


def test_train_net_refuses_a_locked_output_dir_in_one_line(tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "SEGDET_DEBUG"}
    with RunLock(str(out)):
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file",
             "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml", "MODEL.MOBILENET_V2.WEIGHTS", "", "OUTPUT_DIR", str(out)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    one_error_line(proc.stderr, f"OutputDirInUseError: OUTPUT_DIR {out} is in use")
