"""Datasets for the simulator: offline Fashion-MNIST (IDX), TFDS, and a synthetic set.

    ds = data.load('synthetic', num_train=6000)   # or 'fashion_mnist', 'mnist', 'cifar10'
    x_test, y_test = data.balanced_subset(ds.x_test, ds.y_test, per_class=10, seed=0)

Images come back normalised, float32 [M, H, W, C]; labels int32. Partitioners and the device
sampler live in `vanish.partition` and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import gzip
import inspect
import os
from collections.abc import Sequence
from typing import Any
from pathlib import Path

import numpy as np

from vanish import checks, registry
from vanish.errors import DatasetError, DatasetUnavailableError
from vanish.registry import Knob
from vanish.partition import (  # noqa: F401  (re-exported: data is the module callers know)
    Partition,
    PartitionArrays,
    dirichlet_split,
    dirichlet_weights,
    format_label_histogram,
    iid,
    label_histogram,
    label_subsets,
    make_partition,
    sample_indices,
    sample_indices_for_keys,
    shards,
)

FASHION_MNIST_ENV = 'VANISH_FASHION_MNIST_DIR'
FASHION_MNIST_SYSTEM_DIR = '/usr/share/datasets/fashion-mnist'  # Debian dataset-fashion-mnist
_FASHION_MNIST_FILES = {
    'x_train': ('train-images-idx3-ubyte', 2051),
    'y_train': ('train-labels-idx1-ubyte', 2049),
    'x_test': ('t10k-images-idx3-ubyte', 2051),
    'y_test': ('t10k-labels-idx1-ubyte', 2049),
}

# Per-channel (mean, std) of the training images in [0, 1], the usual published values, so
# runs on the same dataset normalise identically. Datasets not listed use their train stats.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    'mnist': ((0.1307,), (0.3081,)),
    'fashion_mnist': ((0.2860,), (0.3530,)),
    'kmnist': ((0.1918,), (0.3483,)),
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

_IDX_DTYPES = {0x08: '>u1', 0x09: '>i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}




TFDS_DESCRIPTION = ('any TensorFlow Datasets name (mnist, cifar10, ...): needs vanish[data] and '
                    'a prepared config.data.data_dir or config.data.download')


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A normalised image-classification dataset held in host memory."""

    name: str
    x_train: np.ndarray  # float32 [M, H, W, C]
    y_train: np.ndarray  # int32 [M]
    x_test: np.ndarray  # float32 [T, H, W, C]
    y_test: np.ndarray  # int32 [T]
    num_classes: int
    mean: tuple[float, ...] = (0.0,)  # per-channel constants used: (x / 255 - mean) / std
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        for split in ('train', 'test'):
            x, y = getattr(self, f'x_{split}'), getattr(self, f'y_{split}')
            if (x.ndim != 4 or x.dtype != np.float32 or y.shape != x.shape[:1]
                    or y.dtype != np.int32):
                raise ValueError(f'{self.name}: x_{split} must be float32 [M, H, W, C] and '
                                 f'y_{split} int32 [M]; got {x.dtype} {x.shape}, '
                                 f'{y.dtype} {y.shape}')
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f'{self.name}: train/test image shapes differ')

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])


# ----------------------------------------------------------------------------- IDX files


