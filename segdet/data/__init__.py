"""Dataset registration (COCO, ADE20K, embedded samples) and dataset mappers."""
from . import mappers  # noqa: F401
from . import datasets  # noqa: F401
