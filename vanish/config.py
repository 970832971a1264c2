"""The run configuration's schema: every field, its default and one line of help, by section.

    cfg = config.default_config()            # an ml_collections.ConfigDict
    cfg.topology.num_nodes = 32
    cfg.algorithms = "fl,gossip,gossip_vc"
    experiment = build.experiment(cfg)       # the one reader: checks everything, or refuses

This module is the schema only: no rules, no file I/O (vanish/build.py reads and checks a
config; vanish/workdir.py stores one). Each section groups one concern; the knobs of one
algorithm live under `algorithm_args.<name>`, declared by the algorithm's registry line
(vanish/algorithms/__init__.py). Names a field accepts come from the registry that owns them
(`python -m vanish.run --list` shows them all). Experiment configs under experiments/ start
from `default_config()` (or `paper_config()`) and override fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import ml_collections

from vanish import algorithms, registry


class Field(NamedTuple):
    """One config field: its default (whose type is the field's type) and one line of help."""

    default: Any
    help: str


Section = dict[str, "Field | Section"]

# The schema. A field's type is its default's type (bool, int, float or str).
SCHEMA: Section = {
    "seed": Field(0, "root of every random draw (graph, data, init, schedule, faults)"),
    "algorithms": Field("fl,gossip,gossip_vc",
                        "comma-separated algorithms run side by side on the same data and seeds"),
    "data": {
        "name": Field("fashion_mnist",
                      "synthetic, fashion_mnist (offline IDX files), or a TFDS name (mnist, "
                      "cifar10, ...)"),
        "data_dir": Field("", "a prepared TFDS data_dir, or a folder with Fashion-MNIST IDX files"),
        "download": Field(False, "let TFDS download a named dataset (needs network, vanish[data])"),
        "partition": Field("iid", "how the training data is split over nodes (its knobs: "
                           "partition_args.<name>)"),
        "test_per_class": Field(10, "class-balanced test images per class each node is scored on"),
    },
    "model": {
        "name": Field("lenet5", "the network every node trains"),
        "conv_impl": Field("auto", "convolution form: auto (per backend), xla or banded"),
        "init": Field("glorot_uniform", "kernel initializer (biases start at zero)"),
    },
    "optim": {
        "name": Field("sgd", "optimizer: sgd (with momentum), adam or adamw"),
        "lr": Field(0.01, "learning rate"),
        "momentum": Field(0.9, "SGD momentum"),
        "schedule": Field("constant", "learning-rate schedule: constant, or inv (Caffe's, per "
                          "node)"),
        "weight_decay": Field(0.0, "weight decay (adamw; sgd adds it to the gradient)"),
        "batch_size": Field(64, "examples per training step"),
        "reset_on_merge": Field(False, "reset a node's optimizer state when it merges"),
    },
    "topology": {
        "name": Field("random_regular", "the communication graph (its knobs: "
                      "topology_args.<name>)"),
        "num_nodes": Field(50, "number of nodes N (FL adds a server node)"),
        "weighting": Field("uniform", "mixing weights of synchronous rules: uniform, metropolis, "
                           "max_degree"),
    },
    "schedule": {
        "interval_lo": Field(8, "a node trains every U{interval_lo..interval_hi} ticks"),
        "interval_hi": Field(12, "upper end of the training interval (inclusive)"),
        "first_tick": Field("0", "first training tick: an integer, or 'random' in the interval"),
        "send_every": Field(1, "a node sends after every P-th training event"),
        "threshold": Field(0, "messages a node waits for before merging; 0 = its in-degree"),
        "beta": Field(0.5, "weight of a node's own model in a merge"),
    },
    "correction": {
        "target": Field("others", "target variance of the *_vc rules: others, self, blend, none"),
        "blend": Field(0.0, "weight c of the own pre-mix variance (target blend)"),
        "eps": Field(0.0, "added to both variances in the rescale factor"),
        "ddof": Field(0, "delta degrees of freedom of the variances (0: population)"),
        "strength": Field(1.0, "partial correction r: scale 1 + r (sqrt(t / var) - 1)"),
        "skip": Field("", "comma-separated layer-name patterns left uncorrected"),
        "reference": Field(False, "the authors' simulator: ddof 1, eps 1e-4, biases corrected"),
        "biases": Field(False, "also rescale bias vectors"),
    },
    "network": {
        "drop_prob": Field(0.0, "each message is lost with this probability"),
        "drop_file": Field("", "'src dst p' lines: per-edge loss (other edges: drop_prob)"),
        "delay": Field("0", "ticks a message travels: D, or 'lo-hi' drawn per message"),
        "churn_up": Field(100.0, "Markov churn: mean online period (ticks)"),
        "churn_down": Field(0.0, "Markov churn: mean offline period (ticks); 0 = no churn"),
        "churn_trace": Field("", "'node start end' lines: node offline over [start, end)"),
        "stragglers": Field(0.0, "fraction of nodes training at straggler_interval"),
        "straggler_interval": Field("", "'lo-hi' ticks of the stragglers; '' = 3x the interval"),
        "peer_k": Field(0, "a send goes to k peers instead of every neighbour (0 = all)"),
        "peer_mode": Field("neighbors", "peer sampling: neighbors (of the graph) or uniform"),
        "redraw_every": Field(0, "redraw the graph from its random family every R ticks (0: "
                              "fixed)"),
        "byzantine": Field(0.0, "fraction of nodes sending corrupted models"),
        "byzantine_attack": Field("sign_flip", "sign_flip (-s x model), noise (N(0, s^2)) or "
                                  "constant (s)"),
        "byzantine_scale": Field(1.0, "the attack's scale s"),
    },
    "clock": {
        "tick_seconds": Field(0.0, "simulated seconds per tick; 0 = no simulated clock"),
        "compute": Field("", "seconds per training step: S, lognormal:MEDIAN:SIGMA, "
                         "uniform:LO:HI, or a file of one value per node ('' = instant)"),
        "latency": Field("", "seconds a sender's message travels before its bytes (forms as "
                         "compute; '' = 0)"),
        "bandwidth": Field("", "a sender's upload bytes per second (forms as compute; '' = "
                           "unlimited)"),
    },
    "run": {
        "ticks": Field(1000, "ticks to simulate (a larger value extends a finished run)"),
        "eval_every": Field(100, "ticks between evaluations (metric rows)"),
        "target_accuracy": Field(0.7, "mean node accuracy that defines 'ticks to target'"),
        "metrics": Field("", "extra per-node metrics, comma-separated (--list shows them): "
                         "each row gets their mean over the evaluated nodes"),
        "checkpoint_every": Field(0, "ticks between checkpoints; 0 = at every evaluation"),
        "keep_checkpoints": Field(2, "checkpoints kept per algorithm"),
        "wandb": Field(False, "log to Weights & Biases (offline unless an API key is set)"),
        "wandb_project": Field("vanish", "W&B project"),
        "wandb_mode": Field("", "W&B mode: '' (automatic), online, offline, disabled"),
        "tensorboard": Field(False, "also write TensorBoard event files (vanish[tb])"),
        "slots": Field(0, "engine: nodes trained per chunk; 0 = chosen from the schedule"),
        "fuse": Field(0, "engine: chunks fused per compiled call; 0 = per backend"),
        "max_slots": Field(128, "engine: widest chunk chosen automatically"),
        "merge_slots": Field(0, "engine: rows per compacted merge group; 0 = automatic"),
        "eval_nodes": Field(64, "nodes evaluated at once (memory, not results)"),
        "max_nodes_per_chunk": Field(0, "memory budget: nodes per device trained, merged or "
                                     "evaluated at once; 0 = no cap"),
        "masked_baseline": Field(False, "benchmark only: train all N nodes every tick, masked"),
        "shard_nodes": Field("auto", "split the node axis over the devices: auto, true, false"),
        "distributed": Field(False, "join a multi-process run (jax.distributed) first"),
        "coordinator_address": Field("", "multi-process coordinator 'host:port' ('' = from "
                                     "VANISH_COORDINATOR or the cluster)"),
        "num_processes": Field(0, "processes of a multi-process run; 0 = from the environment"),
        "process_id": Field(-1, "this process's id; -1 = from the environment"),
        "heartbeat_timeout": Field(30, "multi-process: seconds a process may go without a "
                                   "heartbeat before the coordinator counts it lost and JAX "
                                   "ends every process (a killed process is noticed at once)"),
    },
}
SECTIONS = tuple(k for k, v in SCHEMA.items() if isinstance(v, dict))

# Fields that change how a run is tracked, summarised or executed but never its trajectory:
# a workdir resumes under a different value (vanish/workdir.py), and results tables group
# seeds across them. `run.ticks` is neutral up to the stored end: a larger value extends.
RESULT_NEUTRAL = frozenset({
    "algorithms", "run.eval_every", "run.checkpoint_every", "run.keep_checkpoints", "run.wandb",
    "run.metrics",
    "run.wandb_project", "run.wandb_mode", "run.tensorboard", "run.fuse", "run.target_accuracy",
    "data.data_dir", "data.download", "run.eval_nodes", "run.ticks",
    # Where it runs: results do not depend on the device or process count.
    "run.shard_nodes", "run.distributed", "run.coordinator_address", "run.num_processes",
    "run.process_id", "run.heartbeat_timeout"})


# The generated sections whose component one field chooses: the knobs of the components not
# chosen never change a run (they are result-neutral for that run: `idle_knobs`). Every
# algorithm's knobs count, since `algorithms` may grow in a workdir.
CHOSEN_BY = {"topology_args": "topology.name", "partition_args": "data.partition",
             "dataset_args": "data.name"}


def idle_knobs(flat: Mapping[str, Any]) -> frozenset[str]:
    """The paths of `flat` (a {dotted path: value} record) that are knobs of components the
    record does not choose, e.g. topology_args.watts_strogatz.k on a ring."""
    out = set()
    for path in flat:
        section, _, rest = path.partition(".")
        chooser = CHOSEN_BY.get(section)
        if chooser is None:
            continue
        chosen = registry.key(flat.get(chooser, ""))
        if rest.partition(".")[0] != chosen:
            out.add(path)
    return frozenset(out)


def component_registries() -> dict[str, Mapping[str, Any]]:
    """{config section: the registry whose lines' knobs it holds}: `<kind>_args.<name>.<knob>`
    for every component a config chooses by name (vanish/registry.py's shape)."""
    from vanish import data, partition, topology  # host modules (they import JAX)

    return {"algorithm_args": algorithms.REGISTRY, "topology_args": topology.REGISTRY,
            "partition_args": partition.REGISTRY, "dataset_args": data.REGISTRY}


def _knob_section(reg: Mapping[str, Any]) -> Section:
    return {name: {knob: Field(k.default, k.help) for knob, k in line.knobs.items()}
            for name, line in reg.items()}


def algorithm_args_schema() -> Section:
    """`algorithm_args.<name>.<knob>` for every registered algorithm (its own knobs)."""
    return _knob_section(algorithms.REGISTRY)


def schema() -> Section:
    """The whole schema, the generated `*_args` sections included."""
    return {**SCHEMA, **{section: _knob_section(reg)
                         for section, reg in component_registries().items()}}


def fields(section: Section | None = None, prefix: str = "") -> dict[str, Field]:
    """{dotted path: Field} of every field of the schema (or of `section`)."""
    out: dict[str, Field] = {}
    for key, value in (schema() if section is None else section).items():
        if isinstance(value, Field):
            out[prefix + key] = value
        else:
            out.update(fields(value, f"{prefix}{key}."))
    return out


def _to_config(section: Section) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    for key, value in section.items():
        c[key] = value.default if isinstance(value, Field) else _to_config(value)
    return c


def default_config() -> ml_collections.ConfigDict:
    """Every field at its default (a fresh ConfigDict each call)."""
    return _to_config(schema())


def paper_config() -> ml_collections.ConfigDict:
    """The paper-era reference experiment, the base of experiments/paper_*.

    LeNet-5 (PyTorch-style, Glorot-uniform), SGD lr 0.01 momentum 0.9, batch 64, 50 nodes on a
    random 8-regular graph, training every U{8..12} ticks, merge at threshold = degree with
    beta = 0.5, FL rounds of 10 ticks, 10,000 ticks, IID data, every node evaluated on the
    same 100 class-balanced test images every 100 ticks. Fashion-MNIST offline; the paper
    used MNIST (`--config.data.name=mnist`, through TFDS).
    """
    c = default_config()
    c.algorithms = "single,fl,gossip,gossip_vc"
    c.data.name, c.data.partition, c.data.test_per_class = "fashion_mnist", "iid", 10
    c.model.name, c.model.init = "lenet5", "glorot_uniform"
    o = c.optim
    o.name, o.lr, o.momentum, o.schedule, o.batch_size = "sgd", 0.01, 0.9, "constant", 64
    c.topology.num_nodes, c.topology.name = 50, "random_regular"
    c.topology_args.random_regular.degree = 8
    c.run.ticks, c.schedule.interval_lo, c.schedule.interval_hi = 10_000, 8, 12
    c.schedule.threshold, c.schedule.beta, c.correction.target = 0, 0.5, "others"
    c.algorithm_args.fl.round_ticks = 10
    c.run.eval_every, c.run.target_accuracy = 100, 0.8  # Fashion-MNIST; use 0.95 with MNIST
    return c
