"""The only reader of the run config: check every rule, then hand down a frozen Experiment.

    experiment = build.experiment(cfg)          # ConfigError (one line) or a typed Experiment
    parts = build.components(experiment, "gossip_vc")   # one algorithm's plan, arrays, model

Everything is checked here before anything touches the disk: each field's type and range,
the rules between fields, the names each registry owns, every file the config names (edge
lists, churn traces, drop files: parsed and checked against the graph), the data (a batch
no node can fill, a test set too small) and a size estimate of the state, the evaluation
and the work list against the machine's memory. Below this module nothing sees a config:
the Experiment's typed values are all they get. The checks are ordered cheap first, and the
few that need JAX (the model's size) come last.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vanish import (algorithms, compat, config, data, network, partition, registry, schedule,
                    topology, workdir)
from vanish import clock as clock_lib
from vanish.algorithms import Cadence, Placement
from vanish.errors import ConfigError, PartitionError, TopologyError
from vanish.schedule import WorkList
from vanish.listing import listing as listing
# The builder's public names live in its rooms (rules, settings, listing); build re-exports
# them, so callers import one module.
from vanish.rules import (FIELD_RULES as FIELD_RULES, View as View, view, plain,
                          parse_algorithms as parse_algorithms, parse_range as parse_range,
                          parse_names as parse_names, problems as problems,
                          suggest as suggest, validate as validate)
from vanish.settings import (EngineSettings as EngineSettings, Experiment as Experiment,
                             ModelSettings as ModelSettings, OptimSettings as OptimSettings,
                             ProcessSettings as ProcessSettings, RunSettings as RunSettings,
                             ScheduleSettings as ScheduleSettings, setup_of as setup_of)

log = logging.getLogger(__name__)

# -------------------------------------------------------------------------- the experiment


def expected_ends(cfg: Any) -> dict[str, int]:
    """{algorithm: the final tick its summary reports} for a (checked) config."""
    validate(cfg)
    g = view(cfg)
    return {a: int(g("run.ticks")) for a in parse_algorithms(g("algorithms"))}


def _correction(g: View) -> Any:
    from vanish import variance

    skip = tuple(s.strip() for s in g("correction.skip").split(",") if s.strip())
    fields = dict(target=g("correction.target"), blend=g("correction.blend"),
                  strength=g("correction.strength"), skip=skip,
                  correct_biases=bool(g("correction.biases")))
    if g("correction.reference"):  # DFL_torch: ddof 1, eps 1e-4, every tensor rescaled
        return variance.CorrectionConfig.reference(**dict(fields, correct_biases=True))
    return variance.CorrectionConfig(eps=g("correction.eps"), ddof=g("correction.ddof"), **fields)


def _knobs(g: View, section: str, name: str) -> dict[str, Any]:
    """{knob: value} of component `name` from its generated section `<section>.<name>`."""
    line = config.component_registries()[section][name]
    return {k: g(f"{section}.{name}.{k}") for k in line.knobs}


def _network_settings(g: View, graph: topology.Spec) -> network.Settings:
    """The `network` section as network.Settings (faults and dynamics)."""
    straggle = g("network.straggler_interval")
    return network.Settings(
        drop_prob=g("network.drop_prob"), drop_file=g("network.drop_file"),
        delay=parse_range(g("network.delay"), "network.delay"),
        churn_up=g("network.churn_up"), churn_down=g("network.churn_down"),
        churn_trace=g("network.churn_trace"), stragglers=g("network.stragglers"),
        straggler_interval=parse_range(straggle, "network.straggler_interval")
        if straggle.strip() else None,
        peer_k=g("network.peer_k"), peer_mode=g("network.peer_mode"),
        # A round-varying family (one-peer exponential) rotates every tick unless told.
        redraw_every=g("network.redraw_every") or int(graph.round_varying),
        byzantine=g("network.byzantine"),
        byzantine_attack=g("network.byzantine_attack"),
        byzantine_scale=g("network.byzantine_scale"))


def _run_settings(g: View) -> tuple[RunSettings, EngineSettings, ProcessSettings]:
    """The `run` section: how long and how it is measured, the engine's strategy, and the
    processes of a multi-process run."""
    every = g("run.eval_every")
    return (RunSettings(g("run.ticks"), every, g("run.target_accuracy"),
                        g("run.checkpoint_every") or every, g("run.keep_checkpoints"),
                        bool(g("run.wandb")), g("run.wandb_project"), g("run.wandb_mode"),
                        bool(g("run.tensorboard")), parse_names(g("run.metrics"))),
            EngineSettings(g("run.slots"), g("run.fuse"), g("run.max_slots"),
                           g("run.merge_slots"), g("run.eval_nodes"),
                           g("run.max_nodes_per_chunk"), bool(g("run.masked_baseline")),
                           g("run.shard_nodes")),
            ProcessSettings(bool(g("run.distributed")), g("run.coordinator_address"),
                            g("run.num_processes"), g("run.process_id"),
                            g("run.heartbeat_timeout")))


def experiment(cfg: Any, *, dataset: data.Dataset | None = None) -> Experiment:
    """Checks `cfg` whole and returns the Experiment; raises a one-line ConfigError (or a
    subclass: TopologyError, PartitionError, DatasetError, ResourceError) otherwise.

    Args:
      cfg: a ConfigDict (or nested dict) of the schema in vanish/config.py.
      dataset: use this dataset instead of loading `data.name` (tests, notebooks).
    Returns:
      The frozen Experiment. Nothing was written anywhere.
    """
    validate(cfg)
    g = view(cfg)
    names = parse_algorithms(g("algorithms"))
    seed = int(g("seed"))
    t = g("topology.name")
    graph = topology.Spec(t, int(g("topology.num_nodes")), g("topology.weighting"),
                          _knobs(g, "topology_args", t))
    part = g("data.partition")
    part_args = _knobs(g, "partition_args", part)
    net = _network_settings(g, graph)
    first = g("schedule.first_tick")
    run_settings, engine_settings, processes = _run_settings(g)
    exp = Experiment(
        # The dataset is loaded (below) only once the cheaper checks have passed.
        algorithms=names, seed=seed, dataset=None,  # type: ignore[arg-type]
        test_per_class=g("data.test_per_class"), partition=part, partition_args=part_args,
        graph=graph,
        model=ModelSettings(g("model.name"), g("model.conv_impl"), g("model.init")),
        optim=OptimSettings(g("optim.name"), g("optim.lr"), g("optim.momentum"),
                            g("optim.schedule"), g("optim.weight_decay"), g("optim.batch_size"),
                            bool(g("optim.reset_on_merge"))),
        schedule=ScheduleSettings((g("schedule.interval_lo"), g("schedule.interval_hi")),
                                  first if first == "random" else int(first),
                                  g("schedule.send_every"), g("schedule.threshold"),
                                  g("schedule.beta")),
        correction=None,
        algorithm_args={n: _knobs(g, "algorithm_args", n) for n in algorithms.REGISTRY},
        network=net,
        clock=clock_lib.Settings(float(g("clock.tick_seconds")), g("clock.compute"),
                                 g("clock.latency"), g("clock.bandwidth")),
        run=run_settings, engine=engine_settings, processes=processes,
        record=plain(cfg))
    # The knobs of the topology and partition not chosen never change this run.
    exp = dataclasses.replace(exp, neutral=config.RESULT_NEUTRAL | config.idle_knobs(
        workdir.flatten(exp.record)))
    from vanish import resources  # the size model

    resources.check_plan(exp)  # the schedule, the graph and the fault plan over run.ticks
    name = registry.key(g("data.name"))
    ds = dataset if dataset is not None else data.load(
        name, data_dir=g("data.data_dir") or None, download=bool(g("data.download")),
        seed=seed, **(_knobs(g, "dataset_args", name) if name in data.REGISTRY else {}))
    exp = dataclasses.replace(exp, dataset=ds, correction=_correction(g))
    resources.check_memory(exp)  # the stacked state (the model's size: abstract, no device)
    for name in names:
        check_graph(exp, name)
    check_network(exp)
    clock_lib.make(exp.clock, exp.graph.n, exp.seed)  # the clock's specs and files
    check_data(exp)
    return exp


# ------------------------------------------------------------------------ host-side checks


def make_topology(exp: Experiment, name: str) -> topology.Topology:
    """The graph algorithm `name` runs on (FL: a star whose node 0 is the server)."""
    caps = algorithms.REGISTRY[name].caps
    if caps.placement is Placement.ISOLATED:
        return topology.make("complete", 1)
    if caps.placement is Placement.STAR:
        return topology.star(exp.graph.n + 1, center=0)
    return exp.graph.make(exp.seed)


def check_graph(exp: Experiment, name: str) -> None:
    """Builds `name`'s graph (edge-list files parsed and checked); a merge threshold above a
    node's in-degree is refused (that node could never merge)."""
    try:
        topo = make_topology(exp, name)
    except TopologyError as e:
        raise TopologyError(f"config.topology.name = {exp.graph.name!r} (num_nodes="
                            f"{exp.graph.n}): {e}") from None
    caps = algorithms.REGISTRY[name].caps
    threshold = exp.schedule.threshold
    check_rule(exp, name, topo)
    if threshold > 0 and caps.placement is Placement.GRAPH and caps.cadence is Cadence.GOSSIP:
        node = int(np.argmin(topo.degree))
        if threshold > int(topo.degree[node]):
            raise ConfigError(
                f"config.schedule.threshold = {threshold} exceeds the in-degree "
                f"{int(topo.degree[node])} of node {node} in {topo.name} ({name}): that node "
                "could never merge; use a threshold <= the smallest in-degree, or 0 (each "
                "node's own in-degree)")


