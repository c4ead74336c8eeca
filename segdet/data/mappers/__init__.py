"""Dataset mappers, chosen by ``cfg.INPUT.DATASET_MAPPER_NAME`` (:func:`build_mapper`)."""
from .build import build_mapper
from .detection_mapper import DetectionDatasetMapper
from .sem_seg_mapper import SemSegDatasetMapper

__all__ = ["DetectionDatasetMapper", "SemSegDatasetMapper", "build_mapper"]
