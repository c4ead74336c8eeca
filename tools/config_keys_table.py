#!/usr/bin/env python
"""The README's "Config keys" table: every key segdet adds to detectron2's config, with its
default (the keys and comments live in segdet/config/).

    python tools/config_keys_table.py           # print the table
    python tools/config_keys_table.py --write   # replace the table in README.md

tests/utils/test_config_keys_table.py checks that README.md holds exactly this output.
"""
import argparse
import os
import sys
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
BEGIN = "<!-- config-keys-table: begin (tools/config_keys_table.py --write) -->"
END = "<!-- config-keys-table: end -->"


def _flatten(node, prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for k, v in node.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def segdet_keys() -> Dict[str, Any]:
    """{dotted key: default} for the keys ``add_segdet_config`` adds, in definition order."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from detectron2.config import get_cfg

    from segdet.config import get_segdet_cfg

    d2 = _flatten(get_cfg())
    return {k: v for k, v in _flatten(get_segdet_cfg()).items() if k not in d2}


def _value(v: Any) -> str:
    text = '""' if v == "" else repr(v)
    return text.replace("|", "\\|")


def table() -> str:
    lines: List[str] = ["| Key | Default |", "| --- | --- |"]
    lines += [f"| `{k}` | `{_value(v)}` |" for k, v in segdet_keys().items()]
    return "\n".join(lines) + "\n"


def readme_table(text: str) -> str:
    """The table between the markers in README text ("" if the markers are missing)."""
    if BEGIN not in text or END not in text:
        return ""
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write_readme(path: str = README) -> None:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}{BEGIN}\n{table()}{END}{tail}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = parser.parse_args(argv)
    if args.write:
        write_readme()
    else:
        sys.stdout.write(table())


if __name__ == "__main__":
    main()