def check_rule(exp: Experiment, name: str, topo: topology.Topology) -> None:
    """Builds `name`'s rule once from its knobs, the model and the message buffers' size on
    `topo` (threshold - 1 + in-degree; delays and peer sampling only enlarge it), so a knob
    that only the rule can judge (a layer the model lacks, more than a node can hold) is
    refused here, as one line, before the workdir is touched. Its own `schedule` hook, if
    any, plans an empty horizon on `topo` here too (a knob against the node count); an
    asynchronous rule must have one."""
    caps = algorithms.REGISTRY[name].caps
    threshold = exp.schedule.threshold if exp.schedule.threshold > 0 else int(topo.degree.max())
    capacity = max(threshold, 1) - 1 + max(topo.max_degree, 1)
    own = algorithms.hook(name, "schedule")
    if own is None and caps.cadence is Cadence.ASYNC:
        raise ConfigError(f"{name} trains asynchronously, so its registry line must plan its "
                          "clients' cycles (a schedule hook); it declares none")
    try:
        algorithms.make(name, **exp.algorithm_args[name], correction=exp.correction,
                        model=make_model(exp),
                        **({"inbox_capacity": capacity} if caps.message_buffers else {}))
        if own is not None:
            trainers = np.arange(topo.n) > 0 if caps.has_server else np.ones(topo.n, bool)
            own(algorithms.PlanRequest(topo.n, 0, exp.seed, trainers, exp.algorithm_args[name],
                                       clock_for(exp, name)))
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"config.algorithm_args.{name}: {e}") from None


