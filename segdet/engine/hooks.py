"""Training hooks: loss/LR/metric curves as a PNG, the student's weights, reseeding for resume,
distillation timing."""
import logging
import os
from typing import Dict, List, Tuple

from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["TrainingCurvesHook", "StudentExportHook", "ReseedHook", "DistillTimerHook", "iteration_seed",
           "plot_training_curves"]

logger = logging.getLogger(__name__)


def plot_training_curves(series: Dict[str, List[Tuple[int, float]]], path: str) -> None:
    """Plot ``{name: [(iteration, value), ...]}`` into one PNG: losses (log scale), the learning
    rate, and evaluation metrics, one panel each (panels without data are omitted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {
        "losses": {k: v for k, v in series.items() if "loss" in k},
        "learning rate": {k: v for k, v in series.items() if k == "lr"},
        "evaluation": {k: v for k, v in series.items()
                       if "/" in k and k.split("/")[-1] in ("AP", "AP50", "mIoU", "mAcc", "aAcc")},
    }
    panels = {title: data for title, data in panels.items() if data}
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (title, data) in zip(axes[0], panels.items()):
        for name, points in sorted(data.items()):
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=name, marker="o" if len(points) < 20 else None)
        if title == "losses" and all(y > 0 for pts in data.values() for _, y in pts):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


class TrainingCurvesHook(HookBase):
    """Every ``period`` iterations and at the end, writes ``training_curves.png`` from the
    trainer's :class:`EventStorage` history (main process only)."""

    def __init__(self, output_dir: str, period: int = 100):
        self._path = os.path.join(output_dir, "training_curves.png")
        self._period = period

    def _write(self) -> None:
        if not comm.is_main_process():
            return
        storage = self.trainer.storage
        series = {}
        for name, history in storage.histories().items():
            if "loss" in name or name == "lr" or "/" in name:
                series[name] = [(int(it), float(v)) for v, it in history.values()]
        try:
            plot_training_curves(series, self._path)
        except Exception as e:  # plotting must never stop training
            logger.warning(f"Could not write {self._path}: {e}")

    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self._period == 0:
            self._write()

    def after_train(self) -> None:
        self._write()


class StudentExportHook(HookBase):
    """After training a distillation model, writes ``model_student_final.pth``: the student's
    weights alone (no teacher, no distillation modules), loadable with the student's own config
    through ``MODEL.WEIGHTS`` (main process only)."""

    def __init__(self, output_dir: str):
        self._path = os.path.join(output_dir, "model_student_final.pth")

    def after_train(self) -> None:
        if not comm.is_main_process():
            return
        from .checkpoint import atomic_torch_save

        model = self.trainer.model
        model = getattr(model, "module", model)  # DDP
        atomic_torch_save({"model": model.export_student_state_dict(),
                           "iteration": self.trainer.iter}, self._path)
        logger.info(f"Student weights written to {self._path}")


def iteration_seed(seed: int, iteration: int, rank: int) -> int:
    """A seed for the random numbers from ``iteration`` on, in process ``rank``."""
    import numpy as np

    return int(np.random.SeedSequence([seed, iteration, rank]).generate_state(1)[0]) % 2 ** 31


class ReseedHook(HookBase):
    """Reseeds python's, numpy's and torch's global RNGs (as detectron2's ``seed_all_rng``) from
    ``(seed, iteration, rank)`` before the first iteration and before every iteration that
    follows a periodic checkpoint (``iteration % period == 0``). A run resumed from such a
    checkpoint then draws the same random numbers (augmentations in the main process, proposal
    sampling, dropout) as the uninterrupted run. Data-loader workers keep their own streams
    (reproducible resumes need ``DATALOADER.NUM_WORKERS 0``). Every process, each its own seed."""

    def __init__(self, seed: int, period: int):
        self._seed = seed
        self._period = period

    def before_step(self) -> None:
        from detectron2.utils.env import seed_all_rng

        iteration = self.trainer.iter
        if iteration == self.trainer.start_iter or (self._period > 0 and iteration % self._period == 0):
            seed_all_rng(iteration_seed(self._seed, iteration, comm.get_rank()))


class DistillTimerHook(HookBase):
    """Times every training step of a DistillationModel with a
    :class:`~segdet.engine.distill_timer.DistillTimer` (attached from ``before_train`` to
    ``after_train``): ``distill_teacher_ms``, ``distill_student_ms`` and ``distill_losses_ms`` in
    the trainer's EventStorage, and a periodic log line of their means."""

    timer = None

    def before_train(self) -> None:
        from .distill_timer import DistillTimer, find_distillation_model

        model = find_distillation_model(self.trainer.model)
        self.timer = DistillTimer(model).attach() if model is not None else None

    def after_train(self) -> None:
        if self.timer is not None:
            self.timer.detach()
