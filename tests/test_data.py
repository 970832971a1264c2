"""Tests for vanish.data (datasets, IDX parsing) and vanish.partition (partitioners, sampler).

    python -m pytest tests/test_data.py
"""

from __future__ import annotations

import gzip
import struct
import sys
import types
from pathlib import Path

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vanish import data, partition

# A label vector with unequal class sizes, so "uniform over images" and "uniform over labels"
# differ and a sampler that confuses them is caught.
_COUNTS = np.array([300, 200, 250, 150, 100, 350, 220, 180, 260, 190])
Y = np.random.default_rng(0).permutation(np.repeat(np.arange(10), _COUNTS)).astype(np.int32)


def _write_idx(path: Path, array: np.ndarray, compress: bool, dtype_code: int = 0x08) -> None:
    header = bytes([0, 0, dtype_code, array.ndim]) + struct.pack(f'>{array.ndim}I', *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder('>')).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def _write_fashion_dir(directory: Path, m: int = 20, t: int = 10) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    arrays = tuple(rng.integers(0, high, shape, dtype=np.uint8)
                   for high, shape in ((256, (m, 28, 28)), (10, m), (256, (t, 28, 28)), (10, t)))
    names = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte',
             't10k-labels-idx1-ubyte')
    for i, (name, arr) in enumerate(zip(names, arrays)):
        compress = i % 2 == 0  # mix .gz and raw files in one directory
        _write_idx(directory / (name + ('.gz' if compress else '')), arr, compress)
    return arrays


def _empirical_label_freq(part: partition.Partition, y: np.ndarray, nodes: np.ndarray,
                          n_samples: int, seed: int = 0) -> np.ndarray:
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(seed), nodes)
    arrays = part.device_arrays()
    idx = np.asarray(partition.sample_indices_for_keys(keys, arrays, nodes, n_samples))
    return np.stack([np.bincount(y[row], minlength=10) / n_samples for row in idx])


# ----------------------------------------------------------------------------- IDX + loading


@pytest.mark.parametrize('compress', [True, False])
def test_read_idx_roundtrip(tmp_path: Path, compress: bool) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / 'img', images, compress)
    np.testing.assert_array_equal(data.read_idx(tmp_path / 'img', expected_magic=2051), images)
    floats = np.array([[1.5, -2.0], [3.25, 0.0]], np.float32)
    _write_idx(tmp_path / 'f', floats, compress, dtype_code=0x0D)
    np.testing.assert_array_equal(data.read_idx(tmp_path / 'f'), floats)


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / 'bad').write_bytes(b'\x12\x34\x08\x01' + b'\x00' * 8)
    with pytest.raises(ValueError, match='bad IDX magic'):
        data.read_idx(tmp_path / 'bad')
    _write_idx(tmp_path / 'labels.gz', np.zeros(5, np.uint8), compress=True)
    with pytest.raises(ValueError, match='expected 0x00000803'):
        data.read_idx(tmp_path / 'labels.gz', expected_magic=2051)
    good = tmp_path / 'short'
    _write_idx(good, np.zeros((3, 4), np.uint8), compress=False)
    good.write_bytes(good.read_bytes()[:-1])
    with pytest.raises(ValueError, match='needs 12'):
        data.read_idx(good)


def test_load_fashion_mnist_from_data_dir(tmp_path: Path) -> None:
    x_tr, y_tr, x_te, y_te = _write_fashion_dir(tmp_path)
    ds = data.load('fashion-mnist', data_dir=str(tmp_path))
    assert ds.name == 'fashion_mnist' and ds.input_shape == (28, 28, 1) and ds.num_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(ds.y_test, y_te)
    expected = (x_tr[..., None] / 255.0 - 0.2860) / 0.3530
    np.testing.assert_allclose(ds.x_train, expected, rtol=1e-5, atol=1e-5)


