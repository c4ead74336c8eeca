"""One segmentor timed under several CPU runtimes, interleaved round by round on the same input
(``tools/benchmark.py --runtime``).

Every runtime runs the same computation, :class:`ExportableSegmentor` (raw pixels (B, 3, H, W)
-> logits (B, K, H, W): normalisation, padding, backbone, head, crop), so the latencies compare
runtimes, not interfaces:

  eager          the PyTorch model (inference mode)
  fused          the PyTorch model through ``segdet.deploy.fuse_model`` (BatchNorm folded, CGRSeg)
  fused_cl       the same in channels-last memory format
  onnxruntime    the model exported to ONNX (dynamo exporter), onnxruntime CPU, ORT_ENABLE_ALL,
                 ``intra_op_num_threads`` = torch's threads
  torch_compile  ``torch.compile`` of the model (inductor)

Setup (fusing, export + session, nothing for compile) and the first call (compilation for
torch_compile) are timed apart from the rounds. A runtime that fails to set up or run reports
its error as a string; eager, the reference, must run.
"""
import os
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from .segmentor import ExportableSegmentor
from .verify import ExportMismatchError, compare_outputs

__all__ = ["RUNTIMES", "EXPORT_TOLERANCE", "compare_runtimes"]

RUNTIMES = ("eager", "fused", "fused_cl", "onnxruntime", "torch_compile")
EXPORT_TOLERANCE = 1e-4  # max abs difference relative to the largest logit, as tools/export_model.py


def _torch_runner(module: torch.nn.Module) -> Callable:
    def run(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return module(x).numpy()
    return run


def _setup(name: str, model: torch.nn.Module, example: torch.Tensor, threads: int, folder: str) -> Callable:
    """The function running ``model`` (a segmentor in eval mode) under runtime ``name``."""
    if name == "eager":
        return _torch_runner(ExportableSegmentor(model).eval())
    if name in ("fused", "fused_cl"):
        from segdet.deploy import fuse_model, fused_module_count

        fused = fuse_model(model.eval())
        if not fused_module_count(fused):
            raise ValueError(f"{type(model).__name__} has no fused inference path (segdet.deploy.fuse_model "
                             f"found nothing to fuse)")
        if name == "fused_cl":
            fused = fused.to(memory_format=torch.channels_last)
        return _torch_runner(ExportableSegmentor(fused).eval())
    if name == "onnxruntime":
        from .onnx_runtime import export_onnx_file, onnx_session

        path = os.path.join(folder, "model.onnx")
        with torch.no_grad():
            export_onnx_file(ExportableSegmentor(model).eval(), example, path)
        session = onnx_session(path, threads)
        return lambda x: session.run(None, {"image": x.numpy()})[0]
    if name == "torch_compile":
        return _torch_runner(torch.compile(ExportableSegmentor(model).eval()))
    raise ValueError(f"unknown runtime {name!r}; expected one of {', '.join(RUNTIMES)}")


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def compare_runtimes(model: torch.nn.Module, example: torch.Tensor, runtimes: Sequence[str], rounds: int,
                     warmup: int, threads: int, others: Optional[Dict[str, Callable]] = None) -> Dict:
    """Times ``model`` on ``example`` (B, 3, H, W) raw pixels under each of ``runtimes`` (eager
    is added first when missing: the reference), and the callables of ``others`` (name ->
    function of ``example`` returning logits as a numpy array, e.g. another implementation of
    the same model) in the same rounds; their difference to eager is reported only when they
    hold the same weights, so it is left out for them.

    Returns ``{"runtimes": {name: entry}, ...}``; an entry has ``setup_s``, ``first_call_s``,
    ``latency_s`` (median, mean, min, runs: one call per round, the runtimes in turn, the order
    rotated every round), ``ratio_to_eager`` (eager median / this median: > 1 is faster) and the
    max abs logit difference to eager (onnxruntime: checked against :data:`EXPORT_TOLERANCE`), or
    only ``error`` (a string).
    """
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"--runtime {' '.join(unknown)}: unknown; expected some of {', '.join(RUNTIMES)}")
    names: List[str] = ["eager"] + [r for r in dict.fromkeys(runtimes) if r != "eager"]
    entries: Dict[str, Dict] = {}
    runners: Dict[str, Callable] = {}
    outputs: Dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            try:
                start = time.perf_counter()
                runner = _setup(name, model, example, threads, folder)
                setup = time.perf_counter() - start
                start = time.perf_counter()
                outputs[name] = runner(example)
                entries[name] = {"setup_s": setup, "first_call_s": time.perf_counter() - start}
                runners[name] = runner
            except Exception as exc:  # eager is the reference: its failure is the caller's
                if name == "eager":
                    raise
                entries[name] = {"error": _error(exc)}
        for name, runner in (others or {}).items():
            if name in entries:
                raise ValueError(f"compare_runtimes: {name!r} is both a runtime and another implementation")
            start = time.perf_counter()
            runner(example)
            entries[name] = {"setup_s": 0.0, "first_call_s": time.perf_counter() - start}
            runners[name] = runner
        times: Dict[str, List[float]] = {name: [] for name in runners}
        order = list(runners)
        for round_index in range(warmup + rounds):
            shift = round_index % len(order)
            for name in order[shift:] + order[:shift]:
                start = time.perf_counter()
                runners[name](example)
                if round_index >= warmup:
                    times[name].append(time.perf_counter() - start)
    eager_median = statistics.median(times["eager"]) if rounds else float("nan")
    for name, values in times.items():
        entry = entries[name]
        if values:
            median = statistics.median(values)
            entry["latency_s"] = {"median": median, "mean": statistics.mean(values), "min": min(values),
                                  "runs": len(values)}
            entry["ratio_to_eager"] = eager_median / median
        if name in (others or {}):
            continue
        try:
            diff = compare_outputs([outputs["eager"]], [outputs[name]], f"{name} against eager", rtol=float("inf"))
        except ExportMismatchError as exc:  # another shape, or non-finite logits
            entry["error"] = str(exc)
            continue
        entry["max_abs_diff_vs_eager"] = diff["max_abs_diff"]
        entry["relative_diff_vs_eager"] = diff["relative"]
        if name == "onnxruntime":
            entry["within_export_tolerance"] = diff["relative"] <= EXPORT_TOLERANCE
            entry["export_tolerance"] = EXPORT_TOLERANCE
            entry["intra_op_num_threads"] = threads
            entry["graph_optimization_level"] = "ORT_ENABLE_ALL"
    return {"runtimes": {name: entries[name] for name in [*names, *(others or {})]}, "rounds": rounds, "warmup_rounds": warmup,
            "timed": "ExportableSegmentor: raw pixels (B, 3, H, W) -> logits (B, K, H, W), no dict API"}
