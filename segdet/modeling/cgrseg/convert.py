"""Convert official CGRSeg / EfficientFormerV2 checkpoints to segdet state dicts.

Three inputs are understood:

* an official mmseg CGRSeg checkpoint: ``{"state_dict": {"backbone.*", "decode_head.*"}, "meta":
  ...}``. Keys map 1:1: ``backbone.X -> backbone.X``, ``decode_head.X -> sem_seg_head.X``.
  Official CGRSeg+SSA checkpoints (``CGRSeg_ssa`` head: no ``lgc`` / DPG, plus the SSA modules
  ``get_feat_pos``, ``center_pos``, ``center_content_proj``, ``center_pos_proj``, ``center_proj``
  and the teacher's ``gt_center_content_proj``, ``gt_center_pos_proj``, ``gt_center_proj``) map
  ``decode_head.<ssa module>.X -> sem_seg_head.ssa.<ssa module>.X`` (``CGRSegSSAHead``); keys of
  the training-only loss modules (``decode_head.criterion.*``, ``decode_head.ssa_loss.*``) are
  dropped. ``drop_teacher=True`` also drops the teacher's ``gt_*`` keys, for a model built with
  ``MODEL.SSA.WITH_TEACHER False``.
* a segdet checkpoint (``sem_seg_head.*`` keys, e.g. a training ``model_final.pth``): kept as
  is, except that ``drop_teacher=True`` removes the SSA teacher keys (deploy export).
* an EfficientFormerV2 ImageNet checkpoint (``{"model": ...}`` or a bare state dict, keys without
  a ``backbone.`` prefix). The classifier (``norm.*``, ``head.*``, ``dist_head.*``) is dropped,
  and so are the ImageNet relative-position tables: as in the official segmentation code the
  segmentation tables ``attention_biases_seg`` start at zero, and the unused buffers
  ``attention_biases`` / ``attention_bias_idxs`` get segdet's defaults (zeros / indices). The
  result holds ``backbone.*`` only; the head trains from scratch.

The output state dict loads into the model of the matching ``CGRSeg-{T,B,L}.yaml`` /
``CGRSeg-{B,L}-SSA.yaml`` with no unexpected key (and, for a CGRSeg checkpoint, no missing key;
with ``drop_teacher``, into the model built with ``MODEL.SSA.WITH_TEACHER False``).
"""
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

__all__ = [
    "load_checkpoint_file",
    "extract_state_dict",
    "map_official_key",
    "infer_variant",
    "SSA_MODULES",
    "convert_cgrseg_state_dict",
    "convert_imagenet_state_dict",
    "convert_checkpoint",
    "compare_state_dicts",
]

_IMAGENET_DROP_PREFIXES = ("norm.", "head.", "dist_head.")
_IMAGENET_TABLES = ("attention_biases", "attention_bias_idxs")
_SEG_TABLES = ("attention_biases_seg", "attention_bias_idxs_seg")
# Official SSA sub-modules of ``decode_head`` (inference ones, then the teacher's); they live
# under ``sem_seg_head.ssa.`` in segdet's CGRSegSSAHead.
SSA_MODULES = ("get_feat_pos", "center_pos", "center_content_proj", "center_pos_proj", "center_proj",
               "gt_center_content_proj", "gt_center_pos_proj", "gt_center_proj")
# Training-only loss modules of the official SSA heads (dropped if they hold any tensor).
_SSA_LOSS_MODULES = ("criterion", "ssa_loss")
# (stem width, depth of the last stage) -> variant
_VARIANT_SIGNATURES = {(32, 4): "S0", (32, 6): "S1", (32, 8): "S2", (40, 10): "L"}


def load_checkpoint_file(path: str, trust_pickle: bool = False) -> Any:
    """The checkpoint at ``path``, read by segdet's one checkpoint reader
    (:func:`segdet.engine.checkpoint_io.read_checkpoint`): ``torch.load(weights_only=True)``; a
    file that needs arbitrary unpickling (e.g. mmcv ``meta``) is refused with a ValueError unless
    ``trust_pickle``; an empty or truncated file raises a ValueError saying so."""
    from segdet.engine.checkpoint_io import read_checkpoint

    return read_checkpoint(path, trust_pickle=trust_pickle, what="checkpoint",
                           hint="pass --trust-pickle only if you trust the file's origin")


