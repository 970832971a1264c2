"""Tests for vanish.checkpoint: bit-identical round trips, pruning, mismatches, crashed saves,
damaged checkpoints (orbax's real files corrupted) and the fallback past them."""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vanish import checkpoint


class OptState(NamedTuple):
    mu_N: dict[str, jax.Array]
    count: jax.Array


@flax.struct.dataclass
class SimState:
    tick: int
    params_N: dict[str, dict[str, jax.Array]]
    opt: OptState
    key: jax.Array  # raw uint32 PRNG key data
    events_N: np.ndarray
    extra: Any = None
    algorithm: str = flax.struct.field(pytree_node=False, default='gossip')


def make_state(seed: int, tick: int = 0, n: int = 3, width: int = 4) -> SimState:
    key = jax.random.PRNGKey(seed)
    k1, k2 = jax.random.split(key)
    params_N = {'Dense_0': {'kernel': jax.random.normal(k1, (n, 5, width), jnp.float32),
                            'bias': jax.random.normal(k2, (n, width), jnp.float32) * 1e-7}}
    return SimState(
        tick=tick, params_N=params_N,
        opt=OptState(mu_N=jax.tree.map(lambda x: x * 0.5 + 1e-30, params_N),
                     count=jnp.array(tick * 7 + 1, jnp.int32)),
        key=jax.random.key_data(jax.random.fold_in(key, tick)),
        events_N=np.arange(n, dtype=np.int64) + tick,
        extra=optax.sgd(0.1, momentum=0.9).init(params_N))


def assert_bit_identical(a: Any, b: Any) -> None:
    paths_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
    paths_b, tree_b = jax.tree_util.tree_flatten_with_path(b)
    assert tree_a == tree_b
    for (path, x), (_, y) in zip(paths_a, paths_b):
        assert type(x) is type(y), path  # python int stays int, numpy stays numpy
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, path
        assert x.tobytes() == y.tobytes(), jax.tree_util.keystr(path)


def test_round_trip_is_bit_identical(tmp_path):
    state = make_state(seed=1, tick=12)
    assert checkpoint.latest_step(tmp_path) is None
    checkpoint.save(tmp_path, 12, state, metadata={'algorithm': 'gossip', 'seed': 1})
    assert checkpoint.latest_step(tmp_path) == 12
    restored, meta = checkpoint.restore(tmp_path, template=make_state(seed=99))
    assert meta == {'algorithm': 'gossip', 'seed': 1}
    assert_bit_identical(restored, state)
    assert restored.key.dtype == jnp.uint32 and restored.algorithm == 'gossip'
    # The restored key drives the same random stream as the saved one.
    np.testing.assert_array_equal(jax.random.uniform(restored.key, (3,)),
                                  jax.random.uniform(state.key, (3,)))


def test_restore_into_abstract_template(tmp_path):
    state = make_state(seed=2, tick=3)
    checkpoint.save(tmp_path, 3, state)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if isinstance(x, jax.Array) else x,
        make_state(seed=0))
    restored, meta = checkpoint.restore(tmp_path, abstract)
    assert meta == {}
    assert_bit_identical(restored, state)


def test_latest_step_and_keep_prunes_old_checkpoints(tmp_path):
    for tick in [10, 20, 30, 40]:
        checkpoint.save(tmp_path, tick, make_state(seed=0, tick=tick), keep=2)
    assert checkpoint.all_steps(tmp_path) == [30, 40]
    assert checkpoint.latest_step(tmp_path) == 40
    older, _ = checkpoint.restore(tmp_path, make_state(seed=0), step=30)
    assert older.tick == 30 and int(older.opt.count) == 30 * 7 + 1
    with pytest.raises(FileNotFoundError, match='step 10'):
        checkpoint.restore(tmp_path, make_state(seed=0), step=10)
    checkpoint.save(tmp_path, 50, make_state(seed=0, tick=50), keep=None)
    checkpoint.save(tmp_path, 60, make_state(seed=0, tick=60), keep=None)
    assert checkpoint.all_steps(tmp_path) == [30, 40, 50, 60]


def test_resaving_an_earlier_step_replaces_the_stale_future(tmp_path):
    for tick in [10, 20, 30]:
        checkpoint.save(tmp_path, tick, make_state(seed=0, tick=tick), keep=None)
    # A run resumed from 10 reaches 20 again: its new 20 wins and the old 30 is gone.
    fresh = make_state(seed=5, tick=20)
    checkpoint.save(tmp_path, 20, fresh, keep=None)
    assert checkpoint.all_steps(tmp_path) == [10, 20]
    restored, _ = checkpoint.restore(tmp_path, make_state(seed=0))
    assert_bit_identical(restored, fresh)


def test_restore_without_checkpoint_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match='no checkpoint'):
        checkpoint.restore(tmp_path, make_state(seed=0))


