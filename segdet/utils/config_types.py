"""Config values coerced to the type of their default, as users expect, before yacs merges them.

yacs accepts a value only when its type equals the default's (or one side is ``None``, or it is
a list for a tuple key and vice versa), so ``SOLVER.BASE_LR 1000`` (an int for a float key) is
rejected. :func:`coerce_to_default` applies, on top of yacs' own rules:

- an int where the default is a float -> float (``BASE_LR 1000`` -> ``1000.0``);
- an integral float where the default is an int -> int (``MAX_ITER 1e4`` -> ``10000``);
- a list/tuple where the default is a tuple/list -> the default's type, with ints turned into
  floats where every element of the (non-empty) default is a float (``PIXEL_STD [1, 1, 1]``).

Everything else that yacs would reject (a string or a bool for a number, a number for a bool or
a string, ...) raises :class:`ConfigError` naming the source, the key, the value and the
expected type. Used by :func:`segdet.utils.config_io.load_config` on the YAML file (after its
``_BASE_`` chain is merged) and on the command-line overrides; yacs is not patched.
"""
from typing import Any, Mapping, Sequence

from detectron2.config import CfgNode

from .errors import ConfigError

__all__ = ["coerce_to_default", "coerce_loaded_yaml", "coerce_opts"]

def _type_name(value: Any) -> str:
    if isinstance(value, CfgNode):
        return "a mapping of sub-keys"
    if isinstance(value, bool):
        return "True or False"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def coerce_to_default(value: Any, default: Any, key: str, source: str) -> Any:
    """``value`` (already decoded by yacs) converted to the type of ``default`` (see module
    docstring); ``value`` itself when yacs accepts it as it is.

    Raises:
        ConfigError: ``{source}: {key} must be <type> (default ...), got ...``.
    """
    if type(value) is type(default) and not isinstance(value, (list, tuple)):
        return value
    if value is None or default is None:  # yacs: None replaces / is replaced by any valid type
        return value
    if isinstance(default, float) and _is_int(value):
        return float(value)
    if _is_int(default) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        if default and all(isinstance(d, float) for d in default):
            value = [float(v) if _is_int(v) else v for v in value]
        return type(default)(value)
    hint = f"; write ({value!r},) for a one-element list" if isinstance(default, (list, tuple)) and isinstance(value, str) else ""
    raise ConfigError(
        f"{source}: {key} must be {_type_name(default)}, "
        f"got {value!r} ({_type_name(value)}){hint}"
    )


def coerce_loaded_yaml(loaded: dict, defaults: CfgNode, source: str, prefix: str = "") -> None:
    """Coerce, in place, the values of a YAML config dict (``_BASE_`` already merged) whose keys
    exist in ``defaults``; unknown keys are left for yacs to report."""
    for k, raw in loaded.items():
        if not isinstance(k, str) or k not in defaults:
            continue
        default, key = defaults[k], prefix + k
        if isinstance(default, CfgNode):
            if isinstance(raw, Mapping):
                coerce_loaded_yaml(raw, default, source, key + ".")  # type: ignore[arg-type]
                continue
            raise ConfigError(f"{source}: {key} must be a mapping of sub-keys, got {raw!r}")
        if isinstance(raw, Mapping):
            raise ConfigError(f"{source}: {key} must be {_type_name(default)}, got a mapping {dict(raw)!r}")
        decoded = CfgNode._decode_cfg_value(raw)
        coerced = coerce_to_default(decoded, default, key, source)
        if coerced is not decoded:
            loaded[k] = coerced


def _lookup(cfg: CfgNode, full_key: str):
    node: Any = cfg
    for part in full_key.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            return False, None
        node = node[part]
    return True, node


def coerce_opts(opts: Sequence[Any], cfg: CfgNode, source: str = "command line") -> list:
    """``KEY VALUE ...`` overrides with each value decoded and coerced to its key's default type;
    pairs whose key does not exist are passed on unchanged (yacs reports them)."""
    out = list(opts)
    for i in range(0, len(out) - 1, 2):
        key = out[i]
        found, default = _lookup(cfg, key) if isinstance(key, str) else (False, None)
        if not found or isinstance(default, CfgNode):
            continue
        decoded = CfgNode._decode_cfg_value(out[i + 1])
        coerced = coerce_to_default(decoded, default, key, source)
        if coerced is not decoded:
            out[i + 1] = coerced
    return out
