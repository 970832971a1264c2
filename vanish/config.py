"""The run configuration: every field a run reads and its default (vanish/build.py reads it).

    cfg = config.default_config()          # an ml_collections.ConfigDict
    cfg.num_nodes = 32; cfg.algorithms = "fl,gossip,gossip_vc"
    comp = build.components(cfg, "gossip_vc", dataset)

Experiment configs under experiments/ start from `default_config()` and override fields;
sweeps may only name fields that exist here (tests/test_experiments.py checks).

Checking input (light: no jax, so the command line refuses bad input in a fraction of a second):

    config.validate(cfg)                   # ConfigError naming every bad field (FIELD_RULES)
    cfg = config.load_config_file(path)    # a --config file; errors name the file and line
    workdir = config.check_workdir(path, algorithms)   # WorkdirError: unusable, corrupt files

A new config field needs a rule in FIELD_RULES, a new algorithm / model / scheme its name
in CHOICES (tests/test_bad_input.py checks both).
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import traceback
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ml_collections

from vanish.errors import ConfigError, WorkdirError  # noqa: F401 (re-exported)
from vanish import algorithms  # the registry's names only: imports no JAX

# Names each choice field accepts. This module imports nothing heavy (no jax), so the command
# line refuses a bad config in a fraction of a second. Algorithm names come from the registry
# itself (vanish/algorithms/__init__.py imports its rules lazily); the other tuples mirror
# their registries (models.MODELS, topology.TOPOLOGIES, partition.SCHEMES, ...), which
# tests/test_bad_input.py checks: a new model or scheme is also one name here.
CHOICES: dict[str, tuple[str, ...]] = {
    "algorithms": algorithms.NAMES,
    "partition": ("iid", "dirichlet_weights", "dirichlet_split", "shards", "label_subsets"),
    "shard_nodes": ("auto", "true", "false"),
    "model": ("mlp", "lenet5", "caffe_lenet", "cifar_cnn"),
    "conv_impl": ("auto", "xla", "banded"),
    "init": ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal",
             "lecun_uniform"),
    "optimizer": ("sgd", "adam", "adamw"),
    "lr_schedule": ("constant", "inv"),
    "topology": ("ring", "torus", "complete", "star", "random_regular", "erdos_renyi",
                 "watts_strogatz", "barabasi_albert", "exponential", "one_peer_exponential",
                 "edge_list"),
    "weighting": ("uniform", "metropolis", "max_degree"),
    "vc_target": ("others", "self", "blend", "none"),
    "peer_mode": ("neighbors", "uniform"),
    "byzantine_attack": ("sign_flip", "noise", "constant"),
    "wandb_mode": ("", "online", "offline", "disabled"),
}
ALGORITHMS = CHOICES["algorithms"]
BUILTIN_DATASETS = ("synthetic", "fashion_mnist")

# Fields that change how a run is tracked, summarised or executed but never its trajectory:
# a workdir resumes under a different value (run.config_hash leaves them out), and
# scripts/results_table.py groups seeds across them (less target_accuracy, which moves the
# ticks to target it tabulates).
RESULT_NEUTRAL = frozenset({
    "algorithms", "eval_every", "checkpoint_every", "keep_checkpoints", "wandb",
    "wandb_project", "wandb_mode", "fuse", "target_accuracy", "data_dir", "download",
    "eval_nodes",
    # Where it runs: results do not depend on the device or process count.
    "shard_nodes", "distributed", "coordinator_address", "num_processes", "process_id"})



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
    c.vc_reference = False  # the authors' simulator: ddof 1, eps 1e-4, biases corrected too
    c.correct_biases = False  # also rescale bias vectors (DFL_torch does; vc_reference sets it)
    # Federated learning.
    c.fl_round_ticks = 10
    c.fl_client_fraction = 1.0
    c.fl_local_steps = 1  # fl: local steps per round, from the round's middle tick (DFL_torch)
    # Partitioned gossip (Hegedus et al.).
    c.num_partitions = 4
    c.subsample = 0.0  # > 0: random coordinate subsampling instead of fixed partitions
    # Robust merge (gossip_trim, gossip_trim_vc): fraction cut at each end per coordinate.
    c.trim_fraction = 0.2
    # Synchronous D-PSGD.
    c.sync_local_steps = 1
    # Faults and dynamics (vanish/network.py; README "Faults"). All off by default.
    c.drop_prob = 0.0  # each message lost with this probability
    c.drop_file = ""  # 'src dst p' lines: per-edge loss probabilities (others: drop_prob)
    c.delay = "0"  # ticks a message travels: D, or a range 'lo-hi' drawn per message
    c.churn_up = 100.0  # on/off Markov churn: mean online period (ticks)
    c.churn_down = 0.0  # mean offline period (ticks); 0 = no churn. Offline share d/(u+d)
    c.churn_trace = ""  # 'node start end' lines: node offline over [start, end) (not Markov)
    c.stragglers = 0.0  # fraction of nodes training at straggler_interval instead
    c.straggler_interval = ""  # 'lo-hi' ticks; '' = 3x interval_lo..interval_hi
    c.peer_k = 0  # peer sampling: send to k peers instead of all neighbours (0 = all)
    c.peer_mode = "neighbors"  # neighbors (k random out-neighbours) | uniform (k of all)
    c.redraw_every = 0  # ticks; > 0 redraws the graph from its family (fixed shapes)
    c.byzantine = 0.0  # fraction of nodes sending corrupted models
    c.byzantine_attack = "sign_flip"  # sign_flip (-s * model) | noise (N(0, s^2)) | constant
    c.byzantine_scale = 1.0  # s
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
    c.max_slots = 128  # widest chunk chosen automatically (bounds training memory: FL trains
    # every client at one tick; K = 1000 LeNet-5 nodes would hold ~7 GB of activations)
    c.merge_slots = 0  # rows per compacted merge group; 0 = 1.5x the mean trainers per tick
    c.eval_nodes = 64  # nodes evaluated at once (bounds evaluation memory, not its result)
    # The memory budget in one number: at most this many nodes per device are trained,
    # merged or evaluated at once (caps slots / max_slots per device, merge_slots and
    # eval_nodes); 0 = no cap. Results change only by float summation order (tested).
    c.max_nodes_per_chunk = 0
    c.masked_baseline = False  # benchmark only: train all N nodes every tick, masked
    # Scale-out (never changes results beyond float summation order): split the node axis
    # over every visible device, each training its own nodes (engine.py). 'auto': when more
    # than one device is visible and the nodes split evenly (else one device, with a
    # warning); 'true': always (an uneven split is an error); 'false': one device.
    c.shard_nodes = "auto"
    # Multi-host: distributed=True joins a run of several processes through
    # jax.distributed.initialize() before anything else. Coordinator 'host:port', process
    # count and this process's id: these fields, else VANISH_COORDINATOR /
    # VANISH_NUM_PROCESSES / VANISH_PROCESS_ID, else JAX's cluster auto-detection (SLURM,
    # TPU pods, ...). Process 0 writes metrics and checkpoints; every process restores.
    c.distributed = False
    c.coordinator_address = ""
    c.num_processes = 0  # 0 = from the environment
    c.process_id = -1  # -1 = from the environment
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


def parse_algorithms(text: str) -> list[str]:
    names = [a.strip() for a in str(text).split(",") if a.strip()]
    if not names:
        raise ConfigError(
            "config.algorithms is empty; e.g. --config.algorithms=fl,gossip,gossip_vc")
    bad = [a for a in names if a not in ALGORITHMS]
    if bad:
        raise ConfigError(f"unknown algorithm(s) {bad}; choose from {', '.join(ALGORITHMS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"config.algorithms lists an algorithm twice: {names}")
    return names


def parse_range(text: Any, field: str) -> tuple[int, int]:
    """'3' -> (3, 3); '2-5' -> (2, 5): an inclusive range of non-negative integer ticks."""
    value = str(text).strip()
    try:
        lo, _, hi = value.partition("-")
        r = (int(lo), int(hi) if hi else int(lo))
    except ValueError:
        raise ConfigError(f"config.{field} = {text!r} must be an integer or a range 'lo-hi' of "
                          f"ticks (e.g. 3 or 2-5)") from None
    if not 0 <= r[0] <= r[1]:
        raise ConfigError(f"config.{field} = {text!r} must satisfy 0 <= lo <= hi")
    return r


def parse_label_subsets(text: str) -> list[list[int]]:
    """'0-4,5-9' -> [[0..4], [5..9]]; '0 2 4,1 3' -> [[0,2,4],[1,3]]."""
    subsets = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-"))
                if lo > hi:
                    raise ValueError
                subsets.append(list(range(lo, hi + 1)))
            elif part:
                subsets.append([int(v) for v in part.split()])
        except ValueError:
            raise ConfigError(f"config.label_subsets = {text!r}: cannot read {part!r}; use "
                              "ranges 'lo-hi' or space-separated labels, subsets separated by "
                              "commas, e.g. '0-4,5-9'") from None
    if not subsets:
        raise ConfigError(f"config.label_subsets = {text!r} names no labels; e.g. '0-4,5-9'")
    return subsets


# ----------------------------------------------------------------------------- validation
#
# `validate(cfg)` is the one place a config is checked: a table of one rule per field, run
# before any work starts (the command line runs it before jax is even imported). Checks that
# need the built graph or the loaded data (a threshold above a node's in-degree, a batch larger
# than a node's data) run in vanish/run.py right after those are built, still before the
# workdir is touched.



# A rule gets (field, value, config) and returns what is wrong, or None. It runs only when the
# value has its field's type (checked first, from default_config()).
Rule = Callable[[str, Any, ml_collections.ConfigDict], "str | None"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def did_you_mean(word: Any, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), [c for c in choices if c], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _ok(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
    return None


def _host_port(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
    """'' (from the environment) or 'host:port' with a port in 1..65535."""
    if value == "":
        return None
    host, _, port = str(value).rpartition(":")
    if host and port.isdigit() and 1 <= int(port) <= 65535:
        return None
    return (f"config.{field} = {value!r} must be 'host:port' with a port in 1..65535 "
            "(e.g. 'host0:1234'), or '' to read it from the environment")


def _one_of(what: str) -> Rule:
    def rule(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
        if value in CHOICES[field]:
            return None
        shown = ", ".join(repr(c) if c == "" else c for c in CHOICES[field])
        return (f"unknown {what} {value!r} (config.{field}){did_you_mean(value, CHOICES[field])};"
                f" choose from {shown}")
    return rule


def _at_least(lo: int, note: str = "") -> Rule:
    def rule(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
        return None if value >= lo else f"config.{field} = {value} must be >= {lo}{note}"
    return rule


def _between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Rule:
    shown = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def rule(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
        above = value > lo if lo_open else value >= lo  # False for NaN
        below = value < hi if hi_open else value <= hi
        return None if above and below else f"config.{field} = {value!r} must be in {shown}"
    return rule


def _finite_at_least(lo: float, *, strict: bool = False) -> Rule:
    def rule(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
        if math.isfinite(value) and (value > lo if strict else value >= lo):
            return None
        sign = ">" if strict else ">="
        return f"config.{field} = {value!r} must be a finite number {sign} {lo:g}"
    return rule


def _names(text: Any) -> list[str]:
    return [a.strip() for a in str(text).split(",") if a.strip()]


def _seed(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
    return None if 0 <= value < 2**32 else f"config.seed = {value} must be in [0, 2**32)"


def _parses(parse: Callable[[Any], Any]) -> Rule:
    """The rule of a field that has its own parser: the parser's ConfigError is the message."""
    def rule(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
        try:
            parse(value)
        except ConfigError as e:
            return str(e)
        return None
    return rule


_DATASET_NAME = re.compile(r"[a-z0-9_]+(/[a-z0-9_.]+)?(:[0-9.*]+)?")


def _dataset(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
    key = value.strip().lower().replace("-", "_")
    if key in BUILTIN_DATASETS:
        return None
    builtin = f"the built-in datasets are {' and '.join(BUILTIN_DATASETS)}"
    if not _DATASET_NAME.fullmatch(key):
        return (f"config.dataset = {value!r} is not a dataset name; {builtin}, other names are "
                "TensorFlow Datasets names such as 'mnist' or 'cifar10'")
    import importlib.util  # a look-up only: tensorflow_datasets is not imported here

    if importlib.util.find_spec("tensorflow_datasets") is None:
        return (f"unknown dataset {value!r} (config.dataset): {builtin}; other names are loaded "
                "through TensorFlow Datasets, which is not installed (pip install 'vanish[data]')")
    return None


def _data_dir(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
    if value == "":
        return None
    path = Path(value).expanduser()
    if not path.exists():
        if cfg.get("download") is True and not path.is_symlink():
            return None  # TFDS downloads into it
        return f"config.data_dir = {value!r} does not exist"
    if not path.is_dir():
        return f"config.data_dir = {value!r} is not a directory"
    try:
        with os.scandir(path) as entries:
            empty = next(entries, None) is None
    except OSError as e:
        return f"config.data_dir = {value!r} cannot be read: {e.strerror}"
    if empty and cfg.get("download") is not True:
        return f"config.data_dir = {value!r} is an empty directory"
    return None


def _num_nodes(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
    algos = set(_names(cfg.get("algorithms", "")))
    if algos and algos <= {"single"}:
        return None if value >= 1 else f"config.num_nodes = {value} must be >= 1"
    if value >= 2:
        return None
    return (f"config.num_nodes = {value}: gossip, federated learning and D-PSGD need at least "
            "2 nodes")


def _edge_list(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
    if cfg.get("topology") != "edge_list":
        return None
    if not value.strip():
        return ("config.topology = 'edge_list' needs config.edge_list, a file of 'u v' lines "
                "(e.g. --config.edge_list=graph.txt)")
    path = Path(value).expanduser()
    if not path.exists():
        return f"config.edge_list = {value!r}: no such file"
    if path.is_dir():
        return f"config.edge_list = {value!r} is a directory, not an edge-list file"
    if not os.access(path, os.R_OK):
        return f"config.edge_list = {value!r} is not readable"
    return None


def _interval_hi(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
    lo = cfg.get("interval_lo")
    if value < 1:
        return f"config.interval_hi = {value} must be >= 1"
    if _is_int(lo) and value < lo:
        return (f"config.interval_hi = {value} is below config.interval_lo = {lo} (nodes train "
                "every U{interval_lo..interval_hi} ticks)")
    return None


def _first_tick(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
    if value == "random" or re.fullmatch(r"\d+", value.strip()):
        return None
    return f"config.first_tick = {value!r} must be a non-negative integer or 'random'"


def _checkpoint_every(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
    if value < 0:
        return f"config.checkpoint_every = {value} must be >= 0 (0 = at every evaluation)"
    every = cfg.get("eval_every")
    if value and _is_int(every) and every > 0 and value % every:
        return (f"config.checkpoint_every = {value} is not a multiple of config.eval_every = "
                f"{every} (checkpoints are written at evaluations)")
    return None


def _fl_local_steps(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
    if value < 1:
        return f"config.fl_local_steps = {value} must be >= 1"
    rounds = cfg.get("fl_round_ticks")
    if _is_int(rounds) and rounds >= 1 and rounds // 2 + value > rounds:
        return (f"config.fl_local_steps = {value} does not fit a round of config.fl_round_ticks"
                f" = {rounds} ticks (local steps start at the round's middle tick)")
    return None


def _wandb_project(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
    if cfg.get("wandb") is True and not value.strip():
        return "config.wandb_project is empty (W&B needs a project name with wandb=True)"
    return None


def _readable_file(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
    if not str(value).strip():
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        return f"config.{field} = {value!r}: no such file"
    if not os.access(path, os.R_OK):
        return f"config.{field} = {value!r} is not readable"
    return None


def _churn_down(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
    if not (math.isfinite(value) and value >= 0):
        return f"config.churn_down = {value!r} must be a finite number >= 0 (0 = no churn)"
    if value > 0 and str(cfg.get("churn_trace", "")).strip():
        return ("config.churn_down and config.churn_trace both set: choose the Markov model "
                "or the trace file")
    if 0 < value < 1:
        return f"config.churn_down = {value!r}: a mean offline period is >= 1 tick (or 0)"
    return None


def _straggler_interval(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
    if not str(value).strip():
        return None
    try:
        lo, _ = parse_range(value, field)
    except ConfigError as e:
        return str(e)
    return None if lo >= 1 else f"config.{field} = {value!r}: a training interval is >= 1 tick"


def _peer_k(field: str, value: Any, cfg: ml_collections.ConfigDict) -> str | None:
    if value < 0:
        return f"config.peer_k = {value} must be >= 0 (0 = every neighbour)"
    n = cfg.get("num_nodes")
    if cfg.get("peer_mode") == "uniform" and _is_int(n) and value > n - 1:
        return (f"config.peer_k = {value}: uniform peer sampling picks k of the other "
                f"{n - 1} nodes")
    return None


FIELD_RULES: dict[str, Rule] = {
    "seed": _seed,
    "algorithms": _parses(parse_algorithms),
    # Data.
    "dataset": _dataset,
    "data_dir": _data_dir,
    "download": _ok,
    "synthetic_train": _at_least(1),
    "synthetic_test": _at_least(1),
    "partition": _one_of("partition scheme"),
    "alpha": _finite_at_least(0, strict=True),
    "shards_per_node": _at_least(1),
    "label_subsets": _parses(parse_label_subsets),
    "test_per_class": _at_least(1),
    # Model and optimiser.
    "model": _one_of("model"),
    "conv_impl": _one_of("conv_impl"),
    "init": _one_of("initializer"),
    "optimizer": _one_of("optimizer"),
    "lr": _finite_at_least(0),
    "momentum": _between(0, 1, hi_open=True),
    "lr_schedule": _one_of("lr schedule"),
    "weight_decay": _finite_at_least(0),
    "batch_size": _at_least(1),
    "reset_opt_on_merge": _ok,
    # Network.
    "num_nodes": _num_nodes,
    "topology": _one_of("topology"),
    "degree": _at_least(1),
    "edge_prob": _between(0, 1, lo_open=True),
    "rewire_prob": _between(0, 1),
    "attach": _at_least(1),
    "edge_list": _edge_list,
    "weighting": _one_of("weighting"),
    # Tick model.
    "ticks": _at_least(0),
    "interval_lo": _at_least(1),
    "interval_hi": _interval_hi,
    "first_tick": _first_tick,
    "send_every": _at_least(1),
    "threshold": _at_least(0, " (0 = the node's in-degree)"),
    "beta": _between(0, 1),
    # Variance correction.
    "vc_target": _one_of("variance-correction target"),
    "vc_blend": _between(0, 1),
    "vc_eps": _finite_at_least(0),
    "vc_ddof": _at_least(0),
    "vc_strength": _between(0, 1),
    "vc_skip": _ok,
    "vc_reference": _ok,
    "correct_biases": _ok,
    # Federated learning.
    "fl_round_ticks": _at_least(1),
    "fl_client_fraction": _between(0, 1, lo_open=True),
    "fl_local_steps": _fl_local_steps,
    # Partitioned / robust gossip, D-PSGD.
    "num_partitions": _at_least(1),
    "subsample": _between(0, 1),
    "trim_fraction": _between(0, 0.5, hi_open=True),
    "sync_local_steps": _at_least(1),
    # Faults and dynamics.
    "drop_prob": _between(0, 1),
    "drop_file": _readable_file,
    "delay": _parses(lambda v: parse_range(v, "delay")),
    "churn_up": _finite_at_least(1),
    "churn_down": _churn_down,
    "churn_trace": _readable_file,
    "stragglers": _between(0, 1),
    "straggler_interval": _straggler_interval,
    "peer_k": _peer_k,
    "peer_mode": _one_of("peer sampling mode"),
    "redraw_every": _at_least(0, " (0 = a fixed graph)"),
    "byzantine": _between(0, 1, hi_open=True),
    "byzantine_attack": _one_of("Byzantine attack"),
    "byzantine_scale": _finite_at_least(0),
    # Evaluation, tracking, checkpoints.
    "eval_every": _at_least(1),
    "target_accuracy": _between(0, 1),
    "checkpoint_every": _checkpoint_every,
    "keep_checkpoints": _at_least(1),
    "wandb": _ok,
    "wandb_project": _wandb_project,
    "wandb_mode": _one_of("W&B mode"),
    # Engine strategy, scale-out.
    "slots": _at_least(0, " (0 = chosen from the schedule)"),
    "fuse": _at_least(0, " (0 = per backend)"),
    "merge_slots": _at_least(0, " (0 = 1.5x the mean trainers per tick)"),
    "max_slots": _at_least(1),
    "eval_nodes": _at_least(1),
    "max_nodes_per_chunk": _at_least(0, " (0 = no cap)"),
    "masked_baseline": _ok,
    "shard_nodes": _one_of("shard_nodes mode"),
    "distributed": _ok,
    "coordinator_address": _host_port,
    "num_processes": _at_least(0, " (0 = from the environment)"),
    "process_id": _at_least(-1, " (-1 = from the environment)"),
}


def _type_problem(field: str, default: Any, value: Any) -> str | None:
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "True or False"
    elif isinstance(default, int):
        ok, kind = _is_int(value), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    else:
        return None
    return None if ok else f"config.{field} = {value!r} must be {kind}, not {type(value).__name__}"


def problems(cfg: ml_collections.ConfigDict) -> list[str]:
    """Everything wrong with `cfg`, one message per problem (empty: the config is valid)."""
    defaults = default_config()
    found: list[str | None] = [
        f"unknown config field {key!r}{did_you_mean(key, FIELD_RULES)} (the fields and "
        "their defaults are in vanish/config.py)"
        for key in cfg.keys() if key not in FIELD_RULES]
    missing = [key for key in FIELD_RULES if key not in cfg]
    if missing:
        found.append(f"the config lacks field(s) {', '.join(missing)}; build configs from "
                     "vanish.config.default_config()")
    for field, rule in FIELD_RULES.items():
        if field in cfg:
            value = cfg[field]
            found.append(_type_problem(field, defaults[field], value) or rule(field, value, cfg))
    return [p for p in found if p]


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming every bad field of `cfg` (one line); reads no data.

    Run before any work starts: the command line runs it before importing jax, and
    `run.train_and_evaluate` before it touches the workdir.
    """
    found = problems(cfg)
    if found:
        raise ConfigError("; ".join(found))


# ----------------------------------------------------------------------------- input files


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _line_in(e: BaseException, path: Path) -> str:
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == str(path)]
    return f", line {frames[-1].lineno}" if frames else ""


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Runs a config file's get_config(), as --config does, naming the file in every error.

    `spec` is `path` or `path:argument` (the argument goes to get_config, as with
    ml_collections' config_flags). Raises ConfigError: missing, a directory, not UTF-8 text,
    a syntax error, an exception inside the file (with its line), no get_config(), or a
    result that is not a ConfigDict.
    """
    path_text, sep, arg = str(spec).partition(":")
    if not path_text.strip():
        raise ConfigError("--config is empty; name an experiment config file, e.g. "
                          "--config=experiments/default/config.py")
    path = Path(path_text).expanduser()
    where = f"config file {path_text}"
    if not path.exists():
        raise ConfigError(f"{where} does not exist")
    if path.is_dir():
        raise ConfigError(f"{where} is a directory; name the config.py inside it")
    try:
        source = path.read_bytes().decode("utf-8")
        code = compile(source, str(path), "exec")
    except OSError as e:
        raise ConfigError(f"{where} cannot be read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text (expected a Python file defining "
                          "get_config())") from None
    except SyntaxError as e:
        raise ConfigError(f"{where}, line {e.lineno}: {e.msg} (expected a Python file defining "
                          "get_config())") from None
    except ValueError as e:  # e.g. NUL bytes
        raise ConfigError(f"{where}: {e}") from None
    module = types.ModuleType("vanish_config_file")
    module.__file__ = str(path)
    try:
        exec(code, module.__dict__)  # noqa: S102  (a config file is a program, as with --config)
        get_config = module.__dict__.get("get_config")
        if not callable(get_config):
            raise ConfigError(f"{where} defines no get_config() function")
        cfg = get_config(*([arg] if sep else []))
    except ConfigError as e:
        raise ConfigError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
    except Exception as e:  # noqa: BLE001  whatever the file raises, name the file and line
        raise ConfigError(f"{where}{_line_in(e, path)}: {type(e).__name__}: {_first_line(e)}"
                          ) from None
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise ConfigError(f"{where}: get_config() returned {type(cfg).__name__}, not an "
                          "ml_collections.ConfigDict (start from vanish.config.default_config())")
    return cfg


# Virtual file systems: nothing a run writes belongs there.
VIRTUAL_FILE_SYSTEMS = ("/proc", "/sys", "/dev")
# The files of a workdir that a run reads back (vanish/run.py's record of the config and the
# metric files of vanish/tracking.py), with what each one holds.
WORKDIR_JSON = {"run_config.json": "the config this workdir was first run with",
                "config.json": "each algorithm's config",
                "summary.json": "each algorithm's summary"}
WORKDIR_JSONL = {"metrics.jsonl": "the metric rows"}
_KEEP = "restore it or move it away, or use a new --workdir; nothing was changed"


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _check_json(path: Path, what: str, *, lines: bool = False) -> None:
    if not path.is_file():
        raise WorkdirError(f"{path} is not a file; it should hold {what}: {_KEEP}")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise WorkdirError(f"{path} cannot be read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise WorkdirError(f"{path} is corrupt (not UTF-8 text); it holds {what}: "
                           f"{_KEEP}") from None
    rows = text.split("\n") if lines else [text]
    for i, row in enumerate(rows):
        if lines and not row.strip():
            continue
        try:
            value = json.loads(row)
        except json.JSONDecodeError as e:
            if lines and i == len(rows) - 1:
                continue  # an unterminated last line: an interrupted write, dropped on resume
            at = f"line {i + 1}" if lines else f"line {e.lineno}, column {e.colno}"
            raise WorkdirError(f"{path} is corrupt ({e.msg} at {at}); it holds {what}: "
                               f"{_KEEP}") from None
        if not isinstance(value, dict):
            at = f" at line {i + 1}" if lines else ""
            raise WorkdirError(f"{path} is corrupt (a JSON {type(value).__name__}{at} where an "
                               f"object is expected); it holds {what}: {_KEEP}")
    if not os.access(path, os.W_OK):
        raise WorkdirError(f"{path} is not writable")


def check_workdir(workdir: str | os.PathLike[str] | None, algorithms: Iterable[str] = ()) -> Path:
    """Refuses a workdir that cannot hold this run, before anything is written; returns it.

    Refused: unset; under /proc, /sys or /dev; a file (or below one); not writable (read-only
    file system, no permission); holding a run file (run_config.json, config.json,
    summary.json, metrics.jsonl) that is corrupt or unreadable; `<algorithm>` or
    `<algorithm>/checkpoints` that is not a directory. Only reads.
    """
    text = "" if workdir is None else os.fspath(workdir)
    if not text.strip():
        raise WorkdirError("--workdir is empty; name a directory for the run's metrics, plots "
                           "and checkpoints")
    path = Path(text).expanduser()
    real = os.path.realpath(path)
    for root in VIRTUAL_FILE_SYSTEMS:
        if real == root or real.startswith(root + os.sep):
            raise WorkdirError(f"workdir {text} is under {root}, a virtual file system; choose a "
                               "directory on disk")
    if path.is_symlink() and not path.exists():
        raise WorkdirError(f"workdir {text} is a broken symbolic link (to {os.readlink(path)})")
    if path.exists() and not path.is_dir():
        raise WorkdirError(f"workdir {text} is a file, not a directory; choose another --workdir")
    existing = path.absolute()
    while not existing.exists() and not existing.is_symlink():
        existing = existing.parent
    if not existing.is_dir():
        raise WorkdirError(f"workdir {text} cannot be created: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = ("on a read-only file system" if _read_only_fs(existing)
               else "not writable by this user")
        raise WorkdirError(f"workdir {text} cannot be written: {existing} is {why}")
    if path.is_dir():
        for name, what in {**WORKDIR_JSON, **WORKDIR_JSONL}.items():
            if (path / name).exists() or (path / name).is_symlink():
                _check_json(path / name, what, lines=name in WORKDIR_JSONL)
        for algorithm in algorithms:
            for sub in (path / algorithm, path / algorithm / "checkpoints"):
                if sub.exists() and not sub.is_dir():
                    raise WorkdirError(f"{sub} is not a directory (it should hold {algorithm}'s "
                                       f"checkpoints): {_KEEP}")
    return path
