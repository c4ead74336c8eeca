"""tools/predict.py and segdet.engine.predictor on synthetic images: the files written for a
detector and a segmentor, a folder with JPEG/PNG/RGBA/1-channel and an unreadable file, a video,
a distillation run's checkpoint, the fused CGRSeg path, strict weights, and --onnx (an ONNX export gives
the same files as PyTorch; wrong-size, detector and class-count errors)."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.modeling import build_model

from _tools import REPO_ROOT, load_tool, one_error_line
from segdet.engine.predictor import Predictor
from segdet.utils.config_io import load_config
from segdet.utils.synthetic import register_synthetic_datasets

DET_CONFIG = os.path.join(REPO_ROOT, "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml")
SEG_CONFIG = os.path.join(REPO_ROOT, "configs/Samples/semseg_fpn_mnv2_street.yaml")
CGRSEG_CONFIG = os.path.join(REPO_ROOT, "projects/CGRSeg/configs/Samples/cgrseg_t_street.yaml")
DSD_CONFIG = os.path.join(REPO_ROOT, "projects/DSD/configs/Samples/cgrseg_t_street_dsd.yaml")
DET_OPTS = ["MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", "32", "INPUT.MIN_SIZE_TEST", "96",
            "DATASETS.TEST", "('synthetic_det_val',)", "TEST.DETECTIONS_PER_IMAGE", "10"]
SEG_OPTS = ["MODEL.MOBILENET_V2.WEIGHTS", "", "DATASETS.TEST", "('synthetic_sem_seg_val',)",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", "INPUT.SEM_SEG.TEST_RESIZE_SCALE", "(128, 96)"]
CGRSEG_OPTS = ["DATASETS.TEST", "('synthetic_sem_seg_val',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3",
               "INPUT.SEM_SEG.TEST_RESIZE_SCALE", "(128, 96)"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The synthetic sets (registered once per process, perhaps by another test module, under
    its own folder: read their files from the catalog)."""
    register_synthetic_datasets(str(tmp_path_factory.mktemp("synthetic")))


def _files(name):
    from detectron2.data import DatasetCatalog

    return sorted(d["file_name"] for d in DatasetCatalog.get(name))


