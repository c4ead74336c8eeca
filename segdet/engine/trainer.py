"""segdet's trainer: detectron2's DefaultTrainer with the builders chosen by the config."""
import logging
import os
import re
import weakref
from collections import OrderedDict

import torch

from detectron2.data import MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.data.build import _train_loader_from_config
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.engine.hooks import EvalHook
from detectron2.evaluation import DatasetEvaluators
from detectron2.modeling import build_model
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, TensorboardXWriter

from segdet.data.mappers import build_mapper  # re-exported here too (segdet.engine.build_mapper)
from segdet.utils.errors import TrainingDivergedError

from .best_checkpoint import build_best_checkpointer
from .checkpoint import AtomicCheckpointer
from .ddp import create_ddp_model
from .distill_timer import find_distillation_model
from .hooks import DistillTimerHook, ReseedHook, StudentExportHook, TrainingCurvesHook
from .lr_scheduler import build_lr_scheduler
from .optimizer import build_optimizer
from .resume import (MetricsJSONWriter, ResumableSampler, config_settings, drop_metrics_from,
                     restore_config_settings)

__all__ = ["Trainer", "build_mapper", "count_parameters", "divergence_message"]

logger = logging.getLogger(__name__)

# a loss of detectron2's "Loss became infinite or NaN" message: 'loss_cls': nan (numpy 1)
# or 'loss_cls': np.float64(inf) (numpy 2)
_NON_FINITE_LOSS = re.compile(r"'([^']+)': (?:np\.float\d+\()?(?:nan|-?inf)\b")


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def divergence_message(d2_message: str, iteration: int, output_dir: str) -> str:
    """One line for detectron2's ``FloatingPointError`` (``d2_message``): the iteration, the
    losses that went non-finite and the last checkpoint (``OUTPUT_DIR/last_checkpoint``)."""
    losses = ", ".join(_NON_FINITE_LOSS.findall(d2_message)) or "the total loss"
    try:
        with open(os.path.join(output_dir, "last_checkpoint")) as f:
            last = os.path.join(output_dir, f.read().strip())
    except OSError:
        last = None
    if last:
        where = (f"last checkpoint: {last} (continue from it with --resume, e.g. with a lower SOLVER.BASE_LR "
                 "or SOLVER.CLIP_GRADIENTS.ENABLED True)")
    else:
        where = "last checkpoint: none (none was saved before; try a lower SOLVER.BASE_LR or longer warm-up)"
    return f"training diverged at iteration {iteration}: non-finite {losses}; {where}"


