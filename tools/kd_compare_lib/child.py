#!/usr/bin/env python
"""One kd_compare run: apply the --register specs and register the --declare configs'
``DATASETS.DECLARE`` sets (in every training process), then tools/train_net.py with the
arguments after ``--``.

  python tools/kd_compare_lib/child.py --register my_datasets -- --config-file CFG OUTPUT_DIR out/x

``--declare CONFIG`` serves the teacher's run: it trains from its own config on the datasets the
distillation config declares.

A register spec is ``MODULE`` or ``path/to/file.py`` (imported: datasets registered at import,
the usual detectron2 idiom), optionally ``:FUNCTION`` (then called with no arguments).
"""
import importlib
import importlib.util
import os
import sys
from typing import List, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

__all__ = ["apply_register", "apply_specs", "split_argv", "main"]


def apply_register(spec: str) -> None:
    """Import ``MODULE`` or ``FILE.py`` of ``spec`` (``TARGET[:FUNCTION]``) and call ``FUNCTION()``.

    Raises:
        ConfigError: naming the spec, when the module, file or function does not exist.
    """
    from segdet.utils.errors import ConfigError

    target, _, function = spec.partition(":")
    if target.endswith(".py"):
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise ConfigError(f"--register {spec}: no file at {target}")
        name = f"kd_compare_register_{abs(hash(path))}"
        module = sys.modules.get(name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            loader_spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # modules of the directory the tool was started from
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            if e.name and target.startswith(e.name):
                raise ConfigError(f"--register {spec}: no module named {e.name!r} (expected MODULE, "
                                  "path/to/file.py, optionally :FUNCTION)") from None
            raise
    if function:
        fn = getattr(module, function, None)
        if not callable(fn):
            raise ConfigError(f"--register {spec}: {target} has no function {function!r}")
        fn()


def split_argv(argv: Sequence[str]):
    """(specs, train_net arguments) of ``[--register SPEC | --declare CONFIG]... -- TRAIN_NET_ARGS``;
    a spec is ``("register", SPEC)`` or ``("declare", CONFIG)``, in the order given."""
    argv = list(argv)
    specs: List[Tuple[str, str]] = []
    while argv and argv[0] != "--":
        flag = argv.pop(0)
        if flag not in ("--register", "--declare") or not argv:
            raise SystemExit(f"usage: child.py [--register SPEC | --declare CONFIG]... -- TRAIN_NET_ARGS (got {flag!r})")
        specs.append((flag[2:], argv.pop(0)))
    return specs, argv[1:]


def _train_net():
    """``tools/train_net.py`` as a module (tools are scripts, not a package)."""
    path = os.path.join(ROOT, "tools", "train_net.py")
    loader_spec = importlib.util.spec_from_file_location("kd_compare_train_net", path)
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
    return module


def apply_specs(specs: Sequence[Tuple[str, str]]) -> None:
    """Apply ``split_argv``'s specs: a register spec, or the DATASETS.DECLARE sets of a config."""
    from segdet.utils.config_io import load_config

    for kind, value in specs:
        if kind == "register":
            apply_register(value)
        else:
            load_config(value)  # loading a config registers its DATASETS.DECLARE sets


def registered_main(args, specs: Sequence[Tuple[str, str]]):
    """train_net's main after the registrations (the function each training process runs)."""
    apply_specs(specs)
    return _train_net().main(args)


def main(argv: Sequence[str]) -> None:
    from detectron2.engine import launch

    from segdet.engine.launch import synchronized_main
    from segdet.utils.errors import run_with_clear_errors

    specs, train_args = split_argv(argv)
    args = _train_net().build_parser().parse_args(train_args)
    run_with_clear_errors(
        launch, synchronized_main(registered_main), args.num_gpus, num_machines=args.num_machines,
        machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args, specs))


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    main(sys.argv[1:])
