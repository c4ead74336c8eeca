"""Reading checkpoint files: the one place where segdet opens weights.

Every checkpoint segdet loads (``MODEL.WEIGHTS`` for training and ``--eval-only``, ``--resume``
through ``last_checkpoint``, ``DISTILL.TEACHER.WEIGHTS``, the weight converters) is read by
:func:`read_checkpoint`, which unpickles arbitrary Python objects only when asked to
(``trust_pickle``: ``--trust-pickle`` / ``MODEL.TRUST_PICKLE``):

* ``.pkl`` files (detectron2 / Caffe2 model zoo) are plain pickles: refused without trust;
* anything else goes through ``torch.load(weights_only=True)``; a file that needs more than
  tensors and plain containers is refused without trust;
* an empty, truncated or otherwise unreadable file raises :class:`CorruptCheckpointError`.

:class:`SafeCheckpointer` is detectron2's ``DetectionCheckpointer`` reading its files this way,
optionally failing on any missing, unexpected or mis-shaped key (``strict``).
"""
import logging
import os
import pickle
import pickletools
import zipfile
from typing import Any, Callable, List, Mapping, Optional, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.checkpoint import DetectionCheckpointer

__all__ = [
    "UnsafeCheckpointError", "CorruptCheckpointError", "read_checkpoint", "incompatible_key_problems",
    "SafeCheckpointer", "TRAIN_NET_TRUST_HINT", "check_readable", "refused_pickle",
]

logger = logging.getLogger(__name__)

# How to allow a pickled checkpoint in tools/train_net.py ({path}, {converted} are filled in).
TRAIN_NET_TRUST_HINT = ("pass --trust-pickle (config MODEL.TRUST_PICKLE True) only if you trust its origin, "
                        "or convert it once: tools/convert_d2_pkl.py --trust-pickle {path} {converted}")


class UnsafeCheckpointError(ValueError):
    """A checkpoint only plain (code-executing) unpickling can read, refused without trust."""


class CorruptCheckpointError(ValueError):
    """A checkpoint file that is empty, truncated or otherwise unreadable."""


def _converted_name(path: str) -> str:
    """Where the hint suggests writing the converted file: next to a local file, else here."""
    stem = os.path.splitext(os.path.basename(path) if "://" in path else path)[0]
    return stem + ("_weights.pth" if path.endswith(".pth") else ".pth")


def refused_pickle(what: str, path: str, hint: str = TRAIN_NET_TRUST_HINT) -> "UnsafeCheckpointError":
    """The error for a ``.pkl`` file (or URL) read without trust."""
    return UnsafeCheckpointError(
        f"{what}: {path} is a pickle file (.pkl), and unpickling can run arbitrary code; segdet refused "
        f"to load it: " + hint.format(path=path, converted=_converted_name(path)))


def _first_line(exc: BaseException) -> str:
    """The informative line of a loading error (torch's weights-only reason, else the first)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0].split(". ", 1)[0] if lines else type(exc).__name__
    return reason if len(reason) <= 160 else reason[:157] + "..."


def _corrupt(what: str, path: str, exc: BaseException) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{what}: {path} is truncated or corrupt, it cannot be read as a checkpoint "
                                  f"({type(exc).__name__}: {_first_line(exc)})")


def _guarded(load: Callable[[], Any], what: str, path: str) -> Any:
    """``load()``, with any reading error turned into a :class:`CorruptCheckpointError`."""
    try:
        return load()
    except MemoryError:
        raise
    except Exception as exc:
        raise _corrupt(what, path, exc) from None


def _well_formed_pickle(path: str) -> bool:
    """Whether the first pickle of ``path`` (of its ``data.pkl`` for a torch zip file) parses to
    its STOP opcode; read with ``pickletools``, which executes nothing."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                with archive.open(name) as f:
                    for _ in pickletools.genops(f):
                        pass
        else:
            with open(path, "rb") as f:
                for _ in pickletools.genops(f):
                    pass
    except Exception:
        return False
    return True


def _pickle_load(path: str) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")  # latin1: Python 2 (Caffe2) model-zoo pickles


