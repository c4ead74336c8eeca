"""Detectron2's detection mapper with errors that name the offending image."""
import os

from detectron2.data import DatasetMapper

__all__ = ["DetectionDatasetMapper"]


class DetectionDatasetMapper(DatasetMapper):
    """:class:`detectron2.data.DatasetMapper`, except that a missing or unreadable image raises
    an error naming the file instead of a bare PIL/OpenCV traceback."""

    def __call__(self, dataset_dict):
        path = dataset_dict.get("file_name", "<no file_name>")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image file not found: {path}")
        try:
            return super().__call__(dataset_dict)
        except (OSError, SyntaxError) as e:  # PIL's decode errors
            from segdet.data.io import CorruptImageError

            raise CorruptImageError(f"cannot read image {path}: {e}") from e
