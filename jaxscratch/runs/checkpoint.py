"""Checkpoints you can trust: atomic writes, hashed contents, structure checked against the model.

A checkpoint is two files in a checkpoint directory:

* ``epoch-000004.npz``: every array leaf of the saved pytrees (params, optimizer state), written by
  ``numpy.savez`` and read back with ``allow_pickle=False``. Arrays are named by their path in the
  tree (``jax.tree_util.keystr``), prefixed by the tree's name: ``params[0]['W']``,
  ``opt_state.velocity[1]['B']``. The names do not depend on the pytree's treedef, so a checkpoint
  is restored by flattening a *template* (the model's freshly initialised params and optimizer
  state) and filling its leaves by name.
* ``epoch-000004.json``: the manifest: format, epoch, the .npz file's size and sha256, every leaf's
  name, shape, dtype and sha256 (of its C-order bytes), and free-form ``meta`` (JSON).

Writes are atomic: each file goes to a temporary file in the same directory, is flushed and
fsync'd, and is moved into place with ``os.replace``; the .npz first, the manifest second. The
manifest is what makes a checkpoint exist, so a process killed at any point leaves the previous
checkpoint intact and at worst an orphaned temporary file or .npz (ignored, and overwritten later).
:func:`latest` is the manifest with the highest epoch.

A run saves its whole :class:`~jaxscratch.train.state.TrainState` with :func:`save_state`: trees
``params``, ``opt_state``, ``key`` (the key's data, its implementation in ``meta``) and, when the run
has a best evaluation, ``best_params`` and ``best_opt_state``; the state's epoch and the best's
epoch, eval loss and metrics go in ``meta``. :func:`load_state` returns the TrainState; given no
optimizer template it loads the params (and the best's params) alone, ignoring the optimizer
leaves, so a model can be used without knowing how it was trained. :func:`load` likewise checks
only the trees it is given templates for.

Loading verifies, in order: the manifest parses and has every field; the .npz has the manifest's
size and sha256 (a truncated or bit-flipped file is a :class:`CheckpointError` naming its path and
both hashes); every array matches its manifest entry; the leaves match the template (a
:class:`CheckpointMismatch` lists the missing, unexpected and mis-shaped leaves).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxscratch import fileio
from jaxscratch.train.state import Best, TrainState
from jaxscratch.validate import check_positive_int

FORMAT = "jaxscratch-checkpoint/1"
_MANIFEST_RE = re.compile(r"epoch-(\d+)\.json")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or fails its integrity checks; the message names the file."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint whose leaves do not match the model: ``missing``, ``unexpected`` and
    ``mismatched`` (name, checkpoint shape/dtype, model shape/dtype) say which."""

    def __init__(self, message: str, missing: list, unexpected: list, mismatched: list):
        super().__init__(message)
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched


class Loaded(NamedTuple):
    """A verified checkpoint: the rebuilt trees, the manifest's ``meta`` and its epoch and path."""

    trees: dict[str, Any]
    meta: dict[str, Any]
    epoch: int
    path: Path


