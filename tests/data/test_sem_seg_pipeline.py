"""Semantic-segmentation data pipeline: label/image reading, mmseg-style transforms, the mapper
and the lazy ADE20K registration."""

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T

import segdet.data.datasets.ade20k  # noqa: F401  (registers ADE20K even before datasets/__init__)
from segdet.config import get_segdet_cfg
from segdet.data.io import CorruptImageError, read_image_checked, read_sem_seg_label
from segdet.data.mappers import SemSegDatasetMapper
from segdet.data.transforms import (
    PhotometricDistortion,
    PhotometricParams,
    PhotometricTransform,
    RandomCropCatMax,
    ResizeByRatio,
    keep_ratio_size,
    max_class_ratio,
)


def _save_label(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode="L").save(path)
    return str(path)


# ------------------------------------------------------------------ io ----------------------
def test_reduce_zero_label_mapping(tmp_path):
    path = _save_label(tmp_path / "l.png", [[0, 1, 2], [150, 255, 3]])
    out = read_sem_seg_label(path, reduce_zero_label=True)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[255, 0, 1], [149, 255, 2]])
    np.testing.assert_array_equal(read_sem_seg_label(path), [[0, 1, 2], [150, 255, 3]])


def test_label_must_be_single_channel(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path)
    with pytest.raises(CorruptImageError, match="rgb.png.*single-channel"):
        read_sem_seg_label(str(path))


def test_corrupt_and_missing_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg \x00\x01\x02" * 10)
    with pytest.raises(CorruptImageError, match="broken.jpg") as info:
        read_image_checked(str(bad), "RGB")
    assert isinstance(info.value, ValueError)
    assert "cannot identify image file" in str(info.value)  # the decoder's reason
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        read_image_checked(str(tmp_path / "nope.jpg"), "RGB")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_sem_seg_label(str(tmp_path / "nope.png"))


# ------------------------------------------------------------------ resize ------------------
@pytest.mark.parametrize("hw, ratio, expected", [
    ((375, 500), 1.0, (512, 683)),    # f = min(2048/500, 512/375) = 1.36533: 682.67 -> 683
    ((375, 500), 0.5, (256, 341)),    # target (1024, 256): f = 256/375
    ((375, 500), 2.0, (1024, 1365)),  # target (4096, 1024): f = 1024/375
    ((100, 1000), 1.0, (205, 2048)),  # long side binds: f = 2048/1000, 204.8 -> 205
    ((100, 1000), 0.7, (143, 1433)),  # target int(1433.6) = 1433 (mmseg truncates), not 1434
])
def test_resize_by_ratio_output_size(hw, ratio, expected):
    assert ResizeByRatio((2048, 512), (0.5, 2.0)).output_size(*hw, ratio) == expected


def test_keep_ratio_size_is_order_free():
    assert keep_ratio_size(375, 500, (512, 2048)) == keep_ratio_size(375, 500, (2048, 512)) == (512, 683)


def test_resize_by_ratio_seeded_and_applied():
    image = np.zeros((30, 40, 3), np.uint8)
    label = np.zeros((30, 40), np.uint8)
    aug = ResizeByRatio((80, 20), (0.5, 2.0))
    np.random.seed(3)
    ratio = np.random.random_sample() * 1.5 + 0.5
    np.random.seed(3)
    inp = T.AugInput(image, sem_seg=label)
    aug(inp)
    assert inp.image.shape[:2] == inp.sem_seg.shape == aug.output_size(30, 40, ratio)
    assert inp.image.dtype == np.uint8 and inp.sem_seg.dtype == np.uint8
    # test-time resize (no ratio): 30x40 into (80, 20) -> f = 20/30
    assert ResizeByRatio((80, 20), None).get_transform(image).apply_image(image).shape == (20, 27, 3)


def test_resize_label_is_nearest():
    label = np.array([[1, 2], [3, 4]], np.uint8)
    out = ResizeByRatio((8, 8), None).get_transform(label).apply_segmentation(label)
    np.testing.assert_array_equal(out, np.kron(label, np.ones((4, 4), np.uint8)))


# ------------------------------------------------------------------ cat-max crop ------------
def _crop_label():
    """64x64: columns 0..47 class 0, 48..63 class 1. A 32x32 crop at column x0 passes the 0.75
    check only for x0 in 25..32 (class 0 covers (48 - x0) / 32 < 0.75): 25 of 33 offsets fail."""
    label = np.zeros((64, 64), np.uint8)
    label[:, 48:] = 1
    label[:4, :4] = 255  # ignored pixels do not count
    return label


def _drawn_windows(seed, tries=10, margin=33):
    np.random.seed(seed)
    return [(np.random.randint(0, margin), np.random.randint(0, margin)) for _ in range(tries)]


