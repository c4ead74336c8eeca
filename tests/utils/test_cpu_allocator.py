"""Huge-page CPU allocations (THP_MEM_ALLOC_ENABLE): detected, and fewer page faults per large
buffer where the kernel offers transparent huge pages."""
import os
import subprocess
import sys

import pytest

from segdet.utils.cpu_allocator import THP_ENV, huge_page_allocations_active, kernel_thp_mode

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Prints: whether huge-page allocations are active, then the minor page faults of allocating and
# filling a fresh 64 MiB tensor (16,384 pages of 4 KiB).
_SCRIPT = """
import resource
import torch
from segdet.utils.cpu_allocator import huge_page_allocations_active
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t = torch.empty(16 * 2**20)
t.fill_(1.0)
print(huge_page_allocations_active(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(thp: bool):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop(THP_ENV, None)
    if thp:
        env[THP_ENV] = "1"
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    active, faults = out.stdout.split()[-2:]
    return active == "True", int(faults)


def test_huge_page_allocations_detected_and_fewer_page_faults():
    active_off, faults_off = _run(thp=False)
    active_on, faults_on = _run(thp=True)
    assert (active_off, active_on) == (False, True)
    if kernel_thp_mode() == "madvise":  # "always" gives huge pages either way, "never" neither
        assert faults_off > 10_000  # one fault per 4 KiB page
        assert faults_on < 2_000    # 2 MiB pages


def test_in_process_probe_matches_environment():
    assert huge_page_allocations_active() == (os.environ.get(THP_ENV) == "1")
    assert kernel_thp_mode() in ("always", "madvise", "never", "unknown")
