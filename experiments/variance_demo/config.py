r"""Variance demo: averaging k independent Glorot-initialised LeNet-5s shrinks variance as 1/k.

Reproduces the mechanism behind the paper's claim (Tian et al. 2024, arXiv 2404.04616): if
k layers are independent with element variance s2, their average has
variance s2 / k, and mixed with the node's own model at weight beta it has
beta^2 s2 + (1 - beta)^2 s2 / k (beta = 0.5, k = 8: 0.28 s2). Variance-corrected averaging
(target 'others') rescales each kernel back to the received models' mean
variance. Not a tick simulation, so it has its own entry point (this file only configures
it; `vanish.run` is not involved):

  python -m experiments.variance_demo.run --workdir runs/variance_demo

(or `python experiments/variance_demo/run.py --workdir runs/variance_demo`; flags
`--max_k=64`, `--config.seed=1`, `--config.model.name=caffe_lenet`, `--config.schedule.beta=0.5`).
Writes runs/variance_demo/variance_shrink.png (ratio vs k per kernel, plain and corrected,
against the 1/k line; made by `vanish.plots.plot_variance_shrink`) and
variance_shrink.json (the ratios at beta = 0 and at beta = cfg.schedule.beta, plain and corrected,
with the expected values 1/k and beta^2 + (1 - beta)^2 / k).

Runtime: measured 13.6 s wall (14 s CPU) on the shared 2-core CPU with other jobs
running, mostly JAX start-up and compilation.

Expected result (measured, seed 0; docs/RESULTS.md): the plain ratio follows 1/k; the
largest deviation over k = 1..64 is 1.0% for Dense_0/kernel (48,000 elements), 2-3% for
Conv_1 and Dense_1 (2,400 and 10,080), 6% for Dense_2 (840) and 12% for Conv_0/kernel
(150 elements: too few for a precise variance). The 50/50 self-mix at k = 8 gives
0.282-0.300 for the kernels of >= 840 elements (0.25 + 0.25/8 = 0.281). After correction
every ratio is 1 within 2e-6.
"""

from vanish import config


def get_config():
    c = config.default_config()
    c.model.name = "lenet5"  # the paper's network; 'caffe_lenet', 'mlp', 'cifar_cnn' also work
    c.model.init = "glorot_uniform"  # the initialisation whose variance averaging destroys
    c.data.name = "fashion_mnist"  # only decides the input shape (28x28x1); no data is read
    c.seed = 0
    c.schedule.beta = 0.5  # the self-mix weight of the second series in the JSON
    c.correction.target = "others"  # the paper's correction target
    return c
