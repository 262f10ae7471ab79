"""What a config may name, for ``jaxscratch list``: every layer type (with its keys), the user's
registered ops, activations, losses, optimizers (with their keys), schedules and data sets.

The lists are read from the same tables the config is checked against
(:mod:`~jaxscratch.runs.layers`, :mod:`~jaxscratch.runs.registry`,
:mod:`~jaxscratch.runs.datasets`), so a name listed here is a name a config accepts, plugins
included once they are imported.
"""

from __future__ import annotations

from typing import Any

from jaxscratch.runs.datasets import DATA_SETS
from jaxscratch.runs.layers import LAYERS, activations, user_ops
from jaxscratch.runs.registry import OPTIMIZERS, SCHEDULES, loss_names, optimizer_fields
from jaxscratch.runs.schema import describe_fields
from jaxscratch.runs.tomlio import toml_value

SECTIONS = ("layers", "ops", "activations", "losses", "optimizers", "schedules", "data")


def catalog() -> dict[str, Any]:
    """``{section: {name: description}}`` for every section of :data:`SECTIONS`."""
    return {
        "layers": {
            name: {"keys": describe_fields(lt.fields, "type", toml_value), "doc": lt.doc}
            for name, lt in LAYERS.items()
        },
        "ops": {
            name: {"parameters": op.init is not None, "stochastic": op.stochastic}
            for name, op in user_ops().items()
        },
        "activations": activations(),
        "losses": loss_names(),
        "optimizers": {
            name: describe_fields(optimizer_fields(name), "name", toml_value) for name in OPTIMIZERS
        },
        "schedules": {
            name: describe_fields(fields, "name", toml_value) for name, fields in SCHEDULES.items()
        },
        "data": {
            name: describe_fields(ds.fields, "name", toml_value) for name, ds in DATA_SETS.items()
        },
    }


def format_catalog(cat: dict[str, Any]) -> str:
    """The catalog as text, a heading per section and a line per name."""
    lines = ["layers ([[layers]] type = ...):"]
    for name, d in cat["layers"].items():
        lines.append(f"  {name:<12} {d['keys']}")
        lines.append(f"  {'':<12}   {d['doc']}")
    lines.append('ops (registered by you or a [plugins] module; [[layers]] type = "op", op = ...):')
    if not cat["ops"]:
        lines.append("  (none: register ops with jaxscratch.register in a [plugins] module)")
    for name, d in cat["ops"].items():
        kind = "with parameters" if d["parameters"] else "parameter-free"
        lines.append(f"  {name:<12} {kind}" + (", stochastic" if d["stochastic"] else ""))
    lines.append("activations (activation = ...): " + ", ".join(cat["activations"]))
    lines.append("losses (loss = ...): " + ", ".join(cat["losses"]))
    for section, head in (
        ("optimizers", "[optimizer] name = ..."),
        ("schedules", "[schedule] name = ..."),
        ("data", "[data] name = ..."),
    ):
        lines.append(f"{section} ({head}):")
        lines += [f"  {name:<14} {keys}" for name, keys in cat[section].items()]
    return "\n".join(lines)
