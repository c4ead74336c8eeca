#!/usr/bin/env python
"""Run a trained segdet / detectron2 model on your own images, folders or a video.

Works for every meta-architecture of a config: detectors, semantic segmentors, and the student of
a distillation config (its run's model_final.pth or model_student_final.pth as MODEL.WEIGHTS).

Examples:
  # a folder of images with the sample detector trained by `make demo`
  python tools/predict.py --config-file configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml \\
      --input my_photos/ --output output/predict/trees MODEL.WEIGHTS output/demo/detection/student/seed1/model_final.pth

  # files and globs with a CGRSeg segmentor, its fused inference path, 4 images a batch
  python tools/predict.py --config-file projects/CGRSeg/configs/Samples/cgrseg_t_street.yaml --fuse \\
      --batch-size 4 --input 'frames/*.jpg' extra.png --output output/predict/street MODEL.WEIGHTS model.pth

  # a segmentor exported by tools/export_model.py, run with onnxruntime (same files written)
  python tools/predict.py --config-file CONFIG --onnx output/export/model.onnx --input 'frames/*.jpg' --output out/

  # a video: writes <output>/<video name>.mp4 with the predictions drawn on every frame
  python tools/predict.py --config-file CONFIG --video-input clip.mp4 --output out/ MODEL.WEIGHTS model.pth

Writes into --output, per image <name> (the file's name without its extension):
  detectors    <name>_overlay.png (boxes with score >= --confidence-threshold) and, for all images,
               coco_instances_results.json (detectron2's COCO results records, plus "file_name";
               image_id = the image's position in the input order): every box the model returns,
               i.e. down to the config's MODEL.ROI_HEADS / RETINANET.SCORE_THRESH_TEST (0.05), as
               for COCO evaluation
  segmentors   <name>_overlay.png (class map over the image), <name>_label.png (class per pixel in
               the dataset's label values, as its label files), <name>_color.png (class colours with
               a legend of the class names present)
Class names and colours come from the config's first DATASETS.TEST (else DATASETS.TRAIN) set.
A file that cannot be read is reported by name and skipped; the run goes on.

--onnx FILE runs a segmentor exported by tools/export_model.py with onnxruntime (CPU) instead of
PyTorch; the config still gives the test resize, the classes and the drawing, MODEL.WEIGHTS is
not read. The export's input size is fixed: every image must come out of the config's test
resize at exactly that size (export with --input-size of that size); an image that does not is
one error line, not padded, since padding would change the prediction. Detectors are not exported.
"""
import argparse
import glob
import json
import logging
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segdet.utils.threads import thread_count  # noqa: E402

PREFIX = "[predict]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="predict.py", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    parser.add_argument("--input", nargs="+", default=[], metavar="PATH",
                        help="image files, globs (quoted) or folders (their images, not sub-folders)")
    parser.add_argument("--video-input", metavar="FILE", help="a video file (any format OpenCV reads)")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the results (created)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, metavar="S",
                        help="detectors: draw boxes with score >= S (default: %(default)s); the JSON keeps all")
    parser.add_argument("--batch-size", type=int, default=1, metavar="N", help="images per forward (default: 1)")
    parser.add_argument("--fuse", action="store_true",
                        help="the fused inference path (BatchNorm folded into convolutions; CGRSeg)")
    parser.add_argument("--onnx", metavar="FILE",
                        help="run this ONNX export of the config's segmentor (tools/export_model.py) with onnxruntime")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when there is a GPU, else cpu)")
    parser.add_argument("--threads", type=thread_count, metavar="N", help="CPU threads (default: torch's)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow plain unpickling of MODEL.WEIGHTS (.pkl, .pth with Python objects); "
                             "only for files you trust")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. MODEL.WEIGHTS path/to/model_final.pth")
    return parser