def check_network(exp: Experiment) -> None:
    """The fault settings against the algorithms and the graph: files parsed and checked,
    a redrawn graph that has a random family, at least one honest node."""
    s = exp.network
    if not s.faulty:
        return
    for name in exp.algorithms:
        caps = algorithms.REGISTRY[name].caps
        if caps.synchronous and exp.graph.round_varying:
            raise ConfigError(
                f"{name} mixes synchronously over a fixed graph; the {exp.graph.name} topology "
                "changes every round, which is modelled for the message-passing algorithms "
                "only")
        if caps.synchronous:
            raise ConfigError(
                f"{name} mixes synchronously over the whole graph every round; the fault and "
                "dynamics options (config.network.*) are modelled for the message-passing "
                "algorithms only")
    clients = exp.graph.n
    if s.byzantine > 0 and clients - int(round(s.byzantine * clients)) < 1:
        raise ConfigError(f"config.network.byzantine = {s.byzantine} leaves no honest node of "
                          f"{clients}: accuracy is measured over honest nodes")
    if s.churn_trace:
        network.read_churn_trace(s.churn_trace, clients, exp.run.ticks)
    graph_algos = [a for a in exp.algorithms
                   if algorithms.REGISTRY[a].caps.placement is Placement.GRAPH]
    if graph_algos and s.redraw_every and not exp.graph.time_varying:
        raise ConfigError(f"config.network.redraw_every = {s.redraw_every}: the "
                          f"{exp.graph.name!r} topology has no random draw to redraw; use "
                          "random_regular, erdos_renyi, watts_strogatz, barabasi_albert or "
                          "one_peer_exponential")
    if graph_algos and s.redraw_every and s.drop_file:
        raise ConfigError("config.network.drop_file names edges of one graph; it cannot be "
                          "combined with config.network.redraw_every (the graph changes)")
    if graph_algos and s.drop_file:
        network.read_drop_file(s.drop_file, exp.graph.make(exp.seed), s.drop_prob)


