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
dtype, shape of each leaf) that `restore` checks first and that names any mismatch. Orbax also
reads a flipped bit back silently, so it stores a checksum of each leaf's bytes too, which
`restore` verifies; `restore_latest_intact` falls back past damaged checkpoints (unreadable or
failing their checksums) to the newest one that reads back, with a warning naming each.
Every orbax call runs in `_orbax_io`, whose event loops end the reads a failed one leaves
pending (else their tracebacks fill the terminal when the garbage collector finds them).

Layout: `workdir/checkpoints/<step>/{state, meta}`; `meta` holds the manifest and the caller's
JSON metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from vanish.errors import (CheckpointDamagedError, CheckpointMismatchError,  # noqa: F401
                           CheckpointWriteError)
logger = logging.getLogger(__name__)

PyTree = Any
PathLike = str | os.PathLike[str]

CHECKPOINT_DIR = 'checkpoints'
_FORMAT = 1





# What a failed write says, from the OS or from tensorstore (orbax's writer), -> the reason.
_WRITE_FAILURES = {errno.ENOSPC: 'no space left on device', errno.EDQUOT: 'disk quota exceeded',
                   errno.EROFS: 'read-only file system', errno.EACCES: 'permission denied',
                   errno.EPERM: 'operation not permitted'}
_WRITE_FAILURE_TEXT = {'No space left on device': errno.ENOSPC, "os_error_code='28'": errno.ENOSPC,
                       'RESOURCE_EXHAUSTED': errno.ENOSPC, 'Disk quota exceeded': errno.EDQUOT,
                       'Read-only file system': errno.EROFS, 'Permission denied': errno.EACCES}


def checkpoint_dir(workdir: PathLike) -> Path:
    """The absolute folder of a run's checkpoints: `<workdir>/checkpoints`."""
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


def _leaf_digest(leaf: Any) -> str | None:
    """sha256 (16 hex digits) of a leaf's bytes; None when this process holds only part of it."""
    if isinstance(leaf, jax.Array):
        if not leaf.is_fully_addressable:  # sharded over processes: orbax's checks only
            return None
        if jax.numpy.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
    data = np.ascontiguousarray(np.asarray(leaf)).reshape(-1).view(np.uint8)
    return hashlib.sha256(data.data).hexdigest()[:16]


def checksums(tree: PyTree) -> dict[str, str]:
    """{key path: sha256 prefix of the leaf's bytes} (what `restore` verifies the data with:
    orbax reads a flipped bit back silently). Leaves split over processes are left out."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = {}
    for path, leaf in leaves:
        digest = _leaf_digest(leaf)
        if digest is not None:
            out[jax.tree_util.keystr(path)] = digest
    return out


def _check_data(stored: Mapping[str, str], state: PyTree, where: Path) -> None:
    leaves, _ = jax.tree_util.tree_flatten_with_path(state)
    for path, leaf in leaves:
        key = jax.tree_util.keystr(path)
        if key in stored:
            digest = _leaf_digest(leaf)
            if digest is not None and digest != stored[key]:
                raise CheckpointDamagedError(
                    f'checkpoint {where}: {key} reads back different from what was saved '
                    '(a file of it is corrupt)')


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
            'checksums': checksums(state), 'metadata': dict(metadata or {})}
    try:
        json.dumps(meta)
    except TypeError as e:
        raise TypeError(f'checkpoint metadata must be JSON-serialisable: {e}') from e
    try:
        with _orbax_io():
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
    except Exception as e:  # noqa: BLE001  a write failure -> one clear error; others re-raised
        reason = _write_failure(e)
        if reason is None:
            raise
        raise CheckpointWriteError(_write_error(workdir, step, reason)) from e
    if not saved:
        raise RuntimeError(f'orbax did not save step {step} in {checkpoint_dir(workdir)}')
    return checkpoint_dir(workdir) / str(step)


def _write_failure(error: BaseException) -> str | None:
    """The reason a save failed if it was the file system's (space, read-only, permission)."""
    seen = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _WRITE_FAILURES:
            return _WRITE_FAILURES[e.errno]
        for text, code in _WRITE_FAILURE_TEXT.items():
            if text in str(e):
                return _WRITE_FAILURES[code]
        e = e.__cause__ or e.__context__
    return None