def list_images(specs):
    """The image files named by ``specs`` (files, globs, folders), in order, each once."""
    from segdet.data.datasets.folders import IMAGE_EXTENSIONS
    from segdet.utils.errors import ConfigError

    paths = []
    for spec in specs:
        if os.path.isdir(spec):
            found = sorted(os.path.join(spec, n) for n in os.listdir(spec) if n.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.exists(spec):
            found = [spec]
        else:
            found = sorted(glob.glob(spec))
        if not found:
            raise ConfigError(f"--input {spec}: no such file, and no image matches it")
        paths += [p for p in found if p not in paths]
    return paths


def prediction_config(args):
    import torch

    from segdet.utils.config_io import load_config

    device = "cpu" if args.onnx else args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    opts = ["MODEL.DEVICE", device, "MODEL.TRUST_PICKLE", str(args.trust_pickle)]
    return load_config(args.config_file, opts + list(args.opts))


def onnx_predictor(cfg, args):
    """A Predictor running the ONNX export ``args.onnx`` of the config's segmentor."""
    from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor

    from segdet.engine.predictor import Predictor, inference_config
    from segdet.export import OnnxSegmentor
    from segdet.utils.errors import ConfigError

    if args.fuse:
        raise ConfigError("--onnx and --fuse: the fused path is PyTorch's; give one of them")
    arch = inference_config(cfg).MODEL.META_ARCHITECTURE
    if not issubclass(META_ARCH_REGISTRY.get(arch), SemanticSegmentor):
        raise ConfigError(f"--onnx: {args.config_file} is a {arch}; ONNX export and prediction support "
                          "semantic segmentors only (detectors are not exported)")
    return Predictor(cfg, model=OnnxSegmentor(args.onnx, inference_config(cfg), threads=args.threads))


def multi_task_metadata(names):
    """One metadata for a multi-task model: the class names and ids of the first detection set
    (``thing_*``) and of the first semantic set (the rest), or None without a set of each."""
    from detectron2.data import MetadataCatalog
    from detectron2.data.catalog import Metadata

    from segdet.data.multi_task import dataset_task

    det = next((n for n in names if dataset_task(n) == "detection"), None)
    seg = next((n for n in names if dataset_task(n) == "sem_seg"), None)
    if det is None or seg is None:
        return None
    fields = {k: v for k, v in MetadataCatalog.get(seg).as_dict().items() if k != "name"}
    fields.update({k: v for k, v in MetadataCatalog.get(det).as_dict().items() if k.startswith("thing_")})
    return Metadata(name=f"{det}+{seg}", **fields)


def dataset_metadata(cfg):
    from detectron2.data import MetadataCatalog

    from segdet.engine.prediction_outputs import drawing_metadata

    names = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN)
    for name in names[:1] + [n for n in names[1:] if cfg.MODEL.META_ARCHITECTURE == "MultiTaskModel"]:
        metadata = MetadataCatalog.get(name)
        if not hasattr(metadata, "thing_classes") and os.path.isfile(getattr(metadata, "json_file", "")):
            from detectron2.data import DatasetCatalog

            DatasetCatalog.get(name)  # a COCO json set: loading it sets the class names and ids
    metadata = MetadataCatalog.get(names[0]) if names else MetadataCatalog.get("__predict__")
    if cfg.MODEL.META_ARCHITECTURE == "MultiTaskModel":
        metadata = multi_task_metadata(names) or metadata
    m = cfg.MODEL
    num_classes = max(m.SEM_SEG_HEAD.NUM_CLASSES, m.ROI_HEADS.NUM_CLASSES, m.RETINANET.NUM_CLASSES)
    return metadata, drawing_metadata(metadata, num_classes)


class ImageWriter:
    """Writes the files of one image's prediction and collects the COCO records."""

    def __init__(self, output_dir: str, metadata, drawing, score_threshold: float):
        self.output_dir, self.metadata, self.drawing = output_dir, metadata, drawing
        self.score_threshold = score_threshold
        self.records = []  # COCO results records of every image
        self.detected = False  # some output had "instances"
        self._names = set()

    def _unique_name(self, path: str) -> str:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, k = stem, 1
        while name in self._names:  # same file name in two input folders
            name, k = f"{stem}_{k}", k + 1
        self._names.add(name)
        return name

    def write(self, path: str, image_id: int, image, output) -> None:
        from PIL import Image

        from segdet.engine.prediction_outputs import (coco_records, color_map_with_legend, draw_overlay,
                                                      label_map_in_dataset_ids)

        name = self._unique_name(path)
        out = lambda suffix: os.path.join(self.output_dir, f"{name}_{suffix}.png")  # noqa: E731
        Image.fromarray(draw_overlay(image, output, self.drawing, self.score_threshold)).save(out("overlay"))
        if "instances" in output:
            self.detected = True
            self.records += coco_records(output["instances"], image_id, path, self.metadata)
        if "sem_seg" in output:
            Image.fromarray(label_map_in_dataset_ids(output["sem_seg"], self.metadata)).save(out("label"))
            Image.fromarray(color_map_with_legend(output["sem_seg"], self.drawing)).save(out("color"))


def _progress(total: int, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=PREFIX, dynamic_ncols=True, file=sys.stdout)


