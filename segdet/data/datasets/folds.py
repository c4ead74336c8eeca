"""Cross-validation folds of registered datasets: every image held out once.

``register_folds("street_cv", ["street_train", "street_val"], 5)`` registers, for k = 0..4,

    street_cv_fold{k}_val     the k-th of 5 contiguous blocks of the sources' images
    street_cv_fold{k}_train   every other image

The images are the sources' records in order (sources in the given order, each set in its own
order), cut into ``num_folds`` contiguous blocks whose sizes differ by at most one. Contiguous
blocks keep neighbouring frames of a video or tiles of one scene in the same fold, so a held-out
block is not a near copy of a training image. Each fold's sets carry the first source's metadata
(classes, ignore label, evaluator type, label map) but its ``json_file``: a COCO evaluator
scores a fold against the fold's own records. When the sources' image ids are unique only within
each source (0, 1, ... in every split), the images are numbered anew 0..N-1 in the order above.
Registering reads no file.
"""
from typing import Dict, List, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["register_folds", "fold_names", "fold_count", "split_into_folds"]

# metadata that describe one source's files, not its classes: not carried over to the folds
_SOURCE_ONLY = ("name", "json_file", "declared_spec")
# metadata that must agree between the sources
_MUST_MATCH = ("evaluator_type", "thing_classes", "stuff_classes", "ignore_label", "reduce_zero_label")


def fold_names(name: str, fold: int) -> Dict[str, str]:
    """``{"train": "<name>_fold<k>_train", "val": "<name>_fold<k>_val"}``."""
    return {"train": f"{name}_fold{fold}_train", "val": f"{name}_fold{fold}_val"}


def fold_count(name: str) -> int:
    """How many folds of ``name`` are registered (0 when ``name`` is not a fold family)."""
    registered = set(DatasetCatalog.list())
    count = 0
    while all(n in registered for n in fold_names(name, count).values()):
        count += 1
    return count


def split_into_folds(count: int, num_folds: int) -> List[range]:
    """The index ranges of ``num_folds`` contiguous blocks of ``count`` items (sizes differ by
    at most one, the larger first)."""
    size, extra = divmod(count, num_folds)
    blocks, start = [], 0
    for k in range(num_folds):
        stop = start + size + (k < extra)
        blocks.append(range(start, stop))
        start = stop
    return blocks


def _records(name: str, sources: Sequence[str], num_folds: int) -> List[Dict]:
    records = [dict(r) for source in sources for r in DatasetCatalog.get(source)]
    if len(records) < num_folds:
        raise ValueError(f"dataset {name!r}: {len(records)} images in {list(sources)} for {num_folds} folds; "
                         "each fold needs at least one image")
    files = [r["file_name"] for r in records]
    if len(set(files)) != len(files):
        twice = next(f for f in files if files.count(f) > 1)
        raise ValueError(f"dataset {name!r}: {twice} is in the sources {list(sources)} more than once; folds need "
                         "each image once")
    ids = [r.get("image_id") for r in records]
    if len(set(map(repr, ids))) != len(ids):  # ids that are unique per split only: number them anew
        for index, record in enumerate(records):
            record["image_id"] = index
    return records


def _fold(name: str, sources: Sequence[str], num_folds: int, fold: int, split: str) -> List[Dict]:
    records = _records(name, sources, num_folds)
    held_out = split_into_folds(len(records), num_folds)[fold]
    return [r for i, r in enumerate(records) if (i in held_out) == (split == "val")]


def register_folds(name: str, sources: Sequence[str], num_folds: int) -> List[str]:
    """Register the ``2 * num_folds`` sets of ``name`` (see the module docstring); names
    registered already with the same sources are left as they are. Returns the names.

    Raises:
        ValueError: fewer than 2 folds, an unregistered source, sources of other classes or
            evaluators, or a fold name already registered for other sources.
    """
    sources = [str(s) for s in sources]
    if int(num_folds) != num_folds or num_folds < 2:
        raise ValueError(f"dataset {name!r}: expected at least 2 folds, got {num_folds!r}")
    num_folds = int(num_folds)
    registered = set(DatasetCatalog.list())
    missing = [s for s in sources if s not in registered]
    if not sources or missing:
        raise ValueError(f"dataset {name!r}: the folds' source set(s) {missing or sources} are not registered")
    first = MetadataCatalog.get(sources[0]).as_dict()
    for source in sources[1:]:
        other = MetadataCatalog.get(source).as_dict()
        for key in _MUST_MATCH:
            if first.get(key) != other.get(key):
                raise ValueError(f"dataset {name!r}: {key} of {source!r} ({other.get(key)!r}) differs from "
                                 f"{sources[0]!r}'s ({first.get(key)!r})")
    meta = {k: v for k, v in first.items() if k not in _SOURCE_ONLY}
    names = []
    for fold in range(num_folds):
        for split, fold_name in fold_names(name, fold).items():
            names.append(fold_name)
            spec = {"sources": sources, "num_folds": num_folds, "fold": fold}
            if fold_name in registered:
                if MetadataCatalog.get(fold_name).get("folds_of") != spec:
                    raise ValueError(f"dataset {fold_name!r} is already registered (not as these folds)")
                continue
            DatasetCatalog.register(fold_name, lambda f=fold, s=split: _fold(name, sources, num_folds, f, s))
            MetadataCatalog.get(fold_name).set(**meta, folds_of=spec)
    return names