def _write_error(workdir: PathLike, step: int, reason: str) -> str:
    kept = [s for s in all_steps(workdir) if s < step]
    intact = (f'the previous checkpoint (step {kept[-1]}) is intact' if kept
              else 'no earlier checkpoint exists')
    return (f'could not write checkpoint {step} to {checkpoint_dir(workdir)}: {reason}; '
            f'{intact}. Free some space (or fix the permissions) and rerun the same command '
            'to resume')


# How long closing one of orbax's event loops waits for the reads / writes it cancels.
_DRAIN_S = 60.0


class _DrainingLoop(asyncio.SelectorEventLoop):
    """An event loop whose close() first cancels the tasks still pending on it and waits for
    them, as asyncio.run() does.

    Orbax runs each read and write of a checkpoint in a fresh loop (`run_until_complete`, then
    `close`, skipping asyncio.run's teardown). When one array file cannot be read or written,
    the call raises at once and the loop is closed with the other arrays' tasks still
    pending: the garbage collector later closes their coroutines, which orbax's
    `except BaseException` turns into an Exception that Python prints as "Exception ignored
    in: <coroutine ...>" with the whole TensorStore spec (hundreds of lines per damaged
    checkpoint), and tensorstore's late completions call back into the closed loop
    ("Event loop is closed"). Cancelling and awaiting them before the loop closes ends them
    as ordinary, retrieved task errors: nothing is left for the garbage collector."""

    def close(self) -> None:
        if not self.is_running() and not self.is_closed():
            pending = asyncio.all_tasks(self)
            for task in pending:
                task.cancel()
            if pending:
                done, _ = self.run_until_complete(asyncio.wait(pending, timeout=_DRAIN_S))
                for task in done:  # retrieved: asyncio logs no "never retrieved"
                    if not task.cancelled():
                        task.exception()
            self.run_until_complete(self.shutdown_asyncgens())
        super().close()

    def call_soon_threadsafe(self, callback: Any, *args: Any,  # type: ignore[override]
                             context: Any = None) -> asyncio.Handle:
        """A completion that tensorstore delivers from its own thread after the loop closed
        (of a read or write `close` already cancelled) is dropped (a cancelled handle):
        nothing waits for it, and the base loop would raise "Event loop is closed" in that
        thread, which prints a traceback."""
        if self.is_closed():
            handle = asyncio.Handle(callback, args, self, context)
            handle.cancel()
            return handle
        return super().call_soon_threadsafe(callback, *args, context=context)


class _DrainingPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy, with `_DrainingLoop`s as the new loops."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _DrainingLoop()


@contextlib.contextmanager
def _orbax_io() -> Iterator[None]:
    """Around every orbax call: the event loops orbax makes meanwhile close cleanly
    (`_DrainingLoop`), and orbax's writer threads, which log each failed write with a
    traceback (ERROR, through absl's logger) before `save` raises, are hushed: the raised
    error is reported instead. (The policy is process-wide while it lasts; a loop another
    thread makes meanwhile only gains the same clean close.)"""
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_DrainingPolicy())
    absl_logger = logging.getLogger('absl')
    level = absl_logger.level
    absl_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        absl_logger.setLevel(level)
        asyncio.set_event_loop_policy(policy)


def all_steps(workdir: PathLike) -> list[int]:
    """Sorted steps of the complete checkpoints in `workdir` (unfinished saves are ignored)."""
    if not checkpoint_dir(workdir).is_dir():
        return []
    with _orbax_io():
        mngr = _manager(workdir, read_only=True)
        try:
            return sorted(int(s) for s in mngr.all_steps())
        finally:
            mngr.close()


def complete_steps(workdir: PathLike) -> list[int]:
    """The steps of the complete checkpoints from the folder names alone, without orbax (for
    when orbax cannot run: another process of a multi-process run is gone, and orbax would
    wait for it). A step's folder takes its bare name only once the step is complete."""
    try:
        names = os.listdir(checkpoint_dir(workdir))
    except OSError:
        return []
    return sorted(int(name) for name in names if name.isdigit())


def latest_step(workdir: PathLike) -> int | None:
    """The step of the newest complete checkpoint in `workdir`, or None if none."""
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
        CheckpointDamagedError: a leaf reads back different from its checksum at save.
        Exception, ValueError, OSError: orbax / tensorstore cannot read a file of it
            (`restore_latest_intact` turns these into a fallback to an older checkpoint).
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
    with _orbax_io():
        mngr = _manager(workdir, read_only=True)
        try:
            meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
            _check_manifest(meta['manifest'], manifest(template),
                            checkpoint_dir(workdir) / str(step))
            state = mngr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(template))).state
        finally:
            mngr.close()
    # Checkpoints written before checksums were recorded have none: nothing to compare.
    _check_data(meta.get('checksums', {}), state, checkpoint_dir(workdir) / str(step))
    return state, meta['metadata']