def clock_for(exp: Experiment, name: str) -> clock_lib.Clock | None:
    """The simulated clock of `name`'s nodes (None: no clock). Values are drawn per client,
    so gossip node i and FL client i + 1 share them; an FL server computes nothing and its
    broadcast is not delayed (round ends are deadlines, or planned: fl's round_ticks 0)."""
    clk = clock_lib.make(exp.clock, exp.graph.n, exp.seed)
    if clk is None or not algorithms.REGISTRY[name].caps.has_server:
        return clk
    return clock_lib.Clock(clk.tick_seconds, np.r_[0.0, clk.compute], np.r_[0.0, clk.latency],
                           np.r_[np.inf, clk.bandwidth])


def check_data(exp: Experiment) -> None:
    """Refuses a partition the data cannot fill, a batch larger than a node's data, and more
    test images per class than the test set holds."""
    ds = exp.dataset
    per_class = np.bincount(ds.y_test, minlength=ds.num_classes)
    if exp.test_per_class > int(per_class.min()):
        raise ConfigError(
            f"config.data.test_per_class = {exp.test_per_class} but class "
            f"{int(per_class.argmin())} of the {ds.name} test set has only "
            f"{int(per_class.min())} images")
    alone = {a for a in exp.algorithms
             if algorithms.REGISTRY[a].caps.placement is Placement.ISOLATED}
    clients = exp.graph.n if set(exp.algorithms) - alone else 1
    try:
        part = make_partition(exp, clients)
    except PartitionError as e:
        raise PartitionError(
            f"config.data.partition = {exp.partition!r} ({clients} nodes, {len(ds.y_train)} "
            f"training examples of {ds.name}): {e}") from None
    held = (part.node_group_prob > 0).astype(np.int64) @ part.group_size.astype(np.int64)
    node = int(np.argmin(held))
    if exp.optim.batch_size > int(held[node]):
        raise ConfigError(
            f"config.optim.batch_size = {exp.optim.batch_size} is larger than node {node}'s data "
            f"({int(held[node])} training examples of {ds.name} under partition "
            f"{exp.partition!r} over {clients} nodes); use a smaller batch_size or fewer nodes")


def make_partition(exp: Experiment, n_clients: int) -> partition.Partition:
    """The configured partition of the training labels over `n_clients` training nodes."""
    return partition.make_partition(exp.partition, np.asarray(exp.dataset.y_train), n_clients,
                                    seed=exp.seed, **exp.partition_args)


def check_workdir(exp: Experiment, path: Path) -> None:
    """Refuses a workdir that holds another experiment (WorkdirConflictError naming each
    result-relevant field, old -> new). A record of an earlier version is read through
    `upgrade` (a field it lacks: its default); a larger run.ticks extends; a smaller one
    than a checkpoint's is refused by the loop. Only reads."""
    stored = workdir.stored_config(path)
    if stored is None:
        return
    # A field added to vanish since the record was written reads as its default.
    old = compat.upgrade(stored.config if stored.version == 1
                         else workdir.flatten(stored.config))
    diff = workdir.differences(old, workdir.flatten(exp.record), exp.neutral)
    if diff:
        raise workdir.conflict(path, diff)


# -------------------------------------------------------------------- one algorithm's parts


def round_ticks(exp: Experiment, name: str) -> int:
    """The round length of `name` in ticks (its declared round knob; 1 without rounds)."""
    knob = algorithms.REGISTRY[name].caps.round_knob
    return int(exp.algorithm_args[name][knob]) if knob else 1  # 0: rounds in the plan


# Engine sizes (chunk width, merge group) are chosen from the schedule's first SIZING_TICKS
# ticks, whatever the horizon: a run's trajectory (float summation order included) then does
# not depend on run.ticks, so a run extended to more ticks equals one run that long.
SIZING_TICKS = 1000


