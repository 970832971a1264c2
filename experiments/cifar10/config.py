r"""CIFAR-10: does the vanishing-variance effect carry over to a deeper CNN on colour images?

Extends the paper (Tian et al. 2024, arXiv 2404.04616; its experiments are on MNIST) to
CIFAR-10 with the small CNN `cifar_cnn` (conv 32, pool, conv 64, pool, conv 64, dense 64,
10; Glorot-uniform): the paper's setting otherwise (50 nodes, random 8-regular graph,
U{8..12}, batch 64, SGD 0.01 / 0.9, threshold = degree, beta = 0.5, FL rounds of 10 ticks).

  python -m vanish.run --config experiments/cifar10/config.py --workdir runs/cifar10

Data: CIFAR-10 comes from TensorFlow Datasets, which is not installed by default, and
`vanish.run` never downloads (it loads with download=False). Once, on a machine with
network access: `pip install 'vanish[data]'` and `tfds build cifar10` (~160 MB into
~/tensorflow_datasets, which the run then finds by itself); or build it elsewhere with
`tfds build cifar10 --data_dir DIR`, copy DIR over and add `--config.data.data_dir=DIR`.
Without it the run stops before any training with DatasetUnavailableError, which says
the same.

Runtime on the shared 2-core CPU: about 9 hours for 10,000 ticks of the three
algorithms, extrapolated from rates measured with synthetic 32x32x3 data of the same
shapes (TFDS is absent here; the cost does not depend on pixel values), ticks 50-150 of
a 150-tick run with other jobs running: fl 0.87, gossip_vc 1.0 ticks/s (plus ~1.5 min of
compilation per algorithm). An accelerator job (`pip install 'vanish[gpu]'`; not timed
here), or `--config.run.ticks=2000` for a first look (~2 hours).

Expected result (not measured; by analogy with the paper's MNIST result): the same
ordering as experiments/paper_iid at a lower accuracy level: gossip_vc close to fl, plain
gossip on a long plateau with its kernel variances collapsing in variance.png.
"""

from vanish import config


def get_config():
    c = config.paper_config()
    c.algorithms = "fl,gossip,gossip_vc"
    # Data: CIFAR-10 through TFDS (see the docstring); 32x32x3, 10 classes.
    c.data.name = "cifar10"
    c.data.data_dir = ""  # a TFDS data directory where cifar10 was prepared, if not the default
    c.model.name = "cifar_cnn"
    c.optim.lr = 0.01  # swept in sweep.yaml: the paper tuned it for MNIST, not CIFAR-10
    # A small CNN trained ~1000 steps per node tops out well below MNIST levels.
    c.run.target_accuracy = 0.5
    return c
