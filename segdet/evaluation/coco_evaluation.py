"""COCO AP computed by faster-coco-eval (``TEST.COCO_EVAL_IMPL``).

detectron2's :class:`COCOEvaluator` computes AP with pycocotools' pure-Python ``COCOeval``
(its own fast implementation needs detectron2's compiled ops). faster-coco-eval's
``COCOeval_faster`` is a drop-in replacement with the matching and accumulation in C++: the same
numbers, evaluated on the same pycocotools ``COCO`` objects.
"""
import importlib.util
import itertools
import json
import os

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco
from detectron2.utils.file_io import PathManager

from segdet.utils.errors import ConfigError

__all__ = ["COCO_EVAL_IMPLS", "resolve_coco_eval_impl", "SegdetCOCOEvaluator"]

#: the values of TEST.COCO_EVAL_IMPL
COCO_EVAL_IMPLS = ("auto", "faster_coco_eval", "pycocotools")


def resolve_coco_eval_impl(impl: str) -> str:
    """``"faster_coco_eval"`` or ``"pycocotools"`` for a ``TEST.COCO_EVAL_IMPL`` value: ``"auto"``
    is faster-coco-eval when it is installed."""
    installed = importlib.util.find_spec("faster_coco_eval") is not None
    if impl == "auto":
        return "faster_coco_eval" if installed else "pycocotools"
    if impl == "faster_coco_eval" and not installed:
        raise ConfigError("TEST.COCO_EVAL_IMPL = 'faster_coco_eval': faster-coco-eval is not installed "
                          "(pip install the version requirements.txt pins, or use 'auto' / 'pycocotools')")
    if impl not in COCO_EVAL_IMPLS:
        raise ConfigError(f"TEST.COCO_EVAL_IMPL = {impl!r}: expected one of " + ", ".join(map(repr, COCO_EVAL_IMPLS)))
    return impl


class SegdetCOCOEvaluator(COCOEvaluator):
    """:class:`COCOEvaluator` whose AP comes from ``impl`` (a ``TEST.COCO_EVAL_IMPL`` value):
    with pycocotools it is detectron2's evaluator unchanged; with faster-coco-eval the same steps
    (``coco_instances_results.json`` in ``output_dir``, the same result fields) with
    ``COCOeval_faster``. (A ``max_dets_per_image`` other than 100 makes detectron2 use its
    pycocotools-based ``COCOevalMaxDets`` either way.)"""

    def __init__(self, dataset_name, *, impl: str = "auto", **kwargs):
        super().__init__(dataset_name, use_fast_impl=False, **kwargs)
        self.impl = resolve_coco_eval_impl(impl)

    def _eval_predictions(self, predictions, img_ids=None):
        if self.impl == "pycocotools":
            return super()._eval_predictions(predictions, img_ids)
        from faster_coco_eval import COCOeval_faster

        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(coco_results)
        id_map = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        if id_map is not None:  # back to the dataset's category ids
            reverse = {contiguous: dataset_id for dataset_id, contiguous in id_map.items()}
            for result in coco_results:
                result["category_id"] = reverse[result["category_id"]]
        if self._output_dir:
            path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info(f"Saving results to {path}")
            with PathManager.open(path, "w") as f:
                f.write(json.dumps(coco_results))
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        self._logger.info("Evaluating predictions with faster-coco-eval's COCOeval_faster ...")
        for task in sorted(tasks):
            coco_eval = _evaluate_predictions_on_coco(
                self._coco_api, coco_results, task, kpt_oks_sigmas=self._kpt_oks_sigmas,
                cocoeval_fn=COCOeval_faster, img_ids=img_ids, max_dets_per_image=self._max_dets_per_image,
            ) if coco_results else None  # the COCO API does not handle empty results
            self._results[task] = self._derive_coco_results(coco_eval, task,
                                                            class_names=self._metadata.get("thing_classes"))
