"""Per-component manifests, atomic folder replacement and a build lock.

A component folder is complete exactly when its ``MANIFEST.json`` lists every file with its
size and carries the current recipe hash. The folder is built under a temporary name and
renamed into place, so an interrupted run never leaves a folder that looks complete.
"""
import contextlib
import hashlib
import json
import os
import shutil
from typing import Any, Dict, Iterator, Optional

from .layout import MANIFEST_NAME

__all__ = ["recipe_hash", "write_manifest", "read_valid_manifest", "install_dir",
           "atomic_write_bytes", "build_lock"]


def recipe_hash(recipe: Dict[str, Any]) -> str:
    """Short stable hash of a JSON-serialisable recipe (sources, parameters, format version)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def write_manifest(folder: str, recipe: str, stats: Dict[str, Any]) -> Dict[str, Any]:
    """List every file under ``folder`` (relative path -> size) and write ``MANIFEST.json``."""
    files = {}
    for dirpath, _, names in os.walk(folder):
        for n in names:
            full = os.path.join(dirpath, n)
            rel = os.path.relpath(full, folder).replace(os.sep, "/")
            if rel != MANIFEST_NAME:
                files[rel] = os.path.getsize(full)
    manifest = {"recipe": recipe, "stats": stats, "files": dict(sorted(files.items()))}
    atomic_write_bytes(os.path.join(folder, MANIFEST_NAME),
                       json.dumps(manifest, indent=1).encode())
    return manifest


def read_valid_manifest(folder: str, recipe: str) -> Optional[Dict[str, Any]]:
    """The manifest of ``folder`` if it exists, has ``recipe`` and every listed file exists with
    its listed size; otherwise None."""
    path = os.path.join(folder, MANIFEST_NAME)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if manifest.get("recipe") != recipe:
        return None
    for rel, size in manifest.get("files", {}).items():
        try:
            if os.path.getsize(os.path.join(folder, rel)) != size:
                return None
        except OSError:
            return None
    return manifest


def install_dir(tmp_dir: str, target: str) -> None:
    """Move the finished ``tmp_dir`` to ``target``, replacing an old ``target``."""
    old = None
    if os.path.exists(target):
        old = f"{target}.old-{os.getpid()}"
        os.rename(target, old)
    os.rename(tmp_dir, target)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def build_lock(root: str) -> Iterator[None]:
    """Exclusive lock on ``root/.lock`` (POSIX ``flock``; no-op where unavailable), so two
    processes preparing the same root do not interleave."""
    os.makedirs(root, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(os.path.join(root, ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
