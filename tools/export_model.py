#!/usr/bin/env python
"""Export a trained segdet semantic segmentor or detector (Faster R-CNN, RetinaNet) to ONNX or
torch.export, and check the export by running it (onnxruntime / the exported program) on the
same inputs as PyTorch.

Segmentors of any config (CGRSeg, CGRSeg + SSA, Semantic-FPN, the student of a distillation
config). The input size is fixed at export (--input-size): CGRSeg's graph does not export with
dynamic height and width. By default the model takes raw pixels (B, 3, H, W) float32 0-255 in the
config's INPUT.FORMAT channel order and returns logits (B, K, H, W) at that size (normalisation
and padding inside); --no-preprocess exports the bare network (normalised input, H and W
multiples of the backbone's size divisibility). --fuse exports the fused inference path
(segdet.deploy.fuse_model with standard operations only); the check also compares it with the
plain model's own inference.

Detectors (Faster R-CNN: RPN + standard ROI heads, boxes only; RetinaNet) take one image (3, H, W)
float32 0-255 in INPUT.FORMAT order at the fixed --input-size (resize it outside, as the config's
test resize would; normalisation and padding are inside) and return boxes (N, 4) XYXY in input
pixels, scores (N,) and classes (N,) int64, by decreasing score, N up to
TEST.DETECTIONS_PER_IMAGE: the model's own detections of the image at that size. The check
compares the detections: the same number and classes, boxes and scores within --rtol.

Examples:
  python tools/export_model.py --config-file projects/CGRSeg/configs/Samples/cgrseg_t_street.yaml \\
      --format onnx --input-size 512 1024 --output output/export/cgrseg_t MODEL.WEIGHTS model_final.pth
  python tools/export_model.py --config-file CONFIG --format torch_export --output out/ MODEL.WEIGHTS w.pth
  python tools/export_model.py --config-file configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml --format onnx \\
      --input-size 400 400 --output output/export/faster_rcnn MODEL.WEIGHTS model_final.pth

Writes into --output: model.onnx or model.pt2, and export.json (format, input, output, the
check's max abs difference). A difference above --rtol x the largest output value is an error
(exit status 2), not a warning.
"""
import argparse
import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*is deprecated", category=FutureWarning)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segdet.utils.threads import thread_count  # noqa: E402

PREFIX = "[export]"
FORMATS = {"onnx": "model.onnx", "torch_export": "model.pt2"}
DETECTION_OUTPUTS = ("boxes", "scores", "classes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export_model.py", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="onnx or torch_export")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the export (created)")
    parser.add_argument("--input-size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"),
                        help="the exported model's input height and width (default: 512 512)")
    parser.add_argument("--batch-size", type=int, default=1, metavar="N", help="images per call (default: 1)")
    parser.add_argument("--no-preprocess", action="store_true",
                        help="export the bare network: normalised input, no padding, logits at the input size")
    parser.add_argument("--fuse", action="store_true",
                        help="export the fused inference path of a segmentor (segdet.deploy.fuse_model with "
                             "standard operations only: BatchNorm and scales folded into the convolutions)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--rtol", type=float, default=1e-4,
                        help="largest accepted max abs difference, relative to the largest output (default: 1e-4)")
    parser.add_argument("--threads", type=thread_count, metavar="N", help="CPU threads for PyTorch and onnxruntime")
    parser.add_argument("--trust-pickle", action="store_true", help="allow plain unpickling of MODEL.WEIGHTS")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. MODEL.WEIGHTS path/to/model_final.pth")
    return parser


