"""The only reader of the run config: config -> components (topology, data, plan, model, ...).

    comp = build.components(cfg, "gossip_vc", dataset)
    comp.algorithm, comp.topology, comp.work, comp.model, comp.tx, comp.consts

Each component's constructor takes keyword arguments; the tables below say which config
field feeds which argument, so adding a topology or a partition scheme is one table row.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vanish import algorithms, models, network, nodes, partition, schedule, topology, variance
from vanish import config as config_lib
from vanish.algorithms import base
from vanish.algorithms.partitioned import partition_ids
from vanish.data import Dataset, balanced_subset
from vanish.schedule import WorkList

log = logging.getLogger(__name__)

# topology name -> {keyword argument: config field}
TOPOLOGY_ARGS: dict[str, dict[str, str]] = {
    "random_regular": dict(degree="degree"),
    "erdos_renyi": dict(p="edge_prob"),
    "watts_strogatz": dict(k="degree", p="rewire_prob"),
    "barabasi_albert": dict(m="attach"),
    "edge_list": dict(path="edge_list"),
}
# partition scheme -> {keyword argument: config field}
PARTITION_ARGS: dict[str, dict[str, str]] = {
    "dirichlet_weights": dict(alpha="alpha"),
    "dirichlet_split": dict(alpha="alpha"),
    "shards": dict(shards_per_node="shards_per_node"),
    "label_subsets": dict(subsets="label_subsets"),
}
_PARSE = {"label_subsets": config_lib.parse_label_subsets}


def _kwargs(cfg: ml_collections.ConfigDict, table: dict[str, str]) -> dict[str, Any]:
    return {arg: _PARSE.get(field, lambda v: v)(cfg[field]) for arg, field in table.items()}


def correction(cfg: ml_collections.ConfigDict) -> variance.CorrectionConfig:
    skip = tuple(s.strip() for s in str(cfg.vc_skip).split(",") if s.strip())
    fields = dict(target=cfg.vc_target, blend=cfg.vc_blend, strength=cfg.vc_strength, skip=skip,
                  correct_biases=bool(cfg.correct_biases))
    if cfg.vc_reference:  # DFL_torch: ddof 1, eps 1e-4, every tensor rescaled, biases too
        return variance.CorrectionConfig.reference(**dict(fields, correct_biases=True))
    return variance.CorrectionConfig(eps=cfg.vc_eps, ddof=cfg.vc_ddof, **fields)


def hyper(cfg: ml_collections.ConfigDict, *, merge_slots: int = 8,
          inbox_capacity: int = 16) -> base.Hyper:
    return base.Hyper(
        correction=correction(cfg), merge_slots=merge_slots,
        client_fraction=float(cfg.fl_client_fraction), num_partitions=int(cfg.num_partitions),
        subsample=float(cfg.subsample), inbox_capacity=inbox_capacity,
        trim_fraction=float(cfg.trim_fraction))


def algorithm(cfg: ml_collections.ConfigDict, name: str, **hp: int) -> base.Algorithm:
    if name not in algorithms.REGISTRY:
        raise config_lib.ConfigError(
            f"unknown algorithm {name!r}; choose from {', '.join(algorithms.NAMES)}")
    return algorithms.get(name, hyper(cfg, **hp))


def topology_for(cfg: ml_collections.ConfigDict, algo: base.Algorithm) -> topology.Topology:
    n = int(cfg.num_nodes)
    if algo.topology == "isolated":
        return topology.make("complete", 1)
    if algo.topology == "star":  # node 0 is the server, 1..n the clients
        return topology.star(n + 1, center=0)
    return topology.make(cfg.topology, n, seed=int(cfg.seed), weighting=cfg.weighting,
                         **_kwargs(cfg, TOPOLOGY_ARGS.get(cfg.topology, {})))


def devices_for(cfg: ml_collections.ConfigDict, algo: base.Algorithm, n: int) -> int:
    """How many devices split the node axis (config.shard_nodes; see engine.py).

    'auto' uses every device when they split the n nodes evenly, else the most devices that
    do (n = 50 on 8 devices: 5), with a note; one process only: several processes must
    split over all their devices, so an uneven split is an error there, as under 'true'.
    """
    mode, count = str(cfg.shard_nodes), jax.device_count()
    if mode == "false" or count == 1:
        return 1
    reason, fits = None, 1  # fits: the most devices that split n evenly, if not all
    if not algo.shardable:
        reason = f"{algo.name} reads all nodes' state at once and is not written for shards"
    elif cfg.masked_baseline:
        reason = "masked_baseline is a single-device benchmark"
    elif n % count:
        fits = max(d for d in range(1, count + 1) if n % d == 0)
        reason = (f"{n} nodes cannot be split evenly over {count} devices; choose num_nodes "
                  f"as a multiple of {count} (FL adds one server node)")
    if reason is None:
        return count
    if mode == "true" or jax.process_count() > 1:  # several processes cannot fall back
        raise config_lib.ConfigError(f"config.shard_nodes = {mode!r}: {reason}")
    if fits > 1:
        log.warning("shard_nodes='auto': %s; splitting them over %d of the %d devices",
                    reason, fits, count)
        return fits
    log.warning("shard_nodes='auto': %s; running on one of the %d devices", reason, count)
    return 1


def halo_shifts(topo: topology.Topology, devices: int, algo: base.Algorithm,
                net: network.Plan | None) -> tuple[int, ...] | None:
    """The device shifts (receiver's device - sender's, mod D) that the graph's edges cross
    when node i sits on device i // (N / D); None (an all-gather) when nearly all shifts
    occur (random graphs: a gather moves no more) or messages may leave the graph (network
    plans, FL's star).
    A ring or a torus needs 2 shifts: its sent models go to the two adjacent devices only.
    """
    if devices == 1 or net is not None or algo.topology != "graph":
        return None
    place = np.arange(topo.n) // (topo.n // devices)
    shifts = set(((place[topo.receivers] - place[topo.senders]) % devices).tolist()) - {0}
    if len(shifts) >= devices - 1:  # a ppermute per other device: no better than a gather
        return None
    return tuple(sorted(int(x) for x in shifts))


def plan_for(cfg: ml_collections.ConfigDict, algo: base.Algorithm, n: int,
             is_client: np.ndarray, net: network.Plan | None = None, devices: int = 1
             ) -> tuple[schedule.Schedule, schedule.WorkList, int]:
    """The training schedule and its packed work plan; returns (schedule, work, round_ticks).

    devices > 1: the plan for the node axis split over that many devices, each chunk a
    block of ceil(K / devices) slots per device (`schedule.pack`).

    Under a network plan: stragglers train at their own interval (gossip schedule), and with
    delays every tick gets a chunk (arrivals are delivered at a tick's last chunk). Churn
    does not change the plan: offline trainers are masked on the device.
    """
    ticks, seed = int(cfg.ticks), int(cfg.seed)
    if algo.schedule == "every_tick":
        sched = schedule.draw(n, ticks, (1, 1), seed=seed, first_tick=0,
                              send_every=int(cfg.send_every), trainers=is_client)
        round_ticks = int(cfg.sync_local_steps)
    elif algo.schedule == "fl_rounds":
        round_ticks = int(cfg.fl_round_ticks)
        sched = schedule.fl_rounds(n, ticks, round_ticks, seed=seed,
                                   local_steps=int(cfg.fl_local_steps),
                                   fraction=float(cfg.fl_client_fraction), trainers=is_client)
    else:
        first = cfg.first_tick if cfg.first_tick == "random" else int(cfg.first_tick)
        lo, hi = int(cfg.interval_lo), int(cfg.interval_hi)
        node_interval = None
        if net is not None and net.stragglers.any():
            s_lo, s_hi = net.straggler_interval
            node_interval = (np.where(net.stragglers, s_lo, lo), np.where(net.stragglers, s_hi, hi))
        sched = schedule.draw(n, ticks, (lo, hi), seed=seed, first_tick=first,
                              send_every=int(cfg.send_every), trainers=is_client,
                              node_interval=node_interval)
        round_ticks = int(cfg.fl_round_ticks)
    if round_ticks < 1:
        raise config_lib.ConfigError(f"round length must be >= 1 tick, got {round_ticks}")
    end_of_tick = None
    if algo.schedule in ("every_tick", "fl_rounds") or algo.topology == "star":
        end_of_tick = (np.arange(ticks) + 1) % round_ticks == 0
    if net is not None and net.max_delay > 0:
        end_of_tick = np.ones(ticks, bool)
    counts = sched.counts_per_tick()
    if cfg.masked_baseline:
        work = schedule.pack_masked(sched, end_of_tick)
    else:
        slots = (int(cfg.slots) if int(cfg.slots) > 0
                 else schedule.choose_slots(counts, max_slots=int(cfg.max_slots)))
        per_device = -(-slots // devices)
        work = schedule.pack(sched, _capped(cfg, per_device), end_of_tick, devices=devices)
    return sched, work, round_ticks


def partition_for(cfg: ml_collections.ConfigDict, y: np.ndarray,
                  n_clients: int) -> partition.Partition:
    """The configured partition of labels `y` over `n_clients` training nodes."""
    return partition.make_partition(cfg.partition, y, n_clients, seed=int(cfg.seed),
                                    **_kwargs(cfg, PARTITION_ARGS.get(cfg.partition, {})))


@dataclasses.dataclass
class Components:
    """Everything a Simulation is made of, built from one config."""

    name: str
    algorithm: base.Algorithm
    topology: topology.Topology
    is_client: np.ndarray
    partition: partition.Partition
    label_hist: np.ndarray
    x_test: jax.Array
    y_test: jax.Array
    schedule: schedule.Schedule
    work: WorkList  # not schedule.WorkList: in here `schedule` is the field above
    model: Any
    tx: Any
    input_shape: tuple[int, ...]
    consts: base.Consts
    keys: dict[str, jax.Array]
    batch_size: int
    merge_slots: int
    fuse: int
    reset_opt: bool
    devices: int  # devices the node axis is split over (1: not split)
    halo: tuple[int, ...] | None  # device shifts the sent models take (None: all-gather)
    eval_nodes: int
    network: network.Plan | None  # faults and dynamics; None = fault-free


def components(cfg: ml_collections.ConfigDict, name: str, dataset: Dataset) -> Components:
    algo = algorithm(cfg, name)
    topo = topology_for(cfg, algo)
    n = topo.n
    has_server = algo.topology == "star"
    is_client = np.ones(n, bool)
    if has_server:
        is_client[0] = False
    y = np.asarray(dataset.y_train)
    part = partition_for(cfg, y, int(is_client.sum()))
    if has_server:  # the server holds no data; give it the first client's row (never used)
        part = _prepend_node(part)
    label_hist = partition.label_histogram(part, y, dataset.num_classes)[is_client]
    x_test, y_test = balanced_subset(dataset.x_test, dataset.y_test, int(cfg.test_per_class),
                                     int(cfg.seed))
    net = network.plan_for(cfg, topo, is_client, star=has_server)
    if net is not None and algo.schedule == "every_tick":
        raise config_lib.ConfigError(
            f"{name} mixes synchronously over the whole graph every round; the fault and "
            f"dynamics options (drop_prob, delay, churn_*, stragglers, peer_k, redraw_every, "
            f"byzantine) are modelled for the message-passing algorithms only")
    devices = devices_for(cfg, algo, n)
    sched, work, round_ticks = plan_for(cfg, algo, n, is_client, net, devices)
    if net is not None:
        net = network.with_queue(net, work)
    degree = network.expected_arrivals(net, topo, cfg)
    threshold = degree if int(cfg.threshold) <= 0 else np.full(n, int(cfg.threshold))
    threshold = np.maximum(threshold, 1)
    merge_slots = _capped(cfg, int(cfg.merge_slots) if int(cfg.merge_slots) > 0
                          else min(n, schedule.choose_merge_slots(sched.counts_per_tick())))
    # Message buffers: the most a node can hold at a tick's end (threshold - 1 + in-degree).
    # Delays: up to (hi - lo + 1) send ticks' messages arrive at once; uniform peer sampling
    # has no fixed in-degree (4k + 4 covers all but rare bursts; the excess is dropped).
    fan_in = max(topo.max_degree, 1)
    if net is not None and net.spec.peer == "uniform":
        fan_in = 4 * int(cfg.peer_k) + 4
    if net is not None and net.max_delay > 0:
        lo_d, hi_d = config_lib.parse_range(cfg.delay, "delay")
        fan_in *= hi_d - lo_d + 1
    capacity = int(threshold.max() - 1 + fan_in)
    algo = algorithm(cfg, name, merge_slots=merge_slots, inbox_capacity=capacity)
    model = models.make_model(cfg.model, num_classes=dataset.num_classes,
                              conv_impl=cfg.conv_impl, init=cfg.init)
    tx = nodes.make_optimizer(cfg.optimizer, lr=float(cfg.lr), momentum=float(cfg.momentum),
                              schedule=cfg.lr_schedule, weight_decay=float(cfg.weight_decay))
    input_shape = tuple(dataset.x_train.shape[1:])
    root = jax.random.PRNGKey(int(cfg.seed))
    keys = {k: jax.random.fold_in(root, i) for i, k in enumerate(("init", "train", "partitions"))}
    part_ids = None
    if algo.needs_partition_ids:
        shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, *input_shape)))["params"],
                                root)
        part_ids = partition_ids(jax.tree.map(lambda s: jnp.zeros((1, *s.shape)), shapes),
                                 int(cfg.num_partitions), int(cfg.seed))
    consts = base.Consts(
        graph=topo.device_graph(), x_train=jnp.asarray(dataset.x_train),
        y_train=jnp.asarray(dataset.y_train), part=part.device_arrays(),
        threshold=jnp.asarray(threshold, jnp.int32),
        beta=jnp.float32(0.0 if has_server else float(cfg.beta)),
        is_client=jnp.asarray(is_client), round_ticks=jnp.int32(round_ticks), part_ids=part_ids,
        net=None if net is None else net.net)
    return Components(
        name=name, algorithm=algo, topology=topo, is_client=is_client, partition=part,
        label_hist=label_hist, x_test=jnp.asarray(x_test), y_test=jnp.asarray(y_test),
        schedule=sched, work=work, model=model, tx=tx, input_shape=input_shape, consts=consts,
        keys=keys, batch_size=int(cfg.batch_size), merge_slots=merge_slots,
        fuse=int(cfg.fuse), reset_opt=bool(cfg.reset_opt_on_merge), devices=devices,
        halo=halo_shifts(topo, devices, algo, net),
        eval_nodes=_capped(cfg, int(cfg.eval_nodes)), network=net)


def _capped(cfg: ml_collections.ConfigDict, nodes_at_once: int) -> int:
    """`nodes_at_once` within the memory budget config.max_nodes_per_chunk (0: no cap)."""
    cap = int(cfg.max_nodes_per_chunk)
    return min(nodes_at_once, cap) if cap > 0 else nodes_at_once


def _prepend_node(part: partition.Partition) -> partition.Partition:
    prob = np.concatenate([part.node_group_prob[:1], part.node_group_prob], 0)
    return partition.Partition(group_index=part.group_index, group_size=part.group_size,
                               node_group_prob=prob, name=part.name)
