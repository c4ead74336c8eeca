"""tools/export_model.py and segdet.export: the export wrapper computes what the segmentor's own
inference does; ONNX (onnxruntime) and torch.export exports of Semantic-FPN and CGRSeg-T match
PyTorch; an injected mismatch and a model of other heads (Mask R-CNN) are one clear error."""
import json
import os

import numpy as np
import pytest
import torch

from detectron2.modeling import build_model

from _tools import REPO_ROOT, load_tool, one_error_line
from segdet.export import ExportableSegmentor, ExportMismatchError, compare_outputs
from segdet.utils.config_io import load_config

FPN = os.path.join(REPO_ROOT, "configs/Samples/semseg_fpn_mnv2_street.yaml")
CGRSEG = os.path.join(REPO_ROOT, "projects/CGRSeg/configs/Samples/cgrseg_t_street.yaml")
FASTER_RCNN = os.path.join(REPO_ROOT, "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml")
NO_IMAGENET = ["MODEL.MOBILENET_V2.WEIGHTS", ""]


@pytest.mark.parametrize("config", [FPN, CGRSEG], ids=["semantic_fpn", "cgrseg_t"])
def test_wrapper_equals_the_segmentors_inference(config):
    """Raw pixels in, logits at the input size out, as the dict API gives them; 90x120 is not a
    multiple of 32, so the padding and the crop are exercised."""
    torch.manual_seed(0)
    model = build_model(load_config(config, NO_IMAGENET if config == FPN else [])).eval()
    image = torch.rand(3, 90, 120) * 255
    with torch.no_grad():
        expected = model([{"image": image, "height": 90, "width": 120}])[0]["sem_seg"]
        logits = ExportableSegmentor(model)(image[None])
    assert logits.shape == (1, 3, 90, 120)
    torch.testing.assert_close(logits[0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("config, fmt", [(FPN, "onnx"), (FPN, "torch_export"), (CGRSEG, "onnx"),
                                         (CGRSEG, "torch_export")],
                         ids=["semantic_fpn-onnx", "semantic_fpn-torch_export", "cgrseg_t-onnx", "cgrseg_t-torch_export"])
def test_export_runs_and_matches_pytorch(config, fmt, tmp_path):
    tool = load_tool("export_model")
    out = tmp_path / "export"
    summary = tool.main(["--config-file", config, "--format", fmt, "--input-size", "64", "96", "--output", str(out),
                         *(NO_IMAGENET if config == FPN else [])])
    assert os.path.isfile(summary["file"]) and os.path.basename(summary["file"]) == tool.FORMATS[fmt]
    written = json.loads((out / "export.json").read_text())
    assert written["input"]["shape"] == [1, 3, 64, 96] and written["output"]["shape"] == [1, 3, 64, 96]
    assert written["check"]["relative"] <= 1e-4 and written["check"]["max_abs_reference"] > 0
    if fmt == "onnx":  # what tools/predict.py --onnx reads: preprocessing inside, the channel order
        from segdet.export import onnx_session

        props = onnx_session(summary["file"]).get_modelmeta().custom_metadata_map
        assert props["segdet.preprocess"] == "1" and props["segdet.channel_order"] == written["input"]["channel_order"]


def test_fused_path_exports_with_standard_ops_and_matches_the_plain_model(tmp_path, capsys):
    """--fuse: the fused CGRSeg-T (segdet.deploy.fuse_model, standard operations) to ONNX; the
    graph has no BatchNormalization left, and the export matches the plain model's inference."""
    import onnx

    tool = load_tool("export_model")
    summary = tool.main(["--config-file", CGRSEG, "--format", "onnx", "--input-size", "64", "96", "--fuse",
                         "--output", str(tmp_path / "fused")])
    assert summary["fused"] is True and summary["check"]["relative"] <= 1e-4
    ops = {node.op_type for node in onnx.load(summary["file"]).graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    with pytest.raises(SystemExit):
        tool.main(["--config-file", FPN, "--format", "onnx", "--input-size", "64", "64", "--fuse",
                   "--output", str(tmp_path / "fpn"), *NO_IMAGENET])
    one_error_line(capsys.readouterr().err, "--fuse: SemSegFPNHead of", "has no fused inference path")


def test_injected_mismatch_is_an_error(tmp_path, monkeypatch, capsys):
    tool = load_tool("export_model")
    real = tool.export_program
    monkeypatch.setattr(tool, "export_program", lambda *a: (lambda x, run=real(*a): run(x) + 0.01))
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--config-file", FPN, "--format", "torch_export", "--input-size", "64", "64",
                   "--output", str(tmp_path), *NO_IMAGENET])
    assert exit_info.value.code == 2
    one_error_line(capsys.readouterr().err, "ExportMismatchError", "torch_export export of", "above the tolerance")
    assert not (tmp_path / "export.json").exists()


def test_a_wrapper_that_drifts_from_the_model_is_an_error(tmp_path, monkeypatch, capsys):
    forward = ExportableSegmentor.forward
    monkeypatch.setattr(ExportableSegmentor, "forward", lambda self, x: forward(self, x) + 0.01)
    with pytest.raises(SystemExit):
        load_tool("export_model").main(["--config-file", FPN, "--format", "torch_export", "--input-size", "64", "64",
                                        "--output", str(tmp_path), *NO_IMAGENET])
    one_error_line(capsys.readouterr().err, "ExportMismatchError", "the export wrapper of")


def test_a_model_of_other_heads_is_one_clear_error(tmp_path, capsys):
    """Detectors export (tests/test_export_detectors.py), but not a Mask R-CNN."""
    with pytest.raises(SystemExit):
        load_tool("export_model").main(["--config-file", FASTER_RCNN, "--format", "onnx", "--output", str(tmp_path),
                                        *NO_IMAGENET, "MODEL.MASK_ON", "True"])
    one_error_line(capsys.readouterr().err, "export supports semantic segmentors, Faster R-CNN (boxes only) and "
                   "RetinaNet", "GeneralizedRCNN")


def test_compare_outputs_tolerance_shape_and_finiteness():
    ref = np.array([[1.0, -4.0], [2.0, 0.5]])
    assert compare_outputs([ref], [ref + 3e-4], "x")["relative"] == pytest.approx(7.5e-5)
    with pytest.raises(ExportMismatchError, match="above the tolerance"):
        compare_outputs([ref], [ref + 5e-4], "x")
    with pytest.raises(ExportMismatchError, match="shape"):
        compare_outputs([ref], [ref[:1]], "x")
    with pytest.raises(ExportMismatchError, match="non-finite"):
        compare_outputs([ref], [ref * np.nan], "x")
