"""tools/visualize_data.py on synthetic data: file count and sizes, boxes and label colours where
the ground truth is, the dataloader picture equal to the annotation picture when the
augmentations are the identity (images read in BGR), ignore pixels black, and clear errors."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode
from detectron2.utils.colormap import colormap

from _tools import REPO_ROOT, load_tool, one_error_line
from segdet.utils.synthetic import register_synthetic_datasets

TREES = os.path.join(REPO_ROOT, "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml")
STREET = os.path.join(REPO_ROOT, "configs/Samples/semseg_fpn_mnv2_street.yaml")
# the training mappers reduced to the identity (the image size kept, no flip / crop / colour change)
TREES_IDENTITY = ["INPUT.MIN_SIZE_TRAIN", "(400,)", "INPUT.RANDOM_FLIP", "none", "INPUT.FORMAT", "BGR"]
SEM_SEG_IDENTITY = ["INPUT.SEM_SEG.RESIZE_RATIO_RANGE", "(1.0, 1.0)", "INPUT.CROP.ENABLED", "False",
                    "INPUT.SEM_SEG.FLIP_PROB", "0.0", "INPUT.SEM_SEG.PHOTOMETRIC_DISTORTION", "False",
                    "INPUT.FORMAT", "BGR"]
PALETTE = colormap(rgb=True, maximum=255)
# the sample configs on the synthetic sets (128x96 images), without the ImageNet weights file
DET_OPTS = ["MODEL.MOBILENET_V2.WEIGHTS", "", "DATASETS.TRAIN", "('synthetic_det_train',)",
            "DATASETS.TEST", "('synthetic_det_val',)"]
SEG_OPTS = ["MODEL.MOBILENET_V2.WEIGHTS", "", "DATASETS.TRAIN", "('synthetic_sem_seg_train',)",
            "DATASETS.TEST", "('synthetic_sem_seg_val',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3",
            "INPUT.SEM_SEG.RESIZE_SCALE", "(256, 192)", "INPUT.CROP.SIZE", "(64, 64)",
            "INPUT.SEM_SEG.TEST_RESIZE_SCALE", "(256, 128)"]


@pytest.fixture(scope="module")
def tool():
    return load_tool("visualize_data")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    register_synthetic_datasets(str(root))
    return root


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the configs' relative paths resolve from the checkout


def visualize(tool, out, config, source, *opts, n=2, split="train"):
    """Run the tool; {image file stem: drawn (H, W, 3) uint8} of the PNGs it wrote (asserted to be
    exactly the PNGs in ``out``)."""
    paths = tool.main(["--config-file", config, "--source", source, "--output-dir", str(out),
                       "--num-images", str(n), "--split", split, *opts])
    assert sorted(paths) == sorted(str(p) for p in out.glob("*.png"))
    return {os.path.basename(p)[4:-4]: np.asarray(Image.open(p).convert("RGB")) for p in paths}


def records(name):
    return {os.path.splitext(os.path.basename(d["file_name"]))[0]: d for d in DatasetCatalog.get(name)}


def raw_image(d):
    return np.asarray(Image.open(d["file_name"]).convert("RGB")).astype(np.int16)


def assert_boxes_drawn(picture, d):
    """Every box outline of ``d`` changes the picture along its edges; pixels 12 px or more away
    from every box are the image's own (but for the few under a class-name label that sticks out)."""
    diff = np.abs(picture.astype(np.int16) - raw_image(d)).max(axis=2)
    far = np.ones(diff.shape, bool)
    for anno in d["annotations"]:
        x0, y0, x1, y1 = np.round(BoxMode.convert(anno["bbox"], anno["bbox_mode"], BoxMode.XYXY_ABS)).astype(int)
        x0, y0, x1, y1 = max(x0, 1), max(y0, 1), min(x1, diff.shape[1] - 2), min(y1, diff.shape[0] - 2)
        left_edge = diff[y0:y1, x0 - 1:x0 + 2].max(axis=1)
        assert np.median(left_edge) > 20, (d["file_name"], anno["bbox"])
        far[max(y0 - 12, 0):y1 + 12, max(x0 - 12, 0):x1 + 12] = False
    assert far.sum() > 1000 and np.mean(diff[far] <= 2) > 0.95


def test_detection_annotation_and_dataloader(tool, tmp_path, data):
    train = records("synthetic_det_train")
    drawn = visualize(tool, tmp_path / "annotation", TREES, "annotation", *DET_OPTS)
    assert list(drawn) == list(train)[:2]
    for stem, picture in drawn.items():
        d = train[stem]
        assert picture.shape == (d["height"], d["width"], 3) == (96, 128, 3)
        assert_boxes_drawn(picture, d)

    drawn = visualize(tool, tmp_path / "dataloader", TREES, "dataloader", *DET_OPTS,
                      "INPUT.MIN_SIZE_TRAIN", "(64, 96, 128)")
    assert len(drawn) == 2 and set(drawn) <= set(train)
    for picture in drawn.values():  # ResizeShortestEdge to one of MIN_SIZE_TRAIN (images are 128x96)
        assert picture.shape[:2] in ((64, 85), (96, 128), (128, 171))


