#!/usr/bin/env python
"""Benchmark a segdet / Detectron2 model: parameters, FLOPs, latency, peak memory -> JSON.

Inference (default): batch 1, fixed thread count, warm-up runs, then the median of --iters timed
runs of the whole model (preprocessing, backbone, head, postprocessing).

  python tools/benchmark.py --config-file projects/CGRSeg/configs/ADE20K/CGRSeg-T.yaml \\
      --input-size 512 512 --threads 2 --output output/bench/cgrseg_t.json

With --optimize the model's inference-optimised path is timed too (``segdet.deploy.fuse_model``:
modules swapped for fused versions, e.g. BatchNorm folded into convolutions) and the
maximum absolute logit difference to the plain model is reported. --channels-last also converts
the model to channels-last memory format. --huge-pages runs with PyTorch's huge-page CPU
allocations (THP_MEM_ALLOC_ENABLE=1, process-wide, both paths): a forward then does not fault in
its large output 4 KiB at a time.

--runtime eager fused fused_cl onnxruntime torch_compile (one or several; eager is always timed, as the
reference) times a semantic segmentor under each runtime in one run, interleaved round by round
on the same input: --warmup rounds, then --iters timed rounds (one call per runtime each).
onnxruntime runs the model's ONNX export (CPU, ORT_ENABLE_ALL, intra_op_num_threads = --threads);
torch_compile is torch.compile (inductor). Setup (export, fusing) and the first call (compilation)
are reported apart; the JSON's "runtimes" has each runtime's median latency, its ratio to eager
(eager median / its median) and its max abs logit difference to eager, or the error it failed
with. What is timed is the export wrapper (raw pixels -> logits at the input size), see
segdet/export/runtimes.py.

  python tools/benchmark.py --config-file projects/CGRSeg/configs/ADE20K/CGRSeg-T.yaml --input-size 512 512 \
      --threads 2 --runtime eager fused onnxruntime torch_compile --output output/bench/cgrseg_t_runtimes.json

--train-step times one training step instead (forward + backward + optimizer step on a
synthetic batch of --input-size images with two boxes each, or with --train-data on the first
batch of the config's training set, as the trainer's loader maps it); for a DistillationModel
the step is broken down into teacher forward, student forward, distillation losses (forward)
and the rest, and the cost of the distillation losses (forward + backward + the update of their
parameters) is measured twice: by removing them from the step, and by timing them alone on the
step's recorded features (the less noisy of the two).

FLOPs: one multiply-add = one flop; conventions in segdet/utils/flops.py ("mmcv" is what
mmseg-based papers quote, "fvcore" also counts attention matmuls).
"""
import argparse
import copy
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


