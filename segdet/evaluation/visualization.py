"""Prediction overlays written during evaluation."""
import os
from typing import Optional

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.visualizer import ColorMode, Visualizer

__all__ = ["PredictionOverlayWriter", "select_boxes_to_draw"]


def select_boxes_to_draw(instances, score_threshold: float, top_k: int):
    """The instances to draw and a note: those with score ≥ ``score_threshold`` (note ``""``),
    or, when none passes, the ``top_k`` highest-scoring ones (note says they are below it)."""
    keep = instances[instances.scores >= score_threshold]
    if len(keep) or not len(instances) or top_k <= 0:
        return keep, ""
    order = instances.scores.argsort(descending=True)[:top_k]
    return instances[order], f"no box >= {score_threshold:g}: top {len(order)} shown"


class PredictionOverlayWriter(DatasetEvaluator):
    """Writes ``<output_dir>/<stem>.png`` overlays of the first ``num_images`` predictions seen by
    the main process: detected boxes (score ≥ ``score_threshold``; when none passes, the
    ``top_k`` highest-scoring boxes, so that a young model's overlay is not blank, with a note
    in the image's corner) or the semantic argmax map; for semantic segmentation the ground
    truth is drawn beside the prediction when known."""

    def __init__(self, dataset_name: str, output_dir: str, num_images: int = 4,
                 score_threshold: float = 0.5, top_k: int = 5):
        self._dataset_name = dataset_name
        self._metadata = MetadataCatalog.get(dataset_name)
        self._gt_files = None  # file_name -> sem_seg_file_name, read on first need
        self._output_dir = output_dir
        self._num_images = num_images
        self._score_threshold = score_threshold
        self._top_k = top_k
        self._written = 0

    def reset(self) -> None:
        self._written = 0

    def process(self, inputs, outputs) -> None:
        if not comm.is_main_process():
            return
        for inp, out in zip(inputs, outputs):
            if self._written >= self._num_images:
                return
            image = read_image(inp["file_name"], format="RGB")
            panels = [self._draw(image, out)]
            gt = self._ground_truth(inp)
            if gt is not None:
                vis = Visualizer(image, self._metadata, instance_mode=ColorMode.IMAGE)
                panels.insert(0, vis.draw_sem_seg(gt, alpha=0.5).get_image())
            os.makedirs(self._output_dir, exist_ok=True)
            stem = os.path.splitext(os.path.basename(inp["file_name"]))[0]
            path = os.path.join(self._output_dir, f"{stem}.png")
            from PIL import Image

            Image.fromarray(np.concatenate(panels, axis=1)).save(path)
            self._written += 1

    def _draw(self, image: np.ndarray, output: dict) -> np.ndarray:
        vis = Visualizer(image, self._metadata, instance_mode=ColorMode.IMAGE)
        if "instances" in output:
            instances, note = select_boxes_to_draw(output["instances"].to("cpu"),
                                                   self._score_threshold, self._top_k)
            if note:
                vis.draw_text(note, (4, 4), horizontal_alignment="left", color="yellow")
            return vis.draw_instance_predictions(instances).get_image()
        if "sem_seg" in output:
            return vis.draw_sem_seg(output["sem_seg"].argmax(dim=0).cpu(), alpha=0.5).get_image()
        raise KeyError(f"cannot draw an output with keys {sorted(output)}; expected 'instances' or 'sem_seg'")

    def _ground_truth(self, inp: dict) -> Optional[np.ndarray]:
        path = inp.get("sem_seg_file_name")
        if path is None and getattr(self._metadata, "evaluator_type", None) == "sem_seg":
            if self._gt_files is None:
                self._gt_files = {d["file_name"]: d.get("sem_seg_file_name")
                                  for d in DatasetCatalog.get(self._dataset_name)}
            path = self._gt_files.get(inp["file_name"])
        if not path or not os.path.isfile(path):
            return None
        from segdet.data.io import metadata_label_lookup, read_sem_seg_label

        ignore = int(getattr(self._metadata, "ignore_label", 255))
        return read_sem_seg_label(path, reduce_zero_label=getattr(self._metadata, "reduce_zero_label", False),
                                  ignore_label=ignore, lookup=metadata_label_lookup(self._metadata, ignore))

    def evaluate(self):
        return {}
