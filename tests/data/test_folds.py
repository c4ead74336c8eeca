"""Cross-validation folds of registered sets: every image held out exactly once, the training
side the complement, metadata carried over, bad specs refused in one line."""
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

import segdet
from segdet.data.datasets.declared import register_declared_datasets
from segdet.data.datasets.folds import fold_count, fold_names, register_folds, split_into_folds
from segdet.utils.errors import ConfigError


def _register(name, ids, **meta):
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [{"file_name": f"{i}.jpg", "image_id": i} for i in ids])
        MetadataCatalog.get(name).set(**{"evaluator_type": "sem_seg", "stuff_classes": ["a", "b"],
                                         "ignore_label": 255, **meta})


@pytest.mark.parametrize("count, folds, sizes", [(5, 5, [1] * 5), (7, 3, [3, 2, 2]), (10, 4, [3, 3, 2, 2])])
def test_blocks_are_contiguous_and_cover_everything(count, folds, sizes):
    blocks = split_into_folds(count, folds)
    assert [len(b) for b in blocks] == sizes
    assert [i for b in blocks for i in b] == list(range(count))


def test_every_image_is_held_out_once_and_trained_on_elsewhere():
    _register("t_folds_a", ["a0", "a1", "a2", "a3"], label_map=[0, 1])
    _register("t_folds_b", ["b0", "b1", "b2"])
    names = register_folds("t_folds_cv", ["t_folds_a", "t_folds_b"], 3)
    assert len(names) == 6 and fold_count("t_folds_cv") == 3
    held_out = []
    for k in range(3):
        sets = fold_names("t_folds_cv", k)
        val = [d["image_id"] for d in DatasetCatalog.get(sets["val"])]
        train = [d["image_id"] for d in DatasetCatalog.get(sets["train"])]
        assert not set(val) & set(train) and len(val) + len(train) == 7
        held_out += val
        meta = MetadataCatalog.get(sets["val"])
        assert meta.stuff_classes == ["a", "b"] and meta.evaluator_type == "sem_seg"
        assert meta.label_map == [0, 1]  # the first source's label map is carried over
    assert held_out == ["a0", "a1", "a2", "a3", "b0", "b1", "b2"]  # in order, contiguous blocks
    assert [len(DatasetCatalog.get(fold_names("t_folds_cv", k)["val"])) for k in range(3)] == [3, 2, 2]
    # registering the same folds again is a no-op; other sources under the name are refused
    assert register_folds("t_folds_cv", ["t_folds_a", "t_folds_b"], 3) == names
    with pytest.raises(ValueError, match="already registered"):
        register_folds("t_folds_cv", ["t_folds_a"], 3)


def test_coco_json_of_a_source_is_not_carried_over():
    _register("t_folds_det", ["d0", "d1"], evaluator_type="coco", thing_classes=["tree"], json_file="/x.json")
    register_folds("t_folds_det_cv", ["t_folds_det"], 2)
    meta = MetadataCatalog.get("t_folds_det_cv_fold0_val")
    assert meta.thing_classes == ["tree"] and "json_file" not in meta.as_dict()


def test_bad_folds_are_refused():
    _register("t_folds_c", ["c0", "c1"])
    _register("t_folds_other", ["o0"], stuff_classes=["x", "y", "z"])
    with pytest.raises(ValueError, match="not registered"):
        register_folds("t_bad_1", ["no_such_set"], 2)
    with pytest.raises(ValueError, match="stuff_classes of 't_folds_other'"):
        register_folds("t_bad_2", ["t_folds_c", "t_folds_other"], 2)
    with pytest.raises(ValueError, match="at least 2 folds"):
        register_folds("t_bad_3", ["t_folds_c"], 1)
    register_folds("t_bad_4", ["t_folds_c"], 3)  # registering reads nothing; loading says why
    with pytest.raises(ValueError, match="2 images .* for 3 folds"):
        DatasetCatalog.get("t_bad_4_fold0_val")
    _register("t_folds_dup", ["c0"])
    register_folds("t_bad_5", ["t_folds_c", "t_folds_dup"], 2)
    with pytest.raises(ValueError, match="c0.jpg is in the sources .* more than once"):
        DatasetCatalog.get("t_bad_5_fold1_train")


def test_ids_unique_per_split_only_are_numbered_anew():
    for split in ("train", "val"):  # the same ids 0, 1 in both splits, other files
        name = f"t_folds_ids_{split}"
        if name not in DatasetCatalog.list():
            DatasetCatalog.register(name, lambda s=split: [{"file_name": f"{s}{i}.jpg", "image_id": i} for i in range(2)])
            MetadataCatalog.get(name).set(evaluator_type="sem_seg", stuff_classes=["a"], ignore_label=255)
    register_folds("t_folds_ids_cv", ["t_folds_ids_train", "t_folds_ids_val"], 2)
    val = DatasetCatalog.get("t_folds_ids_cv_fold1_val")
    assert [(d["file_name"], d["image_id"]) for d in val] == [("val0.jpg", 2), ("val1.jpg", 3)]
    assert [d["image_id"] for d in DatasetCatalog.get("t_folds_ids_cv_fold1_train")] == [0, 1]


def _declare(entries):
    cfg = segdet.add_segdet_config(get_cfg())
    cfg.DATASETS.DECLARE = type(cfg)(entries)
    return cfg


def test_declared_folds_register_and_bad_keys_name_the_key():
    _register("t_folds_d", ["e0", "e1", "e2", "e3"])
    cfg = _declare({"t_decl_cv": {"TYPE": "folds", "SOURCES": ["t_folds_d"], "NUM_FOLDS": 2}})
    assert register_declared_datasets(cfg) == [f"t_decl_cv_fold{k}_{s}" for k in range(2) for s in ("train", "val")]
    assert [d["image_id"] for d in DatasetCatalog.get("t_decl_cv_fold1_val")] == ["e2", "e3"]
    for spec, key in (({"SOURCES": ["t_folds_d"], "NUM_FOLDS": 1}, "NUM_FOLDS"),
                      ({"SOURCES": [], "NUM_FOLDS": 2}, "SOURCES"),
                      ({"SOURCES": ["nope"], "NUM_FOLDS": 2}, "t_decl_bad")):
        with pytest.raises(ConfigError, match=key):
            register_declared_datasets(_declare({"t_decl_bad": {"TYPE": "folds", **spec}}))


def test_the_sample_street_folds_are_registered():
    assert fold_count("segdet_street_sem_seg_cv") == 5
    meta = MetadataCatalog.get("segdet_street_sem_seg_cv_fold0_val")
    assert meta.stuff_classes == MetadataCatalog.get("segdet_street_sem_seg_train").stuff_classes
    assert meta.folds_of["sources"] == ["segdet_street_sem_seg_train", "segdet_street_sem_seg_val"]