@pytest.fixture(scope="module")
def weights(tmp_path_factory, data):
    """Random weights of the detector and the segmentor (seeded), as a training run saves them."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for name, config, opts in (("det", DET_CONFIG, DET_OPTS), ("seg", SEG_CONFIG, SEG_OPTS)):
        paths[name] = str(folder / f"{name}.pth")
        torch.save({"model": build_model(load_config(config, opts)).state_dict()}, paths[name])
    return paths


def _images(folder):
    """Three readable images (JPEG, RGBA PNG, 1-channel PNG) and one unreadable file."""
    source = _files("synthetic_det_val")
    folder.mkdir()
    rgb = [np.asarray(Image.open(p).convert("RGB")) for p in source[:3]]
    Image.fromarray(rgb[0]).save(folder / "a.jpg", quality=95)
    Image.fromarray(rgb[1]).convert("RGBA").save(folder / "b.png")
    Image.fromarray(rgb[2]).convert("L").save(folder / "c.png")
    (folder / "d.jpg").write_bytes(b"not an image")
    return {"a": rgb[0].shape[:2], "b": rgb[1].shape[:2], "c": rgb[2].shape[:2]}


def _predict(*argv):
    return load_tool("predict").main(list(map(str, argv)))


def test_detector_writes_overlays_and_coco_results(tmp_path, data, weights):
    sizes = _images(tmp_path / "in")
    out = tmp_path / "out"
    summary = _predict("--config-file", DET_CONFIG, "--input", tmp_path / "in", "--output", out,
                       "--confidence-threshold", "0.01", "--batch-size", "2", "MODEL.WEIGHTS", weights["det"], *DET_OPTS)
    assert summary["images"] == 3 and [s["file"] for s in summary["skipped"]] == [str(tmp_path / "in" / "d.jpg")]
    for name, (h, w) in sizes.items():
        assert Image.open(out / f"{name}_overlay.png").size == (w, h)
    assert not (out / "d_overlay.png").exists() and not list(out.glob("*_label.png"))
    records = json.loads((out / "coco_instances_results.json").read_text())
    assert records, "a random detector with threshold 0.01 still gives boxes"
    files = [str(tmp_path / "in" / n) for n in ("a.jpg", "b.png", "c.png")]
    for r in records:
        assert set(r) == {"image_id", "category_id", "bbox", "score", "file_name"}
        assert r["category_id"] == 1  # the dataset's id of its one category (contiguous id 0)
        # every box the model returns (its SCORE_THRESH_TEST, 0.05), not only those drawn
        assert r["score"] >= 0.05 and len(r["bbox"]) == 4 and r["bbox"][2] >= 0 and r["bbox"][3] >= 0
        assert r["file_name"] == files[r["image_id"]]  # image_id: position in the input order (d.jpg is 3)


def test_segmentor_label_and_colour_maps_match_the_predictions(tmp_path, data, weights):
    sizes = _images(tmp_path / "in")
    out = tmp_path / "out"
    _predict("--config-file", SEG_CONFIG, "--input", tmp_path / "in" / "*.png", tmp_path / "in" / "a.jpg",
             "--output", out, "MODEL.WEIGHTS", weights["seg"], *SEG_OPTS)
    cfg = load_config(SEG_CONFIG, SEG_OPTS + ["MODEL.WEIGHTS", weights["seg"]])
    predictor = Predictor(cfg)
    from segdet.data.io import read_image_checked

    for name, (h, w) in sizes.items():
        image = read_image_checked(str(tmp_path / "in" / ("a.jpg" if name == "a" else f"{name}.png")), format="RGB")
        assert image.shape == (h, w, 3)  # RGBA and 1-channel files are read as RGB
        expected = predictor([image])[0]["sem_seg"].argmax(dim=0).numpy()
        label = np.asarray(Image.open(out / f"{name}_label.png"))
        assert label.dtype == np.uint8 and label.shape == (h, w)
        np.testing.assert_array_equal(label, expected)  # class ids = the dataset's label values
        assert Image.open(out / f"{name}_overlay.png").size == (w, h)
        color = np.asarray(Image.open(out / f"{name}_color.png").convert("RGB"))
        assert color.shape[0] >= h and color.shape[1] > w  # the legend is on the right
        from segdet.engine.prediction_outputs import drawing_metadata
        from detectron2.data import MetadataCatalog

        palette = np.asarray(drawing_metadata(MetadataCatalog.get("synthetic_sem_seg_val"), 3).stuff_colors)
        np.testing.assert_array_equal(color[:h, :w], palette[expected])
    assert not (out / "coco_instances_results.json").exists()


def test_overlay_draws_boxes_at_the_threshold_only_and_batches_do_not_mix_sizes(data, weights):
    from detectron2.data.catalog import Metadata

    from segdet.engine.prediction_outputs import draw_overlay

    image = np.asarray(Image.open(_files("synthetic_det_val")[0]).convert("RGB"))
    output = Predictor(load_config(DET_CONFIG, DET_OPTS + ["MODEL.WEIGHTS", weights["det"]]))([image])[0]
    assert len(output["instances"]) > 0
    metadata = Metadata(name="boxes", thing_classes=["box"])
    np.testing.assert_array_equal(draw_overlay(image, output, metadata, score_threshold=1.1), image)
    assert (draw_overlay(image, output, metadata, score_threshold=0.0) != image).any()

    seg = Predictor(load_config(SEG_CONFIG, SEG_OPTS + ["MODEL.WEIGHTS", weights["seg"]]))
    small, large = image[:60, :80].copy(), np.concatenate([image, image], axis=1)
    together = seg([small, large])
    for alone, both in zip((seg([small])[0], seg([large])[0]), together):
        torch.testing.assert_close(both["sem_seg"], alone["sem_seg"], rtol=0, atol=0)


def test_label_png_uses_the_dataset_ids_of_a_reduce_zero_label_set():
    from detectron2.data.catalog import Metadata

    from segdet.engine.prediction_outputs import label_map_in_dataset_ids

    scores = torch.zeros(3, 2, 2)
    scores[0, 0, 0] = scores[1, 0, 1] = scores[2, 1, :] = 1.0  # classes [[0, 1], [2, 2]]
    reduced = Metadata(name="r", reduce_zero_label=True)
    np.testing.assert_array_equal(label_map_in_dataset_ids(scores, reduced), [[1, 2], [3, 3]])
    mapped = Metadata(name="m", stuff_dataset_id_to_contiguous_id={7: 0, 300: 1, 9: 2})
    ids = label_map_in_dataset_ids(scores, mapped)
    assert ids.dtype == np.uint16
    np.testing.assert_array_equal(ids, [[7, 300], [9, 9]])
    partial = Metadata(name="p", stuff_dataset_id_to_contiguous_id={7: 0, 9: 5})  # class 1, 2 unnamed
    np.testing.assert_array_equal(label_map_in_dataset_ids(scores, partial), [[7, 255], [255, 255]])


def test_video_frames_are_written(tmp_path, data, weights):
    import cv2

    frames = [np.asarray(Image.open(p).convert("RGB")) for p in _files("synthetic_det_val")[:3]]
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (width, height))
    for frame in frames:
        writer.write(frame[:, :, ::-1])
    writer.release()
    summary = _predict("--config-file", DET_CONFIG, "--video-input", tmp_path / "clip.mp4", "--output", tmp_path / "out",
                       "--batch-size", "2", "MODEL.WEIGHTS", weights["det"], *DET_OPTS)
    assert summary["frames"] == 3
    video = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    written = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        written.append(frame)
    assert len(written) == 3 and written[0].shape == (height, width, 3)


def test_distillation_checkpoint_predicts_with_its_student(tmp_path, data):
    """A DistillationModel run's model_final.pth (student.* and distillation-module keys) gives
    the same predictions as the student's own weights; --fuse gives the fused CGRSeg path."""
    torch.manual_seed(1)
    student = build_model(load_config(CGRSEG_CONFIG, CGRSEG_OPTS)).eval()
    for module in student.modules():  # trained-looking BatchNorm statistics, so fusing is not trivial
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    state = student.state_dict()
    torch.save({"model": state}, tmp_path / "student.pth")
    run = {f"student.{k}": v for k, v in state.items()}
    run["distill_losses.psd.adapter.weight"] = torch.zeros(2, 2)
    torch.save({"model": run, "iteration": 9}, tmp_path / "model_final.pth")
    image = np.asarray(Image.open(_files("synthetic_sem_seg_val")[0]).convert("RGB"))

    plain = Predictor(load_config(CGRSEG_CONFIG, CGRSEG_OPTS + ["MODEL.WEIGHTS", str(tmp_path / "student.pth")]))
    via_run = Predictor(load_config(DSD_CONFIG, CGRSEG_OPTS + ["MODEL.WEIGHTS", str(tmp_path / "model_final.pth")]))
    fused = Predictor(load_config(DSD_CONFIG, CGRSEG_OPTS + ["MODEL.WEIGHTS", str(tmp_path / "model_final.pth")]),
                      fuse=True)
    assert via_run.cfg.MODEL.META_ARCHITECTURE == "SegdetSemanticSegmentor" and fused.fused > 0 and not plain.fused
    expected = plain([image])[0]["sem_seg"]
    torch.testing.assert_close(via_run([image])[0]["sem_seg"], expected, rtol=0, atol=0)
    scale = expected.abs().max().item()
    assert (fused([image])[0]["sem_seg"] - expected).abs().max().item() <= 1e-4 * scale