def predict_images(predictor, paths, writer: ImageWriter, batch_size: int):
    """Predicts ``paths`` in batches; returns (images done, [(path, reason) skipped])."""
    from segdet.data.io import CorruptImageError, read_image_checked

    done, skipped = 0, []
    with _progress(len(paths), "img") as bar:
        for start in range(0, len(paths), batch_size):
            batch = []
            for image_id, path in enumerate(paths[start:start + batch_size], start):
                try:
                    batch.append((image_id, path, read_image_checked(path, format="RGB")))
                except (CorruptImageError, FileNotFoundError) as e:
                    skipped.append((path, str(e)))
                    bar.write(f"{PREFIX} skipped: {e}")
                    bar.update(1)
            if not batch:
                continue
            for (image_id, path, image), output in zip(batch, predictor([b[2] for b in batch])):
                writer.write(path, image_id, image, output)
            done += len(batch)
            bar.update(len(batch))
    return done, skipped


def predict_video(predictor, path: str, output_dir: str, drawing, batch_size: int, score_threshold: float) -> int:
    """Writes ``<output_dir>/<video name>.mp4`` with every frame's predictions drawn; returns
    the number of frames."""
    import cv2

    from segdet.engine.prediction_outputs import draw_overlay

    video = cv2.VideoCapture(path)
    if not video.isOpened():
        from segdet.data.io import CorruptImageError

        raise CorruptImageError(f"--video-input {path}: OpenCV cannot open it as a video")
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    target = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + ".mp4")
    writer, frames = None, 0
    with _progress(total, "frame") as bar:
        while True:
            batch = []
            while len(batch) < batch_size:
                ok, frame = video.read()
                if not ok:
                    break
                batch.append(frame[:, :, ::-1].copy())  # BGR -> RGB
            if not batch:
                break
            for image, output in zip(batch, predictor(batch)):
                if writer is None:
                    height, width = image.shape[:2]
                    writer = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
                    if not writer.isOpened():
                        raise ValueError(f"OpenCV cannot write the mp4 video {target} (no mp4v encoder?)")
                writer.write(draw_overlay(image, output, drawing, score_threshold)[:, :, ::-1])
            frames += len(batch)
            bar.update(len(batch))
    video.release()
    if writer is not None:
        writer.release()
    print(f"{PREFIX} wrote {target} ({frames} frames)", flush=True)
    return frames


def run(args) -> dict:
    """Runs the predictions of ``args``; returns a summary (also written as predict_summary.json)."""
    import segdet  # noqa: F401  (registers everything)
    from segdet.engine.predictor import Predictor
    from segdet.utils.errors import ConfigError
    from segdet.utils.threads import set_threads

    if not args.input and not args.video_input:
        raise ConfigError("nothing to predict: give --input and/or --video-input")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    set_threads(args.threads)
    paths = list_images(args.input)
    cfg = prediction_config(args)
    if args.onnx:
        predictor = onnx_predictor(cfg, args)
    else:
        if not cfg.MODEL.WEIGHTS:
            logging.getLogger(PREFIX).warning("MODEL.WEIGHTS is empty: predicting with untrained weights")
        predictor = Predictor(cfg, fuse=args.fuse)
    metadata, drawing = dataset_metadata(predictor.cfg)
    os.makedirs(args.output, exist_ok=True)
    runtime = f"onnxruntime ({args.onnx})" if args.onnx else predictor.cfg.MODEL.DEVICE
    print(f"{PREFIX} {predictor.cfg.MODEL.META_ARCHITECTURE} on {runtime}"
          f"{' (fused)' if predictor.fused else ''}: {len(paths)} image(s)"
          f"{' and ' + args.video_input if args.video_input else ''} -> {args.output}", flush=True)
    started = time.time()
    writer = ImageWriter(args.output, metadata, drawing, args.confidence_threshold)
    done, skipped = predict_images(predictor, paths, writer, args.batch_size) if paths else (0, [])
    frames = (predict_video(predictor, args.video_input, args.output, drawing, args.batch_size, args.confidence_threshold)
              if args.video_input else 0)
    seconds = time.time() - started
    summary = {"config_file": args.config_file, "weights": None if args.onnx else cfg.MODEL.WEIGHTS,
               "onnx": args.onnx, "images": done, "frames": frames,
               "skipped": [{"file": p, "reason": r} for p, r in skipped], "seconds": round(seconds, 2),
               "images_per_second": round((done + frames) / seconds, 3) if seconds > 0 else None}
    if writer.detected:  # a detector's results, even with no box at all
        with open(os.path.join(args.output, "coco_instances_results.json"), "w") as f:
            json.dump(writer.records, f)
    with open(os.path.join(args.output, "predict_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"{PREFIX} {done} image(s), {frames} frame(s) in {seconds:.1f} s "
          f"({summary['images_per_second']} img/s); {len(skipped)} skipped; results in {args.output}", flush=True)
    return summary


def main(argv=None) -> dict:
    from segdet.utils.errors import run_with_clear_errors

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return run_with_clear_errors(run, args)


if __name__ == "__main__":
    main()
