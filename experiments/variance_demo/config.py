r"""Variance demo: averaging k independent Glorot-initialised LeNet-5s shrinks variance as 1/k.

Reproduces the mechanism behind the paper's claim (Tian et al. 2024, arXiv 2404.04616,
SPEC section 1): if k layers are independent with element variance s2, their average has
variance s2 / k, and mixed with the node's own model at weight beta it has
beta^2 s2 + (1 - beta)^2 s2 / k (beta = 0.5, k = 8: 0.28 s2). Variance-corrected averaging
(target 'others', SPEC section 2) rescales each kernel back to the received models' mean
variance. Not a tick simulation, so it has its own entry point (this file only configures
it; `vanish.run` is not involved):

  python -m experiments.variance_demo.run --workdir runs/variance_demo

(or `python experiments/variance_demo/run.py --workdir runs/variance_demo`; flags
`--max_k=64`, `--config.seed=1`, `--config.model=caffe_lenet`, `--config.beta=0.5`).
Writes runs/variance_demo/variance_shrink.png (ratio vs k per kernel, plain and corrected,
against the 1/k line; made by `vanish.plots.plot_variance_shrink`) and
variance_shrink.json (the ratios at beta = 0 and at beta = cfg.beta, plain and corrected,
with the expected values 1/k and beta^2 + (1 - beta)^2 / k).

Runtime: about 10 s on a 2-core CPU (measured: 8-11 s wall for max_k = 64, mostly JAX
start-up and compilation).

Expected result (measured with seed 0): the plain ratio follows 1/k for every kernel with
a few hundred elements or more (Dense_0/kernel, 48,000 elements: within 1% of 1/k at every
k; Conv_0/kernel, only 150 elements, scatters by ~10-20% around it); the 50/50 self-mix
follows 0.25 + 0.25/k; after correction every ratio is 1 to float precision (1e-5).
"""

from vanish import config


def get_config():
    c = config.default_config()
    c.model = "lenet5"  # the paper's network; 'caffe_lenet', 'mlp', 'cifar_cnn' also work
    c.init = "glorot_uniform"  # the initialisation whose variance averaging destroys
    c.dataset = "fashion_mnist"  # only decides the input shape (28x28x1); no data is read
    c.seed = 0
    c.beta = 0.5  # the self-mix weight of the second series in the JSON
    c.vc_target = "others"  # the paper's correction target
    return c
