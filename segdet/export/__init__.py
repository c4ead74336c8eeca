"""Export of segdet models for deployment (ONNX, torch.export), each export checked by running it."""
from .segmentor import ExportableSegmentor
from .onnx_runtime import OnnxInputSizeError, OnnxSegmentor, export_metadata, export_onnx_file, onnx_session
from .verify import ExportMismatchError, compare_outputs

__all__ = ["ExportableSegmentor", "ExportMismatchError", "compare_outputs", "OnnxSegmentor", "OnnxInputSizeError",
           "export_metadata", "export_onnx_file", "onnx_session"]
