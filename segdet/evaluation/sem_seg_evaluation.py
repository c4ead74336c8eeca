"""mIoU (and Dice / F-score) evaluator: a confusion matrix accumulated over the dataset, summed across processes."""
import json
import logging
import math
import os
from typing import Dict, List, Optional

import numpy as np
from tabulate import tabulate

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from segdet.data.io import metadata_label_lookup, read_sem_seg_label
from segdet.evaluation.sem_seg_metrics import confusion_matrix, metrics_from_confusion

__all__ = ["SegdetSemSegEvaluator", "save_confusion_heatmap"]

logger = logging.getLogger(__name__)

_SUMMARY = ("mIoU", "fwIoU", "mAcc", "aAcc", "mDice", "mFscore", "mPrecision", "mRecall")
_PER_CLASS = ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall")


class SegdetSemSegEvaluator(DatasetEvaluator):
    """mmseg-style mIoU / mAcc / aAcc / fwIoU of a semantic-segmentation dataset.

    ``process`` takes the argmax of each output's ``"sem_seg"`` logits (K, H, W), which must be
    at the original image resolution, and compares it with the label file of the input
    (``"sem_seg_file_name"`` in the input, else looked up in the dataset by ``"file_name"``),
    read with :func:`read_sem_seg_label` and the dataset's ``reduce_zero_label`` (an input's own
    ``"reduce_zero_label"`` key wins), or with the table of its ``label_map`` metadata (file
    value -> class id, as the sem_seg mapper reads training labels). With ``distributed=True`` the per-process confusion
    matrices are summed on the main process; other processes return ``{}``.

    ``evaluate`` returns ``{"sem_seg": {"mIoU", "mAcc", "aAcc", "fwIoU", "mDice", "mFscore",
    "mPrecision", "mRecall", "IoU-<class>", "Acc-<class>", "Dice-<class>", "Fscore-<class>",
    "Precision-<class>", "Recall-<class>"}}`` in percent (definitions, and why ``Fscore`` equals
    ``Dice``: :mod:`segdet.evaluation.sem_seg_metrics`); a class absent from both GT and
    prediction has NaN IoU and Dice (NaN Acc/Recall when absent from GT, NaN Precision when never
    predicted) and is left out of the means. The per-class table goes to the log and, with
    ``output_dir``, the main process writes there ``sem_seg_metrics.json`` (everything, NaN
    written as null), ``confusion_matrix.npy`` (the (K, K) int64 pixel counts summed over all
    processes, rows = ground truth, columns = prediction, contiguous class ids) and
    ``confusion_matrix.png`` (its row-normalised heat map, class names on the axes).
    """

    def __init__(self, dataset_name: str, distributed: bool = True, output_dir: Optional[str] = None,
                 *, num_classes: Optional[int] = None, ignore_label: Optional[int] = None,
                 reduce_zero_label: Optional[bool] = None):
        meta = MetadataCatalog.get(dataset_name)
        classes = getattr(meta, "stuff_classes", None)
        if num_classes is None:
            if classes is None:
                raise KeyError(
                    f"dataset {dataset_name!r} has no 'stuff_classes' metadata; register it or "
                    "pass num_classes"
                )
            num_classes = len(classes)
        if classes is None or len(classes) != num_classes:
            classes = [str(i) for i in range(num_classes)]
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._class_names: List[str] = list(classes)
        self._num_classes = int(num_classes)
        self._ignore_label = int(ignore_label if ignore_label is not None
                                 else getattr(meta, "ignore_label", 255))
        self._reduce_zero_label = bool(reduce_zero_label if reduce_zero_label is not None
                                       else getattr(meta, "reduce_zero_label", False))
        self._label_lookup = metadata_label_lookup(meta, self._ignore_label)
        self._gt_files: Optional[Dict[str, str]] = None
        self.reset()

    def reset(self) -> None:
        self._conf = np.zeros((self._num_classes, self._num_classes), dtype=np.int64)

    def _label_path(self, inp: Dict) -> str:
        path = inp.get("sem_seg_file_name")
        if path:
            return path
        if self._gt_files is None:
            self._gt_files = {d["file_name"]: d.get("sem_seg_file_name")
                              for d in DatasetCatalog.get(self._dataset_name)}
        path = self._gt_files.get(inp["file_name"])
        if not path:
            raise KeyError(
                f"no ground-truth label for {inp['file_name']} in dataset {self._dataset_name!r}"
            )
        return path

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            logits = out["sem_seg"]
            if logits.shape[0] != self._num_classes:
                raise ValueError(
                    f"prediction for {inp.get('file_name')} has {logits.shape[0]} channels; "
                    f"dataset {self._dataset_name!r} has {self._num_classes} classes"
                )
            pred = logits.argmax(dim=0).cpu().numpy()
            path = self._label_path(inp)
            gt = read_sem_seg_label(
                path,
                reduce_zero_label=bool(inp.get("reduce_zero_label", self._reduce_zero_label)),
                ignore_label=self._ignore_label,
                lookup=self._label_lookup,
            )
            if gt.shape != pred.shape:
                raise ValueError(
                    f"prediction {pred.shape} and label {path} {gt.shape} differ in size; "
                    "outputs must be at the original resolution (set 'height'/'width')"
                )
            self._conf += confusion_matrix(pred, gt, self._num_classes, self._ignore_label)

    def evaluate(self) -> Dict:
        conf = self._conf
        if self._distributed:
            comm.synchronize()
            gathered = comm.all_gather(self._conf)
            if not comm.is_main_process():
                return {}
            conf = np.sum(gathered, axis=0)
        m = metrics_from_confusion(conf)
        res = {name: 100.0 * m[name] for name in _SUMMARY}
        for metric in _PER_CLASS:
            for i, name in enumerate(self._class_names):
                res[f"{metric}-{name}"] = 100.0 * float(m[metric][i])
        self._log_table(m, int(conf.sum()))
        self._warn_absent_classes(conf)
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "sem_seg_metrics.json")
            with PathManager.open(path, "w") as f:
                json.dump({k: (None if math.isnan(v) else v) for k, v in res.items()}, f, indent=1)
            with PathManager.open(os.path.join(self._output_dir, "confusion_matrix.npy"), "wb") as f:
                np.save(f, np.asarray(conf, dtype=np.int64))
            save_confusion_heatmap(conf, self._class_names,
                                   os.path.join(self._output_dir, "confusion_matrix.png"),
                                   title=f"{self._dataset_name}: confusion (row-normalised)")
        return {"sem_seg": res}

    def _warn_absent_classes(self, conf: np.ndarray) -> None:
        """A class without one valid ground-truth pixel in the whole set has NaN IoU and is left
        out of mIoU, which can then read 100 (a 0/255 binary mask: 255 is the ignore value)."""
        absent = [name for name, n in zip(self._class_names, conf.sum(axis=1)) if n == 0]
        if absent:
            logger.warning(
                f"{self._dataset_name}: no valid ground-truth pixels for class(es) "
                f"{', '.join(repr(a) for a in absent)} in the whole set: their IoU is NaN and left out "
                f"of mIoU. If the labels are a 0/{self._ignore_label} binary mask, {self._ignore_label} "
                "is the ignore value: write the foreground as 1")

    def _log_table(self, m: Dict, num_pixels: int) -> None:
        rows = [(name, *(100.0 * m[k][i] for k in _PER_CLASS))
                for i, name in enumerate(self._class_names)]
        table = tabulate(rows, headers=["class", *_PER_CLASS], floatfmt=".2f", tablefmt="pipe",
                         missingval="nan")
        summary = ", ".join(f"{k} {100 * m[k]:.2f}" for k in _SUMMARY)
        logger.info(
            f"Semantic segmentation on {self._dataset_name} ({num_pixels} valid pixels): "
            f"{summary}\n{table}"
        )


