"""log.txt is plain text: no ANSI colour codes from highlighted configs or coloured tables."""
import logging
import os

from segdet.utils.log_files import setup_loggers, strip_ansi
from _tools import load_tool

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs/Samples/retinanet_mnv2_fpn_trees.yaml")


def test_strip_ansi():
    assert strip_ansi("\x1b[38;5;197mKEY\x1b[39m: \x1b[1;4mv\x1b[0m") == "KEY: v"


def test_train_net_setup_writes_plain_log(tmp_path):
    train_net = load_tool("train_net")
    out = tmp_path / "run"
    args = train_net.build_parser().parse_args(["--config-file", CONFIG, "--eval-only", "OUTPUT_DIR", str(out)])
    train_net.setup(args)
    message = "table:\n\x1b[36m| a | b |\x1b[0m"  # what termcolor.colored(table, "cyan") gives on a terminal
    logging.getLogger("detectron2.data.build").info(message)
    logging.getLogger("segdet.x").warning(message)
    for h in logging.getLogger("detectron2").handlers + logging.getLogger("segdet").handlers:
        h.flush()
    text = (out / "log.txt").read_text()
    assert "Running with full config" in text and "| a | b |" in text
    assert "\x1b[" not in text


def test_setup_loggers_is_idempotent(tmp_path):
    setup_loggers(str(tmp_path), 0)
    n = len(logging.getLogger("segdet").handlers)
    setup_loggers(str(tmp_path), 0)
    assert len(logging.getLogger("segdet").handlers) == n
