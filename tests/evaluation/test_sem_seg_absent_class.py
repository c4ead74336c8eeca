"""A class with no valid ground-truth pixel in the whole set is named in a warning (a 0/255
mask otherwise reports mIoU 100 in silence)."""
import logging

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from segdet.evaluation import sem_seg_evaluation
from segdet.evaluation.sem_seg_evaluation import SegdetSemSegEvaluator


def _evaluate(tmp_path, name, label):
    path = tmp_path / f"{name}.png"
    Image.fromarray(label, mode="L").save(path)
    dicts = [{"file_name": str(tmp_path / "x.jpg"), "sem_seg_file_name": str(path)}]
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(stuff_classes=["background", "building"], ignore_label=255)
    ev = SegdetSemSegEvaluator(name, distributed=False)
    ev.reset()
    logits = torch.zeros(2, *label.shape)
    logits[0] = 1.0  # predicts background everywhere
    ev.process([dicts[0]], [{"sem_seg": logits}])
    return ev.evaluate()["sem_seg"]


def _warnings(caplog, fn):
    logger = logging.getLogger(sem_seg_evaluation.__name__)  # the segdet logger may not propagate
    logger.addHandler(caplog.handler)
    try:
        result = fn()
    finally:
        logger.removeHandler(caplog.handler)
    return result, sorted({r.getMessage() for r in caplog.records if r.levelno == logging.WARNING})


def test_zero_255_mask_warns_naming_the_class(tmp_path, caplog):
    label = np.zeros((4, 4), dtype=np.uint8)
    label[1:3, 1:3] = 255
    res, warnings = _warnings(caplog, lambda: _evaluate(tmp_path, "segdet_test_absent_255", label))
    assert res["mIoU"] == 100.0 and np.isnan(res["IoU-building"])
    assert len(warnings) == 1
    assert warnings[0].startswith("segdet_test_absent_255: no valid ground-truth pixels for class(es) 'building' "
                                  "in the whole set")
    assert "255 is the ignore value: write the foreground as 1" in warnings[0]


def test_every_class_present_no_warning(tmp_path, caplog):
    label = np.zeros((4, 4), dtype=np.uint8)
    label[1:3, 1:3] = 1
    _, warnings = _warnings(caplog, lambda: _evaluate(tmp_path, "segdet_test_absent_none", label))
    assert warnings == []
