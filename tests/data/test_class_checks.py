"""NUM_CLASSES against the training datasets' classes, checked at start-up (not after training)."""
import pytest

from segdet.config import get_segdet_cfg
from segdet.data.checks import dataset_dicts_for_training
from segdet.data.class_checks import check_num_classes
from segdet.utils.errors import ConfigError


def _cfg(arch, train, **keys):
    cfg = get_segdet_cfg()
    cfg.MODEL.META_ARCHITECTURE = arch
    cfg.DATASETS.TRAIN = (train,)
    for key, value in keys.items():
        node = cfg
        *parents, last = key.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return cfg


@pytest.mark.parametrize("arch,key,extra", [
    ("GeneralizedRCNN", "MODEL.ROI_HEADS.NUM_CLASSES", {"MODEL__ROI_HEADS__NUM_CLASSES": 80}),
    ("RetinaNet", "MODEL.RETINANET.NUM_CLASSES", {"MODEL__RETINANET__NUM_CLASSES": 80}),
    ("DistillationModel", "MODEL.RETINANET.NUM_CLASSES",
     {"MODEL__RETINANET__NUM_CLASSES": 80, "DISTILL__STUDENT_META_ARCHITECTURE": "RetinaNet"}),
])
def test_detection_mismatch(arch, key, extra):
    cfg = _cfg(arch, "segdet_trees_train", **extra)
    with pytest.raises(ConfigError) as e:
        dataset_dicts_for_training(cfg)  # what Trainer.build_train_loader calls, before any iteration
    assert str(e.value) == (f"{key} is 80 but DATASETS.TRAIN dataset 'segdet_trees_train' has 1 classes "
                            f"(thing_classes: tree); set {key} 1")


def test_semantic_mismatch():
    cfg = _cfg("SegdetSemanticSegmentor", "segdet_street_sem_seg_train", MODEL__SEM_SEG_HEAD__NUM_CLASSES=150,
               INPUT__DATASET_MAPPER_NAME="sem_seg")
    with pytest.raises(ConfigError, match=r"^MODEL.SEM_SEG_HEAD.NUM_CLASSES is 150 but DATASETS.TRAIN dataset "
                                          r"'segdet_street_sem_seg_train' has 3 classes \(stuff_classes: "):
        check_num_classes(cfg)


def test_matching_counts_pass():
    check_num_classes(_cfg("GeneralizedRCNN", "segdet_trees_train", MODEL__ROI_HEADS__NUM_CLASSES=1))
    check_num_classes(_cfg("RetinaNet", "segdet_trees_train", MODEL__RETINANET__NUM_CLASSES=1))
    check_num_classes(_cfg("SegdetSemanticSegmentor", "segdet_street_sem_seg_train",
                           MODEL__SEM_SEG_HEAD__NUM_CLASSES=3))
    # a detector's key is not compared with a semantic set, nor a dataset without a class list
    check_num_classes(_cfg("RetinaNet", "segdet_street_sem_seg_train", MODEL__RETINANET__NUM_CLASSES=80))
