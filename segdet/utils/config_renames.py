"""Config keys segdet renamed or removed, and the one-line error an old name gets.

:func:`segdet.utils.config_io.load_config` checks every key of a config file (its ``_BASE_``
files included) and of the command line against :data:`RENAMED` and :data:`REMOVED` before
merging, so an old config says what to write instead of failing with "Non-existent config key".
"""
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional

from .errors import ConfigError

__all__ = ["RENAMED", "REMOVED", "IGNORED", "check_renamed_keys", "renamed_key_message"]

#: old key -> new key (with a note where the meaning or the keys needed alongside changed)
RENAMED: Dict[str, str] = {
    # DeepLab's names (detectron2 projects/DeepLab); the value is a floor, as in DeepLab.
    "SOLVER.POLY_LR_END_FACTOR": "SOLVER.POLY_LR_CONSTANT_ENDING",
    # detectron2's crop keys; the sem_seg mapper crops only with INPUT.CROP.ENABLED True.
    "INPUT.SEM_SEG.CROP_SIZE": "INPUT.CROP.SIZE (with INPUT.CROP.ENABLED True, INPUT.CROP.TYPE \"absolute\")",
    "INPUT.SEM_SEG.CAT_MAX_RATIO": "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA",
    # segdet-only keys, named for what they do
    "INPUT.SEM_SEG.SCALE": "INPUT.SEM_SEG.RESIZE_SCALE",
    "INPUT.SEM_SEG.RATIO_RANGE": "INPUT.SEM_SEG.RESIZE_RATIO_RANGE",
    "INPUT.SEM_SEG.TEST_SCALE": "INPUT.SEM_SEG.TEST_RESIZE_SCALE",
}

#: old key -> why it went (and what to use instead)
REMOVED: Dict[str, str] = {
    "MODEL.SSA.ENABLED": "it was never read; SSA is chosen by MODEL.SEM_SEG_HEAD.NAME "
                         "(\"CGRSegSSAHead\" / \"SemSegFPNSSAHead\")",
}

#: keys dropped silently: an internal marker older segdet wrote into every dumped config.yaml
IGNORED = ("SEGDET_CONFIG_ADDED",)


def renamed_key_message(key: str) -> Optional[str]:
    """The error text for an old ``key``, or None if ``key`` is current."""
    key = key.upper()
    if key in RENAMED:
        return f"{key} was renamed to {RENAMED[key]}"
    if key in REMOVED:
        return f"{key} was removed: {REMOVED[key]}"
    return None


def _flat_keys(node: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for k, v in node.items():
        key = f"{prefix}{k}"
        yield key
        if isinstance(v, Mapping):
            yield from _flat_keys(v, key + ".")


def check_renamed_keys(keys_or_mapping, source: str) -> None:
    """Raise :class:`ConfigError` ``"<source>: OLD was renamed to NEW"`` for the first old key in
    a (nested) mapping loaded from yaml, or in an iterable of dotted keys (command line).
    :data:`IGNORED` keys are deleted from a mapping in place."""
    if isinstance(keys_or_mapping, Mapping):
        for k in IGNORED:
            if k in keys_or_mapping:
                del keys_or_mapping[k]
        keys: Iterable[str] = _flat_keys(keys_or_mapping)
    else:
        keys = keys_or_mapping
    for key in keys:
        message = renamed_key_message(str(key))
        if message:
            raise ConfigError(f"{source}: {message}")
