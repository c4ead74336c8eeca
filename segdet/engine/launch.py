"""Leaving detectron2's ``launch`` together.

detectron2's ``launch(main, ...)`` worker returns as soon as ``main`` does, with no barrier: with
several processes (gloo on CPU) a rank that finishes first can exit while another still uses the
process group, and the group's teardown then aborts ("terminate called without an active
exception"). :func:`synchronized_main` wraps ``main`` so that once it has returned, every process
waits for the others (``comm.synchronize()``) and then destroys the process group::

    launch(synchronized_main(main), num_gpus, num_machines=..., dist_url=..., args=(args,))

With one process (no process group) the wrapper only calls ``main``. It is a picklable object
(``launch`` spawns its workers), as long as ``main`` itself is (a module-level function).
"""
from typing import Any, Callable

import torch.distributed as dist

from detectron2.utils import comm

__all__ = ["SynchronizedMain", "leave_process_group", "synchronized_main"]


def leave_process_group() -> None:
    """When a process group is initialised: wait for every process of it, then destroy it;
    otherwise nothing."""
    if dist.is_available() and dist.is_initialized():
        comm.synchronize()
        dist.destroy_process_group()


class SynchronizedMain:
    """``main`` followed by :func:`leave_process_group` (see :func:`synchronized_main`)."""

    def __init__(self, main: Callable[..., Any]):
        self.main = main

    def __repr__(self) -> str:
        return f"synchronized_main({getattr(self.main, '__qualname__', self.main)!r})"

    def __call__(self, *args, **kwargs) -> Any:
        result = self.main(*args, **kwargs)
        leave_process_group()
        return result


def synchronized_main(main: Callable[..., Any]) -> SynchronizedMain:
    """``main`` wrapped for detectron2's ``launch``: returns what ``main`` returns, and after
    ``main`` has returned (not when it raises), when a process group is initialised, runs
    ``comm.synchronize()`` and then ``torch.distributed.destroy_process_group()``."""
    return SynchronizedMain(main)
