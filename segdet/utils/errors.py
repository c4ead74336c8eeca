"""User-facing errors: one clear line instead of a traceback wall."""
import os
import sys
from typing import Callable, Optional

__all__ = ["ConfigError", "TrainingDivergedError", "user_error_message", "run_with_clear_errors"]


class ConfigError(ValueError):
    """A config file, key or value that segdet cannot use."""


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite; the message names the iteration, the losses that went
    non-finite and the last checkpoint to resume from."""


def user_error_message(exc: BaseException) -> Optional[str]:
    """The one-line message for an error caused by the user's input (files, config, data), or
    None for anything else (a bug: show the traceback). Errors re-raised from DataLoader
    workers are unwrapped to their original last line."""
    from segdet.data.io import CorruptImageError

    if isinstance(exc, KeyError) and exc.args and "config key" in str(exc.args[0]):
        return f"unknown config key: {exc.args[0]}"
    if not isinstance(exc, (ConfigError, CorruptImageError, FileNotFoundError, ValueError, KeyError,
                            TrainingDivergedError)):
        return None
    message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if "Original Traceback" in message:  # raised in a DataLoader worker
        lines = [line for line in message.splitlines() if line.strip()]
        message = lines[-1].split(": ", 1)[-1] if lines else message
    return f"{type(exc).__name__}: {message}"


def run_with_clear_errors(fn: Callable, *args, **kwargs):
    """Run ``fn``; on a user error print ``segdet: error: ...`` to stderr and exit with status 2.
    Set ``SEGDET_DEBUG=1`` to get the full traceback instead."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        message = user_error_message(exc)
        if message is None or os.environ.get("SEGDET_DEBUG"):
            raise
        print(f"segdet: error: {message}\n(set SEGDET_DEBUG=1 for the full traceback)", file=sys.stderr)
        sys.exit(2)