@pytest.mark.parametrize('change,message', [
    (lambda s: s.replace(params_N={'Dense_0': {**s.params_N['Dense_0'],
                                               'kernel': jnp.zeros((3, 5, 6))}}),
     r"\['Dense_0'\]\['kernel'\]: checkpoint has float32\(3, 5, 4\), template has float32"
     r"\(3, 5, 6\)"),
    (lambda s: s.replace(events_N=s.events_N.astype(np.int32)),
     r'\.events_N: checkpoint has int64\(3,\), template has int32\(3,\)'),
    (lambda s: s.replace(params_N={'Dense_1': s.params_N['Dense_0']}),
     r"missing from checkpoint: \.params_N\['Dense_1'\]\['bias'\]"),
    (lambda s: s.replace(extra=None),
     r'in checkpoint but not in template: \.extra'),
    (lambda s: s.replace(tick=jnp.array(0, jnp.int32)),
     r'\.tick: checkpoint has int\(\), template has int32\(\)'),
], ids=['shape', 'dtype', 'renamed-layer', 'dropped-subtree', 'int-vs-array'])
def test_mismatched_template_raises_naming_the_leaf(tmp_path, change, message):
    checkpoint.save(tmp_path, 1, make_state(seed=0, tick=1))
    with pytest.raises(checkpoint.CheckpointMismatchError, match=message):
        checkpoint.restore(tmp_path, change(make_state(seed=0)))


def test_unsupported_leaf_and_metadata_are_rejected_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"at \['f'\]"):
        checkpoint.save(tmp_path, 1, {'f': object()})
    with pytest.raises(TypeError, match='JSON'):
        checkpoint.save(tmp_path, 1, {'x': np.zeros(2)}, metadata={'bad': object()})
    assert checkpoint.latest_step(tmp_path) is None


def test_crashed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    good = make_state(seed=3, tick=10)
    checkpoint.save(tmp_path, 10, good)
    # 1) A save that dies before it is complete (the final rename fails).
    real_rename = os.rename

    def failing_rename(src, dst, *args, **kwargs):
        if 'tmp' in os.fspath(src):
            raise OSError('simulated crash during save')
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, 'rename', failing_rename)
    with pytest.raises(OSError, match='simulated crash'):
        checkpoint.save(tmp_path, 20, make_state(seed=4, tick=20))
    monkeypatch.setattr(os, 'rename', real_rename)
    leftovers = [p for p in checkpoint.checkpoint_dir(tmp_path).iterdir() if p.name != '10']
    assert leftovers, 'the simulated crash should leave a temporary directory behind'
    # 2) A half-written temporary directory from a killed process, with corrupt files.
    partial = checkpoint.checkpoint_dir(tmp_path) / '30.orbax-checkpoint-tmp-1700000000'
    shutil.copytree(checkpoint.checkpoint_dir(tmp_path) / '10', partial)
    for f in partial.rglob('*'):
        if f.is_file():
            f.write_bytes(b'\x00garbage')
    assert checkpoint.latest_step(tmp_path) == 10
    restored, _ = checkpoint.restore(tmp_path, make_state(seed=0))
    assert_bit_identical(restored, good)
    # The next save works and clears the leftovers.
    checkpoint.save(tmp_path, 20, make_state(seed=4, tick=20))
    assert checkpoint.all_steps(tmp_path) == [10, 20]
    assert sorted(p.name for p in checkpoint.checkpoint_dir(tmp_path).iterdir()) == ['10', '20']


# --- damaged checkpoints: fall back to the newest one that reads back ------------------------


def big_state(tick: int) -> dict[str, Any]:
    """A state whose largest file orbax writes is the array data of `w`."""
    return {'w': jnp.arange(4000, dtype=jnp.float32) * (tick + 1), 'b': np.arange(5) + tick,
            'tick': tick}


def array_file(workdir, step: int):
    """The largest data file of checkpoint `step` (orbax: state/ocdbt.process_0/d/<hash>)."""
    files = [p for p in (checkpoint.checkpoint_dir(workdir) / str(step) / 'state').rglob('*')
             if p.is_file() and p.parent.name == 'd']
    largest = max(files, key=lambda p: p.stat().st_size)
    assert largest.parent.parent.name.startswith('ocdbt.process_'), largest
    return largest


@pytest.mark.parametrize('corrupt,why', [
    (lambda p: p.write_bytes(b'\x00garbage'), 'a file of it is truncated'),
    (lambda p: p.write_bytes(bytes(p.stat().st_size)), 'a file of it is corrupt'),
    (lambda p: p.unlink(), 'missing or truncated'),
], ids=['garbage', 'zeroed', 'removed'])
def test_one_damaged_array_file_falls_back_to_the_previous_checkpoint(
        tmp_path, caplog, corrupt, why):
    for tick in [10, 20]:
        checkpoint.save(tmp_path, tick, big_state(tick))
    corrupt(array_file(tmp_path, 20))
    with pytest.raises(Exception) as raw:  # what orbax raises for it (a bare Exception too)
        checkpoint.restore(tmp_path, big_state(0), step=20)
    assert not isinstance(raw.value, checkpoint.CheckpointMismatchError)
    with caplog.at_level(logging.WARNING, logger='vanish.checkpoint'):
        state, meta, step, damaged = checkpoint.restore_latest_intact(tmp_path, big_state(0))
    assert step == 10 and meta == {}
    assert_bit_identical(state, big_state(10))
    assert [s for s, _ in damaged] == [20] and why in damaged[0][1], damaged
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f'{os.sep}20 is damaged' in w and 'checkpoint 10 instead' in w
               for w in warnings), warnings


