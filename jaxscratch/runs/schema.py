"""The config schema: a :class:`Field` per key, checkers, and :func:`check_table`.

A checker is ``check(key, value) -> normalised value`` and raises :class:`ConfigError` naming the
key (``layers[1].activation``). Number checks are :mod:`jaxscratch.validate`'s, so a config value
is accepted or refused exactly as the same argument of the Python API; their message is wrapped
as ``layers[0].dropout: value must be a finite number in (0, 1], got 1.5`` (the full key first).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jaxscratch import validate


class ConfigError(ValueError):
    """A config that cannot be used; the message starts with the offending key."""


REQUIRED = object()
Check = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Field:
    """One config key: its checker, default (``REQUIRED``, or ``None`` = optional and omitted) and
    a short description of the allowed values for ``--help``-style listings."""

    check: Check
    default: Any = REQUIRED
    allowed: str = ""


def type_name(value: Any) -> str:
    """The TOML name of a value's type (``integer``, ``string``, ``table``...)."""
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array"}.get(
        type(value), "table" if isinstance(value, dict) else type(value).__name__
    )


def _validated(check: Callable[..., Any], key: str, value: Any, **bounds: Any) -> Any:
    """Run a :mod:`jaxscratch.validate` check; its message starts with the key."""
    try:
        return check(key, "value", value, **bounds)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


def int_check(minimum: int | None = None, maximum: int | None = None) -> Check:
    """An integer (not a boolean) in ``[minimum, maximum]``."""

    def check(key: str, value: Any) -> int:
        return _validated(validate.check_int, key, value, minimum=minimum, maximum=maximum)

    return check


def float_check(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Check:
    """A finite number (integers accepted) in the given interval; returned as a float."""
    bounds = dict(minimum=low, maximum=high, low_open=low_open, high_open=high_open)

    def check(key: str, value: Any) -> float:
        return _validated(validate.check_float, key, value, **bounds)

    return check


def bool_check(key: str, value: Any) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {type_name(value)} {value!r}")
    return value


def str_check(key: str, value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a non-empty string, got {type_name(value)} {value!r}")
    return value


def choice_check(values: Callable[[], list[str]] | list[str]) -> Check:
    """A string from ``values`` (a list, or a function returning one, evaluated when checking)."""

    def check(key: str, value: Any) -> str:
        allowed = values() if callable(values) else values
        if not isinstance(value, str) or value not in allowed:
            raise ConfigError(
                f"{key}: unknown value {value!r}; allowed: {', '.join(map(repr, allowed))}"
            )
        return value

    return check


def name_check(key: str, value: Any) -> str:
    """A run name: letters, digits, ``_``, ``.``, ``-`` (it becomes a directory name)."""
    str_check(key, value)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
        raise ConfigError(
            f"{key}: {value!r} is not usable as a run name; use letters, digits, '_', '.', '-'"
        )
    return value


def _unknown_key(key: str, table: dict[str, Any], fields: dict[str, Field]) -> None:
    unknown = sorted(set(table) - set(fields))
    if unknown:
        prefix = f"{key}." if key else ""
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key; allowed keys"
            f"{' in ' + key if key else ''}: {', '.join(fields)}"
        )


def check_table(key: str, table: Any, fields: dict[str, Field]) -> dict[str, Any]:
    """Validate one TOML table against ``fields``; return it with defaults filled in.

    Unknown keys and missing required keys are errors listing the allowed keys; optional keys
    whose default is ``None`` are left out when absent.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{key or 'config'}: expected a table, got {type_name(table)} {table!r}")
    _unknown_key(key, table, fields)
    prefix = f"{key}." if key else ""
    out: dict[str, Any] = {}
    for name, f in fields.items():
        if name in table:
            out[name] = f.check(prefix + name, table[name])
        elif f.default is REQUIRED:
            hint = f" ({f.allowed})" if f.allowed else ""
            raise ConfigError(f"{prefix}{name}: missing required key{hint}")
        elif f.default is not None:
            out[name] = copy.deepcopy(f.default)
    return out


def tagged(key: str, table: Any, tag: str, entries: dict[str, Any]) -> tuple[str, Any]:
    """``(name, entries[name])`` for the discriminating key ``tag`` (``type`` of a layer)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{key}: expected a table, got {type_name(table)} {table!r}")
    if tag not in table:
        raise ConfigError(
            f"{key}.{tag}: missing required key; allowed: {', '.join(map(repr, entries))}"
        )
    name = table[tag]
    if not isinstance(name, str) or name not in entries:
        raise ConfigError(
            f"{key}.{tag}: unknown value {name!r}; allowed: {', '.join(map(repr, entries))}"
        )
    return name, entries[name]


def describe_fields(fields: dict[str, Field], skip: str, show: Callable[[Any], str]) -> str:
    """``a, b=1, [c]``: required keys bare, defaults after ``=`` (written by ``show``), optional
    keys without a default in brackets; ``skip`` (the tag) left out."""
    parts = []
    for name, f in fields.items():
        if name == skip:
            continue
        if f.default is REQUIRED:
            parts.append(name)
        elif f.default is None or isinstance(f.default, dict):
            parts.append(f"[{name}]")
        else:
            parts.append(f"{name}={show(f.default)}")
    return ", ".join(parts) if parts else "(no other keys)"
