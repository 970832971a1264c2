"""The run configuration: every field a run reads, its default, and the algorithm table.

    cfg = config.default_config()          # an ml_collections.ConfigDict
    cfg.num_nodes = 32; cfg.algorithms = "fl,gossip,gossip_vc"
    algo = config.algorithm_spec("gossip_vc", cfg)

Experiment configs under experiments/ start from `default_config()` and override fields;
sweeps may only name fields that exist here (tests/test_experiments.py checks).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from vanish import variance

ALGORITHMS = ("single", "fl", "gossip", "gossip_vc", "gossip_part", "dpsgd", "dpsgd_vc")


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.algorithms = "fl,gossip,gossip_vc"
    # Data.
    c.dataset = "fashion_mnist"
    c.data_dir = ""  # a prepared TFDS data_dir (or a folder with Fashion-MNIST IDX files)
    c.download = False  # let TFDS download named datasets (needs network and vanish[data])
    c.synthetic_train = 6000  # sizes of the 'synthetic' dataset
    c.synthetic_test = 1000
    c.partition = "iid"  # iid | dirichlet_weights | dirichlet_split | shards | label_subsets
    c.alpha = 0.5
    c.shards_per_node = 2
    c.label_subsets = "0-4,5-9"
    c.test_per_class = 10  # the reference evaluates each node on 100 class-balanced images
    # Model and optimiser.
    c.model = "lenet5"
    c.conv_impl = "auto"
    c.init = "glorot_uniform"
    c.optimizer = "sgd"
    c.lr = 0.01
    c.momentum = 0.9
    c.lr_schedule = "constant"  # constant | inv (Caffe's inv, counted per node)
    c.weight_decay = 0.0
    c.batch_size = 64
    c.reset_opt_on_merge = False
    # Network.
    c.num_nodes = 50
    c.topology = "random_regular"
    c.degree = 8
    c.edge_prob = 0.2  # erdos_renyi
    c.rewire_prob = 0.1  # watts_strogatz (k = degree)
    c.attach = 4  # barabasi_albert m
    c.edge_list = ""
    c.weighting = "uniform"  # for synchronous mixing: uniform | metropolis | max_degree
    # Tick model (SPEC section 3).
    c.ticks = 1000
    c.interval_lo = 8
    c.interval_hi = 12
    c.first_tick = "0"  # an integer, or "random"
    c.send_every = 1
    c.threshold = 0  # 0 = the node's degree
    c.beta = 0.5
    # Variance correction (used by *_vc algorithms).
    c.vc_target = "others"  # others | self | blend
    c.vc_blend = 0.0
    c.vc_eps = 0.0
    c.vc_ddof = 0
    c.vc_strength = 1.0
    c.vc_skip = ""  # comma-separated name patterns
    c.vc_reference = False  # the authors' simulator: ddof 1, eps 1e-4
    # Federated learning.
    c.fl_round_ticks = 10
    c.fl_client_fraction = 1.0
    # Partitioned gossip (Hegedus et al.).
    c.num_partitions = 4
    c.subsample = 0.0  # > 0: random coordinate subsampling instead of fixed partitions
    # Synchronous D-PSGD.
    c.sync_local_steps = 1
    # Evaluation, tracking, checkpoints.
    c.eval_every = 100
    c.target_accuracy = 0.7
    c.checkpoint_every = 0  # ticks; 0 = at every evaluation
    c.keep_checkpoints = 2
    c.wandb = False
    c.wandb_project = "vanish"
    c.wandb_mode = ""
    # Engine strategy (never changes results): chunk width and chunks fused per call.
    c.slots = 0  # 0 = chosen from the schedule
    c.fuse = 0  # 0 = per backend (1 on CPU)
    c.masked_baseline = False  # benchmark only: train all N nodes every tick, masked
    # Scale-out: shard the node axis over all devices (jax.sharding); with
    # distributed=True, jax.distributed.initialize() first joins a multi-host run (its
    # coordinator, process count and id come from the environment / cluster auto-detection).
    c.shard_nodes = False
    c.distributed = False
    return c


def paper_config() -> ml_collections.ConfigDict:
    """The paper-era reference experiment (SPEC section 3), the base of experiments/paper_*.

    LeNet-5 (PyTorch-style, Glorot-uniform), SGD lr 0.01 momentum 0.9, batch 64, 50 nodes on a
    random 8-regular graph, training every U{8..12} ticks, merge at threshold = degree with
    beta = 0.5, FL rounds of 10 ticks, 10,000 ticks, IID data, every node evaluated on the
    same 100 class-balanced test images every 100 ticks. Fashion-MNIST offline; the paper
    used MNIST (`--config.dataset=mnist`, through TFDS).
    """
    c = default_config()
    c.algorithms = "single,fl,gossip,gossip_vc"
    c.dataset, c.partition, c.test_per_class = "fashion_mnist", "iid", 10
    c.model, c.init = "lenet5", "glorot_uniform"
    c.optimizer, c.lr, c.momentum, c.lr_schedule, c.batch_size = "sgd", 0.01, 0.9, "constant", 64
    c.num_nodes, c.topology, c.degree = 50, "random_regular", 8
    c.ticks, c.interval_lo, c.interval_hi = 10_000, 8, 12
    c.threshold, c.beta, c.vc_target, c.fl_round_ticks = 0, 0.5, "others", 10
    c.eval_every, c.target_accuracy = 100, 0.8  # Fashion-MNIST; use 0.95 with MNIST
    return c


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
    """What an algorithm name means for the engine (static, hashable)."""

    name: str
    rule: str  # none | gossip | fedavg | sync
    correction: variance.CorrectionConfig
    shared_init: bool
    partitioned: bool = False


def correction_from(cfg: ml_collections.ConfigDict) -> variance.CorrectionConfig:
    skip = tuple(s.strip() for s in str(cfg.vc_skip).split(",") if s.strip())
    fields = dict(target=cfg.vc_target, blend=cfg.vc_blend, strength=cfg.vc_strength, skip=skip)
    if cfg.vc_reference:
        return variance.CorrectionConfig.reference(**fields)
    return variance.CorrectionConfig(eps=cfg.vc_eps, ddof=cfg.vc_ddof, **fields)


def algorithm_spec(name: str, cfg: ml_collections.ConfigDict) -> AlgorithmSpec:
    plain = variance.CorrectionConfig(target="none")
    table = {
        "single": AlgorithmSpec("single", "none", plain, shared_init=False),
        "fl": AlgorithmSpec("fl", "fedavg", plain, shared_init=True),
        "gossip": AlgorithmSpec("gossip", "gossip", plain, shared_init=False),
        "gossip_vc": AlgorithmSpec("gossip_vc", "gossip", correction_from(cfg), shared_init=False),
        "gossip_part": AlgorithmSpec("gossip_part", "gossip", plain, shared_init=False,
                                     partitioned=True),
        "dpsgd": AlgorithmSpec("dpsgd", "sync", plain, shared_init=False),
        "dpsgd_vc": AlgorithmSpec("dpsgd_vc", "sync", correction_from(cfg), shared_init=False),
    }
    if name not in table:
        raise ValueError(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")
    return table[name]


def parse_algorithms(text: str) -> list[str]:
    names = [a.strip() for a in str(text).split(",") if a.strip()]
    if not names:
        raise ValueError("config.algorithms is empty; e.g. --config.algorithms=fl,gossip,gossip_vc")
    bad = [a for a in names if a not in ALGORITHMS]
    if bad:
        raise ValueError(f"unknown algorithm(s) {bad}; choose from {', '.join(ALGORITHMS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"config.algorithms lists an algorithm twice: {names}")
    return names


def parse_label_subsets(text: str) -> list[list[int]]:
    """'0-4,5-9' -> [[0..4], [5..9]]; '0 2 4,1 3' -> [[0,2,4],[1,3]]."""
    subsets = []
    for part in str(text).split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-")
            subsets.append(list(range(int(lo), int(hi) + 1)))
        elif part:
            subsets.append([int(v) for v in part.split()])
    if not subsets:
        raise ValueError(f"label_subsets {text!r} names no labels; e.g. '0-4,5-9'")
    return subsets
