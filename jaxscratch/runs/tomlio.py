"""Writing TOML: the resolved config as a file :mod:`tomllib` reads back into an equal dict."""

from __future__ import annotations

import math
import re
from typing import Any


def toml_key(k: str) -> str:
    """A bare key when TOML allows one, else a quoted one."""
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else toml_value(k)


def toml_value(v: Any) -> str:
    """A TOML scalar or array: booleans, integers, floats (``nan``/``inf`` too), strings, lists,
    and dicts as inline tables."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        r = repr(v)
        return r if any(c in r for c in ".en") else r + ".0"
    if isinstance(v, str):
        out = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{out}"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table (inside an array, e.g. parallel's branches)
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"dumps_toml: cannot write {type(v).__name__} {v!r}")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _emit(lines: list[str], prefix: str, table: dict[str, Any]) -> None:
    for k, v in table.items():
        if not isinstance(v, dict) and not _is_table_array(v):
            lines.append(f"{toml_key(k)} = {toml_value(v)}")
    for k, v in table.items():
        name = f"{prefix}.{toml_key(k)}" if prefix else toml_key(k)
        if isinstance(v, dict):
            lines += ["", f"[{name}]"]
            _emit(lines, name, v)
        elif _is_table_array(v):
            for item in v:
                lines += ["", f"[[{name}]]"]
                _emit(lines, name, item)


def dumps_toml(cfg: dict[str, Any]) -> str:
    """TOML text for a config dict (scalars, arrays, tables, arrays of tables), readable by
    :mod:`tomllib` back into an equal dict."""
    lines: list[str] = []
    _emit(lines, "", cfg)
    return "\n".join(lines).lstrip("\n") + "\n"
