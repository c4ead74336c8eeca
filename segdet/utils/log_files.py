"""Plain-text log files.

detectron2 colours only its terminal handler, but some messages carry escape codes themselves:
``default_setup`` logs the config file and the full config through pygments' terminal
highlighter, and the instance histogram is ``termcolor.colored``. :func:`plain_log_files` gives
the file handlers of the named loggers a formatter that strips ANSI escape sequences, so
``log.txt`` is plain text while the terminal keeps its colours.
"""
import logging
import re
import sys
from typing import Iterable

__all__ = ["setup_loggers", "plain_log_files", "strip_ansi", "PlainFormatter"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


class PlainFormatter(logging.Formatter):
    """A formatter whose output has no ANSI escape sequences."""

    def format(self, record: logging.LogRecord) -> str:
        return strip_ansi(super().format(record))


def _is_terminal(handler: logging.Handler) -> bool:
    return getattr(handler, "stream", None) in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)


def plain_log_files(names: Iterable[str] = ("detectron2", "fvcore", "segdet")) -> None:
    """Strip escape codes in every non-terminal stream handler of the loggers ``names``."""
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler, logging.StreamHandler) or _is_terminal(handler):
                continue
            if isinstance(handler.formatter, PlainFormatter):
                continue
            old = handler.formatter or logging.Formatter()
            handler.setFormatter(PlainFormatter(old._fmt, old.datefmt))


def setup_loggers(output_dir: str, rank: int) -> None:
    """Set up the fvcore, detectron2 and segdet loggers (terminal + ``output_dir/log.txt``) with
    plain-text files. Call it before ``default_setup``: its ``setup_logger`` calls, made with the
    same arguments, are then cached no-ops, so the config it logs reaches a plain file."""
    from detectron2.utils.logger import setup_logger

    # the same calls as detectron2.engine.default_setup (setup_logger is lru_cached on them)
    setup_logger(output_dir, distributed_rank=rank, name="fvcore")
    setup_logger(output_dir, distributed_rank=rank)
    # segdet's own loggers (teacher cost per step, parameter counts, exports) next to detectron2's
    setup_logger(output_dir, distributed_rank=rank, name="segdet", abbrev_name="segdet")
    plain_log_files()