class Trainer(DefaultTrainer):
    """:class:`DefaultTrainer` with segdet's mapper, evaluator, optimizer and LR choices, atomic
    checkpoints, training-curve plots, CPU-capable DDP, and teacher evaluation for distillation
    models.

    Resuming (:meth:`resume_or_load`) continues the run as if it had not stopped: the data
    position and (with ``SEED >= 0``) the random numbers of the uninterrupted run, each iteration
    once in ``metrics.json``, and the config's optimizer settings (a changed ``SOLVER.BASE_LR``
    wins over the checkpoint's, with a warning). A non-finite loss ends training with a
    :class:`~segdet.utils.errors.TrainingDivergedError` that names the iteration, the losses and
    the last checkpoint."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__, with segdet's DDP wrapper and atomic checkpointer.
        TrainerBase.__init__(self)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, find_unused_parameters=cfg.SOLVER.DDP_FIND_UNUSED_PARAMETERS)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_model(cls, cfg):
        model = build_model(cfg)
        logger.info(
            f"Model {cfg.MODEL.META_ARCHITECTURE}: {count_parameters(model) / 1e6:.3f} M parameters "
            f"({count_parameters(model, trainable_only=True) / 1e6:.3f} M trainable)"
        )
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        """detectron2's loader whose sampler is a :class:`ResumableSampler` (the loader's
        ``resumable_sampler``); with ``SEED >= 0`` seeded by its own generator, so that creating
        its iterator draws nothing from torch's global RNG (which :class:`ReseedHook` resets)."""
        from segdet.data.checks import dataset_dicts_for_training  # an empty dataset: one clear line
        from segdet.data.multi_task import build_ratio_sampler, build_task_grouped_loader, training_dicts_by_dataset

        multi_task = cfg.INPUT.DATASET_MAPPER_NAME == "multi_task"
        sampler = None
        if multi_task or cfg.DATASETS.TRAIN_SAMPLING_RATIOS:  # each set loaded (and checked) on its own
            by_dataset = training_dicts_by_dataset(cfg)
            dataset = [d for dicts in by_dataset.values() for d in dicts]
            if cfg.DATASETS.TRAIN_SAMPLING_RATIOS:
                sampler = build_ratio_sampler(cfg, by_dataset)
        else:
            dataset = dataset_dicts_for_training(cfg)
        kwargs = _train_loader_from_config(cfg, mapper=build_mapper(cfg, is_train=True), dataset=dataset,
                                           sampler=sampler)
        sampler = kwargs.get("sampler")
        if sampler is not None:
            kwargs["sampler"] = sampler = ResumableSampler(sampler)
        if cfg.SEED >= 0:
            kwargs["seed"] = cfg.SEED + comm.get_rank()
        if multi_task and cfg.DATALOADER.GROUP_BY_TASK:
            loader = build_task_grouped_loader(
                kwargs["dataset"], mapper=kwargs["mapper"], sampler=kwargs["sampler"],
                total_batch_size=kwargs["total_batch_size"], num_workers=kwargs["num_workers"],
                seed=kwargs.get("seed"))
        else:
            loader = build_detection_train_loader(**kwargs)
        loader.resumable_sampler = sampler
        return loader

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        from segdet.data.checks import dataset_dicts_for_testing

        return build_detection_test_loader(dataset=dataset_dicts_for_testing(cfg, dataset_name),
                                           mapper=build_mapper(cfg, is_train=False, dataset_name=dataset_name),
                                           num_workers=cfg.DATALOADER.NUM_WORKERS)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """COCO AP or semantic-segmentation mIoU, by the dataset's ``evaluator_type``, plus a
        prediction-overlay writer (``TEST.VIS_NUM_IMAGES``)."""
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", None)
        if evaluator_type == "coco":
            from segdet.evaluation.coco_evaluation import SegdetCOCOEvaluator

            evaluators = [SegdetCOCOEvaluator(dataset_name, output_dir=output_folder, impl=cfg.TEST.COCO_EVAL_IMPL)]
        elif evaluator_type == "sem_seg":
            from segdet.evaluation.sem_seg_evaluation import SegdetSemSegEvaluator

            evaluators = [SegdetSemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)]
        else:
            raise ValueError(
                f"dataset {dataset_name!r} has evaluator_type {evaluator_type!r}; segdet evaluates "
                "'coco' (detection AP) and 'sem_seg' (mIoU)"
            )
        if cfg.TEST.VIS_NUM_IMAGES > 0:
            from segdet.evaluation.visualization import PredictionOverlayWriter

            evaluators.append(PredictionOverlayWriter(
                dataset_name, os.path.join(output_folder, "visualizations"), cfg.TEST.VIS_NUM_IMAGES,
                score_threshold=cfg.TEST.VIS_SCORE_THRESH, top_k=cfg.TEST.VIS_TOPK))
        return DatasetEvaluators(evaluators)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Evaluate ``model`` (for a distillation model: its student); with
        ``DISTILL.EVAL_TEACHER`` also the teacher, reported under ``teacher/<dataset>``. With
        ``TEST.AUG.ENABLED`` a segmentor is evaluated with multi-scale + flip test-time
        augmentation (:mod:`segdet.modeling.meta_arch.sem_seg_tta`; the teacher without)."""
        from segdet.modeling.meta_arch.sem_seg_tta import test_with_tta, tta_enabled

        if tta_enabled(cfg):
            results = test_with_tta(cls, cfg, model, evaluators)
        else:
            results = super().test(cfg, model, evaluators)
        inner = model.module if hasattr(model, "module") else model
        teachers = getattr(inner, "teachers", None)
        if teachers and cfg.DISTILL.EVAL_TEACHER:
            from segdet.data.multi_task import dataset_task

            teacher_results = OrderedDict()
            for t in teachers:  # each on the test sets of its task
                prefix = "teacher" if len(teachers) == 1 else f"teacher_{t.name}"
                for name in cfg.DATASETS.TEST:
                    if t.task and dataset_task(name) != t.task:
                        continue
                    cfg_t = t.cfg.clone()
                    cfg_t.defrost()
                    cfg_t.DATASETS.TEST = (name,)
                    folder = os.path.join(cfg.OUTPUT_DIR, f"inference_{prefix}", name)
                    result = super().test(cfg_t, t.model, [cls.build_evaluator(cfg_t, name, folder)])
                    teacher_results[f"{prefix}/{name}"] = result
            if not isinstance(results, OrderedDict) or len(cfg.DATASETS.TEST) == 1:
                results = OrderedDict([(cfg.DATASETS.TEST[0], results)])
            results.update(teacher_results)
        return results

    def resume_or_load(self, resume=True):
        """detectron2's, and when resuming from a checkpoint: the config's optimizer settings
        replace the checkpoint's (the config wins; one warning line per change, naming the old and
        new values), the training data continue where the checkpoint's iteration left them, and
        ``metrics.json`` loses its entries at iterations >= the new start (main process); a
        missing ``model_final.pth`` of a finished run is written."""
        settings = config_settings(self.optimizer, self.scheduler)
        super().resume_or_load(resume=resume)
        if not (resume and self.checkpointer.has_checkpoint()):
            return
        for change in restore_config_settings(self.optimizer, self.scheduler, settings, self.cfg.SOLVER.BASE_LR):
            logger.warning(f"Resuming with the config's value: {change}")
        sampler = getattr(self.data_loader, "resumable_sampler", None)
        if sampler is not None:
            sampler.skip(self.start_iter * (self.cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()))
        if comm.is_main_process():
            drop_metrics_from(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), self.start_iter)
        final = os.path.join(self.cfg.OUTPUT_DIR, "model_final.pth")
        if self.start_iter >= self.max_iter and not os.path.isfile(final):
            # killed while saving model_final, after the last periodic checkpoint: the loop will not
            # run again, so write it now (the same state; on the main process only)
            self.checkpointer.save("model_final", iteration=self.iter)

    def run_step(self):
        self._trainer.iter = self.iter
        try:
            self._trainer.run_step()
        except FloatingPointError as exc:
            if isinstance(exc, TrainingDivergedError) or "infinite or NaN" not in str(exc):
                raise
            raise TrainingDivergedError(divergence_message(str(exc), self.iter, self.cfg.OUTPUT_DIR)) from exc

    def build_writers(self):
        """detectron2's default writers, ``metrics.json`` opened at its first write (after a
        resume has cleaned it)."""
        os.makedirs(self.cfg.OUTPUT_DIR, exist_ok=True)
        return [CommonMetricPrinter(self.max_iter),
                MetricsJSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json")),
                TensorboardXWriter(self.cfg.OUTPUT_DIR)]

    def build_hooks(self):
        hooks = super().build_hooks()
        if self.cfg.SEED >= 0:
            hooks.insert(0, ReseedHook(self.cfg.SEED, self.cfg.SOLVER.CHECKPOINT_PERIOD))
        if find_distillation_model(self.model) is not None:
            hooks.insert(0, DistillTimerHook())  # distill_{teacher,student,losses}_ms in the metrics
        if comm.is_main_process():
            hooks.insert(-1, TrainingCurvesHook(self.cfg.OUTPUT_DIR, period=max(20, self.cfg.SOLVER.CHECKPOINT_PERIOD)))
            inner = getattr(self.model, "module", self.model)
            if hasattr(inner, "export_student_state_dict"):
                hooks.insert(-1, StudentExportHook(self.cfg.OUTPUT_DIR))
            if self.cfg.SOLVER.BEST_CHECKPOINT.ENABLED:  # after the EvalHook, whose results it reads
                evaluation = next(i for i, hook in enumerate(hooks) if isinstance(hook, EvalHook))
                teacher_evaluated = self.cfg.DISTILL.EVAL_TEACHER and getattr(inner, "teacher", None) is not None
                hooks.insert(evaluation + 1, build_best_checkpointer(self.cfg, self.checkpointer, teacher_evaluated))
        return hooks