def draw_schedule(exp: Experiment, name: str, n: int, is_client: np.ndarray,
                  net: network.Plan | None = None, ticks: int | None = None
                  ) -> schedule.Schedule:
    """The training schedule of `name` over `ticks` (default run.ticks). Every schedule is
    prefix-stable: the events of [0, T) do not depend on the horizon beyond T."""
    caps = algorithms.REGISTRY[name].caps
    ticks, seed, s = exp.run.ticks if ticks is None else ticks, exp.seed, exp.schedule
    args = exp.algorithm_args[name]
    if caps.cadence is Cadence.EVERY_TICK:
        return schedule.draw(n, ticks, (1, 1), seed=seed, first_tick=0,
                             send_every=s.send_every, trainers=is_client)
    own = algorithms.hook(name, "schedule")
    if own is not None:  # the rule plans its own training (FL rounds, client sampling)
        return own(algorithms.PlanRequest(n, ticks, seed, is_client, args,
                                          clock_for(exp, name), net))
    node_interval = None
    if net is not None and net.stragglers.any():
        (lo, hi), (s_lo, s_hi) = s.interval, net.straggler_interval
        node_interval = (np.where(net.stragglers, s_lo, lo), np.where(net.stragglers, s_hi, hi))
    clk = clock_for(exp, name)
    if clk is not None:  # a node trains again only once its step is done: a floor
        floor = clk.interval_floor()
        if (floor > 1).any():
            lo_n, hi_n = node_interval or (np.full(n, s.interval[0]), np.full(n, s.interval[1]))
            node_interval = (np.maximum(lo_n, floor), np.maximum(hi_n, floor))
    return schedule.draw(n, ticks, s.interval, seed=seed, first_tick=s.first_tick,
                         send_every=s.send_every, trainers=is_client,
                         node_interval=node_interval)


def sizing_counts(exp: Experiment, name: str, n: int, is_client: np.ndarray,
                  net: network.Plan | None, sched: schedule.Schedule) -> np.ndarray:
    """Trainers per tick over [0, SIZING_TICKS): what the engine sizes are chosen from."""
    if sched.ticks < SIZING_TICKS:
        sched = draw_schedule(exp, name, n, is_client, net, SIZING_TICKS)
    return sched.counts_per_tick()[:SIZING_TICKS]


