"""Run folders, resume / skip, the training subprocesses, progress and ETA.

A run's folder holds ``kd_compare_run.json`` (the exact command, written before it starts; its
duration added when it ends). A folder with ``eval_results.json`` is finished and skipped; one
without it is resumed (``--resume``: from its last checkpoint, or from the start). A folder made
by a different command (changed overrides, --max-iter, ...) is an error, never silently mixed.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

from segdet.utils.errors import ConfigError

from .plan import Run

__all__ = ["RECORD", "RunFailedError", "is_finished", "check_record", "train_net_command", "execute",
           "Eta", "format_duration"]

RECORD = "kd_compare_run.json"
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")
_D2_PROGRESS = re.compile(r"eta: (\S+)\s+iter: (\d+)")


class RunFailedError(RuntimeError):
    """A training run exited with an error; the message names the run, its last error line and log."""


def is_finished(run: Run) -> bool:
    return os.path.isfile(os.path.join(run.run_dir, "eval_results.json"))


def train_net_command(run: Run, num_gpus: int = 1, trust_pickle: bool = False,
                      threads: Optional[int] = None) -> List[str]:
    """tools/train_net.py's arguments for ``run`` (every training run resumes: from its last
    checkpoint when there is one, else from the start)."""
    flags = ["--eval-only"] if run.eval_only else ["--resume"]
    if num_gpus != 1:
        flags += ["--num-gpus", str(num_gpus)]
    if trust_pickle:
        flags += ["--trust-pickle"]
    if threads is not None:
        flags += ["--threads", str(threads)]
    return ["--config-file", os.path.abspath(run.config_file), *flags, *run.opts]


def _read_record(run: Run) -> Optional[Dict]:
    try:
        with open(os.path.join(run.run_dir, RECORD)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_record(run: Run, record: Dict) -> None:
    os.makedirs(run.run_dir, exist_ok=True)
    path = os.path.join(run.run_dir, RECORD)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=2)
    os.replace(path + ".tmp", path)


def check_record(run: Run, command: Sequence[str]) -> Optional[Dict]:
    """The folder's record, after checking it was made by ``command``.

    Raises:
        ConfigError: the folder holds a run of another command (naming the folder and the first
            argument that differs).
    """
    record = _read_record(run)
    if record is None or record.get("train_net_args") == list(command):
        return record
    old = record.get("train_net_args") or []
    diff = next((f"{a!r} was {b!r}" for a, b in zip(command, old) if a != b),
                f"{len(command)} arguments were {len(old)}")
    raise ConfigError(f"{run.run_dir}: holds a run of other settings ({diff}; {RECORD}); use another "
                      "--output-dir, or delete that folder to redo it")


def _last_error_line(log_path: str) -> str:
    try:
        with open(log_path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return "(no output)"
    errors = [line for line in lines if line.startswith("segdet: error:")]
    if errors:
        return errors[-1][len("segdet: error:"):].strip()
    tail = [line for line in lines if not line.startswith("(set SEGDET_DEBUG")]
    return tail[-1] if tail else "(no output)"


def execute(run: Run, command: Sequence[str], register: Sequence[str] = (), verbose: bool = False,
            on_progress: Optional[Callable[[str], None]] = None, progress_every_s: float = 30.0) -> float:
    """Run ``command`` (train_net arguments) in a subprocess; its output goes to
    ``run_dir/kd_compare_train.log`` (and to stdout with ``verbose``). Detectron2's progress lines
    are passed to ``on_progress`` at most every ``progress_every_s``. Returns the duration (s).

    Raises:
        RunFailedError: the run exited with an error.
    """
    record = check_record(run, command) or {"arm": run.arm, "seed": run.seed, "train_net_args": list(command)}
    if not run.eval_only and not os.path.isfile(os.path.join(run.run_dir, "last_checkpoint")):
        # no checkpoint: the run restarts at iteration 0; drop what a killed attempt logged
        stale = os.path.join(run.run_dir, "metrics.json")
        if os.path.isfile(stale):
            os.remove(stale)
    _write_record(run, record)
    argv = [sys.executable, CHILD]
    for spec in register:
        argv += ["--register", spec]
    if run.declared_in:
        argv += ["--declare", os.path.abspath(run.declared_in)]
    argv += ["--", *command]
    log_path = os.path.join(run.run_dir, "kd_compare_train.log")
    start = last_progress = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(argv)}\n")
        log.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", env=env)
        try:
            for line in proc.stdout:
                log.write(line)
                if verbose:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                match = _D2_PROGRESS.search(line)
                if match and on_progress and time.time() - last_progress >= progress_every_s:
                    last_progress = time.time()
                    on_progress(f"iter {int(match.group(2)) + 1}, this run's ETA {match.group(1)}")
            code = proc.wait()
        except BaseException:  # Ctrl-C: stop the child too; the run resumes next time
            proc.kill()
            proc.wait()
            raise
    duration = time.time() - start
    if code != 0:
        raise RunFailedError(f"run {run.label} failed (exit status {code}): {_last_error_line(log_path)}; "
                             f"full log: {log_path}")
    record["duration_s"] = round(duration + record.get("duration_s", 0.0), 1)
    _write_record(run, record)
    return duration


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    return f"{int(minutes // 60)} h {int(minutes % 60):02d} min"


class Eta:
    """Remaining time from the durations of finished runs: the median of the run's group (arm,
    or its evaluation), else of all training runs seen; None before any run finished."""

    def __init__(self):
        self._durations: Dict[str, List[float]] = {}

    def add(self, run: Run, seconds: float) -> None:
        self._durations.setdefault(run.group, []).append(seconds)

    def add_recorded(self, run: Run) -> None:
        """Count a run finished in an earlier invocation (its recorded duration)."""
        record = _read_record(run)
        if record and isinstance(record.get("duration_s"), (int, float)):
            self.add(run, float(record["duration_s"]))

    def remaining(self, runs: Sequence[Run]) -> Optional[float]:
        training = [d for g, ds in self._durations.items() if not g.endswith("/eval") for d in ds]
        total = 0.0
        for run in runs:
            known = self._durations.get(run.group) or (training if not run.eval_only else None)
            if not known:
                return None
            total += statistics.median(known)
        return total
