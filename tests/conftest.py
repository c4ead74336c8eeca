"""Shared pytest set-up: CPU only, deterministic, segdet registered."""
import os

import pytest
import torch

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

import segdet  # noqa: E402,F401  (registers everything)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