def test_cat_max_crop_returns_first_passing_window():
    label = _crop_label()
    image = np.arange(64 * 64 * 3, dtype=np.int64).reshape(64, 64, 3).astype(np.float32)
    aug = RandomCropCatMax((32, 32), cat_max_ratio=0.75, ignore_label=255)
    naive_failures = passed = 0
    for seed in range(40):
        windows = _drawn_windows(seed)
        ratios = [max_class_ratio(label[y:y + 32, x:x + 32], 255) for y, x in windows]
        naive_failures += ratios[0] >= 0.75
        np.random.seed(seed)
        inp = T.AugInput(image.copy(), sem_seg=label.copy())
        tfm = aug(inp)
        assert inp.image.shape == (32, 32, 3) and inp.sem_seg.shape == (32, 32)
        y, x = tfm.y0, tfm.x0
        np.testing.assert_array_equal(inp.sem_seg, label[y:y + 32, x:x + 32])  # image/label aligned
        np.testing.assert_array_equal(inp.image, image[y:y + 32, x:x + 32])
        ok = [w for w, r in zip(windows, ratios) if r < 0.75]
        if ok:  # a drawn window passes: the first such one is returned
            assert (y, x) == ok[0]
            assert max_class_ratio(inp.sem_seg, 255) < 0.75
            passed += 1
        else:  # none passes: the least dominated of the drawn windows
            assert (y, x) == windows[int(np.argmin(ratios))]
    assert naive_failures >= 25  # most single draws violate the ratio...
    assert passed >= 36  # ...yet almost every returned crop satisfies it


def test_cat_max_crop_smaller_image_and_disabled_check():
    label = np.full((20, 10), 3, np.uint8)  # one class only: no crop can pass
    image = np.zeros((20, 10, 3), np.uint8)
    inp = T.AugInput(image, sem_seg=label)
    RandomCropCatMax((32, 8), cat_max_ratio=0.75)(inp)
    assert inp.image.shape == (20, 8, 3) and inp.sem_seg.shape == (20, 8)  # clipped to the image
    inp = T.AugInput(np.zeros((20, 10, 3), np.uint8))
    RandomCropCatMax((8, 8), cat_max_ratio=1.0)(inp)  # no label needed when disabled
    assert inp.image.shape == (8, 8, 3)
    with pytest.raises(ValueError, match="needs the label"):
        RandomCropCatMax((8, 8), cat_max_ratio=0.75)(T.AugInput(np.zeros((20, 10, 3), np.uint8)))