def check_readable(path: str, what: str = "checkpoint", trust_pickle: bool = False,
                   hint: str = TRAIN_NET_TRUST_HINT) -> None:
    """Fail unless ``path`` is a non-empty file and, for a ``.pkl``, ``trust_pickle`` is set
    (nothing of the file is unpickled here)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: no checkpoint file at {path}")
    if os.path.getsize(path) == 0:
        raise CorruptCheckpointError(f"{what}: {path} is empty (0 bytes), a truncated or corrupt checkpoint")
    if path.endswith(".pkl") and not trust_pickle:
        raise refused_pickle(what, path, hint)


def read_checkpoint(path: str, trust_pickle: bool = False, what: str = "checkpoint",
                    hint: str = TRAIN_NET_TRUST_HINT) -> Any:
    """The object stored in the local file ``path``, read without running code from it unless
    ``trust_pickle``.

    Args:
        what: names the file's role in error messages (e.g. ``"MODEL.WEIGHTS"``).
        hint: how to allow a refused file (``{path}`` and ``{converted}`` are filled in).

    Raises:
        FileNotFoundError: no file at ``path``.
        UnsafeCheckpointError: the file needs plain unpickling and ``trust_pickle`` is False.
        CorruptCheckpointError: the file is empty, truncated or unreadable.
    """
    check_readable(path, what, trust_pickle, hint)
    if path.endswith(".pkl"):
        return _guarded(lambda: _pickle_load(path), what, path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower() or not _well_formed_pickle(path):
            raise _corrupt(what, path, exc) from None
        if not trust_pickle:
            raise UnsafeCheckpointError(
                f"{what}: {path} holds pickled Python objects besides tensors: "
                f"torch.load(weights_only=True) refused it ({_first_line(exc)}), and unpickling can run "
                f"arbitrary code; " + hint.format(path=path, converted=_converted_name(path))) from None
    except MemoryError:
        raise
    except Exception as exc:
        raise _corrupt(what, path, exc) from None
    logger.warning(f"{what}: unpickling {path} with plain pickle (trusted by --trust-pickle)")
    return _guarded(lambda: torch.load(path, map_location="cpu", weights_only=False), what, path)


def _listing(keys: Sequence[str], limit: int = 20) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def incompatible_key_problems(incompatible) -> List[str]:
    """Missing, unexpected and shape-mismatched keys of an fvcore ``_IncompatibleKeys``, as
    short phrases (empty when everything matched)."""
    problems = []
    mis_shaped = {k for k, _, _ in incompatible.incorrect_shapes}
    missing = [k for k in incompatible.missing_keys if k not in mis_shaped]  # fvcore lists them as missing too
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if incompatible.unexpected_keys:
        problems.append(f"unexpected keys ({len(incompatible.unexpected_keys)}): "
                        f"{_listing(incompatible.unexpected_keys)}")
    if incompatible.incorrect_shapes:
        shapes = [f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})" for k, a, b in incompatible.incorrect_shapes]
        problems.append(f"shape mismatches ({len(shapes)}): {_listing(shapes)}")
    return problems


class SafeCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that reads files with :func:`read_checkpoint`.

    Args:
        trust_pickle: allow plain unpickling. ``None``: the ``MODEL.TRUST_PICKLE`` of the config of
            the ``trainer`` checkpointable if there is one, else False.
        strict: raise a ValueError naming the keys unless every parameter and buffer of the model
            was loaded with the right shape (detectron2's own exceptions, ``pixel_mean``/``pixel_std``
            and old anchor buffers, still apply).
        what: the file's role in error messages (``"MODEL.WEIGHTS"``, ``"DISTILL.TEACHER.WEIGHTS"``).
        model_name: the model in the strict-mode message (``"teacher"`` -> "the teacher model").
    """

    def __init__(self, model, save_dir: str = "", *, trust_pickle: Optional[bool] = None, strict: bool = False,
                 what: str = "MODEL.WEIGHTS", model_name: str = "", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self._trust_pickle = trust_pickle
        self.strict = strict
        self.what = what
        self.model_name = model_name
        self.incompatible = None  # of the last load
        self._loading = ""

    @property
    def trust_pickle(self) -> bool:
        if self._trust_pickle is not None:
            return bool(self._trust_pickle)
        cfg = getattr(self.checkpointables.get("trainer"), "cfg", None)
        return bool(cfg is not None and cfg.MODEL.get("TRUST_PICKLE", False))

    @trust_pickle.setter
    def trust_pickle(self, value: Optional[bool]) -> None:
        self._trust_pickle = value

    def load(self, path: str, *args, **kwargs):
        if not path:  # fvcore would say "Initializing model from scratch", untrue with a pretrained backbone
            self.logger.info(f"{self.what} is empty: keeping the model's own initialisation "
                             "(e.g. backbone ImageNet weights)")
            return {}
        local = path.split("?", 1)[0] if path else path
        if local and local.endswith(".pkl") and not self.trust_pickle:
            raise refused_pickle(self.what, local)  # before a URL is even downloaded
        if local and "://" not in local and not isinstance(self.model, DistributedDataParallel):
            # missing / empty file: one clear line (detectron2 syncs DDP workers that lack the file)
            check_readable(local, self.what, trust_pickle=True)
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._parsed_url_during_load = None  # detectron2 leaves it set when a load raises
            self._loading = ""

    def _load_file(self, filename: str):
        if filename.endswith((".pkl", ".pyth")):
            # detectron2 converts these model-zoo formats itself (plain pickle / torch.load)
            check_readable(filename, self.what, self.trust_pickle)
            if filename.endswith(".pyth") and not self.trust_pickle:
                read_checkpoint(filename, False, self.what)  # weights-only check before detectron2's read
            return _guarded(lambda: DetectionCheckpointer._load_file(self, filename), self.what, filename)
        return super()._load_file(filename)

    def _torch_load(self, f: str):
        loaded = read_checkpoint(f, self.trust_pickle, self.what)
        if not isinstance(loaded, Mapping):
            raise CorruptCheckpointError(f"{self.what}: {f} holds a {type(loaded).__name__}, expected a "
                                         "checkpoint dict or a state dict")
        return loaded

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        problems = incompatible_key_problems(incompatible) if self.strict else []
        if problems:
            name = f"the {self.model_name} model" if self.model_name else "the model"
            raise ValueError(f"{self.what}: weights {self._loading} do not match {name}: " + "; ".join(problems))
        if not self.strict:
            super()._log_incompatible_keys(incompatible)
