"""Official CGRSeg / EfficientFormerV2 checkpoints -> segdet: key mapping against the official
state-dict fixture, strict loading, the pickle guard and the CLI."""
import argparse
import json
import os

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from segdet.modeling.cgrseg.efficientformer_v2 import EfficientFormerV2
from segdet.modeling.cgrseg.convert import (
    compare_state_dicts,
    convert_checkpoint,
    extract_state_dict,
    infer_variant,
    load_checkpoint_file,
    map_official_key,
)
from segdet.utils.config_io import load_config
from _tools import cgrseg_ade20k_config, load_tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "cgrseg_official_state_dict_shapes.json")
VARIANTS = {"T": "cgrseg_t", "B": "cgrseg_b", "L": "cgrseg_l"}

def _fixture(name):
    with open(FIXTURE) as f:
        return json.load(f)[name]["state_dict_shapes"]


def _model(variant):
    return build_model(load_config(cgrseg_ade20k_config(variant), ["MODEL.DEVICE", "cpu"]))


def _persistent_state(model):
    return model.state_dict()  # non-persistent buffers are not in it


def _synthetic_official(shapes, model_state):
    """Random tensors with the official shapes; integer buffers copied from segdet (indices)."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        ref = model_state[map_official_key(key)]
        if ref.dtype == torch.long:
            state[key] = ref.clone()
        else:
            state[key] = torch.randn(shape, generator=g)
    return state


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fixture_keys_map_one_to_one(variant):
    shapes = _fixture(VARIANTS[variant])
    model_state = _persistent_state(_model(variant))
    mapped = {map_official_key(k): k for k in shapes}
    assert len(mapped) == len(shapes)  # injective
    missing = [k for k in mapped if k not in model_state]
    wrong = [k for k, o in mapped.items() if k in model_state and list(model_state[k].shape) != shapes[o]]
    unmapped = [k for k in model_state if k not in mapped]
    assert not missing and not wrong and not unmapped, (missing[:5], wrong[:5], unmapped[:5])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_synthetic_official_checkpoint_loads_strictly(variant):
    model = _model(variant)
    official = _synthetic_official(_fixture(VARIANTS[variant]), model.state_dict())
    converted, kind = convert_checkpoint({"state_dict": official, "meta": {"iter": 160000}})
    assert kind == "cgrseg"
    model.load_state_dict(converted, strict=True)
    assert torch.equal(model.sem_seg_head.conv_seg.weight, official["decode_head.conv_seg.weight"])
    assert torch.equal(model.backbone.network[5].attn.attention_biases_seg,
                       official["backbone.network.5.attn.attention_biases_seg"])


def _load_tool():
    return load_tool("convert_cgrseg_weights")


def test_cli_pickle_guard_and_detection_checkpointer(tmp_path, capsys):
    tool = _load_tool()
    model = _model("T")
    official = _synthetic_official(_fixture("cgrseg_t"), model.state_dict())
    src, dst = str(tmp_path / "cgrseg-t.pth"), str(tmp_path / "out" / "segdet.pth")
    # mmcv-style meta holding a Python object that weights_only loading refuses
    torch.save({"state_dict": official, "meta": {"env": argparse.Namespace(seed=0)}}, src)
    with pytest.raises(ValueError, match="--trust-pickle"):
        tool.main([src, dst])
    assert not os.path.exists(dst)
    assert tool.main(["--trust-pickle", src, dst, "--config-file", cgrseg_ade20k_config("T")]) == 0
    assert os.listdir(os.path.dirname(dst)) == ["segdet.pth"]  # no temporary file left
    saved = torch.load(dst, weights_only=True)
    assert list(saved) == ["model"]
    fresh = _model("T")
    checkpointer, results = DetectionCheckpointer(fresh), []
    load_model = checkpointer._load_model
    checkpointer._load_model = lambda ckpt: results.append(load_model(ckpt)) or results[-1]
    checkpointer.load(dst)
    assert not results[0].missing_keys and not results[0].unexpected_keys
    assert not results[0].incorrect_shapes
    assert torch.equal(fresh.sem_seg_head.lgc.conv_mask.weight, official["decode_head.lgc.conv_mask.weight"])

    with pytest.raises(SystemExit) as exit_info:
        tool.parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "--trust-pickle" in capsys.readouterr().out


def test_imagenet_checkpoint_conversion():
    backbone = EfficientFormerV2(variant="S1")
    g = torch.Generator().manual_seed(0)
    imagenet = {}
    for key, value in backbone.state_dict().items():
        if key.endswith(("attention_biases_seg", "attention_bias_idxs_seg")):
            continue  # not in ImageNet checkpoints
        imagenet[key] = torch.randn(value.shape, generator=g) if value.is_floating_point() else value.clone()
    imagenet.update({"norm.weight": torch.ones(224), "head.weight": torch.zeros(1000, 224),
                     "dist_head.bias": torch.zeros(1000)})
    assert infer_variant(imagenet) == "S1"
    converted, kind = convert_checkpoint({"model": imagenet})
    assert kind == "imagenet" and all(k.startswith("backbone.") for k in converted)
    target = EfficientFormerV2(variant="S1")
    target.load_state_dict({k[len("backbone."):]: v for k, v in converted.items()}, strict=True)
    attn = target.network[4][-1].token_mixer
    assert torch.equal(attn.attention_biases_seg, torch.zeros(8, 256))  # seg tables start at zero
    assert torch.equal(attn.attention_biases, torch.zeros(8, 49))  # ImageNet table dropped
    assert torch.equal(target.patch_embed[0].weight, imagenet["patch_embed.0.weight"])

    imagenet["network.0.0.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected keys"):
        convert_checkpoint(imagenet)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint_file(str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="neither"):
        convert_checkpoint({"foo.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="decode_head"):
        map_official_key("auxiliary_head.conv.weight")
    assert list(extract_state_dict({"module.backbone.x": torch.zeros(1)})) == ["backbone.x"]
    missing, unexpected, mismatched = compare_state_dicts(
        {"a": torch.zeros(2), "c": torch.zeros(1)}, {"a": torch.zeros(3), "b": torch.zeros(1)})
    assert (missing, unexpected, mismatched) == (["b"], ["c"], ["a"])
