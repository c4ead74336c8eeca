"""Export of segdet models for deployment (ONNX, torch.export), each export checked by running it."""
from .segmentor import ExportableSegmentor
from .verify import ExportMismatchError, compare_outputs

__all__ = ["ExportableSegmentor", "ExportMismatchError", "compare_outputs"]
