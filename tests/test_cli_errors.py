"""User mistakes end with one clear line on stderr (exit status 2), not a traceback."""
import os

from _tools import one_error_line, run_train_net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml"


def test_bad_config_path():
    code, err = run_train_net("--config-file", "configs/nope.yaml")
    assert code == 2
    one_error_line(err, "config file not found: configs/nope.yaml")


def test_unknown_config_key_in_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{os.path.join(ROOT, SAMPLE)}"\nMODEL:\n  BACKBONE:\n    NAMEE: "x"\n')
    code, err = run_train_net("--config-file", str(bad))
    assert code == 2
    one_error_line(err, str(bad), "MODEL.BACKBONE.NAMEE")


def test_unknown_config_key_on_command_line():
    code, err = run_train_net("--config-file", SAMPLE, "SOLVER.BASE_LRR", "0.1")
    assert code == 2
    one_error_line(err, "command line", "SOLVER.BASE_LRR")


def test_odd_number_of_overrides():
    code, err = run_train_net("--config-file", SAMPLE, "SOLVER.BASE_LR")
    assert code == 2
    one_error_line(err, "KEY VALUE pairs")


def test_missing_dataset_folder(tmp_path):
    code, err = run_train_net("--config-file", SAMPLE, "--eval-only", "MODEL.MOBILENET_V2.WEIGHTS", "",
                     "OUTPUT_DIR", str(tmp_path / "out"), env={"DETECTRON2_DATASETS": str(tmp_path / "nowhere")})
    assert code == 2
    one_error_line(err, str(tmp_path / "nowhere"), "prepare_sample_data.py")


def test_corrupt_image_is_named(tmp_path):
    """A sample-layout dataset whose validation image is garbage bytes."""
    import json
    import shutil

    from segdet.utils.synthetic import make_synthetic_detection_dataset

    root = tmp_path / "data"
    trees = root / "segdet_samples" / "trees"
    for split in ("train", "val"):
        json_path, image_root = make_synthetic_detection_dataset(str(tmp_path / split), num_images=2)
        coco = json.load(open(json_path))
        coco["categories"] = [{"id": 1, "name": "tree"}]
        (trees / "images").mkdir(parents=True, exist_ok=True)
        shutil.copytree(image_root, trees / "images" / split)
        (trees / f"{split}.json").write_text(json.dumps(coco))
    broken = trees / "images" / "val" / "0001.png"
    broken.write_bytes(b"this is not a png")
    code, err = run_train_net("--config-file", SAMPLE, "--eval-only", "MODEL.MOBILENET_V2.WEIGHTS", "",
                     "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "out"),
                     env={"DETECTRON2_DATASETS": str(root)})
    assert code == 2
    one_error_line(err, str(broken))
