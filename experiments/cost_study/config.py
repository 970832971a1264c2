r"""Cost beyond ticks: accuracy against bytes sent and against simulated time.

fl, plain and corrected gossip, partitioned gossip, compressed gossip (top-k 10 % and
stochastic int8, each with and without the variance correction) and MoDeST on one network:
100 nodes, random 8-regular graph, the MLP on offline Fashion-MNIST, IID or Dirichlet
(alpha 0.5) label weights, 1500 ticks. Every run counts the bytes each node sends (each
rule's own payload) and runs the simulated clock:

  a tick lasts 0.1 s; a training step takes lognormal(median 0.2 s, sigma 0.5) per node
  (so the slowest nodes train less often than every 8-12 ticks); a message leaves after the
  step and travels its sender's latency (0.05 s) plus payload / bandwidth, the bandwidth
  lognormal(median 2.5 MB/s = 20 Mbit/s, sigma 0.5) per node.

The MLP, not LeNet-5: 10 rules x 2 partitions x 3 seeds are 60 runs, which the 2-core CPU
affords with the MLP (~1 min each) and not with LeNet-5 (~20 min each at N = 100), and with
LeNet-5 plain gossip never leaves chance, so its bytes to target would not exist.

  python -m vanish.run --config experiments/cost_study/config.py --workdir runs/cost_study
  python scripts/run_grid.py --only cost_iid_n100,cost_alpha0.5_n100   # 3 seeds, archived

Runtime on the 2-core CPU: 100 ticks of all nine rules take ~2 min (compilation included);
1500 ticks ~9 min per seed and partition beside another run (the top-k rules are the
slowest, ~1-3 min each: a top-k per layer and message).

Measured result (docs/RESULTS.md, section "Cost beyond ticks", target 0.7, 3 seeds): without
the correction no rule reaches the target (plain, partitioned, top-k and int8 gossip stay at
0.38-0.54); with it, int8 gossip matches gossip_vc's ticks with 4.0x (IID) / 4.4x
(Dirichlet) fewer bytes per node and top-k 10 % needs 5.7x / 6.7x fewer bytes and more
ticks; MoDeST sends 3.8x / 8.5x fewer bytes than gossip_vc; FL is fastest in ticks, its
server the busiest node.
"""

from vanish import config


def get_config():
    # The paper's setup (vanish.config.paper_config: Fashion-MNIST IID, SGD 0.01 / 0.9, batch
    # 64, random 8-regular, U{8..12}), with the MLP at N = 100 and the clock on.
    c = config.paper_config()
    c.algorithms = ("fl,gossip,gossip_vc,gossip_part,gossip_topk,gossip_topk_vc,gossip_q8,"
                    "gossip_q8_vc,modest")
    c.partition_args.dirichlet_weights.alpha = 0.5  # used with data.partition = dirichlet_weights
    c.data.test_per_class = 50
    c.model.name = "mlp"
    c.topology.num_nodes = 100
    c.clock.tick_seconds = 0.1
    c.clock.compute = "lognormal:0.2:0.5"
    c.clock.latency = "0.05"
    c.clock.bandwidth = "lognormal:2.5e6:0.5"
    c.run.ticks, c.run.eval_every, c.run.target_accuracy = 1500, 50, 0.7
    c.run.checkpoint_every = 500
    return c
