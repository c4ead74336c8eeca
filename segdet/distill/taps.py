"""Feature taps: record named modules' outputs (or inputs) with forward hooks."""
import difflib
from typing import Any, Dict, Iterable, List, Sequence

from torch import nn

__all__ = ["FeatureRecorder", "resolve_module", "print_module_names", "build_adapter"]


def _names(names: Sequence[str], limit: int) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def resolve_module(model: nn.Module, name: str, owner: str = "model") -> nn.Module:
    """The sub-module called ``name`` (dotted path; ``""`` is the model itself).

    Raises:
        KeyError: naming the unknown module, the closest valid names, the sub-modules of the
            longest valid prefix of ``name`` (the top-level modules when there is none), and how
            to list every valid name (``tools/list_modules.py``) -- not the whole list, which
            runs to hundreds of names for a detector.
    """
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    valid = [n for n in modules if n]
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    parts = name.split(".")
    parent = next((".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1) if ".".join(parts[:i]) in modules), "")
    children = [c for c, _ in modules[parent].named_children()]
    where = f"Sub-modules of {parent!r}" if parent else "Top-level modules"
    side = owner if owner in ("student", "teacher") else "model"
    raise KeyError(
        f"{owner} has no module named {name!r}.{hint} {where}: {_names(children, 12)}. "
        f"List all {len(valid)} names with: python tools/list_modules.py --config-file CONFIG --side {side}"
    )


def _clear_weight_paths(node) -> None:
    for key, value in node.items():
        if hasattr(value, "items"):
            _clear_weight_paths(value)
        elif key == "WEIGHTS" and isinstance(value, str):
            node[key] = ""


def print_module_names(config_file: str, side: str = "model", opts: Sequence[str] = ()) -> None:
    """Print every module name a tap can use, one a line, for the model built from
    ``config_file`` (on the CPU; no weights are loaded, every ``MODEL.**.WEIGHTS`` is cleared). For a distillation config, ``side`` is
    ``"student"`` (the config with ``DISTILL.STUDENT_META_ARCHITECTURE``) or ``"teacher"``
    (``DISTILL.TEACHER.CONFIG_FILE`` with ``DISTILL.TEACHER.OPTS``); ``"model"`` and ``"student"``
    are the same for any other config. Used by ``tools/list_modules.py``."""
    from detectron2.modeling import build_model

    import segdet  # noqa: F401  (registers everything)
    from segdet.utils.config_io import load_config

    cfg = load_config(config_file, list(opts) + ["MODEL.DEVICE", "cpu"], freeze=False)
    if side == "teacher":
        cfg = load_config(cfg.DISTILL.TEACHER.CONFIG_FILE, list(cfg.DISTILL.TEACHER.OPTS) + ["MODEL.DEVICE", "cpu"])
    elif cfg.MODEL.META_ARCHITECTURE == "DistillationModel":
        cfg.MODEL.META_ARCHITECTURE = cfg.DISTILL.STUDENT_META_ARCHITECTURE
    cfg.defrost()
    _clear_weight_paths(cfg.MODEL)  # names only: no pretrained files needed
    for module_name, _ in build_model(cfg).named_modules():
        if module_name:
            print(module_name)


class FeatureRecorder:
    """Records what the named modules of ``model`` produce during a forward pass.

    ``recorder.outputs[name]`` holds the module's output of its last call (or its first
    positional input when ``record_inputs``). Used as a context manager, the recorded values
    are cleared on entry; hooks stay registered until :meth:`remove`.
    """

    def __init__(self, model: nn.Module, names: Iterable[str], record_inputs: bool = False,
                 owner: str = "model"):
        self.outputs: Dict[str, Any] = {}
        self._handles = []
        self.names: List[str] = list(dict.fromkeys(names))
        for name in self.names:
            module = resolve_module(model, name, owner)
            if record_inputs:
                hook = module.register_forward_hook(self._make_input_hook(name))
            else:
                hook = module.register_forward_hook(self._make_output_hook(name))
            self._handles.append(hook)

    def _make_output_hook(self, name: str):
        def hook(module, inputs, output):
            self.outputs[name] = output
        return hook

    def _make_input_hook(self, name: str):
        def hook(module, inputs, output):
            self.outputs[name] = inputs[0] if inputs else None
        return hook

    def __enter__(self) -> "FeatureRecorder":
        self.outputs = {}
        return self

    def __exit__(self, *exc) -> None:
        pass

    def missing(self) -> List[str]:
        """Names whose module did not run in the last forward."""
        return [n for n in self.names if n not in self.outputs]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def build_adapter(in_channels: int, out_channels: int) -> nn.Module:
    """1×1 conv from the student's to the teacher's channel count (identity when equal)."""
    if in_channels == out_channels:
        return nn.Identity()
    return nn.Conv2d(in_channels, out_channels, kernel_size=1)
