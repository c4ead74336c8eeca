"""``build_mapper``: the dataset mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME``.

"default" is :class:`DetectionDatasetMapper`, "sem_seg" :class:`SemSegDatasetMapper`, and
"multi_task" the per-task mappers of :mod:`segdet.data.multi_task` (each built by this function
from its task's config).
"""
from typing import Optional

from .detection_mapper import DetectionDatasetMapper
from .sem_seg_mapper import SemSegDatasetMapper

__all__ = ["build_mapper"]


def build_mapper(cfg, is_train: bool, dataset_name: Optional[str] = None):
    """The dataset mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME``; for "multi_task", the
    mapper of ``dataset_name``'s task (outputs tagged with it), or without a name the mapper that
    dispatches on each dict's ``"task"``."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name == "multi_task":
        # imported here: segdet.data.multi_task builds its per-task mappers with this function
        from segdet.data.multi_task import MultiTaskDatasetMapper, TaskMapper, dataset_task, task_config

        if dataset_name is None:
            return MultiTaskDatasetMapper(cfg, is_train)
        task = dataset_task(dataset_name)
        return TaskMapper(build_mapper(task_config(cfg, task), is_train), task)
    if name == "default":
        return DetectionDatasetMapper(cfg, is_train)
    if name == "sem_seg":
        return SemSegDatasetMapper(cfg, is_train)
    raise ValueError(f"INPUT.DATASET_MAPPER_NAME must be 'default', 'sem_seg' or 'multi_task', got {name!r}")