def _damage(error: BaseException) -> str:
    """What is wrong with a checkpoint that raised `error` on restore, in a few words."""
    if isinstance(error, CheckpointDamagedError):
        return str(error).split(': ', 1)[-1]
    chain: list[BaseException] = []
    e: BaseException | None = error
    while e is not None and e not in chain:  # tensorstore's reason is often the cause
        chain.append(e)
        e = e.__cause__ or e.__context__
    texts = [str(c).strip() for c in chain]
    for item in ('state', 'meta'):
        if isinstance(error, KeyError) and f'Item "{item}" was not found' in texts[0]:
            return f'its {item} folder is missing'
    for c, text in zip(chain, texts):
        if 'OUT_OF_RANGE' in text or 'byte range' in text.lower():
            return 'a file of it is truncated'
        if isinstance(c, json.JSONDecodeError):
            return f'a metadata file of it is corrupt ({c.msg})'
        if 'NOT_FOUND' in text or 'Truncated' in text:  # a removed file reads as empty
            return 'a file of it is missing or truncated'
        if 'DATA_LOSS' in text or 'ZSTD_decompress' in text:
            return 'a file of it is corrupt'
        if isinstance(c, FileNotFoundError):
            return f'a file of it is missing ({c.filename or text[:200]})'
    if 'Encountered error while reading array' in texts[0]:
        return 'an array file of it cannot be read'
    first = texts[0].splitlines()[0] if texts[0] else ''
    return f'{type(error).__name__}: {first[:200]}' if first else type(error).__name__


def _is_damage(error: Exception) -> bool:
    """An error of reading a checkpoint's files, as opposed to a bug: orbax raises a bare
    `Exception` (not a subclass) for an array file that tensorstore cannot read."""
    if isinstance(error, CheckpointMismatchError):
        return False
    return (type(error) is Exception  # pylint: disable=unidiomatic-typecheck
            or isinstance(error, (KeyError, ValueError, OSError, CheckpointDamagedError)))


def restore_latest_intact(workdir: PathLike, template: PyTree
                          ) -> tuple[PyTree, dict[str, Any], int, list[tuple[int, str]]]:
    """Restores the newest checkpoint that reads back, trying older ones past damaged ones.

    A checkpoint is damaged when it cannot be read (its state or meta folder removed, a file
    truncated or corrupt: orbax raises a bare Exception for an unreadable array file) or when
    its data differ from the checksums recorded at save (a flipped bit orbax reads silently).
    Each damaged step skipped is logged as a warning naming it and the step used instead; the
    caller need not log them again. A template mismatch is not damage (it is raised at once).
    Usage (the resume of a run loop):

        state, meta, step, damaged = checkpoint.restore_latest_intact(ckpt_dir, init_state)

    Returns:
        (state, metadata, step, damaged): `damaged` lists (step, what is wrong) for every newer
        checkpoint that was skipped.
    Raises:
        FileNotFoundError: no checkpoint at all.
        CheckpointDamagedError: none reads back; the message names each and what is wrong.
        CheckpointMismatchError: the newest readable one does not fit the template.
    """
    steps = all_steps(workdir)
    if not steps:
        raise FileNotFoundError(f'no checkpoint in {checkpoint_dir(workdir)}')
    damaged: list[tuple[int, str]] = []
    for step in reversed(steps):
        try:
            state, meta = restore(workdir, template, step)
        except Exception as e:  # noqa: BLE001  unreadable: try the next older one
            if not _is_damage(e):
                raise
            damaged.append((step, _damage(e)))
            continue
        for bad, why in damaged:
            logger.warning('checkpoint %s is damaged (%s); using checkpoint %d instead',
                           checkpoint_dir(workdir) / str(bad), why, step)
        return state, meta, step, damaged
    listed = '; '.join(f'{s}: {why}' for s, why in damaged)
    raise CheckpointDamagedError(
        f'every checkpoint in {checkpoint_dir(workdir)} is damaged ({listed})')
