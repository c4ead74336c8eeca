"""Export of segdet models (semantic segmentors, Faster R-CNN, RetinaNet) for deployment (ONNX,
torch.export), each export checked by running it."""
from .segmentor import ExportableSegmentor
from .detector import ExportableDetector, is_exportable_detector, nms_may_keep_any_number
from .onnx_runtime import OnnxInputSizeError, OnnxSegmentor, export_metadata, export_onnx_file, onnx_session
from .verify import ExportMismatchError, compare_detections, compare_outputs

__all__ = ["ExportableSegmentor", "ExportableDetector", "is_exportable_detector", "nms_may_keep_any_number",
           "ExportMismatchError", "compare_outputs", "compare_detections", "OnnxSegmentor", "OnnxInputSizeError",
           "export_metadata", "export_onnx_file", "onnx_session"]
