"""Config values and data that segdet cannot use stop train_net.py at once with one clear line
on stderr (exit status 2): out-of-range values, an empty dataset."""
import json
import os
import shutil

from _tools import one_error_line, run_train_net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml"


def test_negative_max_iter_is_refused_and_an_int_learning_rate_accepted(tmp_path):
    # BASE_LR 1000 (an int for a float key) used to be refused; now only MAX_ITER is reported
    code, err = run_train_net("--config-file", SAMPLE, "SOLVER.BASE_LR", "1000", "SOLVER.MAX_ITER", "-5",
                     "OUTPUT_DIR", str(tmp_path / "out"))
    assert code == 2
    one_error_line(err, "SOLVER.MAX_ITER = -5: expected an integer > 0")
    assert "BASE_LR" not in err


def test_zero_checkpoint_period_is_refused_before_training(tmp_path):
    code, err = run_train_net("--config-file", SAMPLE, "SOLVER.CHECKPOINT_PERIOD", "0", "OUTPUT_DIR", str(tmp_path / "out"))
    assert code == 2
    one_error_line(err, "SOLVER.CHECKPOINT_PERIOD = 0", "an integer > 0")
    assert not os.path.exists(tmp_path / "out")


def test_empty_training_set_names_the_dataset(tmp_path):
    """A sample-layout trees dataset whose training index lists no images."""
    from segdet.utils.synthetic import make_synthetic_detection_dataset

    trees = tmp_path / "data" / "segdet_samples" / "trees"
    json_path, image_root = make_synthetic_detection_dataset(str(tmp_path / "val"), num_images=1)
    (trees / "images").mkdir(parents=True)
    shutil.copytree(image_root, trees / "images" / "val")
    shutil.copy(json_path, trees / "val.json")
    (trees / "images" / "train").mkdir()
    (trees / "train.json").write_text(json.dumps({"images": [], "annotations": [],
                                                  "categories": [{"id": 1, "name": "tree"}]}))
    code, err = run_train_net("--config-file", SAMPLE, "MODEL.MOBILENET_V2.WEIGHTS", "", "DATALOADER.NUM_WORKERS", "0",
                     "OUTPUT_DIR", str(tmp_path / "out"), env={"DETECTRON2_DATASETS": str(tmp_path / "data")})
    assert code == 2
    one_error_line(err, "DATASETS.TRAIN 'segdet_trees_train' has no images/annotations")