def test_a_flipped_bit_is_caught_by_the_checksums(tmp_path):
    for tick in [10, 20]:
        checkpoint.save(tmp_path, tick, big_state(tick))
    path = array_file(tmp_path, 20)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointDamagedError, match=r"\['w'\] reads back different"):
        checkpoint.restore(tmp_path, big_state(0), step=20)
    _, _, step, damaged = checkpoint.restore_latest_intact(tmp_path, big_state(0))
    assert step == 10 and damaged == [(20, "['w'] reads back different from what was saved "
                                           '(a file of it is corrupt)')]


def test_every_checkpoint_damaged_raises_naming_each(tmp_path):
    for tick in [10, 20]:
        checkpoint.save(tmp_path, tick, big_state(tick))
        array_file(tmp_path, tick).write_bytes(b'\x00garbage')
    with pytest.raises(checkpoint.CheckpointDamagedError) as info:
        checkpoint.restore_latest_intact(tmp_path, big_state(0))
    message = str(info.value)
    assert '20: a file of it is truncated; 10: a file of it is truncated' in message
    assert str(checkpoint.checkpoint_dir(tmp_path)) in message


def test_a_mismatch_or_a_bug_is_not_taken_for_damage(tmp_path, monkeypatch):
    for tick in [10, 20]:
        checkpoint.save(tmp_path, tick, big_state(tick))
    with pytest.raises(checkpoint.CheckpointMismatchError):
        checkpoint.restore_latest_intact(tmp_path, {**big_state(0), 'b': np.arange(6)})

    def buggy(*args, **kwargs):
        raise TypeError('a bug, not a damaged file')

    monkeypatch.setattr(checkpoint, '_check_manifest', buggy)
    with pytest.raises(TypeError, match='a bug'):
        checkpoint.restore_latest_intact(tmp_path, big_state(0))


def test_checksums_cover_every_leaf_and_old_checkpoints_without_them_restore(tmp_path):
    state = make_state(seed=1, tick=3)
    sums = checkpoint.checksums(state)
    assert sorted(sums) == sorted(checkpoint.manifest(state))
    assert checkpoint.checksums(make_state(seed=2, tick=3)) != sums
    key = jax.random.key(0)  # a typed PRNG key is checksummed by its key data
    assert checkpoint.checksums({'k': key}) == checkpoint.checksums(
        {'k': jax.random.key_data(key)})
    # A checkpoint written before checksums existed: its meta has none, and it restores.
    real = checkpoint.checksums
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(checkpoint, 'checksums', lambda tree: {})
    checkpoint.save(tmp_path, 3, state)
    monkeypatch.undo()
    assert checkpoint.checksums is real
    restored, _ = checkpoint.restore(tmp_path, make_state(seed=0))
    assert_bit_identical(restored, state)


def _orbax_like_read(loop_of_orbax) -> None:
    """What orbax does for a restore: a fresh loop runs one gather of array reads to the
    first failure, then closes; a read turns anything raised into it (cancellation, the
    loop's end) into an Exception naming the array."""
    import asyncio

    async def read(fails: bool) -> None:
        try:
            await asyncio.sleep(0 if fails else 30)
            if fails:
                raise ValueError('DATA_LOSS: damaged')
        except BaseException as e:
            raise Exception('Encountered error while reading array') from e

    async def restore() -> None:
        await asyncio.gather(read(True), read(False), read(False))

    loop = loop_of_orbax()
    try:
        loop.run_until_complete(restore())
    finally:
        loop.close()


def test_orbax_loops_close_without_leaving_pending_reads_to_the_garbage_collector(
        monkeypatch):
    """A read that fails while others are pending: under checkpoint._orbax_io the loop's
    close ends them (no "Exception ignored in: <coroutine ...>" later); outside it, the
    garbage collector finds them, as it did on every fallback past a damaged checkpoint."""
    import asyncio
    import gc
    import sys

    unraisable: list[Any] = []
    monkeypatch.setattr(sys, 'unraisablehook', unraisable.append)
    with checkpoint._orbax_io():
        with pytest.raises(Exception, match='Encountered error'):
            _orbax_like_read(asyncio.new_event_loop)
    gc.collect()
    assert unraisable == []
    assert not isinstance(asyncio.new_event_loop(), checkpoint._DrainingLoop)  # scoped
    with pytest.raises(Exception, match='Encountered error'):
        _orbax_like_read(asyncio.new_event_loop)
    gc.collect()
    assert len(unraisable) == 2, unraisable  # the two pending reads, without _orbax_io
