"""tools/export_model.py for detectors: the export wrapper gives the detector's own detections;
torch.export and ONNX (onnxruntime) exports of the sample Faster R-CNN and RetinaNet match
PyTorch; an export that finds nothing still runs; an injected mismatch is one clear error."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detectron2.modeling import build_model

from _tools import REPO_ROOT, load_tool, one_error_line
from segdet.export import ExportableDetector, ExportMismatchError, compare_detections
from segdet.utils.config_io import load_config

FASTER_RCNN = os.path.join(REPO_ROOT, "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml")
RETINANET = os.path.join(REPO_ROOT, "configs/Samples/retinanet_mnv2_fpn_trees.yaml")
NO_IMAGENET = ["MODEL.MOBILENET_V2.WEIGHTS", ""]
SIZE = (128, 160)


def spread_weights(config: str, seed: int = 0) -> torch.nn.Module:
    """A seeded, freshly initialised detector whose detections of a noise image do not hang on
    float rounding. Faster R-CNN as initialised. RetinaNet as initialised scores every anchor
    about sigmoid(-4.6) ~ 0.01, below the 0.05 threshold, its logits varying by 3e-5 around the
    prior bias (a float32 rounding of -4.6 is 5e-7): its classifier is scaled so that the logits
    of the seeded image spread by 1, with zero bias (scores from 0.05 to 0.95)."""
    torch.manual_seed(seed)
    model = build_model(load_config(config, NO_IMAGENET)).eval()
    if hasattr(model, "head"):
        image = torch.rand(3, *SIZE, generator=torch.Generator().manual_seed(seed)) * 255
        head = model.head
        with torch.no_grad():
            features = model.backbone(ExportableDetector(model).normalise_and_pad(image))
            logits = [F.conv2d(head.cls_subnet(features[f]), head.cls_score.weight, padding=1)
                      for f in model.head_in_features]
            head.cls_score.weight.div_(torch.cat([x.flatten() for x in logits]).std())
            head.cls_score.bias.zero_()
    return model


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """{config: path of its spread_weights checkpoint}."""
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for config in (FASTER_RCNN, RETINANET):
        paths[config] = str(folder / f"{os.path.basename(config)}.pth")
        torch.save({"model": spread_weights(config).state_dict()}, paths[config])
    return paths


@pytest.mark.parametrize("config", [FASTER_RCNN, RETINANET], ids=["faster_rcnn", "retinanet"])
def test_wrapper_gives_the_detectors_own_detections(config):
    model = spread_weights(config)
    image = torch.rand(3, *SIZE, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        expected = model([{"image": image, "height": SIZE[0], "width": SIZE[1]}])[0]["instances"]
        boxes, scores, classes = ExportableDetector(model)(image)
    assert len(scores) > 50 and classes.dtype == torch.int64 and scores.min() > 0.05
    assert torch.equal(boxes, expected.pred_boxes.tensor) and torch.equal(scores, expected.scores)
    assert torch.equal(classes, expected.pred_classes)


# The RetinaNet exports (about a minute each to trace on 2 CPU cores) run with the slow tests; the
# default suite exports the Faster R-CNN to both formats and a RetinaNet that detects nothing.
@pytest.mark.parametrize("config, fmt", [
    pytest.param(FASTER_RCNN, "torch_export", id="faster_rcnn-torch_export"),
    pytest.param(FASTER_RCNN, "onnx", id="faster_rcnn-onnx"),
    pytest.param(RETINANET, "torch_export", id="retinanet-torch_export", marks=pytest.mark.slow),
    pytest.param(RETINANET, "onnx", id="retinanet-onnx", marks=pytest.mark.slow),
])
def test_export_runs_and_matches_pytorch(config, fmt, weights, tmp_path):
    tool = load_tool("export_model")
    summary = tool.main(["--config-file", config, "--format", fmt, "--input-size", *map(str, SIZE),
                         "--output", str(tmp_path), "MODEL.WEIGHTS", weights[config], *NO_IMAGENET])
    assert os.path.basename(summary["file"]) == tool.FORMATS[fmt] and os.path.isfile(summary["file"])
    written = json.loads((tmp_path / "export.json").read_text())
    assert written["input"]["shape"] == [3, *SIZE]
    assert [o["name"] for o in written["outputs"]] == ["boxes", "scores", "classes"]
    check = written["check"]
    assert min(check["detections"]) > 50
    assert check["boxes"]["relative"] <= 1e-4 and check["scores"]["relative"] <= 1e-4


def test_an_export_that_detects_nothing_runs(tmp_path, capsys):
    """Freshly initialised, RetinaNet scores every anchor sigmoid(-4.6) ~ 0.01, below the 0.05
    threshold: every NMS gets nothing to keep. torchvision's fake NMS would have the exported
    program assert 2 or more kept boxes and fail here."""
    torch.manual_seed(0)
    summary = load_tool("export_model").main(["--config-file", RETINANET, "--format", "torch_export",
                                              "--input-size", "64", "64", "--output", str(tmp_path), *NO_IMAGENET])
    assert summary["check"]["detections"] == [0, 0]
    assert "no detections above the score threshold" in capsys.readouterr().out


@pytest.mark.parametrize("change, fragments", [
    (lambda out: [out[0] + 0.05, out[1], out[2]], ["boxes", "above the tolerance"]),
    (lambda out: [out[0][1:], out[1][1:], out[2][1:]], ["detections, PyTorch"]),
], ids=["boxes", "a_detection_dropped"])
def test_injected_mismatch_is_an_error(change, fragments, weights, tmp_path, monkeypatch, capsys):
    """The export replaced by the wrapper itself with its outputs changed (no real export)."""
    tool = load_tool("export_model")

    def fake_export(wrapper, example, path):
        open(path, "w").close()
        return lambda x: change([y.numpy() for y in wrapper(x)])

    monkeypatch.setattr(tool, "export_detector_program", fake_export)
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--config-file", FASTER_RCNN, "--format", "torch_export", "--input-size", *map(str, SIZE),
                   "--output", str(tmp_path), "MODEL.WEIGHTS", weights[FASTER_RCNN], *NO_IMAGENET])
    assert exit_info.value.code == 2
    one_error_line(capsys.readouterr().err, "ExportMismatchError", "torch_export export of", *fragments)
    assert not (tmp_path / "export.json").exists()


def test_a_batch_for_a_detector_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_tool("export_model").main(["--config-file", FASTER_RCNN, "--format", "onnx", "--batch-size", "2",
                                        "--output", str(tmp_path), *NO_IMAGENET])
    one_error_line(capsys.readouterr().err, "--batch-size 2", "one image per call")


def test_compare_detections_pairs_near_ties_only():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=np.float32)
    scores, classes = np.array([0.9, 0.5, 0.49999]), np.array([0, 1, 1])
    swapped = [boxes[[0, 2, 1]], scores[[0, 2, 1]], classes[[0, 2, 1]]]  # 0.5 and 0.49999: a near tie
    result = compare_detections([[boxes, scores, classes]], [swapped], "x")
    assert result["detections"] == [3] and result["boxes"]["max_abs_diff"] == 0
    with pytest.raises(ExportMismatchError, match="no counterpart"):  # a different class
        compare_detections([[boxes, scores, classes]], [[boxes, scores, np.array([0, 1, 0])]], "x")
    with pytest.raises(ExportMismatchError, match="no counterpart"):  # scores too far apart to be a tie
        compare_detections([[boxes, scores, classes]], [[boxes[[1, 0, 2]], scores[[1, 0, 2]], classes]], "x")
    with pytest.raises(ExportMismatchError, match="2 detections, PyTorch 3"):
        compare_detections([[boxes, scores, classes]], [[boxes[:2], scores[:2], classes[:2]]], "x")
