"""COCO-Stuff-164k and Pascal-Context-59: registration, label mapping on read (mapper and
evaluator alike), on synthetic files in the official layouts written in tmp_path."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

import segdet.data.datasets  # noqa: F401  (registers the sets)
from segdet.config import get_segdet_cfg
from segdet.data.datasets.coco_stuff import COCO_STUFF_LABEL_MAP
from segdet.data.io import CorruptImageError, label_lookup_table, read_sem_seg_label
from segdet.data.mappers.sem_seg_mapper import SemSegDatasetMapper
from segdet.evaluation.sem_seg_evaluation import SegdetSemSegEvaluator

# Raw stuffthingmaps values (COCO id - 1) -> class id, read off mmseg's clsID_to_trID
# (tools/dataset_converters/coco_stuff164k.py); 11, 25, 90 are unused ids, 255 unlabelled.
COCO_CASES = {0: 0, 10: 10, 12: 11, 24: 23, 26: 24, 45: 40, 66: 60, 69: 61, 83: 73, 91: 80,
              181: 170, 11: 255, 25: 255, 90: 255, 255: 255}
COCO_VALUES = np.array(list(COCO_CASES), dtype=np.uint8)


def _write(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def _coco_layout(root, split="val2017", stems=("000000000139", "000000000285")):
    label = np.resize(COCO_VALUES, (3, 5))  # every case, in a 3x5 map
    for s in stems:
        _write(os.path.join(root, "coco", split, f"{s}.jpg"), np.full((3, 5, 3), 100, np.uint8))
        _write(os.path.join(root, "coco", "stuffthingmaps", split, f"{s}.png"), label)
    return label


def _pascal_layout(root, split="val", stems=("2008_000002", "2008_000003")):
    voc = os.path.join(root, "VOCdevkit", "VOC2010")
    label = np.array([[0, 1, 2, 59], [30, 59, 0, 1]], dtype=np.uint8)
    for s in stems:
        _write(os.path.join(voc, "JPEGImages", f"{s}.jpg"), np.full((2, 4, 3), 50, np.uint8))
        _write(os.path.join(voc, "SegmentationClassContext", f"{s}.png"), label)
    os.makedirs(os.path.join(voc, "ImageSets", "SegmentationContext"), exist_ok=True)
    with open(os.path.join(voc, "ImageSets", "SegmentationContext", f"{split}.txt"), "w") as f:
        f.write("\n".join(stems) + "\n")
    return label


def test_coco_stuff_label_map_is_mmseg_train_ids():
    assert len(COCO_STUFF_LABEL_MAP) == 171
    assert sorted(COCO_STUFF_LABEL_MAP.values()) == list(range(171))
    table = label_lookup_table(COCO_STUFF_LABEL_MAP, 255)
    assert table.shape == (256,) and table.dtype == np.uint8
    assert {v: int(table[v]) for v in COCO_CASES} == COCO_CASES
    assert int((table != 255).sum()) == 171


def test_registered_class_counts():
    coco = MetadataCatalog.get("coco_stuff_164k_sem_seg_val")
    pascal = MetadataCatalog.get("pascal_context_59_sem_seg_train")
    assert len(coco.stuff_classes) == 171 and coco.stuff_classes[80] == "banner"
    assert len(pascal.stuff_classes) == 59 and pascal.stuff_classes[0] == "aeroplane"
    assert pascal.reduce_zero_label and not getattr(coco, "reduce_zero_label", False)
    assert coco.evaluator_type == pascal.evaluator_type == "sem_seg"


def test_coco_stuff_loads_official_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    _coco_layout(str(tmp_path))
    dicts = DatasetCatalog.get("coco_stuff_164k_sem_seg_val")
    assert [d["image_id"] for d in dicts] == ["000000000139", "000000000285"]
    assert dicts[0]["sem_seg_file_name"] == str(tmp_path / "coco/stuffthingmaps/val2017/000000000139.png")
    with pytest.raises(FileNotFoundError, match="stuffthingmaps"):
        DatasetCatalog.get("coco_stuff_164k_sem_seg_train")  # no train2017 folders


def test_pascal_context_loads_split_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    _pascal_layout(str(tmp_path))
    dicts = DatasetCatalog.get("pascal_context_59_sem_seg_val")
    assert [d["image_id"] for d in dicts] == ["2008_000002", "2008_000003"]
    assert all(d["reduce_zero_label"] for d in dicts)
    os.remove(tmp_path / "VOCdevkit/VOC2010/SegmentationClassContext/2008_000003.png")
    with pytest.raises(FileNotFoundError, match="1 of the 2 files.*2008_000003.png"):
        DatasetCatalog.get("pascal_context_59_sem_seg_val")


def _cfg(*train_sets, num_classes=171):
    cfg = get_segdet_cfg()
    cfg.DATASETS.TRAIN = train_sets
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    return cfg


@pytest.mark.parametrize("name", ["coco_stuff_164k_sem_seg_val", "pascal_context_59_sem_seg_val"])
def test_mapper_and_evaluator_read_the_same_mapped_labels(name, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    if name.startswith("coco"):
        raw, k = _coco_layout(str(tmp_path)), 171
        expected = np.vectorize(COCO_CASES.get)(raw)
    else:
        raw, k = _pascal_layout(str(tmp_path)), 59
        expected = np.where(raw == 0, 255, raw.astype(np.int64) - 1)  # 0 -> ignore, 1..59 -> 0..58
    d = DatasetCatalog.get(name)[0]
    mapper = SemSegDatasetMapper(_cfg(name, num_classes=k), True, augmentations=[])  # no resize/crop
    sem_seg = mapper(d)["sem_seg"].numpy()
    np.testing.assert_array_equal(sem_seg, expected)

    # A prediction equal to the mapped label scores 100 mIoU; shifted by one class, 0.
    evaluator = SegdetSemSegEvaluator(name, distributed=False)
    assert evaluator._num_classes == k
    valid = expected != 255
    for shift, miou in ((0, 100.0), (1, 0.0)):
        evaluator.reset()
        pred = np.where(valid, (expected + shift) % k, 0)
        logits = torch.nn.functional.one_hot(torch.as_tensor(pred), k).permute(2, 0, 1).float()
        evaluator.process([d], [{"sem_seg": logits}])
        res = evaluator.evaluate()["sem_seg"]
        assert res["mIoU"] == pytest.approx(miou)
    assert evaluator._conf.sum() == valid.sum()


def test_lookup_refuses_reduce_zero_label_and_out_of_table_values(tmp_path):
    path = str(tmp_path / "l.png")
    Image.fromarray(np.full((2, 2), 300, np.uint16)).save(path)
    table = label_lookup_table({1: 0}, 255)
    with pytest.raises(CorruptImageError, match="300 outside"):
        read_sem_seg_label(path, lookup=table)
    with pytest.raises(ValueError, match="cannot be combined"):
        read_sem_seg_label(path, reduce_zero_label=True, lookup=table)


def test_mapper_refuses_training_sets_with_different_label_maps():
    cfg = _cfg("coco_stuff_164k_sem_seg_train", "pascal_context_59_sem_seg_train")
    with pytest.raises(ValueError, match="different label_map"):
        SemSegDatasetMapper.from_config(cfg, is_train=True)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("variant,channels", [("T", 128), ("B", 256), ("L", 256)])
def test_cgrseg_configs_carry_the_recipes(variant, channels):
    """The COCO-Stuff / Pascal-Context configs keep their ADE20K parent's model and change only
    the data, the class count and the schedule (building and one training step of each:
    tests/test_configs.py)."""
    from segdet.utils.config_io import load_config

    ade = load_config(os.path.join(ROOT, f"projects/CGRSeg/configs/ADE20K/CGRSeg-{variant}.yaml"))
    coco = load_config(os.path.join(ROOT, f"projects/CGRSeg/configs/COCO-Stuff-164k/CGRSeg-{variant}.yaml"))
    pc = load_config(os.path.join(ROOT, f"projects/CGRSeg/configs/Pascal-Context-59/CGRSeg-{variant}.yaml"))
    for cfg in (coco, pc):
        assert cfg.MODEL.CGRSEG == ade.MODEL.CGRSEG and cfg.MODEL.CGRSEG.CHANNELS == channels
        assert cfg.MODEL.EFFICIENTFORMER_V2 == ade.MODEL.EFFICIENTFORMER_V2
        assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR) == (80000, 16, 0.00012)
    assert coco.MODEL.SEM_SEG_HEAD.NUM_CLASSES == len(MetadataCatalog.get(coco.DATASETS.TEST[0]).stuff_classes) == 171
    assert tuple(coco.INPUT.CROP.SIZE) == (512, 512) and coco.TEST.SEM_SEG.MODE == "whole"
    assert pc.MODEL.SEM_SEG_HEAD.NUM_CLASSES == len(MetadataCatalog.get(pc.DATASETS.TEST[0]).stuff_classes) == 59
    assert tuple(pc.INPUT.CROP.SIZE) == (480, 480) and tuple(pc.INPUT.SEM_SEG.TEST_RESIZE_SCALE) == (520, 520)
    assert (pc.TEST.SEM_SEG.MODE, tuple(pc.TEST.SEM_SEG.CROP_SIZE), tuple(pc.TEST.SEM_SEG.STRIDE)) == \
        ("slide", (480, 480), (320, 320))


def test_overlay_writer_draws_the_mapped_ground_truth(tmp_path, monkeypatch):
    from segdet.evaluation.visualization import PredictionOverlayWriter

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    raw = _coco_layout(str(tmp_path))
    d = DatasetCatalog.get("coco_stuff_164k_sem_seg_val")[0]
    writer = PredictionOverlayWriter("coco_stuff_164k_sem_seg_val", str(tmp_path / "vis"))
    np.testing.assert_array_equal(writer._ground_truth(d), np.vectorize(COCO_CASES.get)(raw))


def test_predicted_label_pngs_are_written_as_the_dataset_file_values():
    from segdet.engine.prediction_outputs import label_map_in_dataset_ids

    classes = torch.tensor([[0, 11, 24], [60, 80, 170]])
    logits = torch.nn.functional.one_hot(classes, 171).permute(2, 0, 1).float()
    coco = label_map_in_dataset_ids(logits, MetadataCatalog.get("coco_stuff_164k_sem_seg_val"))
    np.testing.assert_array_equal(coco, [[0, 12, 26], [66, 91, 181]])
    pc = label_map_in_dataset_ids(logits[:59], MetadataCatalog.get("pascal_context_59_sem_seg_val"))
    assert pc[0, 1] == 12 and pc.dtype == np.uint8
