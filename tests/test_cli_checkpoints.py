"""tools/train_net.py and unsafe, broken or mismatched weights: one clear line, exit status 2."""
import os
import pickle
import subprocess
import sys

import pytest
import torch

from _tools import one_error_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")
SAMPLE = "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml"
OPTS = ["MODEL.MOBILENET_V2.WEIGHTS", ""]


class _Payload:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def sample_state():
    from detectron2.modeling import build_model

    from segdet.utils.config_io import load_config

    return build_model(load_config(SAMPLE, OPTS)).state_dict()


def _eval_only(tmp_path, weights, *flags):
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "nowhere")}
    env.pop("SEGDET_DEBUG", None)
    proc = subprocess.run([sys.executable, TRAIN_NET, "--config-file", SAMPLE, "--eval-only", *flags, *OPTS,
                           "MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    return one_error_line(proc.stderr)


def test_eval_only_refuses_mismatched_weights(tmp_path, sample_state):
    broken = dict(sample_state)
    del broken["roi_heads.box_predictor.cls_score.weight"]
    broken["roi_heads.box_predictor.bbox_pred.weight"] = torch.zeros(3, 7)
    broken["extra.weight"] = torch.zeros(1)
    torch.save({"model": broken}, tmp_path / "other.pth")
    error = _eval_only(tmp_path, tmp_path / "other.pth")
    for fragment in ("MODEL.WEIGHTS", str(tmp_path / "other.pth"), "do not match the model",
                     "roi_heads.box_predictor.cls_score.weight", "extra.weight",
                     "roi_heads.box_predictor.bbox_pred.weight (checkpoint (3, 7)"):
        assert fragment in error, error


def test_eval_only_refuses_a_pickle_and_a_truncated_file(tmp_path, sample_state):
    marker = tmp_path / "marker"
    with open(tmp_path / "zoo.pkl", "wb") as f:
        pickle.dump({"model": {}, "__author__": "x", "p": _Payload(marker)}, f)
    error = _eval_only(tmp_path, tmp_path / "zoo.pkl")
    assert "--trust-pickle" in error and "convert_d2_pkl.py" in error and str(tmp_path / "zoo.pkl") in error
    assert not marker.exists()

    torch.save({"model": sample_state}, tmp_path / "cut.pth")
    data = (tmp_path / "cut.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    error = _eval_only(tmp_path, tmp_path / "cut.pth")
    assert str(tmp_path / "cut.pth") in error and "truncated or corrupt" in error


def test_trust_pickle_flag_loads_a_model_zoo_pickle(tmp_path, sample_state):
    with open(tmp_path / "zoo.pkl", "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in sample_state.items()}, "__author__": "x"}, f)
    # the weights load (strictly); the run then stops at the missing dataset folder
    error = _eval_only(tmp_path, tmp_path / "zoo.pkl", "--trust-pickle")
    assert str(tmp_path / "nowhere") in error
