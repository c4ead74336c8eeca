"""Training and test data for several tasks at once: per-dataset mappers, sampling ratios and
batches of one task.

Each ``DATASETS.TRAIN`` set has a task, read from its metadata's ``evaluator_type``: "sem_seg"
sets are semantic segmentation, every other set (e.g. "coco") detection. A set's dicts are
loaded and checked as a single-task run of that task would load them (class counts, empty-image
filtering for detection, the 0/255-mask check for label maps), tagged ``"task"``, and mapped by
that task's mapper. A set that has both boxes and label maps goes through the detection mapper,
which keeps both.
"""
import logging
import operator
from typing import Dict, List, Sequence

import torch
import torch.utils.data as torchdata

from detectron2.data import MetadataCatalog
from detectron2.data.build import worker_init_reset_seed
from detectron2.data.common import DatasetFromList, MapDataset, ToIterableDataset
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.utils import comm

from segdet.utils.errors import ConfigError

from .mappers.build import build_mapper

__all__ = ["dataset_task", "task_config", "training_dicts_by_dataset", "sampling_repeat_factors",
           "build_ratio_sampler", "TaskMapper", "MultiTaskDatasetMapper", "TaskGroupedDataset",
           "build_task_grouped_loader"]

logger = logging.getLogger(__name__)

_MAPPER_OF_TASK = {"detection": "default", "sem_seg": "sem_seg"}


def dataset_task(name: str) -> str:
    """"sem_seg" for a dataset whose metadata ``evaluator_type`` is "sem_seg", else "detection"."""
    return "sem_seg" if getattr(MetadataCatalog.get(name), "evaluator_type", None) == "sem_seg" else "detection"


def task_config(cfg, task: str):
    """A copy of ``cfg`` that a single-task run of ``task`` would use for its data: the task's
    mapper name, and for detection no crop (``INPUT.CROP`` is the semantic crop)."""
    out = cfg.clone()
    out.defrost()
    out.INPUT.DATASET_MAPPER_NAME = _MAPPER_OF_TASK[task]
    if task == "detection":
        out.INPUT.CROP.ENABLED = False
    out.freeze()
    return out


def training_dicts_by_dataset(cfg) -> Dict[str, List[dict]]:
    """{dataset name: its checked training dicts}, each dict tagged with its set's ``"task"``
    (the set's own task with ``INPUT.DATASET_MAPPER_NAME`` "multi_task"; otherwise the run's)."""
    from .checks import dataset_dicts_for_training

    names = [cfg.DATASETS.TRAIN] if isinstance(cfg.DATASETS.TRAIN, str) else list(cfg.DATASETS.TRAIN)
    if not names:
        raise ConfigError("DATASETS.TRAIN is empty: name at least one registered dataset")
    multi = cfg.INPUT.DATASET_MAPPER_NAME == "multi_task"
    out = {}
    for name in names:
        task = dataset_task(name)
        one = task_config(cfg, task) if multi else cfg.clone()
        one.defrost()
        one.DATASETS.TRAIN = (name,)
        dicts = dataset_dicts_for_training(one)
        if multi:
            for d in dicts:
                d["task"] = task
        out[name] = dicts
    return out


def sampling_repeat_factors(sizes: Sequence[int], ratios: Sequence[float]) -> torch.Tensor:
    """Per-image repeat factors (for detectron2's ``RepeatFactorTrainingSampler``) under which
    dataset ``d`` (``sizes[d]`` images) makes ``ratios[d] / sum(ratios)`` of the sampled images
    in expectation: ``r_d = share_d * N / sizes[d]``, N the total image count."""
    if len(ratios) != len(sizes):
        raise ConfigError(f"DATASETS.TRAIN_SAMPLING_RATIOS has {len(ratios)} values for {len(sizes)} "
                          "DATASETS.TRAIN sets: give one per set")
    if any(not r > 0 for r in ratios):
        raise ConfigError(f"DATASETS.TRAIN_SAMPLING_RATIOS {list(ratios)}: every ratio must be > 0")
    total, norm = float(sum(sizes)), float(sum(ratios))
    return torch.cat([torch.full((n,), (r / norm) * total / n) for n, r in zip(sizes, ratios)])