def read_idx(path: str | os.PathLike[str], expected_magic: int | None = None) -> np.ndarray:
    """Parse an IDX file (gzip-compressed or raw, detected from its content) into an array."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b'\x1f\x8b':
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DatasetError(f'{path}: corrupt gzip stream ({e})') from None
    if len(raw) < 4:
        raise DatasetError(f'{path}: too short to be an IDX file ({len(raw)} bytes)')
    magic = int.from_bytes(raw[:4], 'big')
    dtype_code, ndim = raw[2], raw[3]
    if raw[:2] != b'\x00\x00' or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise DatasetError(f'{path}: bad IDX magic number 0x{magic:08x} (expected 0x0000TTNN with '
                         f'type byte TT in {[hex(k) for k in _IDX_DTYPES]} and NN >= 1 dims)')
    if expected_magic is not None and magic != expected_magic:
        kind = {2051: ' (images)', 2049: ' (labels)'}.get(expected_magic, '')
        raise DatasetError(f'{path}: IDX magic number 0x{magic:08x}, expected '
                         f'0x{expected_magic:08x}{kind}')
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f'{path}: truncated IDX header')
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], 'big') for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(f'{path}: IDX payload is {len(raw) - header} bytes; shape {shape} of '
                         f'{dtype} needs {expected}')
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder('='))  # native order, and a writable copy


def _idx_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f'{stem}.gz', directory / stem):
        if candidate.is_file():
            return candidate
    return None


def fashion_mnist_dirs(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Directories searched for Fashion-MNIST IDX files, in order."""
    dirs = [data_dir, os.environ.get(FASHION_MNIST_ENV), FASHION_MNIST_SYSTEM_DIR]
    return [Path(d) for d in dirs if d]


