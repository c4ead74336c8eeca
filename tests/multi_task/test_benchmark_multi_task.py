"""tools/benchmark_multi_task.py: the joint model against its two single-task models."""
import json
import os

import pytest

from _tools import load_tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("config", ["faster_rcnn_semseg_fpn_mnv2_trees_street", "retinanet_semseg_fpn_mnv2_trees_street"])
def test_joint_model_matches_its_two_single_task_models_and_the_json_says_so(config, tmp_path):
    out = tmp_path / "bench.json"
    result = load_tool("benchmark_multi_task").main([
        "--config-file", os.path.join(ROOT, "projects/MultiTask/configs", f"{config}.yaml"),
        "--input-size", "96", "128", "--warmup", "1", "--rounds", "2", "--output", str(out),
        "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    # the same weights give the same detections and logits: the joint forward is the two models'
    assert result["max_abs_output_difference"] <= 1e-4
    p = result["parameters"]
    # one backbone instead of two: joint = detector + segmentor - one backbone
    assert p["shared_backbone"] > 0
    assert p["joint"] == p["detector_plus_segmentor"] - p["shared_backbone"]
    assert len(result["separate_over_joint"]["per_round"]) == 2