def plan(exp: Experiment, name: str, n: int, is_client: np.ndarray,
         net: network.Plan | None = None, devices: int = 1
         ) -> tuple[schedule.Schedule, schedule.WorkList, np.ndarray]:
    """The training schedule of `name`, its packed work plan, and the trainers per tick the
    engine sizes are chosen from (`sizing_counts`).

    devices > 1: the plan for the node axis split over that many devices. Under a network
    plan stragglers train at their own interval, and with delays every tick gets a chunk
    (arrivals are delivered at a tick's last chunk). Churn masks trainers on the device.
    """
    caps = algorithms.REGISTRY[name].caps
    ticks = exp.run.ticks
    sched = draw_schedule(exp, name, n, is_client, net)
    counts = sizing_counts(exp, name, n, is_client, net, sched)
    end_of_tick = None
    if sched.round_end is not None:  # rounds planned with the events
        end_of_tick = sched.round_end
    elif caps.round_knob is not None:
        end_of_tick = (np.arange(ticks) + 1) % round_ticks(exp, name) == 0
    if net is not None and net.max_delay > 0:
        end_of_tick = np.ones(ticks, bool)
    e = exp.engine
    if e.masked_baseline:
        return sched, schedule.pack_masked(sched, end_of_tick), counts
    slots = e.slots if e.slots > 0 else schedule.choose_slots(counts, max_slots=e.max_slots)
    return sched, schedule.pack(sched, e.capped(-(-slots // devices)), end_of_tick,
                                devices=devices), counts


def devices_for(exp: Experiment, name: str, n: int) -> int:
    """How many devices split the node axis (run.shard_nodes; see engine.py).

    'auto' uses every device when they split the n nodes evenly, else the most devices that
    do (n = 50 on 8 devices: 5), with a note; one process only: several processes must
    split over all their devices, so an uneven split is an error there, as under 'true'.
    """
    import jax

    mode, count = exp.engine.shard_nodes, jax.device_count()
    if mode == "false" or count == 1:
        return 1
    reason, fits = None, 1
    if not algorithms.REGISTRY[name].caps.shardable:
        reason = f"{name} reads all nodes' state at once and is not written for shards"
    elif exp.engine.masked_baseline:
        reason = "masked_baseline is a single-device benchmark"
    elif n % count:
        fits = max(d for d in range(1, count + 1) if n % d == 0)
        reason = (f"{n} nodes cannot be split evenly over {count} devices; choose num_nodes "
                  f"as a multiple of {count} (FL adds one server node)")
    if reason is None:
        return count
    if mode == "true" or jax.process_count() > 1:
        raise ConfigError(f"config.run.shard_nodes = {mode!r}: {reason}")
    if fits > 1:
        log.warning("shard_nodes='auto': %s; splitting them over %d of the %d devices",
                    reason, fits, count)
        return fits
    log.warning("shard_nodes='auto': %s; running on one of the %d devices", reason, count)
    return 1


def halo_shifts(topo: topology.Topology, devices: int, name: str,
                net: network.Plan | None) -> tuple[int, ...] | None:
    """The device shifts (receiver's device - sender's, mod D) the graph's edges cross when
    node i sits on device i // (N / D); None (an all-gather) when nearly all shifts occur
    (random graphs) or messages may leave the graph (network plans, FL's star).
    A ring or a torus needs 2 shifts: its sent models go to the two adjacent devices only.
    """
    placement = algorithms.REGISTRY[name].caps.placement
    if devices == 1 or net is not None or placement is not Placement.GRAPH:
        return None
    place = np.arange(topo.n) // (topo.n // devices)
    shifts = set(((place[topo.receivers] - place[topo.senders]) % devices).tolist()) - {0}
    if len(shifts) >= devices - 1:
        return None
    return tuple(sorted(int(x) for x in shifts))


@dataclasses.dataclass
class Components:
    """Everything one algorithm's run is made of (built from an Experiment, on the host,
    except the device arrays of `consts`)."""

    name: str
    algorithm: Any  # base.Algorithm
    topology: topology.Topology
    is_client: np.ndarray
    partition: partition.Partition
    label_hist: np.ndarray
    x_test: Any
    y_test: Any
    schedule: schedule.Schedule
    work: WorkList  # (the field `schedule` above shadows the module here)
    model: Any
    tx: Any
    input_shape: tuple[int, ...]
    consts: Any  # base.Consts
    keys: dict[str, Any]
    batch_size: int
    merge_slots: int
    fuse: int
    reset_opt: bool
    devices: int
    halo: tuple[int, ...] | None
    eval_nodes: int
    network: network.Plan | None


def make_model(exp: Experiment) -> Any:
    """The flax model `exp.model` names, sized to the dataset's classes."""
    from vanish import models

    return models.make_model(exp.model.name, num_classes=exp.dataset.num_classes,
                             conv_impl=exp.model.conv_impl, init=exp.model.init)


def make_optimizer(exp: Experiment) -> Any:
    """The optax optimizer `exp.optim` describes (`nodes.make_optimizer`)."""
    from vanish import nodes

    o = exp.optim
    return nodes.make_optimizer(o.name, lr=o.lr, momentum=o.momentum, schedule=o.schedule,
                                weight_decay=o.weight_decay)


def components(exp: Experiment, name: str) -> Components:
    """One algorithm's parts: its graph, partition, plan, network plan, model and arrays."""
    import jax
    import jax.numpy as jnp

    from vanish.algorithms import base

    caps = algorithms.REGISTRY[name].caps
    topo = make_topology(exp, name)
    n = topo.n
    is_client = np.ones(n, bool)
    if caps.has_server:
        is_client[0] = False
    ds = exp.dataset
    part = make_partition(exp, int(is_client.sum()))
    if caps.has_server:  # the server holds no data; give it the first client's row (unused)
        part = _prepend_node(part)
    label_hist = partition.label_histogram(part, np.asarray(ds.y_train), ds.num_classes)[is_client]
    x_test, y_test = data.balanced_subset(ds.x_test, ds.y_test, exp.test_per_class, exp.seed)
    model = make_model(exp)
    input_shape = tuple(ds.x_train.shape[1:])
    root = jax.random.PRNGKey(exp.seed)
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, *input_shape)))["params"], root)
    own = algorithms.hook(name, "consts")  # the rule's own device constants
    extra = {} if own is None else own(exp.algorithm_args[name], shapes, exp.seed)
    link = _link_ticks(exp, name, model, shapes, extra)
    net = network.plan_for(exp.network, topo, is_client, star=caps.has_server,
                           ticks=exp.run.ticks, seed=exp.seed, interval=exp.schedule.interval,
                           family=exp.graph, link_ticks=link)
    devices = devices_for(exp, name, n)
    sched, work, counts = plan(exp, name, n, is_client, net, devices)
    if net is not None:
        net = network.with_queue(net, work)
    threshold = np.maximum(network.expected_arrivals(net, topo) if exp.schedule.threshold <= 0
                           else np.full(n, exp.schedule.threshold), 1)
    e = exp.engine
    merge_slots = e.capped(e.merge_slots if e.merge_slots > 0
                           else min(n, schedule.choose_merge_slots(counts)))
    capacity = _inbox_capacity(exp, topo, net, link, threshold)
    algo = algorithms.make(name, **exp.algorithm_args[name], merge_slots=merge_slots,
                           inbox_capacity=capacity, correction=exp.correction, model=model)
    tx = make_optimizer(exp)
    keys = {k: jax.random.fold_in(root, i) for i, k in enumerate(("init", "train", "partitions"))}
    consts = base.Consts(
        graph=topo.device_graph(), x_train=jnp.asarray(ds.x_train),
        y_train=jnp.asarray(ds.y_train), part=part.device_arrays(),
        threshold=jnp.asarray(threshold, jnp.int32),
        beta=jnp.float32(0.0 if caps.has_server else exp.schedule.beta),
        is_client=jnp.asarray(is_client), round_ticks=jnp.int32(max(1, round_ticks(exp, name))),
        round_end=None if sched.round_end is None else jnp.asarray(sched.round_end),
        net=None if net is None else net.net, seed=jnp.uint32(exp.seed), **extra)
    return Components(
        name=name, algorithm=algo, topology=topo, is_client=is_client, partition=part,
        label_hist=label_hist, x_test=jnp.asarray(x_test), y_test=jnp.asarray(y_test),
        schedule=sched, work=work, model=model, tx=tx, input_shape=input_shape, consts=consts,
        keys=keys, batch_size=exp.optim.batch_size, merge_slots=merge_slots, fuse=e.fuse,
        reset_opt=exp.optim.reset_on_merge, devices=devices,
        halo=halo_shifts(topo, devices, name, net), eval_nodes=e.capped(e.eval_nodes),
        network=net)