def example_inputs(wrapper, batch: int, height: int, width: int, seed: int):
    """A seeded random input the model accepts: raw pixels 0-255, or normalised values."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    if wrapper.preprocess:
        return torch.rand(batch, 3, height, width, generator=generator) * 255.0
    return torch.randn(batch, 3, height, width, generator=generator)


def export_onnx(wrapper, example, path: str, opset: int, threads, metadata: dict):
    """Writes ``path`` with ``metadata`` (segdet.* keys, read by tools/predict.py --onnx);
    returns a function running it in onnxruntime (CPU)."""
    from segdet.export import export_onnx_file, onnx_session

    export_onnx_file(wrapper, example, path, opset, metadata)
    session = onnx_session(path, threads)
    return lambda x: session.run(None, {"image": x.numpy()})[0]


def export_program(wrapper, example, path: str):
    """Writes ``path`` (torch.export.save); returns a function running the reloaded program."""
    import torch

    torch.export.save(torch.export.export(wrapper, (example,)), path)
    module = torch.export.load(path).module()
    return lambda x: module(x).detach().numpy()


def export_detector_onnx(wrapper, example, path: str, opset: int, threads, metadata: dict):
    """Writes ``path`` (outputs boxes, scores, classes); returns a function running it in
    onnxruntime (CPU) that gives the three arrays."""
    from segdet.export import export_onnx_file, onnx_session

    export_onnx_file(wrapper, example, path, opset, metadata, output_names=DETECTION_OUTPUTS)
    session = onnx_session(path, threads)
    return lambda x: session.run(None, {"image": x.numpy()})


def export_detector_program(wrapper, example, path: str):
    """Writes ``path`` (torch.export.save); returns a function running the reloaded program that
    gives boxes, scores, classes as arrays."""
    import torch

    torch.export.save(torch.export.export(wrapper, (example,)), path)
    module = torch.export.load(path).module()
    return lambda x: [y.detach().numpy() for y in module(x)]


def _detections(instances):
    return [instances.pred_boxes.tensor.numpy(), instances.scores.numpy(), instances.pred_classes.numpy()]


def run_detector(args, cfg, model) -> dict:
    """The export of a Faster R-CNN or RetinaNet (see the module's docstring)."""
    import torch

    from segdet.export import ExportableDetector, compare_detections, export_metadata, nms_may_keep_any_number
    from segdet.utils.errors import ConfigError

    height, width = args.input_size
    if args.batch_size != 1:
        raise ConfigError(f"--batch-size {args.batch_size}: a detector export takes one image per call")
    if args.no_preprocess:
        raise ConfigError("--no-preprocess: a detector export always has its normalisation and padding inside")
    wrapper = ExportableDetector(model).eval()
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, FORMATS[args.format])
    checks = [torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed)) * 255.0 for seed in (0, 1)]
    print(f"{PREFIX} {type(model).__name__}{' (fused)' if args.fuse else ''} "
          f"({cfg.MODEL.WEIGHTS or 'initial weights'}) -> {args.format}, "
          f"input 3x{height}x{width}, outputs {', '.join(DETECTION_OUTPUTS)}", flush=True)
    started = time.time()
    with torch.no_grad(), nms_may_keep_any_number():
        if args.format == "onnx":
            metadata = export_metadata(True, cfg.INPUT.FORMAT, args.config_file)
            runner = export_detector_onnx(wrapper, checks[0], path, args.opset, args.threads, metadata)
        else:
            runner = export_detector_program(wrapper, checks[0], path)
        seconds = time.time() - started
        reference = [[y.numpy() for y in wrapper(x)] for x in checks]
        exported = [runner(x) for x in checks]
        # the wrapper itself against the detector's own inference at the input's size
        own = [_detections(model([{"image": x, "height": height, "width": width}])[0]["instances"]) for x in checks]
        compare_detections(own, reference, f"the export wrapper of {args.config_file}", rtol=args.rtol)
    diff = compare_detections(reference, exported, f"{args.format} export of {args.config_file}", rtol=args.rtol)
    boxes, scores = diff["boxes"], diff["scores"]
    print(f"{PREFIX} checked on {len(checks)} inputs ({', '.join(map(str, diff['detections']))} detections): "
          f"boxes max abs diff {boxes['max_abs_diff']:.3g} ({boxes['relative']:.3g} of the largest coordinate "
          f"{boxes['max_abs_reference']:.3g}), scores max abs diff {scores['max_abs_diff']:.3g} "
          f"({scores['relative']:.3g} of the largest score {scores['max_abs_reference']:.3g}), classes identical; "
          f"tolerance {args.rtol:g}", flush=True)
    if not any(diff["detections"]):
        print(f"{PREFIX} note: no detections above the score threshold on the check inputs, so no boxes or scores "
              "were compared (untrained weights?)", flush=True)
    summary = {"config_file": args.config_file, "weights": cfg.MODEL.WEIGHTS, "format": args.format, "file": path,
               "fused": bool(args.fuse),
               "input": {"name": "image", "shape": [3, height, width], "dtype": "float32", "preprocess": True,
                         "channel_order": cfg.INPUT.FORMAT},
               "outputs": [{"name": "boxes", "shape": ["N", 4], "dtype": "float32"},
                           {"name": "scores", "shape": ["N"], "dtype": "float32"},
                           {"name": "classes", "shape": ["N"], "dtype": "int64"}],
               "check": diff, "export_seconds": round(seconds, 1)}
    with open(os.path.join(args.output, "export.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"{PREFIX} wrote {path} and export.json in {seconds:.0f} s", flush=True)
    return summary


def run(args) -> dict:
    import torch

    import segdet  # noqa: F401  (registers everything)
    from segdet.engine.predictor import Predictor
    from segdet.export import ExportableSegmentor, compare_outputs, export_metadata, is_exportable_detector
    from segdet.utils.config_io import load_config
    from segdet.utils.errors import ConfigError
    from segdet.utils.threads import set_threads

    set_threads(args.threads)
    height, width = args.input_size
    if min(height, width, args.batch_size) < 1:
        raise ConfigError(f"--input-size and --batch-size must be positive, got {height} {width}, {args.batch_size}")
    cfg = load_config(args.config_file, ["MODEL.DEVICE", "cpu", "MODEL.TRUST_PICKLE", str(args.trust_pickle)]
                      + list(args.opts))
    model = Predictor(cfg).model
    if is_exportable_detector(model):
        if args.fuse:
            raise ConfigError(f"--fuse: {args.config_file} is a detector; the fused inference path is a segmentor's")
        return run_detector(args, cfg, model)
    if not hasattr(model, "sem_seg_head") or hasattr(model, "roi_heads"):
        raise ConfigError(f"{args.config_file}: export supports semantic segmentors, Faster R-CNN (boxes only) and "
                          f"RetinaNet; {type(model).__name__} with these heads is none of them")
    network = model
    if args.fuse:  # checked below against the plain model's own inference
        from segdet.deploy import fuse_model, fused_module_count

        network = fuse_model(model, onednn=False)
        if not fused_module_count(network):
            raise ConfigError(f"--fuse: {type(model.sem_seg_head).__name__} of {args.config_file} has no fused "
                              f"inference path (segdet.deploy.fuse_model finds nothing to fuse)")
    wrapper = ExportableSegmentor(network, preprocess=not args.no_preprocess).eval()
    d = wrapper.size_divisibility
    if args.no_preprocess and (height % d or width % d):
        raise ConfigError(f"--no-preprocess: --input-size {height} {width} must be multiples of {d}")
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, FORMATS[args.format])
    example = example_inputs(wrapper, args.batch_size, height, width, seed=0)
    print(f"{PREFIX} {type(model).__name__} ({cfg.MODEL.WEIGHTS or 'initial weights'}) -> {args.format}, "
          f"input {args.batch_size}x3x{height}x{width}", flush=True)
    started = time.time()
    with torch.no_grad():
        if args.format == "onnx":
            metadata = export_metadata(wrapper.preprocess, cfg.INPUT.FORMAT, args.config_file)
            runner = export_onnx(wrapper, example, path, args.opset, args.threads, metadata)
        else:
            runner = export_program(wrapper, example, path)
        seconds = time.time() - started
        checks = [example, example_inputs(wrapper, args.batch_size, height, width, seed=1)]
        reference = [wrapper(x).numpy() for x in checks]
        exported = [runner(x) for x in checks]
        if wrapper.preprocess:  # the wrapper itself against the segmentor's own inference
            own = [model([{"image": image, "height": height, "width": width}])[0]["sem_seg"].numpy()
                   for image in example]
            compare_outputs(list(reference[0]), own, f"the export wrapper of {args.config_file}", rtol=args.rtol)
    diff = compare_outputs(reference, exported, f"{args.format} export of {args.config_file}", rtol=args.rtol)
    print(f"{PREFIX} checked on {len(checks)} inputs: max abs diff {diff['max_abs_diff']:.3g} "
          f"({diff['relative']:.3g} of the largest logit {diff['max_abs_reference']:.3g}; tolerance {args.rtol:g})",
          flush=True)
    summary = {"config_file": args.config_file, "weights": cfg.MODEL.WEIGHTS, "format": args.format, "file": path,
               "fused": bool(args.fuse),
               "input": {"name": "image", "shape": [args.batch_size, 3, height, width], "dtype": "float32",
                         "preprocess": wrapper.preprocess, "channel_order": cfg.INPUT.FORMAT},
               "output": {"name": "logits", "shape": list(reference[0].shape)},
               "check": diff, "export_seconds": round(seconds, 1)}
    with open(os.path.join(args.output, "export.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"{PREFIX} wrote {path} and export.json in {seconds:.0f} s", flush=True)
    return summary


def main(argv=None) -> dict:
    from segdet.utils.errors import run_with_clear_errors

    return run_with_clear_errors(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
