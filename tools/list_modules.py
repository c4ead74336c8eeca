#!/usr/bin/env python
"""Print every module name of the model a config builds: the names a distillation tap can use.

Examples:
  python tools/list_modules.py --config-file configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml
  # a distillation config: the student's or the teacher's names
  python tools/list_modules.py --config-file CONFIG --side teacher | grep fpn
"""
import argparse
import os
import signal
import sys
import warnings

warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*is deprecated", category=FutureWarning)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segdet.distill.taps import print_module_names  # noqa: E402
from segdet.utils.errors import run_with_clear_errors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--side", choices=("model", "student", "teacher"), default="student",
                        help="for a distillation config: the student (default) or the teacher")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    if hasattr(signal, "SIGPIPE"):  # `| head` ends the listing quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    run_with_clear_errors(print_module_names, args.config_file, args.side, args.opts)


if __name__ == "__main__":
    main()