def leaf_names(name: str, tree: Any) -> list[tuple[str, Any]]:
    """``[(name + keystr(path), leaf), ...]`` in flattening order. NamedTuples flatten by field
    (``.velocity``), dicts by key (``['W']``), tuples by index (``[0]``)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(name + jax.tree_util.keystr(path), leaf) for path, leaf in flat]


_file_sha256 = fileio.file_sha256  # a module attribute, so a test can make it fail


def _array_sha256(a: np.ndarray) -> str:
    return fileio.sha256_bytes(np.ascontiguousarray(a).tobytes())


def _epoch_name(epoch: int) -> str:
    return f"epoch-{epoch:06d}"


def save(
    directory: str | Path,
    epoch: int,
    trees: dict[str, Any],
    meta: dict[str, Any] | None = None,
    *,
    keep: int | None = 2,
    protect: tuple[int, ...] = (),
) -> Path:
    """Save ``trees`` (e.g. ``{"params": ..., "opt_state": ...}``) as the checkpoint of ``epoch``.

    Returns the manifest path. ``meta``: JSON-serialisable extras (epoch counters, best loss).
    ``keep``: how many of the newest checkpoints to keep (older ones are deleted after the new one
    is in place; ``None`` keeps all; else >= 1), besides those of the epochs in ``protect`` (the
    best one). Pruning deletes only what :func:`prune` may (never through a symlink).
    """
    if keep is not None:
        keep = check_positive_int("checkpoint.save", "keep", keep)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    leaves = []
    for tname, tree in trees.items():
        for lname, leaf in leaf_names(tname, tree):
            a = np.asarray(leaf)
            if a.dtype == object:
                raise TypeError(f"checkpoint.save: leaf {lname} is not a numeric array")
            arrays[lname] = a
            leaves.append(
                {
                    "name": lname,
                    "shape": list(a.shape),
                    "dtype": a.dtype.str,
                    "sha256": _array_sha256(a),
                }
            )
    stem = _epoch_name(epoch)
    npz = d / f"{stem}.npz"
    # numpy stubs: **kwds might hold allow_pickle; our names all start with the tree's name
    fileio.atomic_write(npz, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
    digest, size = _file_sha256(npz)
    manifest = {
        "format": FORMAT,
        "epoch": int(epoch),
        "file": npz.name,
        "size": size,
        "sha256": digest,
        "leaves": leaves,
        "meta": meta or {},
    }
    mpath = d / f"{stem}.json"
    text = _manifest_text(manifest)
    fileio.atomic_write(mpath, lambda f: f.write(text), mode="w")
    if keep is not None:
        for old in manifests(d)[:-keep]:
            if manifest_epoch(old) not in protect:
                prune(old)
    return mpath


def _manifest_text(manifest: dict[str, Any]) -> str:
    """The manifest as JSON, one line per field and per leaf (easy to read and to diff)."""
    head = [
        f" {json.dumps(k)}: {json.dumps(manifest[k])},"
        for k in manifest
        if k not in ("leaves", "meta")
    ]
    leaves = ",\n".join(f"  {json.dumps(leaf)}" for leaf in manifest["leaves"])
    return (
        "\n".join(
            [
                "{",
                *head,
                ' "leaves": [',
                leaves,
                " ],",
                f' "meta": {json.dumps(manifest["meta"])}',
                "}",
            ]
        )
        + "\n"
    )


def manifests(directory: str | Path) -> list[Path]:
    """The manifests in ``directory``, oldest epoch first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _MANIFEST_RE.fullmatch(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def manifest_epoch(path: Path) -> int:
    """The epoch in a manifest's file name (``epoch-000012.json`` -> 12)."""
    m = _MANIFEST_RE.fullmatch(Path(path).name)
    if m is None:
        raise CheckpointError(f"{path}: not a checkpoint manifest name (epoch-NNNNNN.json)")
    return int(m.group(1))


def latest(directory: str | Path) -> Path | None:
    """The newest checkpoint's manifest in ``directory``, or ``None``."""
    found = manifests(directory)
    return found[-1] if found else None


def _regular(path: Path) -> bool:
    """Whether ``path`` is a regular file itself (not a symlink, not a directory)."""
    return path.is_file() and not path.is_symlink()


def prune(manifest: Path) -> bool:
    """Delete one checkpoint: its manifest first (so it stops existing), then the .npz it names.

    Only regular files inside the manifest's own directory are deleted: nothing is done in a
    symlinked directory, for a symlinked or unreadable manifest, or for a ``"file"`` that is a
    symlink or not a plain name in that directory. Returns whether the checkpoint was deleted.
    """
    manifest = Path(manifest)
    if manifest.parent.is_symlink() or not _regular(manifest):
        return False
    try:
        npz = _npz_path(manifest, read_manifest(manifest))
    except CheckpointError:
        return False
    manifest.unlink(missing_ok=True)
    if _regular(npz):
        npz.unlink(missing_ok=True)
    return True


def _npz_path(manifest_path: Path, manifest: dict[str, Any]) -> Path:
    """The .npz a manifest names: a plain file name in the manifest's own directory."""
    name = manifest["file"]
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or "\\" in name
        or Path(name).name != name
    ):
        raise CheckpointError(
            f"checkpoint manifest {manifest_path}: file {name!r} is not a file name in its own "
            "directory (a manifest may only name a file beside it)"
        )
    own = manifest_path.with_suffix(".npz").name
    if _MANIFEST_RE.fullmatch(manifest_path.name) and name != own:
        raise CheckpointError(  # else two manifests could share, and prune, one .npz
            f"checkpoint manifest {manifest_path}: file {name!r} is not its own {own!r}"
        )
    return manifest_path.parent / name


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Parse and check a manifest; :class:`CheckpointError` naming it if it is unusable."""
    p = Path(path)
    try:
        manifest = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise CheckpointError(f"checkpoint manifest {p}: cannot read: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"checkpoint manifest {p} is corrupt or truncated (not valid JSON: {e})"
        ) from None
    need = ("format", "epoch", "file", "size", "sha256", "leaves", "meta")
    if not isinstance(manifest, dict) or any(k not in manifest for k in need):
        raise CheckpointError(f"checkpoint manifest {p} lacks fields; expected {list(need)}")
    if manifest["format"] != FORMAT:
        raise CheckpointError(
            f"checkpoint manifest {p}: format {manifest['format']!r}, expected {FORMAT!r}"
        )
    named = _MANIFEST_RE.fullmatch(p.name)
    epoch = manifest["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise CheckpointError(f"checkpoint manifest {p}: epoch {epoch!r} is not an integer")
    if named is not None and int(named.group(1)) != epoch:
        raise CheckpointError(
            f"checkpoint manifest {p} says epoch {epoch}, but its name says epoch "
            f"{int(named.group(1))}"
        )
    _npz_path(p, manifest)
    return manifest


def _read_arrays(manifest_path: Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    npz = _npz_path(manifest_path, manifest)
    if npz.is_symlink() and npz.resolve().parent != manifest_path.parent.resolve():
        raise CheckpointError(
            f"checkpoint {npz} is a symlink to {npz.resolve()}, outside {manifest_path.parent}"
        )
    if not npz.is_file():
        raise CheckpointError(f"checkpoint {npz} is missing (named by {manifest_path})")
    digest, size = _file_sha256(npz)
    if digest != manifest["sha256"] or size != manifest["size"]:
        raise CheckpointError(
            f"checkpoint {npz} is corrupt: sha256 {digest} ({size} bytes) does not match the "
            f"manifest's sha256 {manifest['sha256']} ({manifest['size']} bytes) in {manifest_path}"
        )
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:  # cannot happen for a file with the right hash
        raise CheckpointError(f"checkpoint {npz} cannot be read: {e}") from None
    listed = {leaf["name"]: leaf for leaf in manifest["leaves"]}
    if set(listed) != set(arrays):
        raise CheckpointError(
            f"checkpoint {npz}: arrays {sorted(set(arrays) ^ set(listed))} differ from the manifest"
        )
    for name, a in arrays.items():
        entry = listed[name]
        if (
            list(a.shape) != entry["shape"]
            or a.dtype.str != entry["dtype"]
            or _array_sha256(a) != entry["sha256"]
        ):
            raise CheckpointError(
                f"checkpoint {npz}: array {name} ({a.dtype} {a.shape}) does not match its manifest "
                f"entry ({entry['dtype']} {tuple(entry['shape'])}, sha256 {entry['sha256']})"
            )
    return arrays


def _dtype_of(leaf: Any) -> np.dtype:
    """The dtype of an array or ``jax.ShapeDtypeStruct`` template leaf."""
    dtype = getattr(leaf, "dtype", None)
    return np.dtype(dtype) if dtype is not None else np.asarray(leaf).dtype


def _in_tree(leaf: str, tree: str) -> bool:
    """Whether leaf name ``leaf`` belongs to the tree named ``tree`` (``params[0]['W']``)."""
    return leaf == tree or leaf.startswith((tree + "[", tree + "."))


def load(manifest_path: str | Path, templates: dict[str, Any]) -> Loaded:
    """Load and verify one checkpoint, rebuilding each tree in ``templates`` by leaf name.

    ``templates``: ``{"params": params_like, "opt_state": state_like}`` with the structure, shapes
    and dtypes the model expects: arrays, or ``jax.ShapeDtypeStruct`` leaves from
    ``jax.eval_shape`` of the model's init. Leaves of trees without a template are not read into
    the result (load ``{"params": ...}`` alone from a checkpoint that also holds ``opt_state``). Raises :class:`CheckpointError` for a corrupt
    checkpoint and :class:`CheckpointMismatch` for one that does not fit the templates.
    """
    mpath = Path(manifest_path)
    manifest = read_manifest(mpath)
    arrays = _read_arrays(mpath, manifest)
    trees = {}
    missing, mismatched = [], []
    expected_names = set()
    for tname, template in templates.items():
        flat = leaf_names(tname, template)
        _, treedef = jax.tree_util.tree_flatten(template)
        leaves = []
        for lname, leaf in flat:
            expected_names.add(lname)
            want_shape, want_dtype = tuple(np.shape(leaf)), _dtype_of(leaf)
            if lname not in arrays:
                missing.append((lname, want_shape, str(want_dtype)))
                continue
            a = arrays[lname]
            if a.shape != want_shape or a.dtype != want_dtype:
                mismatched.append((lname, a.shape, str(a.dtype), want_shape, str(want_dtype)))
                continue
            leaves.append(a)
        if len(leaves) == len(flat):
            trees[tname] = jax.tree_util.tree_unflatten(
                treedef, [jax.numpy.asarray(a) for a in leaves]
            )
    unexpected = sorted(
        n for n in set(arrays) - expected_names if any(_in_tree(n, t) for t in templates)
    )
    if missing or unexpected or mismatched:
        lines = [f"checkpoint {mpath.with_suffix('.npz')} does not match the model:"]
        lines += [f"  missing leaf {n}: model expects {d} {s}" for n, s, d in missing]
        lines += [
            f"  unexpected leaf {n}: {arrays[n].dtype} {arrays[n].shape} (not in the model)"
            for n in unexpected
        ]
        lines += [
            f"  leaf {n}: checkpoint has {d} {s}, model expects {wd} {ws}"
            for n, s, d, ws, wd in mismatched
        ]
        raise CheckpointMismatch("\n".join(lines), missing, unexpected, mismatched)
    return Loaded(trees, manifest["meta"], int(manifest["epoch"]), mpath)


def _key_tree(key: Any) -> tuple[Any, str | None]:
    """``(key data, implementation name)`` of a typed key; a raw uint32 key as it is."""
    if key is None:
        return None, None
    if jax.numpy.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key), str(jax.random.key_impl(key))
    return key, None


def state_trees(state: TrainState) -> dict[str, Any]:
    """The trees :func:`save_state` writes for ``state`` (see the module docstring)."""
    trees = {"params": state.params, "opt_state": state.opt_state}
    key, _ = _key_tree(state.key)
    if key is not None:
        trees["key"] = key
    if state.best is not None:
        trees["best_params"] = state.best.params
        trees["best_opt_state"] = state.best.opt_state
    return trees


def save_state(
    directory: str | Path,
    epoch: int,
    state: TrainState,
    meta: dict[str, Any] | None = None,
    *,
    keep: int | None = 2,
    protect: tuple[int, ...] = (),
) -> Path:
    """Save the whole TrainState as checkpoint ``epoch`` (the epoch training reached; after a
    restore ``state.epoch`` is earlier and is kept in ``meta["state_epoch"]``). ``meta`` gains
    ``state_epoch``, ``key_impl`` and ``best`` (epoch, eval_loss, metrics, or None)."""
    b = state.best
    full = dict(meta or {})
    full.update(
        state_epoch=int(state.epoch),
        key_impl=_key_tree(state.key)[1],
        has_key=state.key is not None,
        best=None
        if b is None
        else {
            "epoch": int(b.epoch),
            "eval_loss": float(b.eval_loss),
            "metrics": {k: float(v) for k, v in b.metrics.items()},
        },
    )
    return save(directory, epoch, state_trees(state), full, keep=keep, protect=protect)


def _templates(meta: dict[str, Any], params: Any, opt_state: Any) -> dict[str, Any]:
    templates: dict[str, Any] = {"params": params}
    if opt_state is not None:
        templates["opt_state"] = opt_state
    if meta.get("has_key"):
        impl = meta.get("key_impl")
        spec = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl)))
        templates["key"] = spec if impl else jax.ShapeDtypeStruct((2,), np.uint32)
    if meta.get("best") is not None:
        templates["best_params"] = params
        if opt_state is not None:
            templates["best_opt_state"] = opt_state
    return templates


def load_state(
    manifest_path: str | Path, params: Any, opt_state: Any = None
) -> tuple[TrainState, Loaded]:
    """``(TrainState, Loaded)`` of a :func:`save_state` checkpoint, verified like :func:`load`.

    ``params`` / ``opt_state``: templates (arrays or ``jax.ShapeDtypeStruct`` leaves) of the
    model's params and optimizer state. Without ``opt_state`` the state's ``opt_state`` (and the
    best's) is ``None``: the params alone, for prediction.
    """
    mpath = Path(manifest_path)
    meta = read_manifest(mpath)["meta"]
    if "state_epoch" not in meta:
        raise CheckpointError(f"checkpoint manifest {mpath} holds no TrainState (no state_epoch)")
    se = meta["state_epoch"]
    if (
        isinstance(se, bool)
        or not isinstance(se, int)
        or not 0 <= se <= read_manifest(mpath)["epoch"]
    ):
        raise CheckpointError(
            f"checkpoint manifest {mpath}: state_epoch {se!r} is not an epoch in [0, its epoch]"
        )
    loaded = load(mpath, _templates(meta, params, opt_state))
    t = loaded.trees
    key = t.get("key")
    if key is not None and meta.get("key_impl"):
        key = jax.random.wrap_key_data(key, impl=meta["key_impl"])
    best = None
    if meta.get("best") is not None:
        b = meta["best"]
        best = Best(
            b["epoch"], b["eval_loss"], b["metrics"], t["best_params"], t.get("best_opt_state")
        )
    state = TrainState(t["params"], t.get("opt_state"), int(meta["state_epoch"]), key, best)
    return state, loaded
