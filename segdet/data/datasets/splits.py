"""Registering the train / val splits of a built-in semantic-segmentation dataset."""
from typing import Callable, Iterable, List

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["register_sem_seg_splits"]


def register_sem_seg_splits(name_format: str, splits: Iterable[str], load: Callable[[str], List[dict]],
                            **metadata) -> None:
    """Register ``name_format.format(split=s)`` for each split ``s``: its dicts are ``load(s)``,
    called when the set is first read (registering touches no file); its metadata are
    ``metadata`` with ``evaluator_type="sem_seg"`` and ``ignore_label=255``. Names registered
    already are left as they are."""
    for split in splits:
        name = name_format.format(split=split)
        if name in DatasetCatalog.list():
            continue
        DatasetCatalog.register(name, lambda split=split: load(split))
        MetadataCatalog.get(name).set(**{"ignore_label": 255, "evaluator_type": "sem_seg", **metadata})
