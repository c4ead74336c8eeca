#!/usr/bin/env python
"""Inference time of one multi-task model against the two single-task models it replaces, on the
same image, interleaved in one run -> JSON.

The single-task models are the joint model's own branches on their own copies of its backbone:
a detector (the config with ``MODEL.META_ARCHITECTURE`` set to ``MODEL.MULTI_TASK.DETECTOR``)
and a semantic segmentor (``SegdetSemanticSegmentor``), built from the same config and given the
joint model's (random) weights, so the comparison is one shared backbone against two doing the
same work: the JSON's ``max_abs_output_difference`` shows the outputs agree. Each round times the joint model, then the
detector, then the segmentor on the same input; the medians over the rounds and the ratio
``(detector + segmentor) / joint`` are reported (a ratio measured in one run: the machines'
2-4x speed differences cancel out of it).

  python tools/benchmark_multi_task.py \\
      --config-file projects/MultiTask/configs/faster_rcnn_semseg_fpn_mnv2_trees_street.yaml \\
      --input-size 512 512 --output projects/MultiTask/benchmarks/joint_vs_separate.json
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

import torch  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a MultiTaskModel config")
    parser.add_argument("--input-size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds (at least 1)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timed rounds; medians reported")
    parser.add_argument("--output", default=None, help="JSON file (default: print only)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def build_models(config_file: str, opts):
    """(joint, detector, segmentor) with random weights, in eval mode."""
    from detectron2.modeling import build_model

    from segdet.utils.config_io import load_config
    from segdet.utils.errors import ConfigError

    opts = ["MODEL.WEIGHTS", "", "MODEL.MOBILENET_V2.WEIGHTS", "", *opts]
    cfg = load_config(config_file, opts)
    if cfg.MODEL.META_ARCHITECTURE != "MultiTaskModel" or not cfg.MODEL.MULTI_TASK.DETECTOR:
        raise ConfigError(f"{config_file}: expected a MultiTaskModel config with a detection branch")
    detector = load_config(config_file, opts + ["MODEL.META_ARCHITECTURE", cfg.MODEL.MULTI_TASK.DETECTOR])
    segmentor = load_config(config_file, opts + ["MODEL.META_ARCHITECTURE", "SegdetSemanticSegmentor"])
    joint, detector, segmentor = (build_model(c).eval() for c in (cfg, detector, segmentor))
    copy_branch_weights(joint, detector, segmentor)
    return joint, detector, segmentor


def copy_branch_weights(joint, detector, segmentor) -> None:
    """Give the single-task models the joint model's weights (its backbone and their branch),
    loaded strictly: the three then compute the same outputs, so they do the same work."""
    state = joint.state_dict()
    backbone = {k: v for k, v in state.items() if k.startswith("backbone.")}
    detector.load_state_dict({**backbone, **{k[len("detector."):]: v for k, v in state.items()
                                             if k.startswith("detector.")}}, strict=True)
    segmentor.load_state_dict({**backbone, **{k: v for k, v in state.items() if k.startswith("sem_seg_head.")}},
                              strict=True)


def max_output_difference(joint_out, detector_out, segmentor_out) -> float:
    """Largest absolute difference between the joint model's outputs and the single-task
    models' (semantic logits, box coordinates and scores)."""
    j, d, s = joint_out[0], detector_out[0]["instances"], segmentor_out[0]["sem_seg"]
    diffs = [float((j["sem_seg"] - s).abs().max())]
    if len(j["instances"]) != len(d):
        return float("inf")
    if len(d):
        diffs.append(float((j["instances"].pred_boxes.tensor - d.pred_boxes.tensor).abs().max()))
        diffs.append(float((j["instances"].scores - d.scores).abs().max()))
    return max(diffs)


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.warmup = max(1, args.warmup)
    torch.set_num_threads(args.threads)
    joint, detector, segmentor = build_models(args.config_file, args.opts)
    h, w = args.input_size
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 255
    inputs = [{"image": image, "height": h, "width": w}]
    models = {"joint": joint, "detector": detector, "segmentor": segmentor}

    def run(model):
        with torch.inference_mode():
            start = time.perf_counter()
            out = model(inputs)
            return time.perf_counter() - start, out

    outputs = {}
    for _ in range(args.warmup):
        for name, model in models.items():
            outputs[name] = run(model)[1]
    times = {name: [] for name in models}
    for r in range(args.rounds):
        for name, model in models.items():
            times[name].append(run(model)[0])
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {1e3 * t[-1]:.0f} ms" for n, t in times.items()),
              flush=True)
    separate = [d + s for d, s in zip(times["detector"], times["segmentor"])]
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "config": args.config_file, "input_size": [h, w], "threads": args.threads, "rounds": args.rounds,
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "torch": torch.__version__},
        "parameters": {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()},
        # the same weights: the joint model's outputs equal the two models' (up to float rounding)
        "max_abs_output_difference": max_output_difference(outputs["joint"], outputs["detector"],
                                                           outputs["segmentor"]),
        "latency_s_median": {**median, "detector_plus_segmentor": statistics.median(separate)},
        # per-round ratios: each measured on the same seconds of the machine
        "separate_over_joint": {
            "median": statistics.median(s / j for s, j in zip(separate, times["joint"])),
            "per_round": [round(s / j, 4) for s, j in zip(separate, times["joint"])]},
    }
    result["parameters"]["detector_plus_segmentor"] = result["parameters"]["detector"] + result["parameters"]["segmentor"]
    result["parameters"]["shared_backbone"] = sum(p.numel() for p in joint.backbone.parameters())
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
