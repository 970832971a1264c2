"""Save / restore of the whole simulation-state pytree in a workdir (orbax, synchronous).

    checkpoint.save(workdir, int(state.tick), state, keep=2, metadata={'algorithm': 'gossip'})
    state, metadata = checkpoint.restore(workdir, template=init_state)

Backend: `orbax.checkpoint.CheckpointManager` (already a dependency of flax), synchronous.
Checked on CPU with orbax-checkpoint 0.12.8 / jax 0.10.2: bit-identical round trips of
float32 / int32 / raw uint32 key arrays, NumPy arrays and Python ints into the structure of a
template (NamedTuples, flax.struct dataclasses, dicts, optax EmptyState); it writes each step
into `<step>.orbax-checkpoint-tmp-*` and renames it only when complete, and prunes old steps only
after that, so a crash mid-save leaves the previous checkpoints intact and is ignored on restore.
Orbax casts silently to the template's dtype, so every checkpoint also stores a manifest (path,
dtype, shape of each leaf) that `restore` checks first and that names any mismatch.

Layout: `workdir/checkpoints/<step>/{state, meta}`; `meta` holds the manifest and the caller's
JSON metadata.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)

PyTree = Any
PathLike = str | os.PathLike[str]

CHECKPOINT_DIR = 'checkpoints'
_FORMAT = 1


class CheckpointMismatchError(ValueError):
    """The template's structure, shapes or dtypes differ from the stored checkpoint's."""


def checkpoint_dir(workdir: PathLike) -> Path:
    return Path(workdir).absolute() / CHECKPOINT_DIR


def _manager(workdir: PathLike, *, keep: int | None = None,
             read_only: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=False,  # save() returns only once the step is on disk
        cleanup_tmp_directories=not read_only)  # leftovers of crashed saves
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def _leaf_spec(leaf: Any) -> list[Any]:
    """[dtype, shape] of one leaf; Python scalars keep their type name."""
    if isinstance(leaf, (bool, int, float)):
        return [type(leaf).__name__, []]
    if hasattr(leaf, 'shape') and hasattr(leaf, 'dtype'):  # jax / numpy array, ShapeDtypeStruct
        return [str(leaf.dtype), [int(d) for d in leaf.shape]]
    if isinstance(leaf, np.generic):
        return [str(leaf.dtype), []]
    raise TypeError(f'cannot checkpoint a leaf of type {type(leaf).__name__}')


def manifest(tree: PyTree) -> dict[str, list[Any]]:
    """{key path: [dtype, shape]} for every leaf of `tree` (what `restore` checks)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = {}
    for path, leaf in leaves:
        key = jax.tree_util.keystr(path)
        try:
            out[key] = _leaf_spec(leaf)
        except TypeError as e:
            raise TypeError(f'{e} at {key}') from None
    return out


def _check_manifest(stored: Mapping[str, list[Any]], wanted: Mapping[str, list[Any]],
                    where: Path) -> None:
    problems = [f'missing from checkpoint: {k}' for k in wanted if k not in stored]
    problems += [f'in checkpoint but not in template: {k}' for k in stored if k not in wanted]
    for key in wanted.keys() & stored.keys():
        (want_dtype, want_shape), (got_dtype, got_shape) = wanted[key], stored[key]
        if want_dtype != got_dtype or list(want_shape) != list(got_shape):
            problems.append(f'{key}: checkpoint has {got_dtype}{tuple(got_shape)}, '
                            f'template has {want_dtype}{tuple(want_shape)}')
    if problems:
        shown = '\n  '.join(sorted(problems)[:20])
        more = f'\n  ... and {len(problems) - 20} more' if len(problems) > 20 else ''
        raise CheckpointMismatchError(
            f'checkpoint {where} does not match the template state:\n  {shown}{more}')


def save(workdir: PathLike, step: int, state: PyTree, *, keep: int | None = 2,
         metadata: Mapping[str, Any] | None = None) -> Path:
    """Writes `state` as checkpoint `step`, keeping the newest `keep` steps (None: all).

    Blocks until the checkpoint is complete on disk. Existing steps >= `step` are deleted first:
    they belong to a run that was resumed from an earlier step and are now stale.

    Args:
        workdir: run directory; checkpoints go to `workdir/checkpoints/<step>`.
        step: a non-negative int, usually the tick.
        state: the simulation-state pytree (jax / numpy arrays, Python scalars).
        keep: how many checkpoints to keep, >= 1; None keeps all.
        metadata: JSON-serialisable data returned by `restore` (config, algorithm, ...).
    Returns:
        The checkpoint's directory.
    """
    step = int(step)
    if step < 0:
        raise ValueError(f'step must be >= 0, got {step}')
    if keep is not None and keep < 1:
        raise ValueError(f'keep must be >= 1 or None, got {keep}')
    meta = {'format': _FORMAT, 'step': step, 'manifest': manifest(state),
            'metadata': dict(metadata or {})}
    try:
        json.dumps(meta)
    except TypeError as e:
        raise TypeError(f'checkpoint metadata must be JSON-serialisable: {e}') from e
    mngr = _manager(workdir, keep=keep)
    try:
        stale = [s for s in mngr.all_steps() if s >= step]
        for s in stale:  # orbax refuses (silently) to save a step <= its latest
            logger.warning('deleting stale checkpoint %d (saving step %d)', s, step)
            mngr.delete(s)
        saved = mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        mngr.wait_until_finished()
    finally:
        mngr.close()
    if not saved:
        raise RuntimeError(f'orbax did not save step {step} in {checkpoint_dir(workdir)}')
    return checkpoint_dir(workdir) / str(step)


def all_steps(workdir: PathLike) -> list[int]:
    """Sorted steps of the complete checkpoints in `workdir` (unfinished saves are ignored)."""
    if not checkpoint_dir(workdir).is_dir():
        return []
    mngr = _manager(workdir, read_only=True)
    try:
        return sorted(int(s) for s in mngr.all_steps())
    finally:
        mngr.close()


def latest_step(workdir: PathLike) -> int | None:
    steps = all_steps(workdir)
    return steps[-1] if steps else None


def restore(workdir: PathLike, template: PyTree,
            step: int | None = None) -> tuple[PyTree, dict[str, Any]]:
    """Reads checkpoint `step` (default: the latest) into the structure of `template`.

    Args:
        workdir: run directory given to `save`.
        template: a state of the same structure, shapes and dtypes (e.g. a freshly initialised
            one; arrays may be `jax.ShapeDtypeStruct`s). Restored jax arrays take its shardings.
        step: which checkpoint; None for the latest.
    Returns:
        (state, metadata): the restored state and the `metadata` given to `save`.
    Raises:
        FileNotFoundError: no such checkpoint.
        CheckpointMismatchError: structure / shape / dtype differ; nothing is loaded.
    """
    steps = all_steps(workdir)
    if step is None:
        if not steps:
            raise FileNotFoundError(f'no checkpoint in {checkpoint_dir(workdir)}')
        step = steps[-1]
    step = int(step)
    if step not in steps:
        raise FileNotFoundError(
            f'no checkpoint for step {step} in {checkpoint_dir(workdir)}; have {steps}')
    mngr = _manager(workdir, read_only=True)
    try:
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        _check_manifest(meta['manifest'], manifest(template), checkpoint_dir(workdir) / str(step))
        state = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(template))).state
    finally:
        mngr.close()
    return state, meta['metadata']
