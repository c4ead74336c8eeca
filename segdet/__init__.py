"""segdet: efficient semantic segmentors and knowledge distillation on Detectron2.

Importing the package registers every backbone, head, meta-architecture, distillation loss and
dataset with Detectron2's registries; ``add_segdet_config(cfg)`` adds segdet's config keys.
"""
from .config import add_segdet_config, get_segdet_cfg
from . import modeling, distill, data, evaluation, engine  # noqa: F401  (registration side effects)

__version__ = "0.1.0"
__all__ = ["add_segdet_config", "get_segdet_cfg", "__version__"]