def peak_rss_mb_reset() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def rss_mb(field: str = "VmHWM") -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def parse_args(argv=None):
    from segdet.export.runtimes import RUNTIMES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input-size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=7, help="timed runs; the median is reported")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--optimize", action="store_true", help="also time the fused inference path")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--runtime", action="append", metavar="NAME", choices=RUNTIMES,
                        help="segmentors: time these runtimes interleaved, one or several names "
                             f"({', '.join(RUNTIMES)})")
    parser.add_argument("--huge-pages", action="store_true",
                        help="run with PyTorch's huge-page CPU allocations (THP_MEM_ALLOC_ENABLE=1; the tool "
                             "restarts itself with the variable set when it is not): far fewer page faults "
                             "for large outputs and feature maps, see segdet/utils/cpu_allocator.py")
    parser.add_argument("--no-flops", action="store_true")
    parser.add_argument("--train-step", action="store_true", help="time training steps instead")
    parser.add_argument("--train-data", action="store_true",
                        help="--train-step on the first batch of cfg.DATASETS.TRAIN (the training mapper's "
                             "sizes and GT boxes; --input-size is not used) instead of a synthetic batch")
    parser.add_argument("--output", default=None, help="JSON file (default: print only)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(split_runtime_names(sys.argv[1:] if argv is None else list(argv)))


def split_runtime_names(argv):
    """``--runtime a b`` -> ``--runtime a --runtime b``: the names end at the next option or
    config key (``MODEL.WEIGHTS ...``), so that KEY VALUE overrides may follow them."""
    out, names = [], False
    for token in argv:
        if token == "--runtime":
            names = True
            continue
        if names and (token.startswith("-") or ("." in token and token.split(".")[0].isupper())):
            names = False
        out += ["--runtime", token] if names else [token]
    return out


def build(args):
    import segdet  # noqa: F401
    from detectron2.modeling import build_model
    from segdet.utils.config_io import load_config

    opts = ["MODEL.DEVICE", args.device, "MODEL.WEIGHTS", "", "MODEL.MOBILENET_V2.WEIGHTS", ""] + list(args.opts)
    cfg = load_config(args.config_file, opts, freeze=False)
    if cfg.MODEL.META_ARCHITECTURE == "DistillationModel":
        # the teacher's own weights (or random ones) replace any ImageNet initialisation
        cfg.DISTILL.TEACHER.OPTS = list(cfg.DISTILL.TEACHER.OPTS) + ["MODEL.MOBILENET_V2.WEIGHTS", ""]
        if not cfg.DISTILL.TEACHER.WEIGHTS:
            cfg.DISTILL.TEACHER.WEIGHTS = random_teacher_weights(cfg)
    cfg.freeze()
    return cfg, build_model(cfg)


def random_teacher_weights(cfg) -> str:
    """Timing needs no trained teacher: random weights of the right shapes."""
    import tempfile

    from segdet.utils.synthetic import save_random_teacher_weights

    path = os.path.join(tempfile.mkdtemp(), "teacher.pth")
    save_random_teacher_weights(cfg, path, ["MODEL.DEVICE", cfg.MODEL.DEVICE])
    return path


def bench_inference(args, cfg, model):
    from segdet.utils.flops import count_flops

    h, w = args.input_size
    image = (torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 255).to(args.device)
    inputs = [{"image": image, "height": h, "width": w} for _ in range(args.batch_size)]
    model.eval()
    result = {"parameters": sum(p.numel() for p in model.parameters())}
    if not args.no_flops:
        result["gflops"] = {c: count_flops(copy.deepcopy(model).cpu(), image.cpu(), c) for c in ("mmcv", "fvcore")}

    def run(m, x):
        with torch.inference_mode():
            return m(x)

    variants = {"plain": (model, inputs)}
    if args.optimize or args.channels_last:
        fast = optimized_copy(model, args.channels_last)
        variants["optimized"] = (fast, inputs)
    outputs = {}
    for name, (m, x) in variants.items():
        for _ in range(args.warmup):
            run(m, x)
        peak_rss_mb_reset()
        before = rss_mb("VmRSS")
        times = []
        for _ in range(args.iters):
            t, out = timed(lambda: run(m, x), args.device)
            times.append(t)
        outputs[name] = out
        entry = {"latency_s": {"median": statistics.median(times), "mean": statistics.mean(times),
                               "min": min(times), "runs": len(times)}}
        if args.device.startswith("cuda"):
            entry["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        else:
            entry["peak_rss_mb"] = rss_mb("VmHWM")
            entry["peak_rss_above_start_mb"] = rss_mb("VmHWM") - before
        result[name] = entry
    if "optimized" in outputs:
        result["optimized"]["max_abs_diff_vs_plain"] = max_abs_diff(outputs["plain"], outputs["optimized"])
        result["speedup"] = result["plain"]["latency_s"]["median"] / result["optimized"]["latency_s"]["median"]
    return result


def bench_runtimes(args, cfg, model):
    """--runtime: the segmentor under each runtime (segdet/export/runtimes.py)."""
    from detectron2.modeling import SemanticSegmentor
    from segdet.export.runtimes import compare_runtimes
    from segdet.utils.errors import ConfigError

    if not isinstance(model, SemanticSegmentor):
        raise ConfigError(f"--runtime: {args.config_file} is a {type(model).__name__}; the runtime comparison "
                          "supports semantic segmentors only (detectors are not exported)")
    if args.device != "cpu" or args.train_step:
        raise ConfigError("--runtime compares CPU inference runtimes: use it with --device cpu, without --train-step")
    h, w = args.input_size
    image = torch.rand(args.batch_size, 3, h, w, generator=torch.Generator().manual_seed(0)) * 255
    result = {"parameters": sum(p.numel() for p in model.parameters())}
    result.update(compare_runtimes(model.eval(), image, args.runtime, rounds=args.iters, warmup=args.warmup,
                                   threads=args.threads))
    return result


def optimized_copy(model, channels_last: bool):
    from segdet.deploy import fuse_model

    fast = fuse_model(model.eval())
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast


def max_abs_diff(a, b) -> float:
    diffs = []
    for x, y in zip(a, b):
        for key in x:
            if key == "sem_seg":
                diffs.append((x[key] - y[key]).abs().max().item())
            elif key == "instances":
                if len(x[key]) == len(y[key]) and len(x[key]):
                    diffs.append((x[key].pred_boxes.tensor - y[key].pred_boxes.tensor).abs().max().item())
    return max(diffs) if diffs else float("nan")


def training_batch(args, cfg):
    """The batch the training steps are timed on: the first of cfg.DATASETS.TRAIN through the
    trainer's loader (``--train-data``, no worker processes) or a synthetic one."""
    if args.train_data:
        from detectron2.utils.env import seed_all_rng
        from segdet.engine import Trainer

        seed_all_rng(0)  # the sampler's order and the random resize: the same batch every run
        loader_cfg = cfg.clone()
        loader_cfg.defrost()
        loader_cfg.DATALOADER.NUM_WORKERS = 0
        if args.batch_size != 1:
            loader_cfg.SOLVER.IMS_PER_BATCH = args.batch_size
        return next(iter(Trainer.build_train_loader(loader_cfg)))
    from segdet.utils.synthetic import synthetic_batch

    h, w = args.input_size
    return synthetic_batch(cfg, h, w, n=cfg.SOLVER.IMS_PER_BATCH if args.batch_size == 1 else args.batch_size)


def describe_batch(args, cfg, batch) -> dict:
    """Images per step, their sizes and GT boxes (the instance terms' cost grows with them)."""
    out = {"images_per_step": len(batch),
           "data": f"first batch of {cfg.DATASETS.TRAIN[0]}" if args.train_data else "synthetic",
           "image_sizes": [list(x["image"].shape[-2:]) for x in batch]}
    if all("instances" in x for x in batch):
        out["gt_boxes_per_image"] = [len(x["instances"]) for x in batch]
    return out


def bench_train_step(args, cfg, model):
    from detectron2.utils.events import EventStorage
    from segdet.engine import build_optimizer

    batch = training_batch(args, cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)

    def step():
        losses = model(batch)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    if not hasattr(model, "distill_losses"):
        with EventStorage(0):
            for _ in range(args.warmup):
                step()
            times = [timed(step, args.device)[0] for _ in range(args.iters)]
        return {"step_s": {"median": statistics.median(times), "mean": statistics.mean(times)},
                **describe_batch(args, cfg, batch)}

    # Steps with and without the distillation losses, interleaved so that a drift in machine
    # speed affects both alike; the DistillTimer's times are read after each step with the losses.
    from segdet.engine.distill_timer import PARTS, DistillTimer

    with_times, without_times, parts = [], [], {k: [] for k in PARTS}
    with EventStorage(0), DistillTimer(model, log_period_s=0) as timer:
        for _ in range(args.warmup):
            step()
            with model.without_distill_losses():
                step()
        for _ in range(args.iters):
            with_times.append(timed(step, args.device)[0])
            for key, values in parts.items():
                values.append(timer.last_s[key])
            with model.without_distill_losses():
                without_times.append(timed(step, args.device)[0])
    step_s, without = statistics.median(with_times), statistics.median(without_times)
    t = {k: statistics.median(v) for k, v in parts.items()}
    alone = time_losses_alone(args, cfg, model, step)
    return {
        "step_s": {"median": step_s, "mean": statistics.mean(with_times)},
        **describe_batch(args, cfg, batch),
        "breakdown_s": {"teacher_forward": t["teacher"], "student_forward": t["student"],
                        "distill_losses_forward": t["losses"],
                        "backward_and_optimizer": step_s - sum(t.values())},
        "step_without_distill_losses_s": without,
        "distill_losses_fwd_bwd_s": step_s - without,
        "distill_losses_fraction_of_step": (step_s - without) / step_s,
        "distill_losses_alone_s": alone,
        "distill_losses_alone_fraction_of_step": alone["fwd_bwd_update"] / step_s,
        "teacher_forward_fraction_of_step": t["teacher"] / step_s,
    }


def detached_features(features, leaf: bool):
    """A copy of a (nested dict / list of) feature tensors cut from their graph; with ``leaf``
    the floating-point ones require grad, as a student's features do."""
    if isinstance(features, dict):
        return {k: detached_features(v, leaf) for k, v in features.items()}
    if isinstance(features, (list, tuple)):
        return type(features)(detached_features(v, leaf) for v in features)
    if torch.is_tensor(features):
        features = features.detach()
        return features.requires_grad_() if leaf and features.is_floating_point() else features
    return features


def time_losses_alone(args, cfg, model, step) -> dict:
    """The distillation losses timed on their own, on the features of one training step: forward,
    backward (into the recorded student features and the losses' parameters) and the optimizer
    step on the losses' parameters. Unlike the difference of the steps with and without the
    losses, it is not the small difference of two large, noisy times; it leaves out what the
    losses cost the rest of the step (e.g. the memory their saved tensors hold)."""
    from detectron2.utils.events import EventStorage
    from segdet.engine import build_optimizer

    recorded = {}

    def record(module, inputs):
        recorded[module] = inputs

    handles = [loss.register_forward_pre_hook(record) for loss in model.distill_losses.values()]
    with EventStorage(0):
        step()
    for handle in handles:
        handle.remove()
    calls = [(loss, detached_features(student, leaf=True), detached_features(teacher, leaf=False), batched_inputs)
             for loss, (student, teacher, batched_inputs) in recorded.items()]
    optimizer = build_optimizer(cfg, model.distill_losses)

    def forward():
        return sum(sum(loss(s, t, b).values()) for loss, s, t, b in calls)

    def fwd_bwd_update():
        optimizer.zero_grad()
        forward().backward()
        optimizer.step()

    forward_times, full_times = [], []
    with EventStorage(0):
        for _ in range(args.warmup):
            fwd_bwd_update()
        for _ in range(2 * args.iters):
            with torch.no_grad():
                forward_times.append(timed(forward, args.device)[0])
            full_times.append(timed(fwd_bwd_update, args.device)[0])
    return {"forward_no_grad": statistics.median(forward_times),
            "fwd_bwd_update": statistics.median(full_times),
            "fwd_bwd_update_min": min(full_times)}


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from segdet.utils.cpu_allocator import THP_ENV, huge_page_allocations_active, kernel_thp_mode

    huge_pages = huge_page_allocations_active()
    if args.huge_pages and not huge_pages:
        raise RuntimeError(f"--huge-pages: {THP_ENV}=1 must be in the environment before torch is imported "
                           f"(run tools/benchmark.py as a script, or set it yourself)")
    cfg, model = build(args)
    report = {
        "config": args.config_file, "opts": args.opts,
        "input_size": None if args.train_step and args.train_data else list(args.input_size),
        "device": args.device, "threads": args.threads, "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "batch_size": args.batch_size,
        "huge_page_allocations": huge_pages, "kernel_thp_mode": kernel_thp_mode(),
    }
    if args.runtime:
        report.update(bench_runtimes(args, cfg, model))
    elif args.train_step:
        report["train_step"] = bench_train_step(args, cfg, model)
    else:
        report.update(bench_inference(args, cfg, model))
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return report


def restart_with_huge_pages_if_asked() -> None:
    """PyTorch reads THP_MEM_ALLOC_ENABLE at import: re-run this script with it set."""
    if "--huge-pages" in sys.argv[1:] and os.environ.get("THP_MEM_ALLOC_ENABLE") != "1":
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:],
                  dict(os.environ, THP_MEM_ALLOC_ENABLE="1"))


if __name__ == "__main__":
    from segdet.utils.errors import run_with_clear_errors

    restart_with_huge_pages_if_asked()
    run_with_clear_errors(main)
