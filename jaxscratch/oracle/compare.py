"""Tree primitives the oracle's modules share: float casts, random cotangents, inner products and
the leaf-by-leaf comparison of a manual gradient tree with the oracle's.

A gradient tree is ``(dparams, dx)``; a leaf path as ``jax.tree_util.keystr`` writes it
(``[0]['W']``) is named for people by :func:`leaf_name` (``dparams['W']``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_float(x: Any) -> bool:
    """True for an array (or scalar) of a floating dtype."""
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def to_dtype(tree: Any, dtype: Any) -> Any:
    """``tree`` with its float leaves cast to ``dtype`` (other leaves unchanged)."""
    return jax.tree.map(lambda a: jnp.asarray(a, dtype) if is_float(a) else a, tree)


def to64(tree: Any) -> Any:
    """``tree`` with its float leaves in float64."""
    return to_dtype(tree, jnp.float64)


def random_like(key: jax.Array, tree: Any) -> Any:
    """Standard normal float64 leaves shaped like ``tree``'s float leaves (zeros elsewhere).

    Drawn with numpy from a seed taken from ``key``: a ``jax.random`` draw would compile once per
    new shape, which dominated the oracle's run time.
    """
    leaves, treedef = jax.tree.flatten(tree)
    seed = np.asarray(jax.random.key_data(key)).ravel().astype(np.uint64)
    rng = np.random.default_rng(seed.tolist())
    out = [
        jnp.asarray(rng.standard_normal(jnp.shape(a)), jnp.float64)
        if is_float(a)
        else jnp.asarray(np.zeros(jnp.shape(a), a.dtype))
        for a in leaves
    ]
    return jax.tree.unflatten(treedef, out)


def vdot(a: Any, b: Any) -> jax.Array:
    """``sum <a_leaf, b_leaf>`` over the float leaves of two trees of one structure."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return sum(
        (jnp.vdot(x, y) for x, y in zip(la, lb, strict=True) if is_float(x)), jnp.float64(0.0)
    )


def leaf_paths(tree: Any) -> list[str]:
    """``keystr`` of every leaf of ``tree``, in flattening order."""
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def leaf_name(path: str) -> str:
    """A ``(dparams, dx)`` leaf path for people: ``[0]['W']`` -> ``dparams['W']``, ``[1]`` -> ``dx``,
    ``[1][2]`` -> ``dx[2]`` (the third input of a tuple input)."""
    for prefix, word in (("[0]", "dparams"), ("[1]", "dx")):
        if path.startswith(prefix):
            return word + path[len(prefix) :]
    return "gradient" + path


def close(m: np.ndarray, o: np.ndarray, rtol: float) -> bool:
    """``|m - o| <= rtol * (|o| + max|o|)`` everywhere (the oracle's criterion), same shapes."""
    if m.shape != o.shape:
        return False
    if o.size == 0:
        return True
    scale = float(np.max(np.abs(o)))
    return bool(np.all(np.abs(m - o) <= rtol * (np.abs(o) + scale)))


def compare(manual: Any, oracle: Any, rtol: float) -> tuple[float, float, str]:
    """(max abs error, max error relative to the leaf scale, first failure or '').

    A structure, shape or non-finite failure returns infinite errors."""
    m_leaves, m_def = jax.tree.flatten(manual)
    o_leaves, o_def = jax.tree.flatten(oracle)
    if m_def != o_def:  # type: ignore[operator]  # jax stubs: PyTreeDef comes from untyped jaxlib
        return np.inf, np.inf, f"gradient structure {m_def} != oracle {o_def}"
    max_abs = max_rel = 0.0
    detail = ""
    for path, m, o in zip(leaf_paths(oracle), m_leaves, o_leaves, strict=True):
        if not is_float(o):
            continue
        if jnp.shape(m) != jnp.shape(o):
            return np.inf, np.inf, f"gradient{path} has shape {jnp.shape(m)}, oracle {jnp.shape(o)}"
        m, o = np.asarray(m, np.float64), np.asarray(o, np.float64)
        err = np.abs(m - o)
        if not np.all(np.isfinite(m)):
            return np.inf, np.inf, f"gradient{path} is not finite"
        scale = float(np.max(np.abs(o))) if o.size else 0.0
        leaf_abs = float(err.max()) if err.size else 0.0
        leaf_rel = leaf_abs / scale if scale > 0 else (0.0 if leaf_abs == 0 else np.inf)
        max_abs, max_rel = max(max_abs, leaf_abs), max(max_rel, leaf_rel)
        if not detail and np.any(err > rtol * (np.abs(o) + scale)):
            i = worst_index(m, o, rtol)
            detail = f"gradient{path}{list(i)}: manual {m[i]:.6g}, oracle {o[i]:.6g}"
    return max_abs, max_rel, detail


def worst_index(m: np.ndarray, o: np.ndarray, rtol: float) -> tuple[int, ...]:
    """The entry of ``m`` furthest outside the tolerance around ``o`` (same shapes)."""
    err = np.abs(m - o)
    return tuple(
        int(v) for v in np.unravel_index(int(np.argmax(err - rtol * np.abs(o))), err.shape)
    )


def batch_size(x: Any) -> int | None:
    """The leading axis of the first float leaf of an input (the batch), or None."""
    for leaf in jax.tree.leaves(x):
        if is_float(leaf) and jnp.ndim(leaf) >= 1:
            return int(jnp.shape(leaf)[0])
    return None


def mask_sample(tree: Any, i: int, n: int) -> Any:
    """``tree`` with every float leaf of leading axis ``n`` zeroed except its sample ``i``."""

    def one(a: Any) -> Any:
        if not is_float(a) or jnp.ndim(a) == 0 or jnp.shape(a)[0] != n:
            return a
        return jnp.zeros_like(a).at[i].set(a[i])

    return jax.tree.map(one, tree)
