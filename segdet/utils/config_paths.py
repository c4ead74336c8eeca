"""Resolving relative file paths inside a config the way ``_BASE_`` is resolved.

``DISTILL.TEACHER.CONFIG_FILE`` may be written relative to the config file that sets it (like
``_BASE_``; the key may be set in a ``_BASE_`` file), relative to the working directory, or
relative to the repository root (the repo's own project configs do this). :func:`resolve_config_paths`
turns it into an absolute path, trying those places in that order, so that a config works from
any working directory.
"""
import os
from typing import List, Optional

import yaml
from detectron2.config import CfgNode

__all__ = ["resolve_config_paths", "RELATIVE_PATH_KEYS"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Config keys holding a path that is resolved relative to the file that sets it (and each
# DISTILL.TEACHERS.<name>.CONFIG_FILE).
RELATIVE_PATH_KEYS = ("DISTILL.TEACHER.CONFIG_FILE",)


def _get(d, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _defining_file(config_file: str, key: str, _seen=None) -> Optional[str]:
    """The file of the ``_BASE_`` chain of ``config_file`` whose value of ``key`` wins (the file
    itself over its bases, a later base over an earlier one), or None if no file sets it."""
    seen = _seen if _seen is not None else set()
    path = os.path.abspath(config_file)
    if path in seen or not os.path.isfile(path):
        return None
    seen.add(path)
    try:
        with open(path) as f:
            loaded = yaml.unsafe_load(f)
    except Exception:
        return None
    if not isinstance(loaded, dict):
        return None
    if _get(loaded, key) is not None:
        return path
    bases = loaded.get("_BASE_") or []
    if isinstance(bases, str):
        bases = [bases]
    for base in reversed(list(bases)):
        if not isinstance(base, str):
            continue
        base = os.path.expanduser(base)
        if not os.path.isabs(base) and not base.startswith(("http://", "https://")):
            base = os.path.join(os.path.dirname(path), base)
        found = _defining_file(base, key, seen)
        if found:
            return found
    return None


def candidate_paths(value: str, defining_file: Optional[str]) -> List[str]:
    """Where a relative ``value`` is looked for, in order."""
    dirs = ([os.path.dirname(defining_file)] if defining_file else []) + [os.getcwd(), REPO_ROOT]
    out = []
    for d in dirs:
        p = os.path.normpath(os.path.join(d, value))
        if p not in out:
            out.append(p)
    return out


def resolve_config_paths(cfg: CfgNode, config_file: str, from_command_line=()) -> None:
    """Make each relative path of :data:`RELATIVE_PATH_KEYS` in ``cfg`` absolute (in place).

    ``from_command_line`` names the keys set by trailing overrides: those have no defining file
    and are tried relative to the working directory, then the repo root. A path found nowhere is
    left as written (loading it later gives the "not found" error naming it)."""
    teachers = _get(cfg, "DISTILL.TEACHERS") or {}
    keys = list(RELATIVE_PATH_KEYS) + [f"DISTILL.TEACHERS.{name}.CONFIG_FILE" for name in teachers]
    for key in keys:
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        value = node.get(parts[-1])
        if not isinstance(value, str) or not value:
            continue
        value = os.path.expanduser(value)
        if os.path.isabs(value):
            node[parts[-1]] = value
            continue
        definer = None if key in from_command_line else _defining_file(config_file, key)
        for p in candidate_paths(value, definer):
            if os.path.isfile(p):
                node[parts[-1]] = p
                break
