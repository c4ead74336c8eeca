"""Feature taps: record named modules' outputs (or inputs) with forward hooks."""
import difflib
from typing import Any, Dict, Iterable, List

from torch import nn

__all__ = ["FeatureRecorder", "resolve_module", "build_adapter"]


def resolve_module(model: nn.Module, name: str, owner: str = "model") -> nn.Module:
    """The sub-module called ``name`` (dotted path; ``""`` is the model itself).

    Raises:
        KeyError: naming the unknown module, the closest valid names, and every valid name.
    """
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    valid = [n for n in modules if n]
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise KeyError(
        f"{owner} has no module named {name!r}.{hint} Valid module names ({len(valid)}): "
        + ", ".join(valid)
    )


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
