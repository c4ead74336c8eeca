"""The installed stack lets Detectron2 itself be used as a library next to segdet: these
modules need pkg_resources (setuptools < 81) and scipy, both pinned in requirements.txt."""
import importlib

import pytest


@pytest.mark.parametrize("module", ["detectron2.model_zoo", "detectron2.utils.testing",
                                    "detectron2.tracking"])
def test_detectron2_module_imports(module):
    assert importlib.import_module(module).__name__ == module


def test_segdet_never_imports_model_zoo():
    import subprocess
    import sys

    code = "import sys, segdet; print('detectron2.model_zoo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
