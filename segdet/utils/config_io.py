"""Loading segdet configs with errors that name the file and key."""
import logging
import os
from typing import Sequence

from detectron2.config import CfgNode

from .errors import ConfigError

__all__ = ["load_config"]


def load_config(config_file: str, opts: Sequence[str] = (), freeze: bool = True) -> CfgNode:
    """detectron2 defaults + segdet keys, merged with ``config_file`` (``_BASE_`` chains
    followed) and trailing ``KEY VALUE`` ``opts``.

    Raises:
        ConfigError: the file is missing, is not valid YAML, names a key that does not exist,
            or ``opts`` is not a list of KEY VALUE pairs.
    """
    from segdet.config import get_segdet_cfg

    if not config_file:
        raise ConfigError("no config file given (use --config-file path/to/config.yaml)")
    if not os.path.isfile(config_file):
        raise ConfigError(f"config file not found: {config_file}")
    cfg = get_segdet_cfg()
    try:
        cfg.merge_from_file(config_file)
    except KeyError as e:
        raise ConfigError(f"{config_file}: {e.args[0] if e.args else e}") from None
    except AssertionError as e:  # detectron2 asserts on a missing _BASE_ file
        raise ConfigError(f"{config_file}: {e}") from None
    except Exception as e:
        if type(e).__module__.startswith("yaml"):
            raise ConfigError(f"{config_file}: not valid YAML: {e}") from None
        raise
    if len(opts) % 2:
        raise ConfigError(f"command-line overrides must be KEY VALUE pairs, got {list(opts)}")
    try:
        cfg.merge_from_list(list(opts))
    except KeyError as e:
        raise ConfigError(f"command line: {e.args[0] if e.args else e}") from None
    except (ValueError, AssertionError) as e:
        raise ConfigError(f"command line: {e}") from None
    if cfg.MODEL.DEVICE.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            logging.getLogger(__name__).warning(
                f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but no CUDA device is available: using 'cpu'")
            cfg.MODEL.DEVICE = "cpu"
    if freeze:
        cfg.freeze()
    return cfg