def _link_ticks(exp: Experiment, name: str, model: Any, shapes: Any,
                extra: Mapping[str, Any]) -> np.ndarray | None:
    """[N, M] ticks each sender's messages of each kind travel on the simulated clock
    (compute + latency + their own size / bandwidth), or None (no clock, no link time)."""
    from vanish.algorithms import base

    caps = algorithms.REGISTRY[name].caps
    clk = clock_for(exp, name)
    if clk is None or caps.placement is Placement.ISOLATED or caps.synchronous:
        return None
    wire = algorithms.make(name, **exp.algorithm_args[name], model=model).wire or base.FULL_MODEL
    link = clk.link_ticks(wire.sizes(shapes, base.Consts(**extra)))
    return link if link.any() else None


def _inbox_capacity(exp: Experiment, topo: topology.Topology, net: network.Plan | None,
                    link: np.ndarray | None, threshold: np.ndarray) -> int:
    """Message buffers: the most a node can hold at a tick's end (threshold - 1 + in-degree).
    Delays: up to (hi - lo + 1) send ticks' messages arrive at once; uniform peer sampling
    has no fixed in-degree (4k + 4 covers all but rare bursts; the excess is dropped)."""
    fan_in = max(topo.max_degree, 1)
    if net is not None and net.spec.peer == "uniform":
        fan_in = 4 * exp.network.peer_k + 4
    if net is not None and net.max_delay > 0:
        lo_d, hi_d = exp.network.delay
        # Link times differ by message kind: one more tick's arrivals may coincide.
        fan_in *= hi_d - lo_d + 1 + int(link is not None and link.shape[1] > 1)
    return int(threshold.max() - 1 + fan_in)


def _prepend_node(part: partition.Partition) -> partition.Partition:
    prob = np.concatenate([part.node_group_prob[:1], part.node_group_prob], 0)
    return partition.Partition(group_index=part.group_index, group_size=part.group_size,
                               node_group_prob=prob, name=part.name)
