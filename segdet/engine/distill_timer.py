"""Wall-clock times of a DistillationModel's training forward, measured from outside the model.

:class:`DistillTimer` puts forward (pre-)hooks on the model and its student and splits each
training forward at three boundaries:

  model starts ─ teacher ─ student starts ─ student ─ student ends ─ losses ─ model ends

"teacher" is the teacher's forward with its input preparation, "student" the student's forward
(its own losses included), "losses" the distillation losses (0 under
``model.without_distill_losses()``). On CUDA each boundary waits for the device
(``torch.cuda.synchronize``), so the times are the GPU's, not the launch queue's; that wait is
the timer's only cost, which is why it is opt-in. Evaluation forwards are not timed.

Each step's times go to the current EventStorage (if any) as ``distill_teacher_ms``,
``distill_student_ms`` and ``distill_losses_ms`` (with several teachers also each one's forward,
``distill_teacher_<name>_ms``), and are kept in :attr:`DistillTimer.last_s`
and :attr:`DistillTimer.history_s` (seconds) for tools such as ``tools/benchmark.py``.
"""
import logging
import time
from collections import deque
from typing import Callable, Deque, Dict, Optional

import torch
from torch import nn

from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import log_every_n_seconds

__all__ = ["DistillTimer", "PARTS", "find_distillation_model"]

logger = logging.getLogger(__name__)

PARTS = ("teacher", "student", "losses")


class DistillTimer:
    """Times the teacher, student and distillation-loss parts of a DistillationModel's training
    forward (see the module docstring). Use as a context manager, or :meth:`attach` /
    :meth:`detach`.

    Args:
        model: a :class:`~segdet.distill.DistillationModel` (not its DDP wrapper).
        window: number of recent steps kept in :attr:`history_s` (and averaged in the log line).
        log_period_s: seconds between INFO log lines of the mean times; 0 disables the log.
        clock: seconds as a float (default ``time.perf_counter``; tests pass a fake one).
    """

    def __init__(self, model: nn.Module, window: int = 20, log_period_s: float = 30.0,
                 clock: Callable[[], float] = time.perf_counter):
        if not hasattr(model, "student") or not hasattr(model, "distill_losses"):
            raise TypeError(f"DistillTimer times a DistillationModel, got {type(model).__name__}")
        self.model = model
        self.log_period_s = log_period_s
        self._clock = clock
        self._marks: Dict[str, float] = {}
        self._handles = []
        self.last_s: Dict[str, float] = {}
        #: with several teachers, {teacher name: seconds} of each teacher's forward in the last step
        self.last_teacher_s: Dict[str, float] = {}
        self.history_s: Dict[str, Deque[float]] = {k: deque(maxlen=window) for k in PARTS}

    # ------------------------------------------------------------------ public
    def attach(self) -> "DistillTimer":
        if self._handles:
            return self
        student = self.model.student
        self._handles = [
            self.model.register_forward_pre_hook(lambda m, args: self._mark("start")),
            student.register_forward_pre_hook(lambda m, args: self._mark("student_start")),
            student.register_forward_hook(lambda m, args, out: self._mark("student_end")),
            self.model.register_forward_hook(lambda m, args, out: self._finish()),
        ]
        teachers = getattr(self.model, "teachers", [])
        if len(teachers) > 1:  # each teacher's own forward (its backbone's when only that runs)
            for t in teachers:
                module = t.model.backbone if t.backbone_only else t.model
                self._handles += [
                    module.register_forward_pre_hook(lambda m, args, n=t.name: self._mark(f"teacher_{n}_start")),
                    module.register_forward_hook(lambda m, args, out, n=t.name: self._mark(f"teacher_{n}_end"))]
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> "DistillTimer":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def mean_ms(self) -> Dict[str, float]:
        """Mean of :attr:`history_s` per part, in milliseconds (empty before the first step)."""
        return {k: 1e3 * sum(v) / len(v) for k, v in self.history_s.items() if v}

    # ------------------------------------------------------------------ hooks
    def _now(self) -> float:
        device = self.model.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return self._clock()

    def _mark(self, name: str) -> None:
        if not self.model.training:
            return
        if name == "start":
            self._marks = {}
        self._marks[name] = self._now()

    def _finish(self) -> None:
        m = self._marks
        if not self.model.training or not {"start", "student_start", "student_end"} <= set(m):
            return
        end = self._now()
        self.last_s = {"teacher": m["student_start"] - m["start"],
                       "student": m["student_end"] - m["student_start"],
                       "losses": end - m["student_end"]}
        self.last_teacher_s = {k[len("teacher_"):-len("_start")]: m[k.replace("_start", "_end")] - m[k]
                               for k in m if k.startswith("teacher_") and k.endswith("_start")
                               and k.replace("_start", "_end") in m}
        self._marks = {}
        for key, value in self.last_s.items():
            self.history_s[key].append(value)
        self._report()

    def _report(self) -> None:
        try:
            storage = get_event_storage()
        except AssertionError:  # no EventStorage outside training
            storage = None
        if storage is not None:
            storage.put_scalars(**{f"distill_{k}_ms": v * 1e3 for k, v in self.last_s.items()},
                                **{f"distill_teacher_{k.lower()}_ms": v * 1e3 for k, v in self.last_teacher_s.items()},
                                smoothing_hint=True)
        if self.log_period_s > 0:
            mean = self.mean_ms()
            total = sum(mean.values()) or 1.0
            log_every_n_seconds(
                logging.INFO,
                f"distillation cost per step (mean of last {len(self.history_s['teacher'])}): teacher "
                f"forward {mean['teacher']:.0f} ms ({100 * mean['teacher'] / total:.0f}%), student forward "
                f"{mean['student']:.0f} ms, distillation losses {mean['losses']:.0f} ms "
                f"({100 * mean['losses'] / total:.0f}%)",
                n=self.log_period_s, name=__name__,
            )


def find_distillation_model(model: nn.Module) -> Optional[nn.Module]:
    """The DistillationModel inside ``model`` (itself or a DDP wrapper's ``module``), or None."""
    inner = getattr(model, "module", model)
    return inner if hasattr(inner, "student") and hasattr(inner, "distill_losses") else None
