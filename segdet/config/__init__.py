"""segdet's config keys.

``add_segdet_config(cfg)`` only *adds* keys (with defaults) to a Detectron2 ``CfgNode``; call it
after ``get_cfg()`` and before ``merge_from_file`` (yacs rejects unknown keys). Each area of the
toolbox owns one ``add_*`` function, in one module per area, where each key is explained:

- :mod:`segdet.config.data`: ``INPUT.*`` (the mappers' pipelines), ``DATASETS.DECLARE``;
- :mod:`segdet.config.training`: ``SOLVER.*`` (optimizer, parameter groups, schedule, best
  checkpoint), ``MODEL.TRUST_PICKLE``;
- :mod:`segdet.config.evaluation`: ``TEST.*`` (semantic inference and TTA, overlays, COCO AP);
- :mod:`segdet.config.models`: backbones, semantic heads, CGRSeg, SSA;
- :mod:`segdet.config.distill`: ``DISTILL.*`` and the completion of ``DISTILL.TEACHERS`` entries;
- :mod:`segdet.config.multi_task`: ``MODEL.MULTI_TASK`` and multi-task training sets.

Names follow detectron2 (and its DeepLab project) where a key exists there: ``INPUT.CROP.*``,
``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA``, ``SOLVER.POLY_LR_POWER`` / ``POLY_LR_CONSTANT_ENDING``
and the ``"WarmupPolyLR"`` schedule behave as they do there. Renamed and removed keys are refused
with their new name (:mod:`segdet.utils.config_renames`). README.md "Config keys" tables every
key with its default, in the order the keys are added here (``tools/config_keys_table.py``
writes it).

Loss weights have one style: each loss's terms are weighted by keys inside that method's own node
(``MODEL.SSA.LOSS_WEIGHTS.*``, ``DISTILL.DRKD.W_*``, ``DISTILL.DSD.W_*``; a 0 weight skips a
term). ``DISTILL.LOSS_WEIGHTS`` is not a fourth weight style but an optional per-loss multiplier
on top of them (one factor per entry of ``DISTILL.LOSSES``, as ``tools/kd_compare.py`` uses to
scale a whole loss without editing its terms).
"""
from detectron2.config import CfgNode as CN

from .data import add_datasets_config, add_input_config
from .distill import TEACHER_ENTRY_DEFAULTS, add_distill_config, complete_teacher_entries
from .evaluation import add_coco_eval_config, add_test_config
from .models import add_backbone_config, add_cgrseg_config, add_sem_seg_config, add_ssa_config
from .multi_task import add_multi_task_config
from .training import add_best_checkpoint_config, add_checkpoint_config, add_solver_config

__all__ = ["add_segdet_config", "get_segdet_cfg", "TEACHER_ENTRY_DEFAULTS", "complete_teacher_entries"]


def add_segdet_config(cfg: CN) -> CN:
    """Add every segdet key to ``cfg`` in place (idempotent: a ``cfg`` that already has
    ``MODEL.CGRSEG`` is returned as it is) and return it."""
    if "CGRSEG" in cfg.MODEL:
        return cfg
    add_input_config(cfg)
    add_solver_config(cfg)
    add_datasets_config(cfg)
    add_test_config(cfg)
    add_backbone_config(cfg)
    add_sem_seg_config(cfg)
    add_cgrseg_config(cfg)
    add_ssa_config(cfg)
    add_distill_config(cfg)
    add_checkpoint_config(cfg)
    add_best_checkpoint_config(cfg)
    add_coco_eval_config(cfg)
    add_multi_task_config(cfg)
    return cfg


def get_segdet_cfg() -> CN:
    """Detectron2's default config plus segdet's keys."""
    from detectron2.config import get_cfg

    return add_segdet_config(get_cfg())
