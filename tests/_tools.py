"""Test helpers that reach into the checkout: the tool scripts and the projects' configs.

``tests/conftest.py`` puts ``tests/`` on ``sys.path`` (pytest runs with
``--import-mode=importlib``), so tests ``from _tools import load_tool``. The library's own
synthetic data is :mod:`segdet.utils.synthetic`.
"""
import importlib
import importlib.util
import os
import subprocess
import sys

from segdet.utils.synthetic import register_synthetic_datasets

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS_DIR = os.path.join(REPO_ROOT, "tools")

__all__ = ["REPO_ROOT", "TOOLS_DIR", "load_tool", "import_tools_package",
           "train_net_main_with_synthetic_data", "cgrseg_ade20k_config", "run_train_net", "one_error_line",
           "free_port"]


def load_tool(name: str):
    """Import ``tools/<name>.py`` of this checkout as a module (tools are scripts, not a package)."""
    path = os.path.join(TOOLS_DIR, f"{name}.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no tool script at {path}")
    spec = importlib.util.spec_from_file_location(f"segdet_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_tools_package(name: str):
    """Import a helper package of the tools (``"sample_data"``, ``"sample_data.builders"``),
    with ``tools/`` on ``sys.path`` as the tool scripts have it."""
    if TOOLS_DIR not in sys.path:
        sys.path.insert(0, TOOLS_DIR)
    return importlib.import_module(name)


def train_net_main_with_synthetic_data(args, root: str):
    """``tools/train_net.py``'s ``main(args)`` after registering the synthetic datasets (usable
    as the function that detectron2's ``launch`` runs in every process)."""
    register_synthetic_datasets(root)
    return load_tool("train_net").main(args)


def cgrseg_ade20k_config(variant: str) -> str:
    """Path of the ADE20K config of CGRSeg ``variant`` ("T", "B", "L") or of CGRSeg + SSA
    ("B-SSA", "L-SSA"), in the method's project folder."""
    project = "SSA" if variant.endswith("-SSA") else "CGRSeg"
    return os.path.join(REPO_ROOT, "projects", project, "configs", "ADE20K", f"CGRSeg-{variant}.yaml")


def run_train_net(*args, env=None):
    """``tools/train_net.py ARGS`` in a subprocess from the checkout's root, without
    ``SEGDET_DEBUG``; returns (exit status, stderr)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("SEGDET_DEBUG", None)
    proc = subprocess.run([sys.executable, os.path.join(TOOLS_DIR, "train_net.py"), *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, env=full_env, timeout=300)
    return proc.returncode, proc.stderr


def one_error_line(stderr: str, *fragments: str) -> str:
    """The single ``segdet: error:`` line of ``stderr`` (asserting there is no traceback, exactly
    one such line, and that it holds every fragment)."""
    assert "Traceback" not in stderr, stderr[-2000:]
    error_lines = [line for line in stderr.splitlines() if line.startswith("segdet: error:")]
    assert len(error_lines) == 1, stderr[-2000:]
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]
    return error_lines[0]


def free_port() -> int:
    """A free local TCP port (for a gloo process group's dist_url)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
