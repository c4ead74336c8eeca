"""A wrong tap name: close matches, the sub-modules where it went wrong and how to list every
name, not a list of hundreds of names."""
import os

import pytest
from torch import nn

from segdet.distill.taps import print_module_names, resolve_module


def _wide_model():
    blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU()) for _ in range(200)])
    return nn.ModuleDict({"backbone": nn.ModuleDict({"blocks": blocks, "neck": nn.Identity()}),
                          "head": nn.Linear(1, 1)})


def test_wrong_tap_name_message_is_short_and_helpful():
    model = _wide_model()
    assert len(list(model.named_modules())) > 500
    with pytest.raises(KeyError) as err:
        resolve_module(model, "backbone.nekc", "teacher")
    message = err.value.args[0]
    assert len(message) < 600, len(message)
    assert "teacher has no module named 'backbone.nekc'" in message and "Did you mean 'backbone.neck'" in message
    assert "Sub-modules of 'backbone': blocks, neck." in message
    assert "tools/list_modules.py --config-file CONFIG --side teacher" in message
    assert "backbone.blocks.150" not in message
    with pytest.raises(KeyError, match="Top-level modules: backbone, head"):
        resolve_module(model, "zzz")
    with pytest.raises(KeyError, match=r"Sub-modules of 'backbone.blocks': 0, 1, .* \(\+188 more\)"):
        resolve_module(model, "backbone.blocks.999")
    assert resolve_module(model, "backbone.neck") is model["backbone"]["neck"]


def test_print_module_names_lists_every_name(capsys):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print_module_names(os.path.join(root, "configs", "Samples", "retinanet_mnv2_fpn_trees.yaml"))
    names = capsys.readouterr().out.split()
    assert "backbone" in names and "head.cls_score" in names and len(names) > 100
