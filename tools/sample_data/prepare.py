"""``ensure_samples``: build whatever sample-data component is missing or stale, idempotently.

A second call finds every component's manifest valid (file sizes + recipe hash) and returns at
once. Components are built in ``<root>/.tmp-<name>-<pid>`` and renamed into place; downloads
are cached in ``<root>/.downloads``. Builds hold ``<root>/.lock``.
"""
import glob
import os
import shutil
import time
from typing import Any, Dict, Iterable, Optional

from .builders import COMPONENT_SPECS
from .fetch import download
from .layout import ALL_COMPONENTS, sample_root
from .manifest import build_lock, install_dir, read_valid_manifest, recipe_hash, write_manifest

__all__ = ["ensure_samples", "check_samples", "format_summary"]


def _log(verbose: bool, msg: str) -> None:
    if verbose:
        print(f"[samples] {msg}", flush=True)


def check_samples(root: Optional[str] = None, components: Optional[Iterable[str]] = None
                  ) -> Dict[str, Optional[Dict[str, Any]]]:
    """``{component: manifest or None}``: None where the component is missing, incomplete or
    built from another recipe. Reads only the manifests and file sizes."""
    root = root if root is not None else sample_root()
    names = _validate(components)
    return {n: read_valid_manifest(os.path.join(root, n), recipe_hash(COMPONENT_SPECS[n].recipe()))
            for n in names}


def _validate(components: Optional[Iterable[str]]):
    names = list(components) if components is not None else list(ALL_COMPONENTS)
    unknown = [n for n in names if n not in COMPONENT_SPECS]
    if unknown:
        raise KeyError(f"unknown sample components {unknown}; expected some of {list(ALL_COMPONENTS)}")
    return names


def ensure_samples(verbose: bool = True, force: bool = False, root: Optional[str] = None,
                   components: Optional[Iterable[str]] = None) -> Dict[str, Dict[str, Any]]:
    """Make sure the sample data exists under ``root`` (default :func:`sample_root`).

    Args:
        verbose: print progress (pip's download progress included) and a summary.
        force: rebuild the components even when they are up to date (downloads stay cached).
        root: the ``segdet_samples`` folder.
        components: subset of :data:`ALL_COMPONENTS` (default all).

    Returns:
        ``{component: statistics}`` (counts per split) from each component's manifest.

    Raises:
        RuntimeError: a download failed or had the wrong hash. ValueError: a source file does
        not hold what the conversion expects.
    """
    start = time.time()
    root = root if root is not None else sample_root()
    names = _validate(components)
    if not force:
        state = check_samples(root, names)
        if all(m is not None for m in state.values()):
            _log(verbose, f"sample data up to date in {root} ({len(names)} components verified, "
                          f"{time.time() - start:.2f} s)")
            return {n: m["stats"] for n, m in state.items()}
    with build_lock(root):
        state = {n: None for n in names} if force else check_samples(root, names)
        todo = [n for n, m in state.items() if m is None]
        _log(verbose, f"preparing {todo} in {os.path.abspath(root)}")
        needed = sorted({s for n in todo for s in COMPONENT_SPECS[n].sources})
        cache = os.path.join(root, ".downloads")
        archives = {s: download(s, cache, verbose=verbose) for s in needed}
        for name in todo:
            t0 = time.time()
            spec = COMPONENT_SPECS[name]
            for stale in glob.glob(os.path.join(root, f".tmp-{name}-*")):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = os.path.join(root, f".tmp-{name}-{os.getpid()}")
            os.makedirs(tmp)
            try:
                stats = spec.build(archives, tmp)
                write_manifest(tmp, recipe_hash(spec.recipe()), stats)
                install_dir(tmp, os.path.join(root, name))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _log(verbose, f"built {name} in {time.time() - t0:.1f} s")
        state = check_samples(root, names)
    broken = [n for n, m in state.items() if m is None]
    if broken:
        raise RuntimeError(f"sample components {broken} failed verification right after building in {root}")
    stats = {n: m["stats"] for n, m in state.items()}
    _log(verbose, f"done in {time.time() - start:.1f} s\n{format_summary(stats)}")
    return stats


def format_summary(stats: Dict[str, Dict[str, Any]]) -> str:
    """One line per component and split: images, boxes or classes present."""
    lines = []
    for name, st in stats.items():
        for split in ("train", "val"):
            if split not in st:
                continue
            s = st[split]
            if "boxes" in s:
                extra = f"{s['boxes']} boxes"
                if "source_boxes" in s:
                    extra += f" ({s['source_boxes']} in {len(s['source_images'])} source images)"
            else:
                extra = f"classes present {s['classes']}"
            lines.append(f"  {name:<12} {split:<5} {s['images']:>3} images, {extra}")
        if name == "pretrained":
            lines.append(f"  {name:<12} {st['file']} ({st['bytes'] / 2**20:.1f} MiB)")
    return "\n".join(lines)