def test_detection_dataloader_with_identity_augmentation_draws_the_annotation(tool, tmp_path, data):
    val = [*DET_OPTS, "DATASETS.TRAIN", "('synthetic_det_val',)"]
    expected = visualize(tool, tmp_path / "annotation", TREES, "annotation", *val, n=20)
    assert len(expected) == len(records("synthetic_det_val"))
    drawn = visualize(tool, tmp_path / "dataloader", TREES, "dataloader", *val, *TREES_IDENTITY,
                      "INPUT.MIN_SIZE_TRAIN", "(96,)")
    assert_same_pictures(drawn, expected)


def assert_same_pictures(drawn, expected):
    """Two images drawn by the tool, each picture in ``drawn`` equal to the one of the same stem in
    ``expected`` (mean per-pixel max-channel difference under 0.5: JPEG-free, rounding only)."""
    assert len(drawn) == 2
    for stem, picture in drawn.items():
        assert picture.shape == expected[stem].shape
        assert np.abs(picture.astype(np.int16) - expected[stem]).max(axis=2).mean() < 0.5


def label_colour_check(picture, image, label, colours, alpha=0.5, ignore=None):
    """For each class k in ``label`` (H, W) (but ``ignore``): the median drawn colour of its pixels
    away from the class's border is the blend (1 - alpha) * image + alpha * colours[k], within 6 levels."""
    for k in np.unique(label[label != ignore]):
        inside = label == k
        for axis in (0, 1):  # erode by 8 px: the outline is drawn on the border
            for shift in range(-8, 9):
                inside &= np.roll(label == k, shift, axis=axis)
        expected = (1 - alpha) * image[inside] + alpha * np.asarray(colours[k])
        assert np.median(np.abs(picture[inside].astype(float) - expected).max(axis=1)) <= 6, k


def test_sem_seg_annotation_and_dataloader(tool, tmp_path, data):
    """The synthetic labels have no stuff_colors (detectron2's palette) and an ignored (255) top
    border, drawn black."""
    train, val = records("synthetic_sem_seg_train"), records("synthetic_sem_seg_val")
    drawn = visualize(tool, tmp_path / "annotation", STREET, "annotation", *SEG_OPTS)
    assert list(drawn) == list(train)[:2]
    for stem, picture in drawn.items():
        d = train[stem]
        assert picture.shape == (d["height"], d["width"], 3)
        label = np.asarray(Image.open(d["sem_seg_file_name"]))
        ignored = label == 255
        assert ignored.any() and (picture[ignored] == 0).all()
        assert set(np.unique(label[~ignored])) == {0, 1, 2}
        # the background's tint; at 128x96 the class names drawn in the small rectangles and disks
        # cover much of them: all three classes are checked on the 8x identity loader below
        label_colour_check(picture, raw_image(d), np.where(label == 0, 0, 255), PALETTE, ignore=255)

    drawn = visualize(tool, tmp_path / "dataloader", STREET, "dataloader", *SEG_OPTS)
    assert len(drawn) == 2 and set(drawn) <= set(train)
    assert all(picture.shape == (64, 64, 3) for picture in drawn.values())  # INPUT.CROP.SIZE

    # the test loader: DATASETS.TEST in order, keep-ratio resized into TEST_RESIZE_SCALE, no labels drawn
    test = visualize(tool, tmp_path / "test", STREET, "dataloader", *SEG_OPTS, split="test")
    assert list(test) == list(val)[:2]
    assert all(picture.shape == (128, 171, 3) for picture in test.values())  # 128x96 into (256, 128)
    test = visualize(tool, tmp_path / "test_identity", STREET, "dataloader", *SEG_OPTS,
                     "INPUT.SEM_SEG.TEST_RESIZE_SCALE", "(128, 96)", split="test")
    for stem, picture in test.items():
        assert np.abs(picture.astype(np.int16) - raw_image(val[stem])).max(axis=2).mean() < 0.5
        assert np.abs(picture.astype(np.int16) - raw_image(train[stem])).max(axis=2).mean() > 10

    expected = visualize(tool, tmp_path / "annotation_all", STREET, "annotation", *SEG_OPTS, n=8)
    drawn = visualize(tool, tmp_path / "identity", STREET, "dataloader", *SEG_OPTS, *SEM_SEG_IDENTITY,
                      "INPUT.SEM_SEG.RESIZE_SCALE", "(128, 96)")
    assert_same_pictures(drawn, expected)
    for picture in drawn.values():
        assert (picture[:2] == 0).all()  # the ignored border, black after the mapper too

    # the identity loader at 8x (the class names small in every region): every class tinted over the
    # resized image (as the test loader gives it, unlabelled), ignore pixels black
    big = [*SEG_OPTS, *SEM_SEG_IDENTITY, "INPUT.SEM_SEG.RESIZE_SCALE", "(1024, 768)",
           "INPUT.SEM_SEG.TEST_RESIZE_SCALE", "(1024, 768)", "DATASETS.TEST", "('synthetic_sem_seg_train',)"]
    drawn = visualize(tool, tmp_path / "identity_8x", STREET, "dataloader", *big)
    resized = visualize(tool, tmp_path / "test_8x", STREET, "dataloader", *big, n=8, split="test")
    assert len(drawn) == 2
    for stem, picture in drawn.items():
        assert picture.shape == resized[stem].shape == (768, 1024, 3)
        label = np.asarray(Image.open(train[stem]["sem_seg_file_name"])).repeat(8, axis=0).repeat(8, axis=1)
        assert (picture[label == 255] == 0).all()
        assert set(np.unique(label)) == {0, 1, 2, 255}
        label_colour_check(picture, resized[stem], label, PALETTE, ignore=255)