def save_confusion_heatmap(conf: np.ndarray, class_names: List[str], path: str,
                           title: str = "confusion (row-normalised)") -> None:
    """Write a PNG heat map of ``conf`` (rows = ground truth, columns = prediction), each row
    divided by its ground-truth pixel count (a row without GT pixels stays blank), class names on
    both axes. Uses matplotlib's Agg canvas directly: no pyplot state, no display needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    conf = np.asarray(conf, dtype=np.float64)
    k = conf.shape[0]
    rows = conf.sum(axis=1, keepdims=True)
    norm = np.full(conf.shape, np.nan)
    np.divide(conf, rows, out=norm, where=rows > 0)
    side = min(max(4.0, 0.35 * k + 2.5), 40.0)
    fig = Figure(figsize=(side, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    font = max(4, min(9, int(300 / max(k, 1))))
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(class_names, rotation=90, fontsize=font)
    ax.set_yticklabels(class_names, fontsize=font)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    if k <= 20:
        for g in range(k):
            for p in range(k):
                if not np.isnan(norm[g, p]):
                    ax.text(p, g, f"{norm[g, p]:.2f}", ha="center", va="center", fontsize=font,
                            color="white" if norm[g, p] > 0.5 else "black")
    fig.tight_layout()
    with PathManager.open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