def build_ratio_sampler(cfg, dicts_by_dataset: Dict[str, List[dict]]) -> RepeatFactorTrainingSampler:
    """The training sampler of ``DATASETS.TRAIN_SAMPLING_RATIOS`` (seeded with ``SEED`` when
    ``SEED >= 0``)."""
    sizes = [len(d) for d in dicts_by_dataset.values()]
    factors = sampling_repeat_factors(sizes, cfg.DATASETS.TRAIN_SAMPLING_RATIOS)
    shares = {name: round(float(factors[sum(sizes[:i])]) * n / sum(sizes), 3)
              for i, (name, n) in enumerate(zip(dicts_by_dataset, sizes))}
    logger.info(f"Training sets sampled in the shares {shares}")
    return RepeatFactorTrainingSampler(factors, seed=cfg.SEED if cfg.SEED >= 0 else None)


class TaskMapper:
    """A mapper whose outputs are tagged with their ``"task"``."""

    def __init__(self, mapper, task: str):
        self.mapper, self.task = mapper, task

    def __call__(self, dataset_dict: dict) -> dict:
        out = self.mapper(dataset_dict)
        out["task"] = self.task
        return out


class MultiTaskDatasetMapper:
    """Maps each dict with the mapper of its ``"task"`` ("detection" / "sem_seg")."""

    def __init__(self, cfg, is_train: bool, tasks: Sequence[str] = ("detection", "sem_seg")):
        self.mappers = {t: build_mapper(task_config(cfg, t), is_train) for t in tasks}

    def __call__(self, dataset_dict: dict) -> dict:
        task = dataset_dict.get("task")
        if task not in self.mappers:
            raise ValueError(f"image {dataset_dict.get('file_name', '<no file_name>')}: dataset dict has task "
                             f"{task!r}; expected one of {sorted(self.mappers)}")
        return self.mappers[task](dataset_dict)


class TaskGroupedDataset(torchdata.IterableDataset):
    """Batches of mapped dicts that share their ``"task"`` and aspect-ratio group (w > h or not):
    detectron2's ``AspectRatioGroupedDataset`` with the task in the bucket key, so that a batch
    pads images of one task's sizes only."""

    def __init__(self, dataset, batch_size: int):
        self.dataset, self.batch_size = dataset, batch_size
        self._buckets: Dict[tuple, list] = {}

    def __iter__(self):
        for d in self.dataset:
            image = d["image"]
            key = (d.get("task"), image.shape[-1] > image.shape[-2])
            bucket = self._buckets.setdefault(key, [])
            bucket.append(d)
            if len(bucket) == self.batch_size:
                batch = bucket[:]
                del bucket[:]
                yield batch


def build_task_grouped_loader(dataset: List[dict], *, mapper, sampler, total_batch_size: int,
                              num_workers: int = 0, seed=None) -> TaskGroupedDataset:
    """detectron2's grouped training loader (``build_batch_data_loader`` with aspect-ratio
    grouping) with :class:`TaskGroupedDataset` as the grouping."""
    world = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH {total_batch_size} must be a positive multiple of the "
                          f"number of processes ({world})")
    batch_size = total_batch_size // world
    data = ToIterableDataset(MapDataset(DatasetFromList(dataset, copy=False), mapper), sampler,
                             shard_chunk_size=batch_size)
    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(seed)
    loader = torchdata.DataLoader(data, num_workers=num_workers, collate_fn=operator.itemgetter(0),
                                  worker_init_fn=worker_init_reset_seed, generator=generator)
    return TaskGroupedDataset(loader, batch_size)
