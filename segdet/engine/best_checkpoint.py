"""``OUTPUT_DIR/model_best.pth``: the checkpoint of the best evaluation so far
(``SOLVER.BEST_CHECKPOINT``), written by detectron2's :class:`BestCheckpointer`."""
import logging
import os

import torch

from detectron2.data import MetadataCatalog
from detectron2.engine.hooks import BestCheckpointer
from detectron2.evaluation.testing import flatten_results_dict

from segdet.utils.errors import ConfigError

__all__ = ["MAIN_METRICS", "best_checkpoint_metric", "SegdetBestCheckpointer", "build_best_checkpointer"]

logger = logging.getLogger(__name__)

#: evaluator_type -> the main metric of its evaluation results
MAIN_METRICS = {"coco": "bbox/AP", "sem_seg": "sem_seg/mIoU"}


def best_checkpoint_metric(cfg, per_dataset: bool) -> str:
    """The name in the evaluation results (and ``metrics.json``) of
    ``SOLVER.BEST_CHECKPOINT.METRIC``; ``""`` means the main metric of ``DATASETS.TEST[0]``, under
    ``"<dataset>/"`` when the results are reported per dataset (``per_dataset``: several test sets,
    or the teacher evaluated as well)."""
    if cfg.SOLVER.BEST_CHECKPOINT.METRIC:
        return cfg.SOLVER.BEST_CHECKPOINT.METRIC
    if not cfg.DATASETS.TEST:
        raise ConfigError("SOLVER.BEST_CHECKPOINT.ENABLED True with DATASETS.TEST = (): expected a test set to "
                          "choose the best checkpoint on")
    name = cfg.DATASETS.TEST[0]
    evaluator_type = getattr(MetadataCatalog.get(name), "evaluator_type", None)
    if evaluator_type not in MAIN_METRICS:
        raise ConfigError(f"SOLVER.BEST_CHECKPOINT.METRIC = '': test set {name!r} has evaluator_type "
                          f"{evaluator_type!r}, which has no main metric; set the metric's name")
    return f"{name}/{MAIN_METRICS[evaluator_type]}" if per_dataset else MAIN_METRICS[evaluator_type]


class _KeepLastCheckpointTag:
    """Saves through ``checkpointer`` but leaves its ``last_checkpoint`` tag as it was, so that
    ``--resume`` continues from the latest periodic checkpoint, never from ``model_best.pth``."""

    def __init__(self, checkpointer):
        self._checkpointer = checkpointer

    def save(self, name: str, **kwargs) -> None:
        tag = os.path.join(self._checkpointer.save_dir, "last_checkpoint")
        previous = None
        if os.path.isfile(tag):
            with open(tag) as f:
                previous = f.read().strip()
        self._checkpointer.save(name, **kwargs)
        if previous:
            self._checkpointer.tag_last_checkpoint(previous)
        elif os.path.isfile(tag):
            os.remove(tag)


class SegdetBestCheckpointer(BestCheckpointer):
    """detectron2's :class:`BestCheckpointer` (run it after the ``EvalHook``, on the main process)
    which also

    * records the metric in the file: ``model_best.pth["best_metric"] = {name: value}``, beside
      detectron2's ``"iteration"`` (the evaluation's);
    * on a resumed run starts from that value, so ``model_best.pth`` is only replaced by a better
      evaluation;
    * leaves ``last_checkpoint`` naming the latest periodic checkpoint;
    * stops with a :class:`ConfigError` naming the evaluation's metrics when ``metric`` is not one
      of them (rather than warning at every evaluation)."""

    def __init__(self, eval_period: int, checkpointer, metric: str, mode: str):
        super().__init__(eval_period, _KeepLastCheckpointTag(checkpointer), metric, mode=mode)
        self._path = os.path.join(checkpointer.save_dir, f"{self._file_prefix}.pth")

    def before_train(self) -> None:
        if self.trainer.start_iter > 0 and os.path.isfile(self._path):
            try:
                saved = torch.load(self._path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as exc:
                self._logger.warning(f"Not continuing from {self._path}'s best {self._val_metric}: unreadable ({exc})")
                return
            value = saved.get("best_metric", {}).get(self._val_metric)
            if value is not None:
                self.best_metric, self.best_iter = value, saved["iteration"]

    def _best_checking(self) -> None:
        latest = self.trainer.storage.latest()
        if self._val_metric not in latest:
            results = getattr(self.trainer, "_last_eval_results", None) or {}
            names = ", ".join(sorted(flatten_results_dict(results))) or "none"
            raise ConfigError(f"SOLVER.BEST_CHECKPOINT.METRIC = {self._val_metric!r}: not among the evaluation's "
                              f"metrics ({names})")
        value, iteration = latest[self._val_metric]
        if self.best_metric is not None and not self._compare(value, self.best_metric):
            self._logger.info(f"Not saving {self._path}: {self._val_metric} {value:0.5f} is not better than "
                              f"{self.best_metric:0.5f} (iteration {self.best_iter})")
        elif self._update_best(value, iteration):  # False for a non-finite value
            self._checkpointer.save(self._file_prefix, iteration=iteration, best_metric={self._val_metric: value})
            self._logger.info(f"Saved {self._path}: {self._val_metric} {value:0.5f} at iteration {iteration}")


def build_best_checkpointer(cfg, checkpointer, teacher_evaluated: bool) -> SegdetBestCheckpointer:
    """The ``SOLVER.BEST_CHECKPOINT`` hook of a trainer whose checkpoints ``checkpointer`` writes;
    ``teacher_evaluated``: its evaluations report the teacher too (so results are per dataset)."""
    metric = best_checkpoint_metric(cfg, per_dataset=len(cfg.DATASETS.TEST) > 1 or teacher_evaluated)
    mode = cfg.SOLVER.BEST_CHECKPOINT.MODE
    logger.info(f"Keeping {os.path.join(cfg.OUTPUT_DIR, 'model_best.pth')}: the evaluation with the best {metric} "
                f"({mode})")
    return SegdetBestCheckpointer(cfg.TEST.EVAL_PERIOD, checkpointer, metric, mode)
