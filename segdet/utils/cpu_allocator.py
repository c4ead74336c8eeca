"""Huge-page CPU allocations for low-latency inference (PyTorch's ``THP_MEM_ALLOC_ENABLE``).

Why: a segmentation model's full-resolution logits are large (150 classes x 512 x 512 float32 =
157 MB for ADE20K) and glibc serves every block that large with a fresh ``mmap``, so each
forward faults in ~38k 4-KiB pages. With ``THP_MEM_ALLOC_ENABLE=1`` PyTorch page-aligns its CPU
blocks of 2 MiB and more and marks them ``MADV_HUGEPAGE``: the same buffer then takes
~80 faults of 2 MiB. On the 2-core reference machine this halves CGRSeg-T's CPU latency at
512x512 (the backbone's multi-MiB feature maps gain too); see projects/CGRSeg/README.md.

PyTorch reads the variable once, at its first allocation (i.e. while ``import torch`` runs), so it
must be in the environment when the process starts::

    THP_MEM_ALLOC_ENABLE=1 python tools/benchmark.py ...   # or: tools/benchmark.py --huge-pages

It takes effect where the kernel's transparent huge pages are in ``madvise`` or ``always`` mode
(``/sys/kernel/mm/transparent_hugepage/enabled``); in ``always`` mode large blocks already get
huge pages without it.
"""
import os

import torch

__all__ = ["THP_ENV", "huge_page_allocations_active", "kernel_thp_mode"]

THP_ENV = "THP_MEM_ALLOC_ENABLE"
_THP_SYSFS = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_page_allocations_active() -> bool:
    """Whether this process's PyTorch CPU allocator runs with ``THP_MEM_ALLOC_ENABLE``.

    Probed, not read from ``os.environ`` (setting the variable after ``import torch`` has no
    effect): with it, blocks of 2 MiB and more are page-aligned (4 KiB); without it they are
    64-byte aligned, and a block glibc maps on its own sits 64 bytes past a page boundary.
    """
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    probes = [torch.empty(2**20) for _ in range(4)]  # 4 MiB each
    return all(t.data_ptr() % page == 0 for t in probes)


def kernel_thp_mode() -> str:
    """The kernel's transparent-huge-page mode: "always", "madvise", "never" or "unknown"."""
    try:
        with open(_THP_SYSFS) as f:
            text = f.read()
    except OSError:
        return "unknown"
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else "unknown"
