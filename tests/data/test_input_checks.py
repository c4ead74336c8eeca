"""Input data checks: 16/32-bit grayscale, 1-channel, RGBA and palette images, label ids >= the class count,
negative-size boxes, empty datasets."""
import numpy as np
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from segdet.config import get_segdet_cfg
from segdet.data.checks import checked_dataset_dicts, dataset_dicts_for_testing, dataset_dicts_for_training
from segdet.data.io import CorruptImageError, high_bit_depth_to_8bit, read_image_checked
from segdet.data.mappers import DetectionDatasetMapper, SemSegDatasetMapper
from segdet.data.mappers.detection_mapper import check_boxes
from segdet.utils.errors import ConfigError


def _gradient16(tmp_path, name="g16.png"):
    """A 16-bit PNG whose columns run 0, 257, ..., 65535 (value = 257 * column)."""
    values = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16)
    array = np.tile(values, (4, 1))
    path = tmp_path / name
    Image.fromarray(array).save(path)
    assert Image.open(path).mode.startswith("I")  # the file really is 16-bit
    return str(path), array


# ----------------------------------------------------------------- 16/32-bit images --------

@pytest.mark.parametrize("fmt", ["RGB", "BGR", "L"])
def test_16bit_grayscale_png_is_scaled_by_its_range_not_clipped(tmp_path, fmt):
    path, array = _gradient16(tmp_path)
    image = read_image_checked(path, format=fmt)
    assert image.dtype == np.uint8 and image.shape == (4, 256, 1 if fmt == "L" else 3)
    expected = (array >> 8).astype(np.uint8)  # 257 * c >> 8 == c
    assert len(np.unique(image)) == 256  # PIL alone gives all 255 but the first column
    for c in range(image.shape[2]):
        np.testing.assert_array_equal(image[:, :, c], expected)
    np.testing.assert_array_equal(expected[0], np.arange(256))


def test_16bit_tiff_and_32bit_integer_and_float_images(tmp_path):
    _, array = _gradient16(tmp_path)
    Image.fromarray(array).save(tmp_path / "g16.tif")
    np.testing.assert_array_equal(read_image_checked(str(tmp_path / "g16.tif"), "L")[:, :, 0], array >> 8)
    big = (array.astype(np.int64) << 15).astype(np.int32)  # 32-bit range: v >> 24
    Image.fromarray(big, mode="I").save(tmp_path / "g32.tif")
    np.testing.assert_array_equal(read_image_checked(str(tmp_path / "g32.tif"), "L")[:, :, 0], big >> 24)
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0, 2.0, -1.0]], dtype=np.float32), mode="F")
    np.testing.assert_array_equal(np.asarray(high_bit_depth_to_8bit(floats)), [[0, 128, 255, 255, 0]])


def test_8bit_images_are_read_as_before(tmp_path):
    from detectron2.data.detection_utils import read_image

    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    for fmt in ("RGB", "BGR", "L"):
        np.testing.assert_array_equal(read_image_checked(str(tmp_path / "rgb.png"), fmt),
                                      read_image(str(tmp_path / "rgb.png"), fmt))


def test_1channel_rgba_and_palette_images_are_read_as_rgb(tmp_path):
    """The documented rule: 1-channel -> the value in R, G and B; RGBA -> RGB with the alpha
    dropped (not blended); palette -> the palette's colours."""
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0  # a transparent pixel keeps its colour
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    palette = np.array([[10, 20, 30], [200, 100, 0], [0, 255, 128]], dtype=np.uint8)
    indices = rng.integers(0, 3, (5, 7), dtype=np.uint8)
    pal = Image.fromarray(indices, mode="P")
    pal.putpalette(palette.ravel().tolist())
    pal.save(tmp_path / "pal.png")

    np.testing.assert_array_equal(read_image_checked(str(tmp_path / "gray.png"), "RGB"), np.stack([gray] * 3, axis=2))
    np.testing.assert_array_equal(read_image_checked(str(tmp_path / "rgba.png"), "RGB"), rgba[:, :, :3])
    np.testing.assert_array_equal(read_image_checked(str(tmp_path / "rgba.png"), "BGR"), rgba[:, :, 2::-1])
    np.testing.assert_array_equal(read_image_checked(str(tmp_path / "pal.png"), "RGB"), palette[indices])


def test_detection_mapper_reads_16bit_images(tmp_path):
    path, array = _gradient16(tmp_path)
    cfg = get_segdet_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 0  # no resize
    out = DetectionDatasetMapper(cfg, is_train=False)({"file_name": path, "image_id": 0})
    np.testing.assert_array_equal(out["image"][0].numpy(), array >> 8)


# ----------------------------------------------------------------- label ids ---------------

