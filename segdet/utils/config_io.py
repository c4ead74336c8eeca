"""Loading segdet configs with errors that name the file and key."""
import logging
import os
from typing import Sequence

from detectron2.config import CfgNode

from .config_check import check_config
from .config_paths import resolve_config_paths
from .config_renames import check_renamed_keys
from .config_types import coerce_loaded_yaml, coerce_opts
from .errors import ConfigError

__all__ = ["load_config"]


def _merge_file(cfg: CfgNode, config_file: str) -> None:
    """``cfg.merge_from_file(config_file)`` with the values coerced to their defaults' types
    (:mod:`segdet.utils.config_types`). Files of an older detectron2 config VERSION go through
    detectron2's own upgrade path as they are."""
    try:
        loaded = cfg.load_yaml_with_base(config_file, allow_unsafe=True)
    except TypeError:  # an empty file (None) in the _BASE_ chain
        loaded = None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{config_file}: expected a mapping of config keys (KEY: value) in the file "
                          f"and its _BASE_ files, got {type(loaded).__name__}")
    check_renamed_keys(loaded, config_file)
    version = loaded.get("VERSION")
    if version is None:
        from detectron2.config.compat import guess_version

        version = guess_version(CfgNode(loaded), config_file)
    if version != cfg.VERSION:
        cfg.merge_from_file(config_file)
        return
    coerce_loaded_yaml(loaded, cfg, config_file)
    cfg.merge_from_other_cfg(CfgNode(loaded))


def load_config(config_file: str, opts: Sequence[str] = (), freeze: bool = True) -> CfgNode:
    """detectron2 defaults + segdet keys, merged with ``config_file`` (``_BASE_`` chains
    followed) and trailing ``KEY VALUE`` ``opts``. A relative ``DISTILL.TEACHER.CONFIG_FILE`` is
    made absolute: relative to the file that sets it, else the cwd, else the repo root
    (:mod:`segdet.utils.config_paths`).

    Raises:
        ConfigError: the file is missing, is not valid YAML, names a key that does not exist,
            gives a value of the wrong type (ints for float keys and the like are converted,
            see :mod:`segdet.utils.config_types`) or out of range (:mod:`segdet.utils.config_check`),
            or ``opts`` is not a list of KEY VALUE pairs, or a key was renamed or removed (the
            message gives the new name, :mod:`segdet.utils.config_renames`).
    """
    from segdet.config import complete_teacher_entries, get_segdet_cfg

    if not config_file:
        raise ConfigError("no config file given (use --config-file path/to/config.yaml)")
    if not os.path.isfile(config_file):
        raise ConfigError(f"config file not found: {config_file}")
    cfg = get_segdet_cfg()
    try:
        _merge_file(cfg, config_file)
    except ConfigError:
        raise
    except KeyError as e:
        raise ConfigError(f"{config_file}: {e.args[0] if e.args else e}") from None
    except AssertionError as e:  # detectron2 asserts on a missing _BASE_ file
        raise ConfigError(f"{config_file}: {e}") from None
    except Exception as e:
        if type(e).__module__.startswith("yaml"):
            raise ConfigError(f"{config_file}: not valid YAML: {e}") from None
        raise
    complete_teacher_entries(cfg, config_file)  # their keys exist for the overrides below
    if len(opts) % 2:
        raise ConfigError(f"command-line overrides must be KEY VALUE pairs, got {list(opts)}")
    check_renamed_keys([str(k) for k in list(opts)[0::2]], "command line")
    try:
        cfg.merge_from_list(coerce_opts(opts, cfg))
    except ConfigError:
        raise
    except KeyError as e:
        raise ConfigError(f"command line: {e.args[0] if e.args else e}") from None
    except (ValueError, AssertionError) as e:
        raise ConfigError(f"command line: {e}") from None
    resolve_config_paths(cfg, config_file, from_command_line=list(opts)[0::2])
    if cfg.MODEL.DEVICE.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            logging.getLogger(__name__).warning(
                f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but no CUDA device is available: using 'cpu'")
            cfg.MODEL.DEVICE = "cpu"
    check_config(cfg, f"{config_file}{' + command line' if opts else ''}")
    from segdet.data.datasets.declared import register_declared_datasets

    register_declared_datasets(cfg)
    if freeze:
        cfg.freeze()
    return cfg
