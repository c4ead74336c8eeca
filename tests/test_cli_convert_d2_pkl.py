"""tools/convert_d2_pkl.py: a model-zoo .pkl becomes a weights-only .pth that loads the same way."""
import argparse
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from segdet.engine.checkpoint_io import SafeCheckpointer
from segdet.utils.errors import ConfigError
from _tools import load_tool, one_error_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "convert_d2_pkl.py")


def _tiny_detector():
    """Module names as in a detectron2 ResNet backbone (stem and first block)."""
    model = nn.Module()
    model.backbone = nn.Module()
    bottom_up = model.backbone.bottom_up = nn.Module()
    bottom_up.stem = nn.Module()
    bottom_up.stem.conv1 = nn.Conv2d(3, 4, 3, bias=False)
    bottom_up.stem.conv1.norm = nn.BatchNorm2d(4)
    bottom_up.res2 = nn.Sequential(nn.Module())
    bottom_up.res2[0].conv1 = nn.Conv2d(4, 8, 1, bias=False)
    return model


def _arrays(seed):
    rng = np.random.default_rng(seed)
    return {"conv1_w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
            "res_conv1_bn_s": rng.standard_normal(4).astype(np.float32),
            "res_conv1_bn_b": rng.standard_normal(4).astype(np.float32),
            "res2_0_branch2a_w": rng.standard_normal((8, 4, 1, 1)).astype(np.float32)}


def _write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return str(path)


def _load(path, trust):
    model = _tiny_detector()
    SafeCheckpointer(model, trust_pickle=trust).load(path)
    return model.state_dict()


@pytest.mark.parametrize("kind", ["caffe2", "d2_zoo_heuristics", "d2_zoo"])
def test_converted_file_loads_like_the_pickle(tmp_path, kind, capsys):
    arrays = _arrays(0)
    if kind == "caffe2":  # Caffe2 / Detectron1 model zoo: blobs with Caffe2 names and momentum
        obj = {"blobs": {**arrays, "conv1_w_momentum": np.zeros((4, 3, 3, 3), np.float32)}}
    else:  # detectron2 model zoo: "model" + "__author__" (names by suffix only with matching_heuristics)
        prefix = "" if kind == "d2_zoo_heuristics" else "backbone.bottom_up."
        names = {"conv1_w": "stem.conv1.weight", "res_conv1_bn_s": "stem.conv1.norm.weight",
                 "res_conv1_bn_b": "stem.conv1.norm.bias", "res2_0_branch2a_w": "res2.0.conv1.weight"}
        obj = {"model": {prefix + names[k]: v for k, v in arrays.items()}, "__author__": "Detectron2 Model Zoo"}
        if kind == "d2_zoo_heuristics":
            obj["matching_heuristics"] = True
    src, dst = _write_pickle(tmp_path / "zoo.pkl", obj), str(tmp_path / "out" / "zoo.pth")
    assert load_tool("convert_d2_pkl").main(["--trust-pickle", src, dst]) == 0
    assert "weights only" in capsys.readouterr().out

    saved = torch.load(dst, weights_only=True)
    assert set(saved) <= {"model", "__author__", "matching_heuristics"}
    assert saved.get("matching_heuristics", False) == (kind != "d2_zoo")
    assert (saved["__author__"] == "Caffe2") == (kind == "caffe2")
    assert not any(k.endswith("_momentum") for k in saved["model"])
    from_pickle, from_pth = _load(src, trust=True), _load(dst, trust=False)
    assert from_pickle.keys() == from_pth.keys()
    for key in from_pickle:
        assert torch.equal(from_pickle[key], from_pth[key]), key
    assert np.array_equal(from_pth["backbone.bottom_up.stem.conv1.weight"].numpy(), arrays["conv1_w"])
    assert np.array_equal(from_pth["backbone.bottom_up.res2.0.conv1.weight"].numpy(), arrays["res2_0_branch2a_w"])


def test_converts_a_pickled_pth_keeping_the_weights(tmp_path):
    src, dst = tmp_path / "old.pth", tmp_path / "new.pth"
    torch.save({"model": {"w": torch.ones(2)}, "meta": argparse.Namespace(seed=0)}, src)
    assert load_tool("convert_d2_pkl").main(["--trust-pickle", str(src), str(dst)]) == 0
    assert torch.equal(torch.load(dst, weights_only=True)["model"]["w"], torch.ones(2))


def test_needs_the_flag_and_a_different_output(tmp_path):
    tool = load_tool("convert_d2_pkl")
    src = _write_pickle(tmp_path / "zoo.pkl", {"blobs": _arrays(0)})
    with pytest.raises(ConfigError, match="--trust-pickle"):
        tool.main([src, str(tmp_path / "zoo.pth")])
    with pytest.raises(ConfigError, match="must differ"):
        tool.main(["--trust-pickle", src, src])
    assert os.listdir(tmp_path) == ["zoo.pkl"]


def test_cli_help_and_error_line(tmp_path):
    proc = subprocess.run([sys.executable, TOOL, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert "--trust-pickle" in proc.stdout and "weights_only" in proc.stdout and "MODEL.WEIGHTS" in proc.stdout
    src = _write_pickle(tmp_path / "zoo.pkl", {"blobs": _arrays(0)})
    env = {k: v for k, v in os.environ.items() if k != "SEGDET_DEBUG"}
    proc = subprocess.run([sys.executable, TOOL, src, str(tmp_path / "zoo.pth")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 2
    one_error_line(proc.stderr, "--trust-pickle", src)
