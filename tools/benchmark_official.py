#!/usr/bin/env python
"""CGRSeg latency: the official implementation next to segdet's runtimes, in one run -> JSON.

The official model (mmseg's EncoderDecoder from the official CGRSeg code, built by a side-by-side
harness module, ``--harness``) gets random weights with calibrated BatchNorm statistics; segdet's
model gets the same weights through segdet's converter, so the two compute the same function and
their logits are compared too. Then, interleaved round by round on the same raw 0-255 input with
the same thread count (the order rotated every round, see segdet/export/runtimes.py): official
eager (``encode_decode`` on the normalised input: backbone, head, resize), and segdet's eager,
fused, fused + channels-last, onnxruntime and torch.compile paths (raw pixels -> logits:
normalisation, padding, backbone, head, crop).

The physical limit is measured in the same run: a 2048 x 2048 float32 matmul's rate (multiply-adds
per second, the convention of the model's FLOP count: one multiply-add = one flop) times the
model's multiply-adds gives the time the model would take at matmul speed.

  python tools/benchmark_official.py --harness PATH/compare_official_cgrseg.py --variant T \\
      --input-size 512 512 --threads 2 --output output/bench/official_t.json

The harness module reads OFFICIAL_REPO (the official code) and MM_PATH (mmcv 1.7.2 lite,
mmsegmentation 0.27.0, timm 0.6.13) from the environment; ``--official-repo`` and ``--mm-path``
set them. Run it on a quiet machine: another process on the same cores changes every ratio.
"""
import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
warnings.filterwarnings("ignore")

import torch  # noqa: E402

CONFIGS = {"T": "CGRSeg-T.yaml", "B": "CGRSeg-B.yaml", "L": "CGRSeg-L.yaml"}


def parse_args(argv=None):
    from segdet.export.runtimes import RUNTIMES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--harness", required=True, help="the side-by-side harness module (compare_official_cgrseg.py)")
    parser.add_argument("--official-repo", help="the official CGRSeg code (default: $OFFICIAL_REPO, or "
                                                "cgrseg_official beside the harness)")
    parser.add_argument("--mm-path", help="folder with mmcv/mmseg/timm (default: $MM_PATH, or ./.cache/official_mm)")
    parser.add_argument("--variant", choices=sorted(CONFIGS), default="T")
    parser.add_argument("--input-size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runtime", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=11, help="timed rounds; medians are reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="JSON file (default: print only)")
    return parser.parse_args(argv)


def load_harness(args):
    here = os.path.dirname(os.path.abspath(args.harness))
    os.environ["OFFICIAL_REPO"] = args.official_repo or os.environ.get("OFFICIAL_REPO",
                                                                       os.path.join(here, "cgrseg_official"))
    os.environ["MM_PATH"] = args.mm_path or os.environ.get("MM_PATH", os.path.join(ROOT, ".cache", "official_mm"))
    os.environ.setdefault("SEGDET_ROOT", ROOT)
    for key in ("OFFICIAL_REPO", "MM_PATH"):
        if not os.path.isdir(os.environ[key]):
            sys.exit(f"benchmark_official: {key}={os.environ[key]} is not a folder")
    spec = importlib.util.spec_from_file_location("official_harness", args.harness)
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    return harness


def matmul_rate(threads: int, n: int = 2048, reps: int = 5) -> float:
    """Multiply-adds per second of an n x n float32 matmul (median of ``reps``)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return n ** 3 / statistics.median(times)


def build_pair(harness, variant: str, seed: int):
    """(official EncoderDecoder, segdet model with the same weights), both in eval mode."""
    from detectron2.modeling import build_model
    from segdet.modeling.cgrseg.convert import convert_cgrseg_state_dict
    from segdet.utils.config_io import load_config

    harness.import_official()
    official = harness.build_official(variant.lower())[0].eval()
    harness.randomise_(official, seed)
    harness.calibrate_bn_(official, seed)
    cfg = load_config(os.path.join(ROOT, "projects", "CGRSeg", "configs", "ADE20K", CONFIGS[variant]),
                      ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    model = build_model(cfg).eval()
    state = convert_cgrseg_state_dict(official.state_dict())
    model.load_state_dict(state, strict=True)
    return official, model


def main(argv=None):
    args = parse_args(argv)
    harness = load_harness(args)
    from segdet.export.runtimes import compare_runtimes
    from segdet.utils.flops import count_flops

    torch.set_num_threads(args.threads)
    official, model = build_pair(harness, args.variant, args.seed)
    h, w = args.input_size
    raw = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(123)) * 255
    mean = torch.tensor(harness.PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(harness.PIXEL_STD).view(1, 3, 1, 1)

    def run_official(x):
        with torch.inference_mode():
            return harness.quiet(official.encode_decode, (x - mean) / std, [{}]).numpy()

    with torch.inference_mode():
        eager = model([{"image": raw[0], "height": h, "width": w}])[0]["sem_seg"]
    reference = torch.from_numpy(run_official(raw))[0]
    diff = (reference - eager).abs().max().item() / reference.abs().max().item()
    macs = count_flops(model, raw[0], "mmcv")["total"] * 1e9
    rate_before = matmul_rate(args.threads)
    result = compare_runtimes(model, raw, args.runtime, rounds=args.iters, warmup=args.warmup,
                              threads=args.threads, others={"official": run_official})
    rate = min(rate_before, matmul_rate(args.threads))
    official_median = result["runtimes"]["official"]["latency_s"]["median"]
    for name, entry in result["runtimes"].items():
        if "latency_s" in entry:
            entry["official_over_this"] = official_median / entry["latency_s"]["median"]
            entry["over_physical_limit"] = entry["latency_s"]["median"] / (macs / rate)
    result.update({
        "variant": args.variant, "input_size": [h, w], "threads": args.threads, "seed": args.seed,
        "official_vs_segdet_eager_relative_max_diff": diff,
        "gmacs": macs / 1e9, "matmul_gmacs_per_s": rate / 1e9, "physical_limit_s": macs / rate,
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "torch": torch.__version__, "harness": os.path.abspath(args.harness),
    })
    print(f"CGRSeg-{args.variant} {h}x{w}, {args.threads} threads, {args.iters} rounds; official vs segdet "
          f"logits: {diff:.1e} relative; {macs / 1e9:.2f} GMACs, matmul {rate / 1e9:.1f} GMAC/s -> physical "
          f"limit {macs / rate * 1e3:.1f} ms")
    for name, entry in result["runtimes"].items():
        if "latency_s" in entry:
            print(f"  {name:14s} {entry['latency_s']['median'] * 1e3:8.1f} ms   official / this "
                  f"{entry['official_over_this']:.2f}x   this / limit {entry['over_physical_limit']:.2f}x")
        else:
            print(f"  {name:14s} error: {entry.get('error')}")
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
