"""Every op and loss of jaxscratch, one module per concept.

Importing this package imports each op module by name (below), which registers its ops and losses
with :func:`jaxscratch.core.register`; :func:`registry` and :func:`loss_registry` therefore list
every op the package defines. A new op module is added to the import list here, and the registry
test fails for an op module-level ``Op`` that is not registered.
"""

from jaxscratch.core import Entry, LossEntry, registered, registered_losses
from jaxscratch.ops import (  # noqa: F401
    activations,
    attention,
    batchnorm,
    cells,
    combinators,
    conv,
    conv_transpose,
    dense,
    dropout,
    embedding,
    init,
    losses,
    norm,
    pool,
    reshape,
    rnn,
)


def registry() -> dict[str, Entry]:
    """Every registered op, ``{name: Entry(op, example)}``."""
    return registered()


def loss_registry() -> dict[str, LossEntry]:
    """Every registered loss, ``{name: LossEntry(loss, example)}``."""
    return registered_losses()
