"""Plugins: Python modules a config imports, so that it can name ops, activations and losses of
your own.

    [plugins]
    modules = ["my_ops", "lib/more_ops.py"]  # module names, or .py files (relative to the config)
    path = ["."]                              # where module names are looked up first
                                              # (relative to the config; default: its directory)

Importing a plugin runs it; it registers what it defines with :func:`jaxscratch.register`
(``register(op, example)``: an op and its oracle example) and :func:`jaxscratch.register_loss`.
A config may then name

* a registered op as a layer: ``[[layers]] type = "op"``, ``op = "my_op"``;
* a registered parameter-free, deterministic op (``init is None``) as ``activation = "my_act"``
  of a dense, conv2d or activation layer;
* a registered loss: ``loss = "my_loss"``.

``jaxscratch gradcheck --import my_ops`` checks the plugin's backward passes, ``jaxscratch list
--import my_ops`` lists what a config may name. The resolved config keeps the table with absolute
paths, so ``--resume``, ``evaluate`` and ``predict`` import the same modules from any directory.
The run directory records each module's file and sha256 (``plugins.json``, and every checkpoint's
fingerprint): a resume whose plugin source changed is refused like a changed config. Only each
module's own file is hashed, not the modules it imports.

A module is imported once per process (Python caches it); editing a plugin during a notebook
session needs ``importlib.reload`` and ``register(..., replace=True)`` in the plugin.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from jaxscratch import fileio
from jaxscratch.runs.schema import ConfigError, type_name

PLUGINS_FILE = "plugins.json"


def _str_list(key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(
            f"{key}: expected an array of non-empty strings, got {type_name(value)} {value!r}"
        )
    return list(value)


def _is_file_entry(entry: str) -> bool:
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def resolve(key: str, value: Any, base_dir: Path | None) -> dict[str, list[str]]:
    """Validate a ``[plugins]`` table and return it resolved: file entries and ``path`` made
    absolute against ``base_dir`` (the config's directory; the working directory when None)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a table, got {type_name(value)} {value!r}")
    unknown = sorted(set(value) - {"modules", "path"})
    if unknown:
        raise ConfigError(f"{key}: unknown key {unknown[0]!r}; allowed: 'modules', 'path'")
    if "modules" not in value:
        raise ConfigError(f"{key}.modules: missing required key (an array of module names)")
    modules = _str_list(f"{key}.modules", value["modules"])
    if not modules:
        raise ConfigError(f"{key}.modules: expected at least one module")
    base = (base_dir or Path.cwd()).resolve()
    path = [str((base / p).resolve()) for p in _str_list(f"{key}.path", value.get("path", ["."]))]
    modules = [str((base / m).resolve()) if _is_file_entry(m) else m for m in modules]
    return {"modules": modules, "path": path}


def _from_file(file: Path) -> ModuleType:
    name = file.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == file:
            return loaded
        raise ImportError(
            f"another module named {name!r} is already imported (from "
            f"{getattr(loaded, '__file__', None)}); rename {file.name}"
        )
    if not file.is_file():
        raise ImportError(f"no such file {file}")
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"{file} is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _by_name(name: str, path: list[str]) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    added = [p for p in path if p not in sys.path]
    sys.path[:0] = added
    try:
        return importlib.import_module(name)
    finally:
        for p in added:
            sys.path.remove(p)
        sys.path.extend(added)  # for modules the plugin imports later, after everything else


def import_module(entry: str, path: list[str] | None = None) -> ModuleType:
    """Import one plugin: a module name (looked up in ``path``, then on ``sys.path``) or the
    path of a ``.py`` file. Raises :class:`ConfigError` (one line) for any failure, the
    module's own exceptions included."""
    try:
        if _is_file_entry(entry):
            return _from_file(Path(entry).resolve())
        return _by_name(entry, path or [])
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(
            f"cannot import plugin {entry!r}: {type(e).__name__}" + (f": {first}" if first else "")
        ) from None


def import_all(spec: dict[str, list[str]], key: str = "plugins") -> list[ModuleType]:
    """Import every module of a resolved ``[plugins]`` table, in order."""
    out = []
    for i, entry in enumerate(spec["modules"]):
        try:
            out.append(import_module(entry, spec["path"]))
        except ConfigError as e:
            raise ConfigError(f"{key}.modules[{i}]: {e}") from None
    return out


def records(cfg: dict[str, Any]) -> list[dict[str, str]]:
    """``[{"module", "file", "sha256"}]`` of the config's plugins, hashed now (``[]`` without a
    ``[plugins]`` table). The modules must have been imported (loading the config does it)."""
    spec = cfg.get("plugins")
    if not spec:
        return []
    out = []
    for module in import_all(spec):
        file = getattr(module, "__file__", None)
        digest = fileio.file_sha256(Path(file))[0] if file and Path(file).is_file() else "(no file)"
        out.append({"module": module.__name__, "file": str(file), "sha256": digest})
    return out


def fingerprint_config(cfg: dict[str, Any], recs: list[dict[str, str]]) -> dict[str, Any]:
    """The config as a run's fingerprint sees it: with each plugin's sha256 as a key
    ``plugin_sha256.<module>``, so a changed plugin is named like a changed config key."""
    if not recs:
        return cfg
    return {**cfg, "plugin_sha256": {r["module"]: r["sha256"] for r in recs}}
