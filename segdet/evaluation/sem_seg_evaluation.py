"""mIoU evaluator: a confusion matrix accumulated over the dataset, summed across processes."""
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

from segdet.data.io import read_sem_seg_label
from segdet.evaluation.sem_seg_metrics import confusion_matrix, metrics_from_confusion

__all__ = ["SegdetSemSegEvaluator"]

logger = logging.getLogger(__name__)


class SegdetSemSegEvaluator(DatasetEvaluator):
    """mmseg-style mIoU / mAcc / aAcc / fwIoU of a semantic-segmentation dataset.

    ``process`` takes the argmax of each output's ``"sem_seg"`` logits (K, H, W), which must be
    at the original image resolution, and compares it with the label file of the input
    (``"sem_seg_file_name"`` in the input, else looked up in the dataset by ``"file_name"``),
    read with :func:`read_sem_seg_label` and the dataset's ``reduce_zero_label`` (an input's own
    ``"reduce_zero_label"`` key wins). With ``distributed=True`` the per-process confusion
    matrices are summed on the main process; other processes return ``{}``.

    ``evaluate`` returns ``{"sem_seg": {"mIoU", "mAcc", "aAcc", "fwIoU", "IoU-<class>",
    "Acc-<class>"}}`` in percent; a class absent from both GT and prediction has NaN IoU (NaN
    Acc when absent from GT) and is left out of the means. The per-class table goes to the log
    and, with ``output_dir``, everything to ``sem_seg_metrics.json`` (NaN written as null).
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
        res = {name: 100.0 * m[name] for name in ("mIoU", "fwIoU", "mAcc", "aAcc")}
        for i, name in enumerate(self._class_names):
            res[f"IoU-{name}"] = 100.0 * float(m["IoU"][i])
        for i, name in enumerate(self._class_names):
            res[f"Acc-{name}"] = 100.0 * float(m["Acc"][i])
        self._log_table(m, int(conf.sum()))
        self._warn_absent_classes(conf)
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "sem_seg_metrics.json")
            with PathManager.open(path, "w") as f:
                json.dump({k: (None if math.isnan(v) else v) for k, v in res.items()}, f, indent=1)
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
        rows = [(name, 100.0 * m["IoU"][i], 100.0 * m["Acc"][i])
                for i, name in enumerate(self._class_names)]
        table = tabulate(rows, headers=["class", "IoU", "Acc"], floatfmt=".2f", tablefmt="pipe",
                         missingval="nan")
        logger.info(
            f"Semantic segmentation on {self._dataset_name} ({num_pixels} valid pixels): "
            f"mIoU {100 * m['mIoU']:.2f}, mAcc {100 * m['mAcc']:.2f}, aAcc {100 * m['aAcc']:.2f}, "
            f"fwIoU {100 * m['fwIoU']:.2f}\n{table}"
        )
