"""segdet: efficient semantic segmentors and knowledge distillation on Detectron2.

Installable like Detectron2's projects (e.g. DensePose): ``pip install -e .`` into an environment
that already has torch, torchvision and detectron2. Exact, tested version pins live in
``requirements.txt`` only; the ranges here are what segdet's code needs.
"""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def _version() -> str:
    for line in (ROOT / "segdet" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError("segdet/__init__.py has no __version__")


setup(
    name="segdet",
    version=_version(),
    description="Efficient semantic segmentors (CGRSeg, SSA) and detector/segmentor distillation "
    "(DRKD, DSD) on Detectron2",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["segdet", "segdet.*"]),
    python_requires=">=3.9",
    # torch, torchvision and detectron2 are deliberately not listed: GPU users bring their own
    # builds (detectron2 has no official wheel); tools/setup_env.sh installs tested ones.
    install_requires=[
        "numpy",
        "Pillow",
        "opencv-python-headless",
        "pycocotools",
        "fvcore",
        "iopath",
        "matplotlib",
        "tabulate",
    ],
    extras_require={"test": ["pytest", "pytest-timeout"]},
)