def _sem_seg_dict(tmp_path, label):
    Image.fromarray(np.zeros(label.shape + (3,), np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(label.astype(np.uint8), mode="L").save(tmp_path / "lab.png")
    return {"file_name": str(tmp_path / "img.png"), "sem_seg_file_name": str(tmp_path / "lab.png")}


def _sem_seg_cfg(num_classes):
    cfg = get_segdet_cfg()
    cfg.DATASETS.TRAIN = ("segdet_test_input_checks",)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    s = cfg.INPUT.SEM_SEG
    s.RESIZE_SCALE, s.RESIZE_RATIO_RANGE = (16, 8), (1.0, 1.0)
    cfg.INPUT.CROP.ENABLED, cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE = True, "absolute", (8, 16)
    return cfg


def test_label_id_not_below_the_class_count_names_file_values_and_count(tmp_path):
    label = np.zeros((8, 16), np.uint8)
    label[0, :4] = [1, 2, 7, 255]  # 2 and 7 are bad for 2 classes; 255 is the ignore value
    d = _sem_seg_dict(tmp_path, label)
    with pytest.raises(CorruptImageError) as err:
        SemSegDatasetMapper(_sem_seg_cfg(2), is_train=True)(d)
    message = str(err.value)
    assert str(tmp_path / "lab.png") in message and "2, 7" in message and "NUM_CLASSES=2" in message
    assert "255" in message  # names the ignore value as allowed
    out = SemSegDatasetMapper(_sem_seg_cfg(8), is_train=True)(d)  # 8 classes: all ids valid
    assert set(np.unique(out["sem_seg"].numpy())) <= {0, 1, 2, 7, 255}


def test_label_check_after_reduce_zero_label_reports_file_values(tmp_path):
    label = np.zeros((8, 16), np.uint8)
    label[0, :3] = [1, 3, 4]  # reduce_zero_label: 3 -> 2, 4 -> 3; with 3 classes only 4 is bad
    d = dict(_sem_seg_dict(tmp_path, label), reduce_zero_label=True)
    with pytest.raises(CorruptImageError, match=r"value\(s\) 4; expected class ids 1\.\.3"):
        SemSegDatasetMapper(_sem_seg_cfg(3), is_train=True)(d)


# ----------------------------------------------------------------- boxes -------------------

def _det_dict(tmp_path, bbox, mode):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "det.png")
    return {"file_name": str(tmp_path / "det.png"), "height": 20, "width": 30, "image_id": 1,
            "annotations": [{"bbox": [1, 1, 4, 4], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0},
                            {"id": 42, "bbox": bbox, "bbox_mode": mode, "category_id": 0}]}


@pytest.mark.parametrize("bbox,mode", [
    ([10, 5, -4, 3], BoxMode.XYWH_ABS), ([10, 5, 4, -3], BoxMode.XYWH_ABS),
    ([10, 5, 6, 9], BoxMode.XYXY_ABS), ([10, 5, float("nan"), 9], BoxMode.XYXY_ABS),
])
def test_negative_size_box_names_image_and_annotation(tmp_path, bbox, mode):
    d = _det_dict(tmp_path, bbox, mode)
    mapper = DetectionDatasetMapper(get_segdet_cfg(), is_train=True)
    with pytest.raises(CorruptImageError) as err:
        mapper(d)
    message = str(err.value)
    assert str(tmp_path / "det.png") in message and "annotation 1 (id 42)" in message and mode.name in message


def test_zero_area_box_is_filtered_as_detectron2_does(tmp_path):
    cfg = get_segdet_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.RANDOM_FLIP = (20,), "none"
    out = DetectionDatasetMapper(cfg, is_train=True)(_det_dict(tmp_path, [10, 5, 0, 3], BoxMode.XYWH_ABS))
    assert len(out["instances"]) == 1  # the valid box; the zero-width one is dropped
    check_boxes({"annotations": [{"bbox": [5, 5, 1, 1], "bbox_mode": BoxMode.XYXY_ABS, "iscrowd": 1}]})


# ----------------------------------------------------------------- empty datasets ----------

def _register(name, dicts):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)


def test_empty_dataset_is_a_config_error_naming_it():
    _register("segdet_test_empty", [])
    cfg = get_segdet_cfg()
    cfg.DATASETS.TRAIN = ("segdet_test_empty",)
    with pytest.raises(ConfigError, match=r"^DATASETS\.TRAIN 'segdet_test_empty' has no images/annotations"):
        dataset_dicts_for_training(cfg)
    cfg.DATASETS.TEST = ("segdet_test_empty",)
    with pytest.raises(ConfigError, match=r"^DATASETS\.TEST 'segdet_test_empty'"):
        dataset_dicts_for_testing(cfg, "segdet_test_empty")
    with pytest.raises(ConfigError, match=r"DATASETS\.TRAIN is empty"):
        checked_dataset_dicts((), "DATASETS.TRAIN")


def test_dataset_empty_after_filtering_says_why():
    crowd = [{"file_name": "a.png", "image_id": 0, "height": 4, "width": 4,
              "annotations": [{"bbox": [0, 0, 2, 2], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 1}]}]
    _register("segdet_test_only_crowd", crowd)
    cfg = get_segdet_cfg()
    cfg.DATASETS.TRAIN = ("segdet_test_only_crowd",)
    with pytest.raises(ConfigError, match="FILTER_EMPTY_ANNOTATIONS"):
        dataset_dicts_for_training(cfg)
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    assert len(dataset_dicts_for_training(cfg)) == 1
