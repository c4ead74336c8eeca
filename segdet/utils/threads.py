"""CPU threads per process (the ``--threads`` flag of the tools)."""
import os
from typing import Optional

__all__ = ["set_threads", "thread_count", "THREAD_ENV_VARS"]

# Read by OpenMP / MKL when a process starts: processes started after this (launch's spawned
# workers, dataloader workers started with spawn, subprocesses) get the same count.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def set_threads(threads: Optional[int]) -> None:
    """``torch.set_num_threads(threads)`` in this process and the OpenMP/MKL variables for the
    processes it starts; ``None`` leaves torch's default (one thread per core)."""
    if threads is None:
        return
    if threads < 1:
        from .errors import ConfigError

        raise ConfigError(f"--threads: expected a positive number of threads, got {threads}")
    import torch

    for var in THREAD_ENV_VARS:
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)


def thread_count(text: str) -> int:
    """argparse ``type`` of ``--threads``: a positive int (else argparse's one-line usage error)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of threads, got {text!r}")
    return value