def test_reduce_zero_label_and_ignore_pixels(tool, tmp_path):
    """Label file value 0 is ignored (black), k is class k-1 (in detectron2's palette colour, as the
    dataset has no stuff_colors), in both sources."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, (96, 128, 3), dtype=np.uint8)
    label = np.zeros((96, 128), np.uint8)  # left: unlabelled (0), middle: class 0, right: class 1
    label[:, 40:84], label[:, 84:] = 1, 2
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    Image.fromarray(label).save(tmp_path / "labels" / "a.png")
    config = tmp_path / "folder.yaml"
    config.write_text(f"""_BASE_: "{STREET}"
MODEL: {{SEM_SEG_HEAD: {{NUM_CLASSES: 2}}}}
DATASETS:
  DECLARE:
    tiny_train: {{TYPE: "sem_seg_folder", IMAGE_ROOT: "{tmp_path / 'images'}", LABEL_ROOT: "{tmp_path / 'labels'}",
                  CLASSES: ["road", "sky"], REDUCE_ZERO_LABEL: True}}
  TRAIN: ("tiny_train",)
""")
    identity = [*SEM_SEG_IDENTITY, "INPUT.SEM_SEG.RESIZE_SCALE", "(128, 96)"]
    for source in ("annotation", "dataloader"):
        (picture,) = visualize(tool, tmp_path / source, str(config), source, *identity, n=1).values()
        assert picture.shape == image.shape
        assert (picture[:, :36] == 0).all(), source
        label_colour_check(picture[:, 40:], image[:, 40:], label[:, 40:] - 1, PALETTE)


@pytest.mark.parametrize("source, mask_format", [("annotation", "polygon"), ("dataloader", "polygon"),
                                                 ("dataloader", "bitmask")])
def test_instance_masks(tool, tmp_path, source, mask_format):
    """A triangle polygon in its box: tinted inside the triangle, untouched in the box's other half."""
    (tmp_path / "images").mkdir()
    image = np.random.default_rng(0).integers(60, 200, (192, 256, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": 192, "width": 256}],
            "categories": [{"id": 1, "name": "roof"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 15000,
                             "bbox": [20, 20, 200, 150], "segmentation": [[20, 20, 220, 20, 20, 170]]}]}
    (tmp_path / "train.json").write_text(json.dumps(coco))
    config = tmp_path / "coco.yaml"
    config.write_text(f"""_BASE_: "{TREES}"
DATASETS:
  DECLARE:
    roofs_{source}_{mask_format}: {{TYPE: "coco_json", JSON: "{tmp_path / 'train.json'}",
                                    IMAGE_ROOT: "{tmp_path / 'images'}"}}
  TRAIN: ("roofs_{source}_{mask_format}",)
""")
    (picture,) = visualize(tool, tmp_path / "out", str(config), source, "MODEL.MASK_ON", "True",
                           "INPUT.MASK_FORMAT", mask_format, *TREES_IDENTITY, "INPUT.MIN_SIZE_TRAIN", "(192,)",
                           n=1).values()
    assert picture.shape == image.shape
    y, x = np.mgrid[:192, :256]
    diagonal = (x - 20) / 200 + (y - 20) / 150  # 1 on the triangle's long side
    inside = (x >= 28) & (y >= 28) & (diagonal <= 0.85)
    outside = (x <= 212) & (y <= 162) & (diagonal >= 1.15)
    blend = 0.5 * image[inside] + 0.5 * PALETTE[0]
    assert np.median(np.abs(picture[inside] - blend).max(axis=1)) <= 6
    assert np.median(np.abs(picture[outside].astype(np.int16) - image[outside]).max(axis=1)) <= 2
    assert np.median(np.abs(picture[30:160, 19:22].astype(np.int16) - image[30:160, 19:22]).max(axis=2)) > 20


def test_errors_are_one_clear_line(tool, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--config-file", TREES, "--source", "model", "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice: 'model'" in capsys.readouterr().err

    for split, key in (("train", "DATASETS.TRAIN"), ("test", "DATASETS.TEST")):
        with pytest.raises(SystemExit) as exit_info:
            tool.main(["--config-file", TREES, "--source", "annotation", "--output-dir", str(tmp_path),
                       "--split", split, key, "('no_such_set',)"])
        assert exit_info.value.code == 2
        one_error_line(capsys.readouterr().err, key, "'no_such_set'", "not registered")
    assert not list(tmp_path.glob("*.png"))
