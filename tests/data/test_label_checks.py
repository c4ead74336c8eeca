"""A semantic training set whose labels are a raw 0/255 mask is refused at start-up."""
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from segdet.config import get_segdet_cfg
from segdet.data.checks import dataset_dicts_for_training
from segdet.utils.errors import ConfigError


def _dataset(tmp_path, name, foreground_value, n=3):
    dicts = []
    for i in range(n):
        label = np.zeros((8, 8), dtype=np.uint8)
        label[2:5, 2:5] = foreground_value
        path = tmp_path / f"{name}_{i}.png"
        Image.fromarray(label, mode="L").save(path)
        dicts.append({"file_name": str(tmp_path / f"{i}.jpg"), "sem_seg_file_name": str(path),
                      "image_id": i, "height": 8, "width": 8})
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(stuff_classes=["background", "building"], ignore_label=255,
                                  evaluator_type="sem_seg")
    cfg = get_segdet_cfg()
    cfg.MODEL.META_ARCHITECTURE = "SegdetSemanticSegmentor"
    cfg.INPUT.DATASET_MAPPER_NAME = "sem_seg"
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255
    cfg.DATASETS.TRAIN = (name,)
    return cfg


def test_zero_255_mask_is_refused(tmp_path):
    cfg = _dataset(tmp_path, "segdet_test_binary_255", 255)
    with pytest.raises(ConfigError) as e:
        dataset_dicts_for_training(cfg)
    message = str(e.value)
    assert message.startswith("DATASETS.TRAIN 'segdet_test_binary_255': the label files hold only the values 0 and 255")
    assert "3 checked" in message and "255 is MODEL.SEM_SEG_HEAD.IGNORE_VALUE" in message
    assert "write the foreground as 1" in message and "\n" not in message


def test_zero_one_mask_passes(tmp_path):
    cfg = _dataset(tmp_path, "segdet_test_binary_1", 1)
    assert len(dataset_dicts_for_training(cfg)) == 3


def test_label_map_is_applied_before_the_check(tmp_path):
    """Files of raw values 0 / 7 (COCO-Stuff-like: the dataset's label_map gives the class ids): a
    map sending 7 to the ignore value leaves only 0 and 255 after the mapping (refused); one sending
    7 to class 1 passes, although 7 is no class id of the head."""
    cfg = _dataset(tmp_path, "segdet_test_label_map", 7)
    MetadataCatalog.get("segdet_test_label_map").set(label_map={0: 0})  # 7 -> unlabelled (255)
    with pytest.raises(ConfigError, match="hold only the values 0 and 255"):
        dataset_dicts_for_training(cfg)
    MetadataCatalog.remove("segdet_test_label_map")
    MetadataCatalog.get("segdet_test_label_map").set(stuff_classes=["background", "building"], ignore_label=255,
                                                     evaluator_type="sem_seg", label_map={0: 0, 7: 1})
    assert len(dataset_dicts_for_training(cfg)) == 3
