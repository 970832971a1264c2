"""Test helper (run as a script, in its own process: it imports TensorFlow).

    python tests/tfds_stub.py DATA_DIR

Has TFDS itself prepare a tiny stand-in for its `mnist` dataset in DATA_DIR: a builder
named `mnist`, of the registered builder's version and features (28x28x1 uint8 images,
10-class labels), with 60 train / 30 test images whose class shows as a bright band of
rows. The files are what `tfds build mnist --data_dir DATA_DIR` writes (dataset_info.json,
features.json, TFRecord shards), so `tfds.load('mnist', data_dir=DATA_DIR)` reads them
with TFDS's real mnist builder, as on a machine where mnist was prepared, without network.
Then loads them through `vanish.data.load('mnist', data_dir=DATA_DIR)` and prints one JSON
line: what vanish saw, and the raw arrays' statistics the test checks the conversion with.
"""

from __future__ import annotations

import json
import sys

import numpy as np

TRAIN, TEST = 60, 30


def image(label: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.integers(0, 64, (28, 28, 1), dtype=np.uint8)
    x[2 * label: 2 * label + 3] = 255  # rows 2c..2c+2: learnable from a few examples
    return x


def raw_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    return np.stack([image(int(c), rng) for c in y]), y


def prepare(data_dir: str) -> None:
    import tensorflow_datasets as tfds

    registered = tfds.builder_cls('mnist')

    class Mnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = 'mnist'
        VERSION = registered.VERSION

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, description='vanish test stand-in for mnist',
                features=tfds.features.FeaturesDict({
                    'image': tfds.features.Image(shape=(28, 28, 1)),
                    'label': tfds.features.ClassLabel(num_classes=10)}),
                supervised_keys=('image', 'label'))

        def _split_generators(self, dl_manager):
            del dl_manager
            return {'train': self._generate_examples(TRAIN, 0),
                    'test': self._generate_examples(TEST, 1)}

        def _generate_examples(self, n, seed):
            for i, (x, y) in enumerate(zip(*raw_split(n, seed))):
                yield i, {'image': x, 'label': int(y)}

    Mnist(data_dir=data_dir).download_and_prepare()


def main(data_dir: str) -> None:
    prepare(data_dir)
    from vanish import data

    ds = data.load('mnist', data_dir=data_dir)
    x_raw, _ = raw_split(TRAIN, 0)
    print(json.dumps(dict(
        name=ds.name, num_classes=ds.num_classes, input_shape=list(ds.input_shape),
        train=len(ds.y_train), test=len(ds.y_test), dtype=str(ds.x_train.dtype),
        mean=list(ds.mean), std=list(ds.std),
        train_label_counts=np.bincount(ds.y_train, minlength=10).tolist(),
        # TFDS may shuffle the examples: compare order-free statistics of the pixels.
        x_sum=float(ds.x_train.astype(np.float64).sum()),
        x_sum_expected=float(((x_raw / 255.0 - ds.mean[0]) / ds.std[0]).sum()),
        band_ok=bool(all(ds.x_train[i, 2 * c: 2 * c + 3].min() == ds.x_train[i].max()
                         for i, c in enumerate(ds.y_train))),
    )))


if __name__ == '__main__':
    main(sys.argv[1])
