"""Shared pytest set-up: CPU only, deterministic, segdet registered; ``tests/`` on ``sys.path``
for the helpers in ``tests/_tools.py`` (load_tool, ...)."""
import os
import sys

import pytest
import torch

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

import segdet  # noqa: E402,F401  (registers everything)

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.append(_TESTS_DIR)  # --import-mode=importlib: tests import `_tools` from here


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