def find_fashion_mnist(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """First searched directory holding all four Fashion-MNIST IDX files, or None."""
    for directory in fashion_mnist_dirs(data_dir):
        if all(_idx_file(directory, stem) for stem, _ in _FASHION_MNIST_FILES.values()):
            return directory
    return None


def load_idx_dataset(directory: str | os.PathLike[str], name: str = 'fashion_mnist') -> Dataset:
    """MNIST-layout IDX files ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]) -> Dataset."""
    directory = Path(directory)
    arrays = {}
    for key, (stem, magic) in _FASHION_MNIST_FILES.items():
        path = _idx_file(directory, stem)
        if path is None:
            raise DatasetUnavailableError(f'{directory} has no {stem}[.gz]')
        arrays[key] = read_idx(path, expected_magic=magic)
    for split in ('train', 'test'):
        if arrays[f'x_{split}'].shape[0] != arrays[f'y_{split}'].shape[0]:
            raise DatasetError(f'{directory}: {split} images and labels differ in count')
    return _make_dataset(name, arrays['x_train'][..., None], arrays['y_train'],
                         arrays['x_test'][..., None], arrays['y_test'])


# ----------------------------------------------------------------------------- normalising


def _normalise(x_u8: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    x = x_u8.astype(np.float32)  # in-place ops below: CIFAR-size arrays are hundreds of MB
    x *= np.float32(1.0 / 255.0)
    x -= mean.astype(np.float32)
    x /= std.astype(np.float32)
    return x


def _make_dataset(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                  y_test: np.ndarray, num_classes: int | None = None) -> Dataset:
    if name in NORMALIZATION:
        mean, std = (np.asarray(v, np.float64) for v in NORMALIZATION[name])
    else:
        scaled = x_train.reshape(-1, x_train.shape[-1]) / 255.0
        mean, std = scaled.mean(axis=0), np.maximum(scaled.std(axis=0), 1e-6)
    if num_classes is None:
        num_classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(name, _normalise(x_train, mean, std), y_train.astype(np.int32),
                   _normalise(x_test, mean, std), y_test.astype(np.int32), num_classes,
                   tuple(float(m) for m in mean), tuple(float(s) for s in std))


# ----------------------------------------------------------------------------- TFDS


def _tfds_help(name: str) -> str:
    apt = ("`apt-get install dataset-fashion-mnist` (offline IDX files, no TensorFlow needed; "
           f'or set data_dir / {FASHION_MNIST_ENV} to a folder holding the four *-ubyte[.gz] '
           'files), or ') if name == 'fashion_mnist' else ''
    return (f'To get it: {apt}`pip install \'vanish[data]\'` and run with '
            f'--config.download=True (data.load(download=True); needs network), or pass '
            f'data_dir=<a TFDS data directory where {name!r} was '
            f'prepared, e.g. by `tfds build {name} --data_dir DIR`>. '
            "For smoke runs without data use name='synthetic'.")


def load_tfds(name: str, *, data_dir: str | None = None, download: bool = False) -> Dataset:
    """A TFDS image dataset ('mnist', 'cifar10', 'emnist/balanced', ...) as numpy, once."""
    try:
        import tensorflow as tf  # lazy: TF is optional and slow to import

        try:
            tf.config.set_visible_devices([], 'GPU')  # TF must never grab accelerator memory
        except RuntimeError:
            pass  # TF already initialised its devices elsewhere; nothing left to hide
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DatasetUnavailableError(
            f'Dataset {name!r} is not available: TensorFlow Datasets is not installed ({e}). '
            + _tfds_help(name)) from None
    try:
        (x_tr, y_tr), (x_te, y_te) = tfds.as_numpy(tfds.load(
            name, split=['train', 'test'], batch_size=-1, as_supervised=True,
            data_dir=data_dir, download=download))
    except Exception as e:  # noqa: BLE001  TFDS raises many types; the user needs one message
        first_line = str(e).splitlines()[0] if str(e) else ''  # TFDS errors run to pages
        raise DatasetUnavailableError(
            f'Dataset {name!r} could not be loaded with TFDS (data_dir={data_dir!r}, '
            f'download={download}): {type(e).__name__}: {first_line}. '
            + _tfds_help(name)) from None
    try:
        num_classes = int(tfds.builder(name, data_dir=data_dir).info.features['label'].num_classes)
    except Exception:  # noqa: BLE001  label feature without num_classes: count the labels
        num_classes = None
    return _make_dataset(name, x_tr, y_tr, x_te, y_te, num_classes)


# ----------------------------------------------------------------------------- synthetic


def synthetic(*, seed: int = 0, num_train: int = 6000, num_test: int = 1000,
              image_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10,
              noise: float = 4.0, prototype_resolution: int = 7) -> Dataset:
    """A learnable, deterministic dataset: class prototypes + Gaussian noise.

    Each class has a smooth prototype (a random prototype_resolution^2 image, block-upsampled)
    so convolutions have spatial structure to find; an example is its class prototype plus
    `noise` * N(0, 1) per pixel (prototype pixels have unit variance; raise `noise` to make it
    harder). Labels are balanced. Prototypes, train and test draws come from separate streams
    of `seed`, so changing num_train leaves the test set and prototypes unchanged.
    """
    h, w, c = (int(s) for s in image_shape)
    if min(h, w, c, num_classes, num_train, num_test, prototype_resolution) < 1 or noise < 0:
        raise DatasetError('synthetic: sizes must be >= 1 and noise >= 0')
    rng_proto, rng_train, rng_test = (np.random.default_rng([seed, k]) for k in range(3))
    res_h, res_w = min(prototype_resolution, h), min(prototype_resolution, w)
    coarse = rng_proto.standard_normal((num_classes, res_h, res_w, c))
    rows, cols = np.arange(h) * res_h // h, np.arange(w) * res_w // w
    prototypes = coarse[:, rows][:, :, cols].astype(np.float32)

    def draw(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(m) % num_classes).astype(np.int32)
        x = prototypes[y] + np.float32(noise) * rng.standard_normal((m, h, w, c), np.float32)
        return x, y

    x_train, y_train = draw(rng_train, num_train)
    x_test, y_test = draw(rng_test, num_test)
    # Scale to unit variance overall, like the real datasets after normalisation.
    mean = x_train.mean(axis=(0, 1, 2), dtype=np.float64)
    std = np.maximum(x_train.std(axis=(0, 1, 2), dtype=np.float64), 1e-6)
    x_train = ((x_train - mean) / std).astype(np.float32)
    x_test = ((x_test - mean) / std).astype(np.float32)
    return Dataset('synthetic', x_train, y_train, x_test, y_test, num_classes)


# ----------------------------------------------------------------------------- entry points


def _synthetic_of(*, seed: int, data_dir: str | None, download: bool,
                  **knobs: Any) -> Dataset:
    return synthetic(seed=seed, **knobs)


def _fashion_mnist_of(*, seed: int, data_dir: str | None, download: bool) -> Dataset:
    directory = find_fashion_mnist(data_dir)
    if directory is not None:
        return load_idx_dataset(directory, 'fashion_mnist')
    try:
        return load_tfds('fashion_mnist', data_dir=data_dir, download=download)
    except DatasetUnavailableError as e:
        searched = ', '.join(str(d) for d in fashion_mnist_dirs(data_dir))
        raise DatasetUnavailableError(f'No Fashion-MNIST IDX files in {searched}. {e}') from None


# The datasets vanish has without TensorFlow Datasets (vanish/registry.py's shape; any other
# name is a TFDS name). A line's factory takes (seed, data_dir, download, <its knobs>); its
# knobs become the config section `dataset_args.<name>`.
REGISTRY: dict[str, registry.Component] = {
    'synthetic': registry.Component(
        _synthetic_of, 'class-dependent Gaussian images, generated from the seed (no files)',
        knobs=dict(num_train=Knob(6000, 'training examples', checks.at_least(1)),
                   num_test=Knob(1000, 'test examples', checks.at_least(1)))),
    'fashion_mnist': registry.Component(
        _fashion_mnist_of, 'Fashion-MNIST from IDX files (Debian\'s dataset-fashion-mnist, or '
        'config.data.data_dir); else through TFDS'),
}
BUILTIN_DATASETS = tuple(REGISTRY)  # the built-in names (REGISTRY may grow)


def register(name: str, line: registry.Component) -> None:
    """Adds a dataset: a function (seed, data_dir, download, <knobs>) -> Dataset."""
    registry.register(REGISTRY, name, line, kind='dataset')


def load(name: str, *, data_dir: str | None = None, download: bool = False, seed: int = 0,
         **knobs: Any) -> Dataset:
    """Load a dataset by name: a registered one (`REGISTRY`) with its knobs, else TFDS.

    'fashion_mnist': offline IDX files, searched in data_dir, $VANISH_FASHION_MNIST_DIR, then
    /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist); else TFDS.
    'synthetic': `synthetic()` with seed and its knobs (num_train, num_test; also
    image_shape, num_classes, noise). Knobs a dataset does not take are ignored, so one call
    can name several. Raises DatasetUnavailableError with instructions when the data cannot
    be found.
    """
    key = registry.key(name)
    line = REGISTRY.get(key)
    if line is None:
        return load_tfds(key, data_dir=data_dir, download=download)
    accepts = inspect.signature(line.factory).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in accepts.values())
    own = {k: v for k, v in knobs.items() if takes_any or k in accepts}
    return line.factory(seed=seed, data_dir=data_dir, download=download,
                        **{**registry.defaults(line), **own})


def balanced_subset_indices(y: np.ndarray, per_class: int, seed: int | np.random.Generator,
                            num_classes: int | None = None) -> np.ndarray:
    """int32 [C * per_class] indices, `per_class` random examples of each class, class-major."""
    y = np.asarray(y)
    num_classes = int(y.max()) + 1 if num_classes is None else num_classes
    counts = np.bincount(y, minlength=num_classes)
    if per_class < 1 or counts.min() < per_class:
        raise DatasetError(f'balanced_subset: per_class={per_class} but the smallest class has '
                         f'{int(counts.min())} examples')
    rng = np.random.default_rng(seed)
    # A random key per example, then the per_class smallest keys within each class.
    order = np.lexsort((rng.random(y.size), y))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    take = (starts[:, None] + np.arange(per_class)[None, :]).ravel()
    return order[take].astype(np.int32)


def balanced_subset(x: np.ndarray, y: np.ndarray, per_class: int, seed: int | np.random.Generator,
                    num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A fixed class-balanced subset (the reference evaluates on 10 images per class)."""
    idx = balanced_subset_indices(y, per_class, seed, num_classes)
    return x[idx], np.asarray(y)[idx]
