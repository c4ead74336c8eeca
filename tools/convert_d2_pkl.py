#!/usr/bin/env python
"""Convert a detectron2 / Caffe2 model-zoo pickle (.pkl) once into a weights-only .pth.

segdet never unpickles a checkpoint (which can run arbitrary code) without --trust-pickle. This
tool does it once, for a file you trust, and writes a .pth that torch.load(weights_only=True)
reads, so MODEL.WEIGHTS / DISTILL.TEACHER.WEIGHTS need no flag afterwards:

  python tools/convert_d2_pkl.py --trust-pickle R-50.pkl R-50.pth
  python tools/convert_d2_pkl.py --trust-pickle detectron2://ImageNetPretrained/MSRA/R-50.pkl R-50.pth
  python tools/train_net.py --config-file CONFIG MODEL.WEIGHTS R-50.pth

The input is read exactly as detectron2's DetectionCheckpointer reads a .pkl: a detectron2
model-zoo file ({"model": arrays, "__author__": ...}) as it is; any other pickle as a Caffe2 /
Detectron1 file (its "blobs", without the *_momentum entries, author "Caffe2", loaded by name
matching). The output holds {"model": tensors, "__author__": ..., and "matching_heuristics" where
the input had it}, so loading it maps the names (Caffe2 conversion, suffix matching) the same way
as loading the .pkl. Optimizer state and other entries are dropped. A torch file that only plain
unpickling can read (.pth with Python objects) is converted the same way, keeping its "model".
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="convert_d2_pkl.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="model-zoo .pkl (a path or a detectron2:// / https:// URL), or a "
                                      "pickled .pth")
    parser.add_argument("output", help=".pth to write (weights only; written atomically)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="required: the input is unpickled, which can run arbitrary code; pass it only "
                             "for a file whose origin you trust")
    return parser.parse_args(argv)


def _as_tensor(key: str, value):
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype != object:
        return torch.from_numpy(np.array(value))  # a writable, contiguous copy
    raise ValueError(f"model entry {key!r} is a {type(value).__name__}, expected a numpy array or tensor")


def read_trusted(path: str) -> dict:
    """The checkpoint dict of ``path`` as detectron2's DetectionCheckpointer reads it, with the
    file unpickled (``.pkl``: detectron2's own model-zoo rules)."""
    from torch import nn

    from segdet.engine.checkpoint_io import SafeCheckpointer, read_checkpoint

    if path.endswith(".pkl"):
        return SafeCheckpointer(nn.Module(), trust_pickle=True, what="input")._load_file(path)
    loaded = read_checkpoint(path, trust_pickle=True, what="input")
    return loaded if isinstance(loaded, dict) and "model" in loaded else {"model": loaded}


def convert(data: dict) -> dict:
    """``{"model": tensors, "__author__", "matching_heuristics"}`` of a checkpoint dict."""
    if not isinstance(data.get("model"), dict):
        raise ValueError(f"expected a dict of weights under 'model', got {type(data.get('model')).__name__}")
    out = {"model": {k: _as_tensor(k, v) for k, v in data["model"].items()}}
    if "__author__" in data:
        out["__author__"] = str(data["__author__"])
    if "matching_heuristics" in data:
        out["matching_heuristics"] = bool(data["matching_heuristics"])
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    from detectron2.utils.file_io import PathManager
    from segdet.engine.checkpoint import atomic_torch_save
    from segdet.engine.checkpoint_io import read_checkpoint
    from segdet.utils.errors import ConfigError

    if not args.trust_pickle:
        raise ConfigError(f"convert_d2_pkl.py: {args.input} would be unpickled, which can run arbitrary code: "
                          "pass --trust-pickle if you trust its origin")
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        raise ConfigError(f"convert_d2_pkl.py: the output {args.output} must differ from the input")
    source = PathManager.get_local_path(args.input) if "://" in args.input else args.input
    converted = convert(read_trusted(source))
    atomic_torch_save(converted, args.output)
    read_checkpoint(args.output, trust_pickle=False, what="output")  # check: weights-only readable
    extras = ", ".join(f"{k}={converted[k]!r}" for k in ("__author__", "matching_heuristics") if k in converted)
    print(f"{args.input} -> {args.output}: {len(converted['model'])} tensors, weights only"
          + (f" ({extras})" if extras else ""))
    return 0


if __name__ == "__main__":
    from segdet.utils.errors import run_with_clear_errors

    sys.exit(run_with_clear_errors(main))
