"""Embedded sample data: the preparation tool's conversion functions on hand-made inputs,
manifest / atomic build, the tool's layout against the library's, lazy registration errors,
the command line, and (slow) the real preparation with downloads."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from _tools import REPO_ROOT as REPO
from _tools import import_tools_package
from segdet.data.datasets import sample_layout

builders = import_tools_package("sample_data.builders")  # tools/sample_data: the preparation tool
convert = import_tools_package("sample_data.convert")
manifest = import_tools_package("sample_data.manifest")
prepare = import_tools_package("sample_data.prepare")
preview = import_tools_package("sample_data.preview")
tool_layout = import_tools_package("sample_data.layout")
ComponentSpec, tile_detection_image = builders.ComponentSpec, builders.tile_detection_image
MANIFEST_NAME = tool_layout.MANIFEST_NAME
PREPARE_COMMAND, sample_root = sample_layout.PREPARE_COMMAND, sample_layout.sample_root

VOC_XML = """<annotation><size><width>600</width><height>400</height><depth>3</depth></size>
<object><name>Tree</name><bndbox><xmin>340</xmin><ymin>100</ymin><xmax>440</xmax><ymax>200</ymax></bndbox></object>
<object><name>Alive</name><bndbox><xmin>380</xmin><ymin>300</ymin><xmax>480</xmax><ymax>380</ymax></bndbox></object>
</annotation>"""


# ------------------------------------------------------------- detection conversion ----------
def test_voc_xml_tiles_to_expected_coco_boxes():
    width, height, boxes, names = convert.parse_voc_boxes(VOC_XML)
    assert (width, height, names) == (600, 400, ["Tree", "Alive"])
    np.testing.assert_array_equal(boxes, [[340, 100, 440, 200], [380, 300, 480, 380]])
    # x starts: n = ceil((600-40)/(400-40)) = 2 tiles at 0 and 600-400 = 200; y: one tile.
    image = np.arange(400 * 600 * 3, dtype=np.int64).reshape(400, 600, 3) % 251
    tiles = tile_detection_image(image.astype(np.uint8), boxes, tile=400, min_overlap=40, min_kept=0.5)
    assert [t[0] for t in tiles] == [(0, 0, 400, 400), (200, 0, 400, 400)]
    np.testing.assert_array_equal(tiles[1][1], image[:, 200:600].astype(np.uint8))
    # Tile 0: box 1 keeps x 340..400 (60% of its area) -> kept; box 2 keeps 380..400 (20%) -> dropped.
    np.testing.assert_array_equal(convert.xyxy_to_xywh(tiles[0][2]), [[340, 100, 60, 100]])
    # Tile 1 (x offset 200): both boxes fully inside.
    np.testing.assert_array_equal(convert.xyxy_to_xywh(tiles[1][2]), [[140, 100, 100, 100], [180, 300, 100, 80]])


def test_parse_voc_clips_to_image_and_names_missing_fields():
    xml = ("<annotation><size><width>50</width><height>40</height></size><object><name>Tree</name>"
           "<bndbox><xmin>-3</xmin><ymin>10</ymin><xmax>60</xmax><ymax>45</ymax></bndbox></object></annotation>")
    np.testing.assert_array_equal(convert.parse_voc_boxes(xml)[2], [[0, 10, 50, 40]])
    with pytest.raises(ValueError, match="<ymax>"):
        convert.parse_voc_boxes(xml.replace("<ymax>45</ymax>", ""))
    with pytest.raises(ValueError, match="<size>"):
        convert.parse_voc_boxes("<annotation></annotation>")


def test_tile_starts_even_spread():
    assert convert.tile_starts(600, 400, 40) == [0, 200]
    assert convert.tile_starts(400, 400, 32) == [0]
    assert convert.tile_starts(300, 400, 32) == [0]
    # 2299 px: n = ceil(2267/368) = 7, spacing 1899/6 = 316.5 -> overlap 83 >= 32.
    assert convert.tile_starts(2299, 400, 32) == [0, 316, 633, 950, 1266, 1582, 1899]
    assert convert.tile_windows(300, 200, 400, 32) == [(0, 0, 300, 200)]
    with pytest.raises(ValueError, match="min_overlap"):
        convert.tile_starts(1000, 400, 400)


def test_crop_boxes_half_area_threshold():
    boxes = np.array([[90, 0, 110, 10], [91, 0, 111, 10], [0, 0, 10, 10]], dtype=np.float64)
    # Window x in [0, 100): box 0 keeps 10/20 = 50% (kept), box 1 keeps 9/20 = 45% (dropped).
    out, idx = convert.crop_boxes(boxes, (0, 0, 100, 100), 0.5)
    np.testing.assert_array_equal(idx, [0, 2])
    np.testing.assert_array_equal(out, [[90, 0, 100, 10], [0, 0, 10, 10]])
    # Window x in [95, 195): boxes 0/1 keep 15/20 and 16/20 of their width, box 2 is outside.
    out, idx = convert.crop_boxes(boxes, (95, 0, 100, 100), 0.5)
    np.testing.assert_array_equal(idx, [0, 1])
    np.testing.assert_array_equal(out, [[0, 0, 15, 10], [0, 0, 16, 10]])
    # Window y in [5, 105): box 0 keeps [95, 110] x [5, 10] = 75 of 200 px (37.5%) -> dropped.
    assert convert.crop_boxes(boxes, (95, 5, 100, 100), 0.5)[1].size == 0


# ------------------------------------------------------------- masks and splits --------------
def test_remap_label_keeps_ignore_and_rejects_unknown_values():
    voc = {i: i for i in range(21)}
    voc[255] = 255
    label = np.array([[0, 5, 255], [15, 20, 0]], dtype=np.uint8)
    out = convert.remap_label(label, voc)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, label)
    np.testing.assert_array_equal(convert.remap_label(np.array([[2, 1], [0, 2]]), {0: 0, 1: 255, 2: 1}),
                                  [[1, 255], [0, 1]])
    with pytest.raises(ValueError, match=r"\[3\]"):
        convert.remap_label(np.array([[0, 3]]), {0: 0, 1: 1})


def test_split_by_source():
    splits = convert.split_by_source(["a", "b", "c", "d"], {"c"})
    assert splits == {"train": ["a", "b", "d"], "val": ["c"]}
    with pytest.raises(ValueError, match="'x'"):
        convert.split_by_source(["a", "b"], {"x"})
    with pytest.raises(ValueError, match="'train' would be empty"):
        convert.split_by_source(["a"], {"a"})


def test_real_splits_are_by_source():
    assert set(builders.TREE_VAL_SOURCES) < set(builders.TREE_SOURCE_IMAGES)
    splits = convert.split_by_source(builders.STREET_FRAMES, set(builders.STREET_VAL))
    assert not set(splits["train"]) & set(splits["val"]) and len(splits["val"]) == 1


# ------------------------------------------------------------- tool layout = library layout --
def test_tool_writes_the_layout_the_library_registers(tmp_path):
    """The tool repeats the layout constants (to run without importing segdet): they must agree
    with segdet/data/datasets/sample_layout.py, which registration reads."""
    for name in ("PREPARE_COMMAND", "SPLITS", "IGNORE_LABEL"):
        assert getattr(tool_layout, name) == getattr(sample_layout, name), name
    assert tool_layout.DETECTION_COMPONENTS == {c: k for c, (_, k) in sample_layout.DETECTION_COMPONENTS.items()}
    assert tool_layout.SEM_SEG_COMPONENTS == {c: k for c, (_, k) in sample_layout.SEM_SEG_COMPONENTS.items()}
    assert set(builders.COMPONENT_SPECS) == set(tool_layout.ALL_COMPONENTS)
    for comp in sample_layout.DETECTION_COMPONENTS.keys() | sample_layout.SEM_SEG_COMPONENTS.keys():
        for split in sample_layout.SPLITS:
            assert tool_layout.index_path(comp, split, str(tmp_path)) == sample_layout.index_path(comp, split, str(tmp_path))
    np.testing.assert_array_equal(preview.label_colors(3), sample_layout.label_colors(3))


# ------------------------------------------------------------- manifest / atomic build -------
def test_manifest_detects_changes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"12345")
    m = manifest.write_manifest(str(tmp_path), "r1", {"n": 1})
    assert m["files"] == {"a/x.bin": 5}
    assert manifest.read_valid_manifest(str(tmp_path), "r1")["stats"] == {"n": 1}
    assert manifest.read_valid_manifest(str(tmp_path), "r2") is None  # other recipe
    (tmp_path / "a" / "x.bin").write_bytes(b"1234")
    assert manifest.read_valid_manifest(str(tmp_path), "r1") is None  # size changed
    os.remove(tmp_path / MANIFEST_NAME)
    assert manifest.read_valid_manifest(str(tmp_path), "r1") is None


def test_ensure_samples_idempotent_force_and_atomic(tmp_path, monkeypatch):
    calls = []

    def build(archives, out_dir):
        calls.append(out_dir)
        with open(os.path.join(out_dir, "data.txt"), "w") as f:
            f.write("ok")
        return {"train": {"images": 1, "boxes": 2}}

    monkeypatch.setitem(builders.COMPONENT_SPECS, "fake", ComponentSpec(build, ()))
    root = str(tmp_path / "segdet_samples")
    stats = prepare.ensure_samples(verbose=False, root=root, components=["fake"])
    assert stats == {"fake": {"train": {"images": 1, "boxes": 2}}} and len(calls) == 1
    assert os.path.basename(calls[0]).startswith(".tmp-fake-")  # built aside, then renamed
    assert prepare.ensure_samples(verbose=False, root=root, components=["fake"]) == stats
    assert len(calls) == 1  # up to date: nothing rebuilt
    prepare.ensure_samples(verbose=False, root=root, components=["fake"], force=True)
    assert len(calls) == 2

    def broken(archives, out_dir):
        with open(os.path.join(out_dir, "half.txt"), "w") as f:
            f.write("half")
        raise KeyboardInterrupt

    monkeypatch.setitem(builders.COMPONENT_SPECS, "fake2", ComponentSpec(broken, ()))
    with pytest.raises(KeyboardInterrupt):
        prepare.ensure_samples(verbose=False, root=root, components=["fake2"])
    assert not os.path.exists(os.path.join(root, "fake2"))
    assert not [n for n in os.listdir(root) if n.startswith(".tmp-")]
    assert prepare.check_samples(root, ["fake", "fake2"]) == {
        "fake": prepare.check_samples(root, ["fake"])["fake"], "fake2": None}
    with pytest.raises(KeyError, match="nope"):
        prepare.ensure_samples(verbose=False, root=root, components=["nope"])


# ------------------------------------------------------------- registration ------------------
DETECTION = {"segdet_trees": ["tree"]}
SEM_SEG = {"segdet_street_sem_seg": ["background", "car", "truck"]}


def test_registered_metadata():
    for prefix, classes in DETECTION.items():
        for split in ("train", "val"):
            meta = MetadataCatalog.get(f"{prefix}_{split}")
            assert f"{prefix}_{split}" in DatasetCatalog.list() and meta.evaluator_type == "coco"
            n = len(meta.thing_classes)
            assert meta.thing_classes == classes
            assert meta.thing_dataset_id_to_contiguous_id == {i + 1: i for i in range(n)}
    for prefix, classes in SEM_SEG.items():
        for split in ("train", "val"):
            meta = MetadataCatalog.get(f"{prefix}_{split}")
            assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
            assert meta.reduce_zero_label is False
            assert meta.stuff_classes == classes
            assert len(meta.stuff_colors) == len(meta.stuff_classes)


@pytest.mark.parametrize("name", ["segdet_trees_train", "segdet_trees_val", "segdet_street_sem_seg_train",
                                  "segdet_street_sem_seg_val"])
def test_loader_on_empty_root_raises_clear_error(tmp_path, monkeypatch, name):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert sample_root() == os.path.join(str(tmp_path), "segdet_samples")
    with pytest.raises(FileNotFoundError) as info:
        DatasetCatalog.get(name)
    msg = str(info.value)
    assert os.path.join(str(tmp_path), "segdet_samples") in msg and msg.count(".json") == 1
    assert PREPARE_COMMAND in msg and name in msg


def test_sem_seg_loader_reads_index_and_names_missing_label(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    folder = tmp_path / "segdet_samples" / "street"
    (folder / "images" / "val").mkdir(parents=True)
    (folder / "labels" / "val").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(folder / "images" / "val" / "a.png")
    rec = {"file_name": "images/val/a.png", "sem_seg_file_name": "labels/val/a.png", "height": 4, "width": 6,
           "image_id": "a"}
    (folder / "val.json").write_text(json.dumps({"classes": ["background", "car", "truck"], "records": [rec]}))
    with pytest.raises(FileNotFoundError, match=r"labels/val/a\.png.*prepare_sample_data"):
        DatasetCatalog.get("segdet_street_sem_seg_val")
    Image.fromarray(np.ones((4, 6), np.uint8)).save(folder / "labels" / "val" / "a.png")
    (d,) = DatasetCatalog.get("segdet_street_sem_seg_val")
    assert d == {**rec, "file_name": str(folder / "images" / "val" / "a.png"),
                 "sem_seg_file_name": str(folder / "labels" / "val" / "a.png")}


def test_cli_check_is_fast_and_imports_no_torch(tmp_path):
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('p', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "rc = m.main(['--check', '--datasets-dir', sys.argv[2]]); "
            "print('rc', rc, 'torch' in sys.modules or 'segdet' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, os.path.join(REPO, "tools", "prepare_sample_data.py"),
                          str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "not up to date" in out.stdout and out.stdout.strip().endswith("rc 1 False")


# ------------------------------------------------------------- real data (downloads) ---------
@pytest.mark.slow
def test_real_preparation_counts(tmp_path, monkeypatch):
    root = tmp_path / "segdet_samples"
    stats = prepare.ensure_samples(verbose=True, root=str(root))
    t = stats["trees"]
    assert (t["train"]["images"], t["val"]["images"]) == (51, 12)  # 7x7 + 1 + 1 tiles, 4x3 tiles
    assert (t["train"]["source_boxes"], t["val"]["source_boxes"]) == (672, 279)  # 951 trees
    assert (t["train"]["boxes"], t["val"]["boxes"]) == (931, 414)
    street = stats["street"]
    assert street["train"]["classes"] == street["val"]["classes"] == ["background", "car", "truck"]
    assert (street["train"]["images"], street["val"]["images"]) == (4, 1)
    assert (root / "pretrained" / "mobilenet_v2-b0353104.pth").stat().st_size == 14212972

    start = time.time()
    assert prepare.ensure_samples(verbose=True, root=str(root)) == stats
    assert time.time() - start < 2.0

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    trees = DatasetCatalog.get("segdet_trees_val")
    assert len(trees) == 12 and sum(len(d["annotations"]) for d in trees) == 414
    assert {a["category_id"] for d in trees for a in d["annotations"]} == {0}
    for d in DatasetCatalog.get("segdet_street_sem_seg_train"):
        label = np.asarray(Image.open(d["sem_seg_file_name"]))
        assert label.shape == (d["height"], d["width"]) == (563, 1000) and set(np.unique(label)) <= {0, 1, 2}