# ------------------------------------------------------------------ photometric -------------
def test_photometric_exact_values_uint8():
    img = np.array([[[250, 100, 0]]], np.uint8)
    bright = PhotometricTransform(PhotometricParams(brightness_delta=10.7), "RGB").apply_image(img)
    np.testing.assert_array_equal(bright, [[[255, 110, 10]]])  # clipped, truncated (110.7 -> 110)
    contrast = PhotometricTransform(PhotometricParams(contrast_alpha=0.5), "RGB").apply_image(img)
    np.testing.assert_array_equal(contrast, [[[125, 50, 0]]])
    gray = PhotometricTransform(PhotometricParams(saturation_alpha=0.0), "RGB").apply_image(
        np.array([[[200, 100, 50]]], np.uint8))
    np.testing.assert_array_equal(gray, [[[200, 200, 200]]])
    # hue +60 (OpenCV units = 120 degrees): red -> green in RGB; the format matters
    red_rgb = np.array([[[255, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(
        PhotometricTransform(PhotometricParams(hue_delta=60), "RGB").apply_image(red_rgb), [[[0, 255, 0]]])
    red_bgr = red_rgb[..., ::-1].copy()
    np.testing.assert_array_equal(
        PhotometricTransform(PhotometricParams(hue_delta=60), "BGR").apply_image(red_bgr), [[[0, 255, 0]]])


def test_photometric_order_contrast_first_or_last():
    # contrast x2 clips (250, 100, 100) to (255, 200, 200) before saturation x2 when first,
    # (S 55 -> 110: (255, 145, 145)); when last, saturation saturates red first: (250, 0, 0) x2
    img = np.array([[[250, 100, 100]]], np.uint8)
    first = PhotometricParams(contrast_alpha=2.0, contrast_first=True, saturation_alpha=2.0)
    last = PhotometricParams(contrast_alpha=2.0, contrast_first=False, saturation_alpha=2.0)
    np.testing.assert_array_equal(PhotometricTransform(first).apply_image(img), [[[255, 145, 145]]])
    np.testing.assert_array_equal(PhotometricTransform(last).apply_image(img), [[[255, 0, 0]]])
    # brightness always comes first: (100 - 80) * 1.5 = 30, not 100 * 1.5 - 80 = 70
    img = np.array([[[100, 100, 100]]], np.uint8)
    params = PhotometricParams(brightness_delta=-80.0, contrast_alpha=1.5, contrast_first=True)
    assert PhotometricTransform(params).apply_image(img)[0, 0, 0] == 30


def test_photometric_keeps_labels_and_dtype_and_is_seeded():
    rng = np.random.RandomState(0)
    image = rng.randint(0, 256, size=(6, 7, 3)).astype(np.uint8)
    label = rng.randint(0, 5, size=(6, 7)).astype(np.uint8)
    aug = PhotometricDistortion(image_format="RGB")
    outputs = []
    for seed in (0, 0, 1, 2, 3):
        np.random.seed(seed)
        inp = T.AugInput(image.copy(), sem_seg=label.copy())
        aug(inp)
        assert inp.image.dtype == np.uint8 and inp.image.shape == image.shape
        np.testing.assert_array_equal(inp.sem_seg, label)
        outputs.append(inp.image)
    np.testing.assert_array_equal(outputs[0], outputs[1])  # same seed, same result
    assert any(not np.array_equal(outputs[0], o) for o in outputs[2:])
    np.random.seed(0)
    floats = aug.get_transform(image).apply_image(image.astype(np.float32))
    assert floats.dtype == np.float32 and floats.min() >= 0 and floats.max() <= 255


def test_photometric_parameter_ranges():
    aug = PhotometricDistortion()
    np.random.seed(0)
    draws = [aug.sample_params() for _ in range(400)]
    b = [p.brightness_delta for p in draws if p.brightness_delta is not None]
    h = [p.hue_delta for p in draws if p.hue_delta is not None]
    c = [p.contrast_alpha for p in draws if p.contrast_alpha is not None]
    assert 150 < len(b) < 250 and 150 < len(h) < 250  # each step with probability 1/2
    assert -32 <= min(b) and max(b) <= 32 and 0.5 <= min(c) and max(c) <= 1.5
    assert min(h) == -18 and max(h) == 18


# ------------------------------------------------------------------ mapper ------------------
def _synthetic_dict(tmp_path):
    """40x60 PNG image: left half black over label 1, right half white over label 2; a 4x4
    unlabelled (0) corner."""
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, 30:] = 255
    label = np.ones((40, 60), np.uint8)
    label[:, 30:] = 2
    label[:4, :4] = 0
    Image.fromarray(image).save(tmp_path / "img.png")
    _save_label(tmp_path / "lab.png", label)
    return {"file_name": str(tmp_path / "img.png"), "sem_seg_file_name": str(tmp_path / "lab.png"),
            "height": 40, "width": 60, "image_id": 7, "reduce_zero_label": True}


def _cfg(crop_size=(24, 24), single_category_max_area=0.75, **sem_seg):
    cfg = get_segdet_cfg()
    cfg.DATASETS.TRAIN = ("segdet_test_mapper_ds",)
    cfg.DATASETS.TEST = ("segdet_test_mapper_ds",)
    c = cfg.INPUT.CROP
    c.ENABLED, c.TYPE, c.SIZE, c.SINGLE_CATEGORY_MAX_AREA = True, "absolute", crop_size, single_category_max_area
    s = cfg.INPUT.SEM_SEG
    s.RESIZE_SCALE, s.RESIZE_RATIO_RANGE, s.TEST_RESIZE_SCALE = (64, 32), (1.0, 1.0), (64, 32)
    for k, v in sem_seg.items():
        setattr(s, k, v)
    return cfg


def test_mapper_train_output(tmp_path):
    d = _synthetic_dict(tmp_path)
    mapper = SemSegDatasetMapper(_cfg(FLIP_PROB=0.5), is_train=True)
    np.random.seed(0)
    out = mapper(d)
    # resize 40x60 into (64, 32): f = min(64/60, 32/40) = 0.8 -> 32x48, then a 24x24 crop
    assert out["image"].shape == (3, 24, 24) and out["image"].dtype == torch.uint8
    assert out["sem_seg"].shape == (24, 24) and out["sem_seg"].dtype == torch.int64
    assert (out["height"], out["width"], out["image_id"]) == (40, 60, 7)
    assert out["file_name"] == d["file_name"]
    assert set(np.unique(out["sem_seg"].numpy())) <= {0, 1, 255}
    assert "image" not in d  # input dict untouched


def test_mapper_label_and_image_stay_aligned_through_resize_and_flip(tmp_path):
    d = _synthetic_dict(tmp_path)
    cfg = _cfg(FLIP_PROB=1.0, PHOTOMETRIC_DISTORTION=False, crop_size=(32, 48))  # crop = image
    out = SemSegDatasetMapper(cfg, is_train=True)(d)
    sem, image = out["sem_seg"].numpy(), out["image"].numpy()
    # nearest 60 -> 48 columns: new column c reads old floor(1.25 c): label 2 (-> 1) from c = 24;
    # flipped, class 1 (white) fills columns 0..23 and class 0 (black) 24..47
    assert (sem[:, :24] == 1).all() and (sem[4:, 24:] == 0).all()
    # the unlabelled 4x4 top-left corner (0 -> 255) becomes rows 0..3, columns 44..47
    assert (sem[:4, 44:] == 255).all() and sem[4, 44] == 0 and sem[3, 43] == 0
    # bilinear image: pure white left of the seam, pure black right of it
    assert (image[:, :, :24] == 255).all() and (image[:, :, 25:] == 0).all()


def test_mapper_is_seeded_with_full_pipeline(tmp_path):
    d = _synthetic_dict(tmp_path)
    mapper = SemSegDatasetMapper(_cfg(RESIZE_RATIO_RANGE=(0.5, 2.0)), is_train=True)
    np.random.seed(5)
    a = mapper(d)
    np.random.seed(5)
    b = mapper(d)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["sem_seg"], b["sem_seg"])
    assert a["image"].shape[1:] == a["sem_seg"].shape


def test_mapper_test_output_keeps_original_size(tmp_path):
    d = _synthetic_dict(tmp_path)
    out = SemSegDatasetMapper(_cfg(), is_train=False)(d)
    assert out["image"].shape == (3, 32, 48)
    assert "sem_seg" not in out and out["sem_seg_file_name"] == d["sem_seg_file_name"]
    assert (out["height"], out["width"]) == (40, 60)


def test_mapper_reduce_zero_label_falls_back_to_metadata(tmp_path):
    d = _synthetic_dict(tmp_path)
    del d["reduce_zero_label"]
    MetadataCatalog.get("segdet_test_mapper_meta").set(reduce_zero_label=True, ignore_label=255)
    cfg = _cfg(FLIP_PROB=0.0, PHOTOMETRIC_DISTORTION=False, single_category_max_area=1.0,
               crop_size=(64, 64))
    cfg.DATASETS.TRAIN = ("segdet_test_mapper_meta",)
    sem = SemSegDatasetMapper(cfg, is_train=True)(d)["sem_seg"].numpy()
    assert sem.shape == (32, 48)
    assert sem[0, 0] == 255 and sem[-1, 0] == 0 and sem[-1, -1] == 1
    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 254
    with pytest.raises(ValueError, match="ignore_label=255.*IGNORE_VALUE=254"):
        SemSegDatasetMapper(cfg, is_train=True)


def test_mapper_size_mismatch_names_files(tmp_path):
    d = _synthetic_dict(tmp_path)
    _save_label(tmp_path / "lab.png", np.zeros((10, 10)))
    with pytest.raises(ValueError, match="lab.png"):
        SemSegDatasetMapper(_cfg(), is_train=True)(d)


# ------------------------------------------------------------------ ADE20K ------------------
def test_ade20k_registered_lazily_with_metadata(monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "nowhere"))
    meta = MetadataCatalog.get("ade20k_150_sem_seg_val")
    assert len(meta.stuff_classes) == 150 and meta.stuff_classes[0] == "wall"
    assert meta.stuff_classes[149] == "flag"
    assert (meta.ignore_label, meta.reduce_zero_label, meta.evaluator_type) == (255, True, "sem_seg")
    assert "ade20k_150_sem_seg_train" in DatasetCatalog.list()
    with pytest.raises(FileNotFoundError, match=r"nowhere/ADEChallengeData2016/images/validation.*download"):
        DatasetCatalog.get("ade20k_150_sem_seg_val")


def test_ade20k_loader_on_official_layout(monkeypatch, tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    for sub in ("images/training", "annotations/training"):
        (root / sub).mkdir(parents=True)
    for stem in ("ADE_train_00000002", "ADE_train_00000001"):
        (root / "images/training" / f"{stem}.jpg").write_bytes(b"")
        (root / "annotations/training" / f"{stem}.png").write_bytes(b"")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    dicts = DatasetCatalog.get("ade20k_150_sem_seg_train")
    assert [d["image_id"] for d in dicts] == ["ADE_train_00000001", "ADE_train_00000002"]
    assert dicts[0]["sem_seg_file_name"] == str(root / "annotations/training/ADE_train_00000001.png")
    assert all(d["reduce_zero_label"] for d in dicts)
    (root / "images/training/ADE_train_00000003.jpg").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="ADE_train_00000003.png"):
        DatasetCatalog.get("ade20k_150_sem_seg_train")