def test_weights_of_another_model_are_one_error(tmp_path, data, weights, capsys):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "in" / "x.png")
    with pytest.raises(SystemExit) as exit_info:
        _predict("--config-file", SEG_CONFIG, "--input", tmp_path / "in", "--output", tmp_path / "out",
                 "MODEL.WEIGHTS", weights["det"], *SEG_OPTS)
    assert exit_info.value.code == 2
    one_error_line(capsys.readouterr().err, "MODEL.WEIGHTS", weights["det"], "do not match")


def test_nothing_to_predict_and_missing_input_are_one_error(tmp_path, capsys):
    for argv, fragment in (([], "nothing to predict"), (["--input", tmp_path / "nope*.jpg"], "nope*.jpg")):
        with pytest.raises(SystemExit):
            _predict("--config-file", SEG_CONFIG, "--output", tmp_path / "out", *argv)
        one_error_line(capsys.readouterr().err, fragment)


def test_joint_model_writes_boxes_label_maps_and_both_class_lists(tmp_path, data):
    config = os.path.join(REPO_ROOT, "projects/MultiTask/configs/faster_rcnn_semseg_fpn_mnv2_trees_street.yaml")
    opts = ["MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
            "INPUT.MIN_SIZE_TEST", "96", "DATASETS.TEST", "('synthetic_det_val', 'synthetic_sem_seg_val')",
            "TEST.DETECTIONS_PER_IMAGE", "10"]
    torch.manual_seed(0)
    path = tmp_path / "joint.pth"
    torch.save({"model": build_model(load_config(config, opts)).state_dict()}, path)
    _images(tmp_path / "in")
    out = tmp_path / "out"
    summary = _predict("--config-file", config, "--input", tmp_path / "in" / "a.jpg", "--output", out,
                       "--confidence-threshold", "0.0", "MODEL.WEIGHTS", path, *opts)
    assert summary["images"] == 1
    assert (out / "a_overlay.png").is_file() and (out / "a_label.png").is_file() and (out / "a_color.png").is_file()
    assert json.loads((out / "coco_instances_results.json").read_text())  # the detection branch's boxes
    metadata, _ = load_tool("predict").dataset_metadata(load_config(config, opts))
    assert list(metadata.thing_classes) == ["box"]  # the detection set's classes
    assert list(metadata.stuff_classes) == ["background", "rectangle", "disk"]  # the semantic set's


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory, data, weights):
    """The sample segmentor's random weights exported to ONNX at the test-resized size of a
    90x120 image (the config's keep-ratio resize into (128, 96)), and that image."""
    folder = tmp_path_factory.mktemp("onnx")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(folder / "img.png")
    Image.fromarray(rng.integers(0, 256, (90, 90, 3), dtype=np.uint8)).save(folder / "square.png")
    predictor = Predictor(load_config(SEG_CONFIG, SEG_OPTS + ["MODEL.WEIGHTS", weights["seg"]]))
    height, width = predictor.model_input(np.zeros((90, 120, 3), np.uint8))["image"].shape[-2:]
    assert (height, width) != (90, 120)  # the resize is exercised, and the logits are resized back
    summary = load_tool("export_model").main(["--config-file", SEG_CONFIG, "--format", "onnx", "--input-size",
                                              str(height), str(width), "--output", str(folder / "export"),
                                              "MODEL.WEIGHTS", weights["seg"], *SEG_OPTS])
    return {"onnx": summary["file"], "image": folder / "img.png", "square": folder / "square.png",
            "size": (height, width)}