def test_env_var_dir_is_searched_after_data_dir(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    env_dir, arg_dir = tmp_path / 'env', tmp_path / 'arg'
    env_dir.mkdir(), arg_dir.mkdir()
    _write_fashion_dir(env_dir, m=12)
    _write_fashion_dir(arg_dir, m=16)
    monkeypatch.setenv(data.FASHION_MNIST_ENV, str(env_dir))
    assert data.load('fashion_mnist').x_train.shape[0] == 12
    assert data.load('fashion_mnist', data_dir=str(arg_dir)).x_train.shape[0] == 16


@pytest.fixture
def no_offline_no_tfds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No IDX files anywhere and TensorFlow / TFDS not importable."""
    monkeypatch.setattr(data, 'FASHION_MNIST_SYSTEM_DIR', str(tmp_path / 'no-system-dir'))
    monkeypatch.delenv(data.FASHION_MNIST_ENV, raising=False)
    monkeypatch.setitem(sys.modules, 'tensorflow', None)  # None in sys.modules -> ImportError
    monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)
    return tmp_path / 'bogus'


def test_missing_fashion_mnist_says_how_to_get_it(no_offline_no_tfds: Path) -> None:
    with pytest.raises(data.DatasetUnavailableError) as info:
        data.load('fashion_mnist', data_dir=str(no_offline_no_tfds))
    message = str(info.value)
    assert 'apt-get install dataset-fashion-mnist' in message
    assert 'data_dir' in message and "pip install 'vanish[data]'" in message
    assert 'No Fashion-MNIST IDX files in' in message and str(no_offline_no_tfds) in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_tfds_dataset_says_how_to_get_it(no_offline_no_tfds: Path) -> None:
    with pytest.raises(data.DatasetUnavailableError, match=r"pip install 'vanish\[data\]'") as info:
        data.load('cifar10', data_dir=str(no_offline_no_tfds))
    assert 'data_dir' in str(info.value) and 'apt-get' not in str(info.value)
    assert isinstance(info.value, RuntimeError)


def _fake_tensorflow(monkeypatch: pytest.MonkeyPatch, load_error: Exception | None = None) -> list:
    """Stand-ins for tensorflow / tensorflow_datasets that record the order of calls."""
    calls: list = []
    rng = np.random.default_rng(0)
    splits = [(rng.integers(0, 256, (m, 4, 4, 3), dtype=np.uint8), rng.integers(0, 7, m))
              for m in (30, 10)]

    def load(name, split, batch_size, as_supervised, data_dir, download):
        calls.append(('load', name, tuple(split), batch_size, data_dir, download))
        if load_error is not None:
            raise load_error
        return splits

    features = {'label': types.SimpleNamespace(num_classes=7)}
    info = types.SimpleNamespace(info=types.SimpleNamespace(features=features))
    tfds = types.SimpleNamespace(load=load, as_numpy=lambda tree: tree,
                                 builder=lambda name, data_dir: info)
    tf = types.SimpleNamespace(config=types.SimpleNamespace(
        set_visible_devices=lambda devices, kind: calls.append(('hide', tuple(devices), kind))))
    monkeypatch.setitem(sys.modules, 'tensorflow', tf)
    monkeypatch.setitem(sys.modules, 'tensorflow_datasets', tfds)
    calls.append(splits)
    return calls


def test_tfds_path_hides_gpus_and_converts(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_tensorflow(monkeypatch)
    (x_tr, y_tr), _ = calls.pop(0)
    ds = data.load('cifar10', data_dir='/prepared', download=False)
    assert calls == [('hide', (), 'GPU'),
                     ('load', 'cifar10', ('train', 'test'), -1, '/prepared', False)]
    assert ds.input_shape == (4, 4, 3) and ds.num_classes == 7 and ds.y_train.dtype == np.int32
    mean, std = np.array(data.NORMALIZATION['cifar10'])
    np.testing.assert_allclose(ds.x_train, (x_tr / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ds.y_train, y_tr)


def test_tfds_failure_becomes_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tensorflow(monkeypatch, load_error=AssertionError('Dataset mnist not found\nlong trace'))
    with pytest.raises(data.DatasetUnavailableError) as info:
        data.load('mnist', data_dir='/empty')
    message = str(info.value)
    assert 'Dataset mnist not found' in message and 'long trace' not in message
    assert 'download=True' in message and "data_dir='/empty'" in message


@pytest.mark.fashion_mnist
@pytest.mark.skipif(data.find_fashion_mnist() is None,
                    reason='Fashion-MNIST IDX files absent: apt-get install dataset-fashion-mnist')
def test_real_fashion_mnist() -> None:
    ds = data.load('fashion_mnist')
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.num_classes == 10
    np.testing.assert_array_equal(np.bincount(ds.y_train), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(ds.y_test), np.full(10, 1000))
    assert abs(float(ds.x_train.mean())) < 0.02 and abs(float(ds.x_train.std()) - 1.0) < 0.02


# ----------------------------------------------------------------------------- synthetic, subset


def test_synthetic_is_deterministic_and_learnable() -> None:
    a = data.load('synthetic', seed=3, num_train=2000, num_test=500)
    b = data.load('synthetic', seed=3, num_train=2000, num_test=500)
    c = data.load('synthetic', seed=4, num_train=2000, num_test=500)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.input_shape == (28, 28, 1) and a.num_classes == 10
    np.testing.assert_array_equal(np.bincount(a.y_train), np.full(10, 200))
    means_C = np.stack([a.x_train[a.y_train == k].reshape(-1, 784).mean(0) for k in range(10)])
    dist_TxC = ((a.x_test.reshape(-1, 1, 784) - means_C[None]) ** 2).sum(-1)
    accuracy = float((dist_TxC.argmin(1) == a.y_test).mean())
    assert accuracy > 0.8  # chance is 0.1
    # Learnable from the images, not from a label leak: shuffled labels give chance accuracy.
    y_shuffled = np.random.default_rng(0).permutation(a.y_train)
    means_C = np.stack([a.x_train[y_shuffled == k].reshape(-1, 784).mean(0) for k in range(10)])
    dist_TxC = ((a.x_test.reshape(-1, 1, 784) - means_C[None]) ** 2).sum(-1)
    assert float((dist_TxC.argmin(1) == a.y_test).mean()) < 0.3


def test_synthetic_shape_options() -> None:
    ds = data.synthetic(seed=0, num_train=50, num_test=20, image_shape=(32, 32, 3), num_classes=5)
    assert ds.x_train.shape == (50, 32, 32, 3) and ds.num_classes == 5 and ds.y_train.max() == 4
    assert abs(float(ds.x_train.mean())) < 1e-3 and abs(float(ds.x_train.std()) - 1) < 1e-3


def test_dataset_validates_arrays() -> None:
    x, y = np.zeros((4, 2, 2, 1), np.float32), np.zeros(4, np.int32)
    with pytest.raises(ValueError, match='float32'):
        data.Dataset('bad', x.astype(np.float64), y, x, y, 2)
    with pytest.raises(ValueError, match='shapes differ'):
        data.Dataset('bad', x, y, np.zeros((4, 3, 2, 1), np.float32), y, 2)


def test_balanced_subset() -> None:
    x = np.arange(Y.size)[:, None]
    xs, ys = data.balanced_subset(x, Y, per_class=10, seed=5)
    np.testing.assert_array_equal(np.bincount(ys, minlength=10), np.full(10, 10))
    np.testing.assert_array_equal(Y[xs[:, 0]], ys)
    assert np.unique(xs).size == 100
    np.testing.assert_array_equal(data.balanced_subset_indices(Y, 10, 5), xs[:, 0])
    assert not np.array_equal(data.balanced_subset_indices(Y, 10, 6), xs[:, 0])
    with pytest.raises(ValueError, match='smallest class has 100'):
        data.balanced_subset_indices(Y, 101, 0)


# ----------------------------------------------------------------------------- partitioners


def test_iid_is_whole_set_uniform() -> None:
    part = partition.iid(Y, 7)
    assert part.n_nodes == 7 and part.n_groups == 1
    np.testing.assert_array_equal(part.group_members(0), np.arange(Y.size))
    np.testing.assert_allclose(partition.label_histogram(part, Y, 10),
                               np.tile(_COUNTS / Y.size, (7, 1)))


def test_dirichlet_weights_follow_alpha() -> None:
    flat = partition.dirichlet_weights(Y, 50, alpha=1000.0, seed=0)
    np.testing.assert_allclose(flat.node_group_prob, 0.1, atol=0.03)
    sharp = partition.dirichlet_weights(Y, 50, alpha=0.05, seed=0)
    assert np.median(sharp.node_group_prob.max(axis=1)) > 0.8
    # Groups are labels of the shared set; the histogram is exactly the weights.
    np.testing.assert_allclose(partition.label_histogram(sharp, Y, 10), sharp.node_group_prob,
                               atol=1e-6)
    np.testing.assert_array_equal(sharp.group_size, _COUNTS)


def test_dirichlet_split_covers_data_once() -> None:
    part = partition.dirichlet_split(Y, 20, alpha=0.3, seed=1, min_size=5)
    members = np.concatenate([part.group_members(g) for g in range(part.n_groups)])
    np.testing.assert_array_equal(np.sort(members), np.arange(Y.size))
    assert part.group_size.min() >= 5
    np.testing.assert_array_equal(part.node_group_prob, np.eye(20))
    hist = partition.label_histogram(part, Y, 10)
    assert np.median(hist.max(axis=1)) > 0.4  # alpha = 0.3 is strongly non-IID
    flat = partition.label_histogram(partition.dirichlet_split(Y, 10, alpha=1000.0, seed=1), Y, 10)
    np.testing.assert_allclose(flat, np.tile(_COUNTS / Y.size, (10, 1)), atol=0.03)


@hypothesis.settings(deadline=None, max_examples=25, derandomize=True)
@hypothesis.given(m=st.integers(40, 400), n_nodes=st.integers(1, 8), alpha=st.floats(0.5, 50),
                  n_classes=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_dirichlet_split_property(m: int, n_nodes: int, alpha: float, n_classes: int,
                                  seed: int) -> None:
    y = np.random.default_rng(seed).integers(0, n_classes, m)
    part = partition.dirichlet_split(y, n_nodes, alpha=alpha, seed=seed, min_size=1)
    members = np.concatenate([part.group_members(g) for g in range(n_nodes)])
    np.testing.assert_array_equal(np.sort(members), np.arange(m))
    assert part.group_size.min() >= 1


def test_shards_are_disjoint_equal_and_label_pure() -> None:
    part = partition.shards(Y, 10, shards_per_node=2, seed=0)
    shard_size = Y.size // 20
    assert part.group_index.shape == (10, 2 * shard_size)
    np.testing.assert_array_equal(part.group_size, np.full(10, 2 * shard_size))
    flat = part.group_index.ravel()
    assert np.unique(flat).size == flat.size and flat.min() >= 0
    # A shard straddles at most one label boundary, so each node sees at most 4 labels.
    assert max(np.unique(Y[row]).size for row in part.group_index) <= 4
    assert np.median([np.unique(Y[row]).size for row in part.group_index]) <= 3


def test_label_subsets_only_produce_their_labels() -> None:
    subsets = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    part = partition.label_subsets(Y, 6, subsets)
    nodes = np.arange(6)
    freq = _empirical_label_freq(part, Y, nodes, 2000)
    assert np.all(freq[0::2, 5:] == 0) and np.all(freq[1::2, :5] == 0)
    np.testing.assert_allclose(partition.label_histogram(part, Y, 10)[0], [0.2] * 5 + [0] * 5)
    blocks = partition.label_subsets(Y, 6, subsets, assignment='blocks')
    np.testing.assert_array_equal(blocks.node_group_prob[:, 0] > 0, [1, 1, 1, 0, 0, 0])


@pytest.mark.parametrize('scheme, kwargs', [
    ('iid', {}),
    ('dirichlet_weights', {'alpha': 0.3}),
    ('dirichlet_split', {'alpha': 0.5, 'min_size': 5}),
    ('shards', {'shards_per_node': 3}),
    ('label_subsets', {'subsets': [[0, 3], [1, 2, 9]]}),
])
def test_sampler_matches_label_histogram(scheme: str, kwargs: dict) -> None:
    part = partition.make_partition(scheme, Y, 12, seed=2, **kwargs)
    nodes = np.array([0, 5, 11])
    n = 20000
    freq = _empirical_label_freq(part, Y, nodes, n)
    expected = partition.label_histogram(part, Y, 10)[nodes]
    # 5 binomial standard errors per cell; a sampler off by even 2% on one label fails.
    tolerance = 5 * np.sqrt(expected * (1 - expected) / n) + 1e-9
    assert np.all(np.abs(freq - expected) <= tolerance), (freq - expected, tolerance)


def test_sampler_draws_only_from_own_data() -> None:
    part = partition.dirichlet_split(Y, 8, alpha=0.5, seed=0, min_size=5)
    nodes = np.arange(8)
    keys = jax.random.split(jax.random.key(0), 8)
    idx = np.asarray(partition.sample_indices_for_keys(keys, part.device_arrays(), nodes, 256))
    for n in nodes:
        assert np.isin(idx[n], part.group_members(n)).all()


def test_sampler_vectorised_equals_per_node_loop_and_is_subset_stable() -> None:
    part = partition.dirichlet_weights(Y, 9, alpha=0.5, seed=0)
    arrays = part.device_arrays()
    nodes = jnp.array([2, 7, 4])
    keys = jax.random.split(jax.random.key(1), 3)
    batched = partition.sample_indices_for_keys(keys, arrays, nodes, 32)
    for k in range(3):
        single = partition.sample_indices_for_keys(keys[k:k + 1], arrays, nodes[k:k + 1], 32)
        np.testing.assert_array_equal(batched[k], single[0])
    root = jax.random.key(5)
    all_nodes = partition.sample_indices(root, arrays, jnp.arange(9), 16)
    some = partition.sample_indices(root, arrays, jnp.array([7, 2]), 16)
    np.testing.assert_array_equal(some, all_nodes[jnp.array([7, 2])])
    assert batched.dtype == jnp.int32 and batched.shape == (3, 32)


def test_sampler_compiles_once_for_a_new_partition_of_same_shape() -> None:
    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(keys, arrays, nodes):
        return partition.sample_indices_for_keys(keys, arrays, nodes, 8)

    keys, nodes = jax.random.split(jax.random.key(0), 4), jnp.arange(4)
    a = step(keys, partition.dirichlet_weights(Y, 4, 0.5, seed=0).device_arrays(), nodes)
    b = step(keys, partition.dirichlet_weights(Y, 4, 0.5, seed=1).device_arrays(), nodes)
    assert not np.array_equal(a, b)


def test_zero_probability_groups_are_never_drawn() -> None:
    # Trailing zero-probability groups sit right where a float cdf rounding error would land.
    third = 1.0 / 3.0
    part = partition.Partition('t', np.array([[0, 1], [2, -1], [3, -1], [4, -1]]),
                               np.array([2, 1, 1, 1]),
                               np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [third, third, third, 0]]))
    arrays = part.device_arrays()
    idx = partition.sample_indices(jax.random.PRNGKey(0), arrays, jnp.arange(3), 4096)
    assert set(np.unique(idx[0]).tolist()) == {0, 1} and set(np.unique(idx[1]).tolist()) == {3}
    assert set(np.unique(idx[2]).tolist()) == {0, 1, 2, 3}  # never 4, the zero group
    sharp = partition.dirichlet_weights(Y, 200, alpha=0.01, seed=0).device_arrays()
    for cdf in (arrays.group_cdf, sharp.group_cdf):
        np.testing.assert_array_equal(np.asarray(cdf)[:, -1], 1.0)
        assert np.all(np.diff(np.asarray(cdf), axis=1) >= 0)


def test_partitions_are_deterministic_by_seed() -> None:
    for scheme, kwargs in [('dirichlet_weights', {'alpha': 0.5}),
                           ('shards', {'shards_per_node': 2}),
                           ('dirichlet_split', {'alpha': 0.5, 'min_size': 5})]:
        a = partition.make_partition(scheme, Y, 10, seed=3, **kwargs)
        b = partition.make_partition(scheme, Y, 10, seed=np.random.default_rng(3), **kwargs)
        c = partition.make_partition(scheme, Y, 10, seed=4, **kwargs)
        np.testing.assert_array_equal(a.group_index, b.group_index)
        np.testing.assert_array_equal(a.node_group_prob, b.node_group_prob)
        assert not (np.array_equal(a.group_index, c.group_index)
                    and np.array_equal(a.node_group_prob, c.node_group_prob))


@pytest.mark.parametrize('scheme, n_nodes, kwargs, match', [
    ('nope', 4, {}, "unknown partition scheme 'nope'; valid: .*dirichlet_split"),
    ('dirichlet_weights', 4, {'alpha': 0.0}, 'alpha must be'),
    ('dirichlet_split', 4, {'alpha': -1.0}, 'alpha must be'),
    ('dirichlet_weights', 4, {'beta': 1.0}, r"'dirichlet_weights'.*unknown parameters \['beta'\]"),
    ('iid', 0, {}, 'n_nodes must be'),
    ('shards', 4, {'shards_per_node': 0}, 'shards_per_node must be'),
    ('shards', 4, {'alpha': 1.0}, "unknown parameters \\['alpha'\\]"),
    ('dirichlet_split', 4, {'alpha': 1.0, 'min_size': 1000}, 'min_size'),
    ('label_subsets', 4, {'subsets': [[0, 12]]}, 'no training examples'),
    ('label_subsets', 4, {'subsets': [[0]], 'assignment': 'zig'}, 'assignment'),
])
def test_bad_parameters_raise_clear_errors(scheme: str, n_nodes: int, kwargs: dict,
                                           match: str) -> None:
    with pytest.raises(ValueError, match=match):
        partition.make_partition(scheme, Y, n_nodes, seed=0, **kwargs)


def test_dirichlet_split_tops_up_short_nodes() -> None:
    # alpha = 0.01 over 200 nodes leaves many nodes empty on every draw: the top-up path runs.
    part = partition.dirichlet_split(Y, 200, alpha=0.01, seed=0, min_size=5, max_tries=2)
    assert part.group_size.min() >= 5
    members = np.concatenate([part.group_members(g) for g in range(part.n_groups)])
    np.testing.assert_array_equal(np.sort(members), np.arange(Y.size))
    assert part.group_size.max() > 50  # still a skewed split, not an even reshuffle
    again = partition.dirichlet_split(Y, 200, alpha=0.01, seed=0, min_size=5, max_tries=2)
    np.testing.assert_array_equal(part.group_index, again.group_index)


def test_format_label_histogram() -> None:
    part = partition.dirichlet_weights(Y, 30, alpha=0.5, seed=0)
    hist = partition.label_histogram(part, Y, 10)
    text = partition.format_label_histogram(hist, max_rows=6)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ['node', '0', '1'] and lines[0].split()[-1] == 'eff'
    assert '24 more nodes' in text and lines[-1].startswith('mean')
    assert len(lines) == 1 + 6 + 1 + 1
    row0 = [float(v) for v in lines[1].split()[1:11]]
    np.testing.assert_allclose(row0, 100 * hist[0], atol=0.051)
    assert data.format_label_histogram is partition.format_label_histogram
