"""Start-up check of a semantic-segmentation training set's label values.

A raw binary mask saved as 0/255 is a common first try on one's own data. 255 is the ignore
value, so every foreground pixel is dropped: the model never sees the foreground and the
evaluation reports mIoU 100 over the background alone. :func:`check_binary_ignore_labels`
reads a few label files spread over the set and refuses one whose values are only 0 and the
ignore value. A set with a ``label_map`` (COCO-Stuff's raw values, ...) is checked after the
mapping, as the loader reads it.
"""
from typing import List, Sequence

import numpy as np
from detectron2.data import MetadataCatalog

from segdet.utils.errors import ConfigError

from .io import metadata_label_lookup, read_sem_seg_label

__all__ = ["check_binary_ignore_labels", "SAMPLED_LABEL_FILES"]

SAMPLED_LABEL_FILES = 8


def _spread(items: Sequence, k: int) -> List:
    if len(items) <= k:
        return list(items)
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


def check_binary_ignore_labels(cfg, dicts: Sequence[dict], key: str = "DATASETS.TRAIN") -> None:
    """Raise a :class:`ConfigError` when the sampled label files of ``dicts`` (a semantic
    segmentation set, ``INPUT.DATASET_MAPPER_NAME`` "sem_seg") hold only 0 and the ignore value.
    Sets with ``reduce_zero_label``, sets with different ``label_map`` tables and files that
    cannot be read are left to the loader; a shared ``label_map`` is applied before the check."""
    if cfg.INPUT.DATASET_MAPPER_NAME != "sem_seg":
        return
    names = [cfg.DATASETS.TRAIN] if isinstance(cfg.DATASETS.TRAIN, str) else list(cfg.DATASETS.TRAIN)
    if any(getattr(MetadataCatalog.get(n), "reduce_zero_label", False) for n in names):
        return
    ignore = int(cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
    lookups = [metadata_label_lookup(MetadataCatalog.get(n), ignore) for n in names]
    if any(t is not None for t in lookups) and not all(t is not None and np.array_equal(t, lookups[0])
                                                       for t in lookups):
        return  # sets with different label maps: left to the loader
    lookup = lookups[0] if lookups else None
    paths = [d["sem_seg_file_name"] for d in dicts
             if d.get("sem_seg_file_name") and not d.get("reduce_zero_label", False)]
    values, read = set(), []
    for path in _spread(paths, SAMPLED_LABEL_FILES):
        try:
            label = read_sem_seg_label(path, ignore_label=ignore, lookup=lookup)
        except (OSError, ValueError):
            continue
        values.update(int(v) for v in np.unique(label))
        read.append(path)
    if read and ignore in values and values <= {0, ignore}:
        raise ConfigError(
            f"{key} {', '.join(repr(n) for n in names)}: the label files hold only the values 0 and "
            f"{ignore} ({len(read)} checked, e.g. {read[0]}); {ignore} is MODEL.SEM_SEG_HEAD.IGNORE_VALUE, "
            f"the 'not labelled' value, so every foreground pixel would be ignored: write the foreground "
            f"as 1 (e.g. label = (mask > 0).astype(np.uint8))")
