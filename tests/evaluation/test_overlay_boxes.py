"""Which boxes the evaluation overlays draw: above the threshold, else the top-k."""
import numpy as np
import pytest
import torch

from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances

from segdet.evaluation.visualization import PredictionOverlayWriter, select_boxes_to_draw


def _instances(scores):
    inst = Instances((64, 64))
    n = len(scores)
    inst.pred_boxes = Boxes(torch.tensor([[4.0 * i, 4.0 * i, 4.0 * i + 20, 4.0 * i + 20] for i in range(n)]))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.zeros(n, dtype=torch.long)
    return inst


def test_boxes_above_threshold_are_kept_without_note():
    keep, note = select_boxes_to_draw(_instances([0.9, 0.2, 0.6]), 0.5, 5)
    assert keep.scores.tolist() == pytest.approx([0.9, 0.6]) and note == ""


def test_top_k_when_none_passes():
    keep, note = select_boxes_to_draw(_instances([0.1, 0.3, 0.05, 0.2]), 0.5, 2)
    assert keep.scores.tolist() == pytest.approx([0.3, 0.2])
    assert "top 2" in note and "0.5" in note


def test_top_k_zero_draws_none_and_empty_input():
    assert len(select_boxes_to_draw(_instances([0.1]), 0.5, 0)[0]) == 0
    assert select_boxes_to_draw(_instances([]), 0.5, 3)[1] == ""


def test_young_model_overlay_is_not_blank(tmp_path):
    name = "segdet_test_overlay_boxes"
    MetadataCatalog.get(name).set(thing_classes=["tree"])
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    drawn = {}
    for top_k in (0, 3):
        writer = PredictionOverlayWriter(name, str(tmp_path), score_threshold=0.5, top_k=top_k)
        drawn[top_k] = writer._draw(image, {"instances": _instances([0.1, 0.2, 0.05])})
    assert (drawn[0] == 128).all()  # nothing drawn below the threshold without top-k
    assert (drawn[3] != 128).any()
