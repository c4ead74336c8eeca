"""An ONNX segmentor written by ``tools/export_model.py``, run with onnxruntime behind the
segmentor's own inference interface (list of input dicts -> list of ``{"sem_seg": ...}``).

The export has a fixed input size (B, 3, H, W) and says in its metadata (``segdet.*`` keys)
whether normalisation and padding are inside (``preprocess``) and in which channel order it takes
pixels. :class:`OnnxSegmentor` runs one image per call at exactly that size: an image whose
test-resized size differs is an error, not padded, since padding changes what context modules
(pyramid pooling, attention) see and so the prediction (the PyTorch path never pads a lone image
beyond the backbone's size divisibility).
"""
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

__all__ = ["METADATA_PREFIX", "export_metadata", "export_onnx_file", "onnx_session", "OnnxSegmentor", "OnnxInputSizeError"]

METADATA_PREFIX = "segdet."


class OnnxInputSizeError(ValueError):
    """An image's test-resized size is not the ONNX export's fixed input size."""


def export_metadata(preprocess: bool, channel_order: str, config_file: str) -> Dict[str, str]:
    """The ``segdet.*`` metadata that ``tools/export_model.py`` stores in an ONNX file."""
    return {f"{METADATA_PREFIX}preprocess": str(int(preprocess)), f"{METADATA_PREFIX}channel_order": channel_order,
            f"{METADATA_PREFIX}config_file": config_file}


def export_onnx_file(wrapper: torch.nn.Module, example: torch.Tensor, path: str, opset: int = 18,
                     metadata: Optional[Dict[str, str]] = None, output_names: Sequence[str] = ("logits",)) -> None:
    """Writes ``wrapper`` (an :class:`ExportableSegmentor`, or an :class:`ExportableDetector` with
    ``output_names`` boxes, scores, classes) traced on ``example`` to ``path`` with the dynamo
    exporter: input ``image``, outputs ``output_names``, ``metadata`` stored as ONNX metadata,
    the weights in ``<path>.data`` beside it."""
    program = torch.onnx.export(wrapper, (example,), dynamo=True, opset_version=opset,
                                input_names=["image"], output_names=list(output_names), verbose=False)
    program.model.metadata_props.update(metadata or {})
    program.save(path, external_data=True)


def onnx_session(path: str, threads: Optional[int] = None):
    """An onnxruntime CPU session of ``path`` with all graph optimisations (ORT_ENABLE_ALL) and
    ``threads`` intra-op threads (default: torch's thread count, so both runtimes use as many)."""
    import onnxruntime

    if not os.path.isfile(path):
        raise FileNotFoundError(f"--onnx {path}: no such file")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _metadata(session, path: str) -> Dict[str, str]:
    """The export's ``segdet.*`` metadata, or for an older export its ``export.json`` beside it."""
    props = session.get_modelmeta().custom_metadata_map
    if f"{METADATA_PREFIX}preprocess" in props:
        return {k[len(METADATA_PREFIX):]: v for k, v in props.items() if k.startswith(METADATA_PREFIX)}
    summary = os.path.join(os.path.dirname(os.path.abspath(path)), "export.json")
    if os.path.isfile(summary):
        with open(summary) as f:
            info = json.load(f)["input"]
        return {"preprocess": str(int(info["preprocess"])), "channel_order": info["channel_order"]}
    raise ValueError(f"--onnx {path}: no segdet metadata and no export.json beside it; "
                     "export the model with tools/export_model.py")


class OnnxSegmentor:
    """Args:
        path: an ONNX file of ``tools/export_model.py`` (input ``image`` (B, 3, H, W), output
            ``logits`` (B, K, H, W), H and W fixed).
        cfg: the model's config: ``INPUT.FORMAT`` (must be the export's channel order),
            ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` (must be K), ``MODEL.PIXEL_MEAN / PIXEL_STD``
            (used for an export without preprocessing).
        threads: onnxruntime intra-op threads (default: torch's).

    Call with detectron2 input dicts (``"image"`` (3, H, W) in ``INPUT.FORMAT``, 0-255, at the
    export's size; ``"height"``, ``"width"`` the output size); returns ``{"sem_seg": (K, height,
    width)}`` float32 tensors, cropped and resized as ``SegdetSemanticSegmentor`` does.
    """

    def __init__(self, path: str, cfg, threads: Optional[int] = None):
        self.path = path
        self.session = onnx_session(path, threads)
        meta = _metadata(self.session, path)
        self.preprocess = meta["preprocess"] == "1"
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape
        if len(inputs) != 1 or len(shape) != 4 or not all(isinstance(s, int) for s in shape):
            raise ValueError(f"--onnx {path}: expected one input of fixed shape (B, 3, H, W), got "
                             f"{[(i.name, i.shape) for i in inputs]}")
        self.input_name, self.batch_size, self.input_size = inputs[0].name, shape[0], (shape[2], shape[3])
        if meta["channel_order"] != cfg.INPUT.FORMAT:
            raise ValueError(f"--onnx {path}: exported for {meta['channel_order']} input, the config's INPUT.FORMAT is "
                             f"{cfg.INPUT.FORMAT}")
        classes = outputs[0].shape[1]
        if classes != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
            raise ValueError(f"--onnx {path}: the export has {classes} classes, the config's "
                             f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}")
        self.pixel_mean = np.asarray(cfg.MODEL.PIXEL_MEAN, dtype=np.float32).reshape(1, -1, 1, 1)
        self.pixel_std = np.asarray(cfg.MODEL.PIXEL_STD, dtype=np.float32).reshape(1, -1, 1, 1)

    def check_size(self, height: int, width: int, original=None) -> None:
        """Raises :class:`OnnxInputSizeError` (one line) unless ``height x width`` is the input size."""
        if (height, width) != tuple(self.input_size):
            of = f" (from {original[0]}x{original[1]})" if original else ""
            raise OnnxInputSizeError(
                f"--onnx {self.path}: the image is {height}x{width} after the config's test resize{of}, the export's "
                f"fixed input is {self.input_size[0]}x{self.input_size[1]}; export with --input-size {height} {width}")

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """Raw logits (B, K, H, W) of ``pixels`` (B, 3, H, W) float32 0-255 at the input size."""
        if not self.preprocess:
            pixels = (pixels - self.pixel_mean) / self.pixel_std
        return self.session.run(None, {self.input_name: np.ascontiguousarray(pixels, dtype=np.float32)})[0]

    def __call__(self, batched_inputs: Sequence[Dict]) -> List[Dict]:
        from segdet.modeling.meta_arch.semantic_segmentor import crop_and_resize_logits

        results = []
        for x in batched_inputs:
            image = x["image"]
            size = tuple(image.shape[-2:])
            self.check_size(*size, original=(x.get("height"), x.get("width")))
            pixels = np.repeat(image.numpy().astype(np.float32)[None], self.batch_size, axis=0)
            logits = torch.from_numpy(self.logits(pixels)[0])
            height, width = x.get("height", size[0]), x.get("width", size[1])
            results.append({"sem_seg": crop_and_resize_logits(logits, size, height, width)})
        return results