def test_onnx_export_predicts_the_same_files_as_pytorch(tmp_path, weights, onnx_export):
    image = onnx_export["image"]
    _predict("--config-file", SEG_CONFIG, "--input", image, "--output", tmp_path / "torch",
             "MODEL.WEIGHTS", weights["seg"], *SEG_OPTS)
    summary = _predict("--config-file", SEG_CONFIG, "--onnx", onnx_export["onnx"], "--input", image,
                       "--output", tmp_path / "onnx", *SEG_OPTS)
    assert summary["images"] == 1 and summary["onnx"] == onnx_export["onnx"] and summary["weights"] is None
    label = np.asarray(Image.open(tmp_path / "onnx" / "img_label.png"))
    assert label.shape == (90, 120) and len(np.unique(label)) > 1  # not a trivial one-class map
    for suffix in ("label", "color", "overlay"):
        expected = np.asarray(Image.open(tmp_path / "torch" / f"img_{suffix}.png"))
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "onnx" / f"img_{suffix}.png")), expected)


def test_onnx_logits_match_pytorch_at_the_image_size(weights, onnx_export):
    from segdet.data.io import read_image_checked
    from segdet.engine.predictor import inference_config
    from segdet.export import OnnxSegmentor

    cfg = load_config(SEG_CONFIG, SEG_OPTS + ["MODEL.WEIGHTS", weights["seg"]])
    image = read_image_checked(str(onnx_export["image"]), format="RGB")
    expected = Predictor(cfg)([image])[0]["sem_seg"]
    got = Predictor(cfg, model=OnnxSegmentor(onnx_export["onnx"], inference_config(cfg)))([image])[0]["sem_seg"]
    assert got.shape == expected.shape == (3, 90, 120)
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()


def test_onnx_wrong_size_image_detector_and_class_count_are_one_error(tmp_path, onnx_export, capsys):
    height, width = onnx_export["size"]
    with pytest.raises(SystemExit) as exit_info:
        _predict("--config-file", SEG_CONFIG, "--onnx", onnx_export["onnx"], "--input", onnx_export["square"],
                 "--output", tmp_path / "out", *SEG_OPTS)
    assert exit_info.value.code == 2
    one_error_line(capsys.readouterr().err, "after the config's test resize (from 90x90)",
                   f"fixed input is {height}x{width}", "export with --input-size")
    with pytest.raises(SystemExit):
        _predict("--config-file", DET_CONFIG, "--onnx", onnx_export["onnx"], "--input", onnx_export["image"],
                 "--output", tmp_path / "det", *DET_OPTS)
    one_error_line(capsys.readouterr().err, "is a GeneralizedRCNN", "semantic segmentors only")
    with pytest.raises(SystemExit):  # a config of another model than the exported one
        _predict("--config-file", SEG_CONFIG, "--onnx", onnx_export["onnx"], "--input", onnx_export["image"],
                 "--output", tmp_path / "k", *SEG_OPTS, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "4")
    one_error_line(capsys.readouterr().err, "the export has 3 classes", "MODEL.SEM_SEG_HEAD.NUM_CLASSES is 4")
