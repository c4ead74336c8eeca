"""What ``--resume`` restores besides the checkpoint: a clean ``metrics.json``, the config's
optimizer settings and the position in the training data.

* ``metrics.json``: detectron2's JSONWriter appends, so the iterations a killed run logged after
  its last checkpoint would appear twice. :func:`drop_metrics_from` removes them (atomic
  rewrite) and :class:`MetricsJSONWriter` opens the file only at its first write, after that.
* Optimizer settings: the checkpoint's optimizer and LR-scheduler states carry the learning
  rates (and weight decay, momentum, ...) of the run that wrote it, which would silently win over
  a changed config. **The config wins**: :func:`config_settings` records them before the
  checkpoint is loaded and :func:`restore_config_settings` puts them back, returning a warning
  line for each change (e.g. ``SOLVER.BASE_LR changed from 0.02 to 0.01``). The schedule's
  position (the iteration) is kept, so the new base LR applies from the next iteration on.
* Data position: detectron2's training samplers restart their infinite index stream on every
  start. :class:`ResumableSampler` skips the part earlier iterations consumed.
"""
import itertools
import json
import logging
import os
from typing import Dict, List

from torch.utils.data import Sampler

from detectron2.utils.events import JSONWriter

__all__ = ["MetricsJSONWriter", "drop_metrics_from", "config_settings", "restore_config_settings",
           "ResumableSampler"]

logger = logging.getLogger(__name__)

_NOT_SETTINGS = ("params", "lr", "initial_lr")  # per-iteration values, set by the LR schedule


class MetricsJSONWriter(JSONWriter):
    """detectron2's :class:`JSONWriter` that opens (appends to) its file at the first write
    rather than when it is built, so that :func:`drop_metrics_from` can rewrite the file in
    between (an open handle would keep writing to the replaced file)."""

    def __init__(self, json_file: str, window_size: int = 20):
        self.path = json_file
        self._file_handle = None
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        if self._file_handle is None:
            self._file_handle = open(self.path, "a")
        super().write()

    def close(self) -> None:
        if self._file_handle is not None:
            self._file_handle.close()
            self._file_handle = None


def drop_metrics_from(path: str, start_iter: int) -> int:
    """Remove the entries at iterations ``>= start_iter`` (and a line cut off by a kill) from the
    JSON-lines file ``path`` by an atomic rewrite; return how many were removed."""
    if not os.path.isfile(path):
        return 0
    kept, dropped = [], 0
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                iteration = json.loads(line).get("iteration")
            except (ValueError, AttributeError):
                iteration = None  # the last line of a run killed while writing it
            if isinstance(iteration, int) and iteration < start_iter:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        logger.info(f"Removed {dropped} entries at iterations >= {start_iter} from {path} (logged after "
                    "the checkpoint that training resumes from)")
    return dropped


def config_settings(optimizer, scheduler) -> Dict:
    """The optimizer settings and base LRs as the config built them (before a checkpoint is loaded)."""
    groups = [{k: v for k, v in g.items() if k not in _NOT_SETTINGS} for g in optimizer.param_groups]
    return {"groups": groups, "base_lrs": list(getattr(scheduler, "base_lrs", []))}


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # tensors of several elements
        return repr(a) == repr(b)


def _base_lr_change(old: List[float], new: List[float], base_lr: float) -> str:
    ratios = {round(o / n, 12) for o, n in zip(old, new) if n}
    if len(ratios) == 1:
        return f"SOLVER.BASE_LR changed from {base_lr * ratios.pop():.6g} (checkpoint) to {base_lr:.6g} (config)"
    return (f"the base LRs of the optimizer's parameter groups (SOLVER.BASE_LR and its factors) changed from "
            f"{[float(f'{x:.6g}') for x in old]} (checkpoint) to {[float(f'{x:.6g}') for x in new]} (config)")


def restore_config_settings(optimizer, scheduler, settings: Dict, base_lr: float) -> List[str]:
    """After loading a checkpoint: give ``optimizer``/``scheduler`` back the config's
    ``settings`` (from :func:`config_settings`), keeping the schedule's position. Returns one
    line per change, naming the old (checkpoint) and new (config) values."""
    changes = []
    if len(settings["groups"]) != len(optimizer.param_groups):
        return changes  # a different grouping cannot have loaded (torch refuses it)
    old_base = list(getattr(scheduler, "base_lrs", []))
    new_base = settings["base_lrs"]
    if old_base and len(old_base) == len(new_base) and not all(_same(o, n) for o, n in zip(old_base, new_base)):
        changes.append(_base_lr_change(old_base, new_base, base_lr))
        scheduler.base_lrs = list(new_base)
        for group, old, new in zip(optimizer.param_groups, old_base, new_base):
            group["initial_lr"] = new
            group["lr"] = group["lr"] * new / old if old else new  # lr = base_lr x schedule factor
        if hasattr(scheduler, "_last_lr"):
            scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    differing: Dict[str, List] = {}
    for index, (group, fresh) in enumerate(zip(optimizer.param_groups, settings["groups"])):
        for key, value in fresh.items():
            if key in group and not _same(group[key], value):
                differing.setdefault(key, []).append((index, group[key], value))
                group[key] = value
    for key, items in differing.items():
        olds = sorted({repr(old) for _, old, _ in items})
        news = sorted({repr(new) for _, _, new in items})
        changes.append(f"optimizer setting {key!r} changed from {', '.join(olds)} (checkpoint) to "
                       f"{', '.join(news)} (config) in {len(items)} of {len(settings['groups'])} parameter groups")
    return changes


class ResumableSampler(Sampler):
    """Wraps an infinite training sampler (detectron2's ``TrainingSampler`` & co., each process
    iterating its own share); after :meth:`skip` ``(n)`` it starts ``n`` indices into that share.
    With ``n = start_iter x images per process`` a resumed run sees the images the
    uninterrupted run would have seen (exactly, unless aspect-ratio grouping held images of
    both orientations back across the resume point)."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler
        self.skipped = 0

    def skip(self, n: int) -> None:
        self.skipped = int(n)

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skipped, None)