def extract_state_dict(obj: Any) -> Dict[str, torch.Tensor]:
    """The tensor state dict inside a checkpoint: ``obj["state_dict"]`` (mmcv), ``obj["model"]``
    (EfficientFormer / detectron2) or ``obj`` itself; a DDP ``module.`` prefix is removed."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint: expected a dict, got {type(obj).__name__}")
    for key in ("state_dict", "model"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    state = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"checkpoint: entry {k!r} is a {type(v).__name__}, expected a tensor "
                             f"(expected keys 'state_dict' or 'model' or a bare state dict)")
        state[k[len("module."):] if k.startswith("module.") else k] = v
    if not state:
        raise ValueError("checkpoint: the state dict is empty")
    return state


def map_official_key(key: str) -> str:
    """Official CGRSeg (+SSA) key -> segdet key (``decode_head.`` -> ``sem_seg_head.``; SSA modules
    ``decode_head.<m>.`` -> ``sem_seg_head.ssa.<m>.``)."""
    if key.startswith("backbone."):
        return key
    if key.startswith("decode_head."):
        rest = key[len("decode_head."):]
        if rest.split(".", 1)[0] in SSA_MODULES:
            return "sem_seg_head.ssa." + rest
        return "sem_seg_head." + rest
    raise KeyError(f"official CGRSeg key {key!r}: expected a 'backbone.' or 'decode_head.' prefix")


def infer_variant(backbone_state: Mapping[str, torch.Tensor]) -> str:
    """EfficientFormerV2 variant ("S0" / "S1" / "S2" / "L") from a backbone state dict without
    prefix (stem width and the number of blocks of the last stage)."""
    if "patch_embed.3.weight" not in backbone_state:
        raise KeyError("cannot infer the EfficientFormerV2 variant: 'patch_embed.3.weight' is missing")
    width = backbone_state["patch_embed.3.weight"].shape[0]
    depth = len({k.split(".")[2] for k in backbone_state if k.startswith("network.6.")})
    variant = _VARIANT_SIGNATURES.get((width, depth))
    if variant is None:
        raise ValueError(f"unknown EfficientFormerV2 layout (stem width {width}, last-stage depth {depth}); "
                         f"known: {_VARIANT_SIGNATURES}")
    return variant


def _is_ssa_loss_key(key: str) -> bool:
    return key.startswith(tuple(f"decode_head.{m}." for m in _SSA_LOSS_MODULES))


def convert_cgrseg_state_dict(state: Mapping[str, torch.Tensor], drop_teacher: bool = False
                              ) -> Dict[str, torch.Tensor]:
    """Official mmseg CGRSeg (+SSA) state dict -> segdet keys (tensors shared, not copied).

    Args:
        drop_teacher: also drop the SSA teacher's ``gt_*`` keys (inference / deploy weights).
    """
    from segdet.modeling.ssa.heads import is_ssa_teacher_key

    return {map_official_key(k): v for k, v in state.items()
            if not _is_ssa_loss_key(k) and not (drop_teacher and is_ssa_teacher_key(k))}


def convert_imagenet_state_dict(state: Mapping[str, torch.Tensor], variant: Optional[str] = None,
                                bias_resolution: int = 512) -> Dict[str, torch.Tensor]:
    """EfficientFormerV2 ImageNet state dict -> ``backbone.*`` segdet keys (see module doc).

    Raises ValueError when a backbone key is missing, unknown, or has the wrong shape."""
    from segdet.modeling.cgrseg.efficientformer_v2 import EfficientFormerV2

    kept = {k: v for k, v in state.items() if not k.startswith(_IMAGENET_DROP_PREFIXES)}
    variant = variant or infer_variant(kept)
    reference = EfficientFormerV2(variant=variant, bias_resolution=bias_resolution).state_dict()
    out = {}
    for key, ref in reference.items():
        if key.rsplit(".", 1)[-1] in _IMAGENET_TABLES + _SEG_TABLES:
            out["backbone." + key] = ref.clone()  # zeros / the index buffers
        elif key not in kept:
            raise ValueError(f"ImageNet checkpoint ({variant}): missing key {key!r}")
        elif tuple(kept[key].shape) != tuple(ref.shape):
            raise ValueError(f"ImageNet checkpoint ({variant}): {key!r} has shape {tuple(kept[key].shape)}, "
                             f"expected {tuple(ref.shape)}")
        else:
            out["backbone." + key] = kept[key]
    unknown = sorted(k for k in kept if k not in reference)
    if unknown:
        raise ValueError(f"ImageNet checkpoint ({variant}): unexpected keys {unknown[:5]}"
                         f"{' ...' if len(unknown) > 5 else ''}")
    return out


def convert_checkpoint(obj: Any, variant: Optional[str] = None, bias_resolution: int = 512,
                       drop_teacher: bool = False) -> Tuple[Dict[str, torch.Tensor], str]:
    """Any supported checkpoint object -> (segdet state dict, kind) with kind "segdet", "cgrseg"
    or "imagenet". ``drop_teacher`` removes the SSA teacher keys (segdet and CGRSeg kinds)."""
    from segdet.modeling.ssa.heads import strip_ssa_teacher

    state = extract_state_dict(obj)
    if any(k.startswith("sem_seg_head.") for k in state):
        return (strip_ssa_teacher(state) if drop_teacher else dict(state)), "segdet"
    if any(k.startswith(("backbone.", "decode_head.")) for k in state):
        return convert_cgrseg_state_dict(state, drop_teacher=drop_teacher), "cgrseg"
    if any(k.startswith(("patch_embed.", "network.")) for k in state):
        return convert_imagenet_state_dict(state, variant, bias_resolution), "imagenet"
    raise ValueError(f"checkpoint: neither a segdet ('sem_seg_head.*'), a CGRSeg ('backbone.*', 'decode_head.*') "
                     f"nor an EfficientFormerV2 ImageNet ('patch_embed.*', 'network.*') state dict; first keys: "
                     f"{list(state)[:5]}")


def compare_state_dicts(converted: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]
                        ) -> Tuple[List[str], List[str], List[str]]:
    """(missing, unexpected, shape-mismatched) keys of ``converted`` w.r.t. a model state dict."""
    missing = sorted(k for k in model_state if k not in converted)
    unexpected = sorted(k for k in converted if k not in model_state)
    mismatched = sorted(k for k in converted if k in model_state
                        and tuple(converted[k].shape) != tuple(model_state[k].shape))
    return missing, unexpected, mismatched
