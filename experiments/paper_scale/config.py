r"""Paper, network size: the advantage of variance correction over plain gossip grows with N.

Reproduces (Tian et al. 2024, arXiv 2404.04616; SPEC section 3): "the advantage over plain
gossip grows with network size (the authors report up to 6x faster convergence in large
networks)". experiments/paper_iid (LeNet-5, random 8-regular, U{8..12}, batch 64, SGD
0.01 / 0.9, IID offline Fashion-MNIST) at num_nodes in {50, 100, 200, 500, 1000}; the
number reported is ticks to the target mean accuracy (summary.md's "ticks to target";
under W&B also `speedup_vs_gossip` = gossip's ticks to target / gossip_vc's).

  python -m vanish.run --config experiments/paper_scale/config.py --workdir runs/paper_scale

(200 nodes). One size: `--config.num_nodes=1000` with a workdir of its own. All sizes,
each in runs/paper_scale/sweep/num_nodes=<n>:
  python -m experiments.sweep --sweep experiments/paper_scale/sweep.yaml
or `wandb sweep experiments/paper_scale/sweep.yaml`, then `wandb agent <id>`.

Runtime on the shared 2-core CPU: cost per tick grows about linearly with N (every node
merges its inbox every tick; ~N/10 nodes train per tick). Measured rates (ticks 20-40 of
a 40-tick run at N = 1000, ticks 100-200 of a 200-tick paper_iid run at N = 50, other jobs
running): N = 50: fl 3.9, gossip 5.3, gossip_vc 5.6 ticks/s; N = 1000: fl 0.26, gossip_vc
0.29 ticks/s with 7.8 GB peak memory. So 10,000 ticks of the three algorithms take ~1.6 h
at N = 50 and ~30 h at N = 1000, about 2.5 days for the whole sweep: run the large sizes
on an accelerator (`pip install 'vanish[gpu]'`; not timed here), or cut `--config.ticks`.

Expected result (the paper's claim; not measured at this length here): fl and gossip_vc
reach the target in roughly the same number of ticks at every N; plain gossip needs more
ticks the larger N (its plateau lengthens), so speedup_vs_gossip rises with N, up to
several-fold at N = 1000.
"""

from vanish import config


def get_config():
    c = config.paper_config()
    c.algorithms = "fl,gossip,gossip_vc"
    c.num_nodes = 200  # swept: 50, 100, 200, 500, 1000
    # Ticks to target is resolved to eval_every ticks, hence 50 (not 100).
    c.eval_every = 50
    return c
