"""README.md's "Config keys" table is tools/config_keys_table.py's output."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tool():
    spec = importlib.util.spec_from_file_location("config_keys_table", os.path.join(ROOT, "tools", "config_keys_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_is_the_scripts_output():
    tool = _tool()
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = tool.readme_table(f.read())
    assert readme, "README.md has no config-keys-table markers"
    assert readme == tool.table(), "README.md's config keys table is stale: run python tools/config_keys_table.py --write"


def test_table_has_every_segdet_key_and_no_old_name():
    tool = _tool()
    keys = tool.segdet_keys()
    assert keys["SOLVER.POLY_LR_CONSTANT_ENDING"] == 0.0
    assert keys["INPUT.CROP.SINGLE_CATEGORY_MAX_AREA"] == 1.0
    assert "MODEL.CGRSEG.CHANNELS" in keys and "DISTILL.LOSS_WEIGHTS" in keys
    from segdet.utils.config_renames import REMOVED, RENAMED

    assert not set(keys) & (set(RENAMED) | set(REMOVED) | {"SEGDET_CONFIG_ADDED"})
