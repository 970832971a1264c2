"""The algorithm registry: each name, what it is, its own knobs and what it needs from the engine.

    from vanish import algorithms
    algo = algorithms.make("gossip_krum", f=2, merge_slots=8, inbox_capacity=16)
    algorithms.REGISTRY["gossip_krum"].knobs      # {'f': Knob(default=1, help=..., check=...)}

An algorithm is a value (base.Algorithm: init / emit / end_of_tick) made by its module's
factory from keyword arguments, optax style. Its registry line declares its knobs (they
become the config section `algorithm_args.<name>`) and its capabilities: where its nodes sit
(the configured graph, a star with a server, alone), when they train (the gossip schedule,
every tick, FL rounds) and what else the builder must supply. Adding a rule is one file under
vanish/algorithms/ plus one line here (or `register` from your own code). Factories are
imported on first use, so reading the registry (the config schema does) imports no JAX.
"""

from __future__ import annotations

import enum
import importlib
import inspect
from typing import Any, Callable, Mapping, NamedTuple

from vanish import checks
from vanish.registry import Knob as Knob  # one knob shape for every registry


class Placement(enum.Enum):
    """Where an algorithm's nodes sit."""

    GRAPH = "graph"  # the configured topology
    STAR = "star"  # node 0 is a server that never trains, nodes 1..N its clients
    ISOLATED = "isolated"  # one node alone, no communication


class Cadence(enum.Enum):
    """When an algorithm's nodes train."""

    GOSSIP = "gossip"  # the reference tick schedule: every U{lo..hi} ticks
    EVERY_TICK = "every_tick"  # synchronous rounds: every node, every tick
    FL_ROUNDS = "fl_rounds"  # clients train E steps at each round's middle tick
    ASYNC = "async"  # clients train in cycles of their own, no rounds (the rule's schedule hook)


class Capabilities(NamedTuple):
    """What the builder and the engine must do for an algorithm (declared, never guessed)."""

    placement: Placement = Placement.GRAPH
    cadence: Cadence = Cadence.GOSSIP
    shared_init: bool = False  # every node starts from one model (FL)
    shardable: bool = True  # runs with the node axis split over devices
    corrected: bool = False  # reads the `correction` section (the *_vc rules)
    message_buffers: bool = False  # holds the received models themselves (inbox_capacity)
    round_knob: str | None = None  # its knob that sets the round length in ticks, if any

    @property
    def has_server(self) -> bool:
        return self.placement is Placement.STAR

    @property
    def synchronous(self) -> bool:
        """Mixes over the whole graph every round (no messages: faults do not apply)."""
        return self.cadence is Cadence.EVERY_TICK


class PlanRequest(NamedTuple):
    """What a rule's `schedule` hook is told: the nodes, the horizon, the run's seed, which
    nodes train (False: a server), its own knobs (defaults filled in) and the run's timing:
    its simulated clock and its network plan (None: no clock / a fault-free network)."""

    n: int
    ticks: int
    seed: int
    trainers: Any  # np.ndarray [n] bool
    knobs: Mapping[str, Any]
    clock: Any = None  # vanish.clock.Clock of these n nodes (build.clock_for), or None
    network: Any = None  # vanish.network.Plan (delays, link ticks), or None


class Entry(NamedTuple):
    """A registry line: the factory (`module:attr` under vanish.algorithms, a full dotted
    `package.module:attr`, or a callable), fixed keyword arguments, a one-line description,
    the algorithm's own knobs and its capabilities, and the hooks through which a rule plans
    for itself (same spelling as the factory; None: what its cadence implies):

    * `schedule(request: PlanRequest) -> schedule.Schedule`: when its nodes train (FL
      rounds: which clients, how many local steps; asynchronous FL: each client's cycles);
      the builder also asks it for an empty horizon before the workdir is touched, so a
      ValueError it raises (a knob against the node count) is refused as one line;
    * `consts(knobs, template, seed) -> dict`: its own device constants (Consts fields,
      e.g. partitioned gossip's `part_ids`), from one node's parameter shapes (`template`,
      ShapeDtypeStructs); the same dict reaches its message sizes (`Wire.sizes`).
    """

    factory: str | Callable[..., Any]
    description: str
    fixed: dict[str, Any] = {}
    knobs: dict[str, Knob] = {}
    caps: Capabilities = Capabilities()
    schedule: str | Callable[..., Any] | None = None
    consts: str | Callable[..., Any] | None = None


_FRACTION = Knob(0.2, "fraction of the held models cut at each end, per coordinate",
                 checks.between(0, 0.5, hi_open=True))
_KRUM_F = Knob(1, "Byzantine neighbours tolerated: each message scores its m - f - 2 nearest",
               checks.at_least(0))
_ROUND = Knob(10, "ticks per FL round", checks.at_least(1))
_FRACTION_CLIENTS = Knob(1.0, "fraction of clients sampled per round",
                         checks.between(0, 1, lo_open=True))
_SYNC_STEPS = Knob(1, "ticks per synchronous round (local steps between mixes)",
                   checks.at_least(1))
_FL = Capabilities(placement=Placement.STAR, cadence=Cadence.FL_ROUNDS, shared_init=True,
                   round_knob="round_ticks")
# Round-based training: round_ticks, local_steps and client_fraction knobs (vanish/schedule.py).
_ROUNDS_PLAN = "vanish.schedule:rounds_plan"
_CORRECTED = Capabilities(corrected=True)
# Asynchronous FL (vanish/algorithms/fedasync.py): the rule plans its clients' cycles.
_ASYNC = Capabilities(placement=Placement.STAR, cadence=Cadence.ASYNC, shared_init=True,
                      shardable=False)
_ASYNC_PLAN = "fedasync:plan"
_ASYNC_KNOBS = dict(
    a=Knob(0.5, "staleness exponent: an update tau server versions old is weighted "
           "(1 + tau)^-a (0: no discount)", checks.finite_at_least(0)),
    local_steps=Knob(1, "local steps per cycle, one per tick (on the clock: every "
                     "ceil(compute / tick_seconds) ticks)", checks.at_least(1)),
    concurrency=Knob(0, "clients training at once; the others wait for a slot, round robin "
                     "(0 = all clients)", checks.at_least(0)))
_BUFFERS = Capabilities(message_buffers=True)
_BUFFERS_VC = Capabilities(message_buffers=True, corrected=True)
_FLAG = dict(
    subspace=Knob(8, "dimension m of the subspace fitted to the received updates (at most the "
                  "messages a node can hold)", checks.at_least(1)),
    lam=Knob(0.0, "weight of the pairwise-difference term (lambda; 0: the flag median of the "
             "updates)", checks.finite_at_least(0)),
    iterations=Knob(1, "FlagIRLS rounds (the authors run one)", checks.at_least(1)),
    eps=Knob(1e-6, "the IRLS weights' floor: w = (|1 - ||Y^T u||^2| + eps)^(-1/4)",
             checks.finite_at_least(0, strict=True)))
_TOPK = Knob(0.1, "fraction of each layer's coordinates a message carries (top-k of the "
             "residual)", checks.between(0, 1, lo_open=True))
_COMPRESSED = Capabilities(shardable=False)
_COMPRESSED_VC = Capabilities(shardable=False, corrected=True)
_SYNC = Capabilities(cadence=Cadence.EVERY_TICK, round_knob="local_steps")
_ALIGN = dict(
    method=Knob("weight", "how a received model's hidden units are matched to the receiver's: "
                "weight (Git Re-Basin weight matching), activation (correlation of post-ReLU "
                "activations on a batch of the receiver's data, DIMAT) or none",
                checks.one_of(("weight", "activation", "none"))),
    sweeps=Knob(3, "weight matching: coordinate-descent sweeps over the layers",
                checks.at_least(1)),
    batch=Knob(64, "activation matching: samples of the receiver's own data per alignment",
               checks.at_least(1)),
    layers=Knob("", "comma-separated hidden layers to align, e.g. Dense_0,Dense_1 (empty: all)",
                checks.comma_names(r"[A-Za-z]+_[0-9]+", "Conv_1,Dense_0")),
    solver=Knob("auto", "linear assignment: hungarian (optax, in the compiled step), scipy "
                "(host callback) or auto (scipy on CPU, where it is faster; else hungarian)",
                checks.one_of(("auto", "hungarian", "scipy"))))

REGISTRY: dict[str, Entry] = {
    "single": Entry("single:make", "one node trains alone, no communication",
                    caps=Capabilities(placement=Placement.ISOLATED)),
    "fl": Entry("fedavg:make", "federated averaging: clients train E steps per round from the "
                "server's model, the server averages them",
                knobs=dict(round_ticks=Knob(10, "ticks per FL round, a deadline (0: none, a "
                                            "round lasts until every participant's update "
                                            "has arrived: the slowest client holds it)",
                                            checks.at_least(0)),
                           client_fraction=_FRACTION_CLIENTS,
                           local_steps=Knob(1, "local steps per round, from its middle tick "
                                            "(round_ticks 0: from its first)",
                                            checks.at_least(1))),
                caps=_FL, schedule="fedavg:plan"),
    "fl_sched": Entry("fedavg:make_sched", "FL variant: clients train on the gossip schedule, "
                      "the server averages what they hold each round",
                      knobs=dict(round_ticks=_ROUND, client_fraction=_FRACTION_CLIENTS),
                      caps=_FL._replace(cadence=Cadence.GOSSIP, shardable=False)),
    "gossip": Entry("gossip:make", "gossip learning, plain averaging of the received models"),
    "gossip_vc": Entry("gossip:make", "gossip learning with variance-corrected averaging",
                       dict(corrected=True), caps=_CORRECTED),
    "gossip_classic": Entry("classic:make", "classic gossip learning: send to one random "
                            "neighbour, merge each arrival at once, weighted by model age",
                            knobs=dict(age_weighted=Knob(True, "weight merged models by their "
                                                               "age (else equal weights)")),
                            caps=Capabilities(shardable=False)),
    "gossip_part": Entry("partitioned:make", "gossip with partitioned / subsampled messages "
                         "(Hegedus et al.)",
                         knobs=dict(num_partitions=Knob(4, "fixed partitions of the parameters",
                                                        checks.at_least(1)),
                                    subsample=Knob(0.0, "> 0: a random fraction of the "
                                                   "coordinates per message instead",
                                                   checks.between(0, 1))),
                         consts="partitioned:device_consts"),
    "gossip_trim": Entry("trimmed_mean:make", "coordinate-wise trimmed mean of the received "
                         "models", knobs=dict(fraction=_FRACTION), caps=_BUFFERS),
    "gossip_trim_vc": Entry("trimmed_mean:make", "trimmed mean, variance corrected",
                            dict(corrected=True), knobs=dict(fraction=_FRACTION),
                            caps=_BUFFERS_VC),
    "gossip_median": Entry("robust:make", "coordinate-wise median of the received models",
                           dict(rule="median"), caps=_BUFFERS),
    "gossip_median_vc": Entry("robust:make", "coordinate-wise median, variance corrected",
                              dict(rule="median", corrected=True), caps=_BUFFERS_VC),
    "gossip_krum": Entry("robust:make", "Krum: the received model closest to its neighbours",
                         dict(rule="krum"), knobs=dict(f=_KRUM_F), caps=_BUFFERS),
    "gossip_krum_vc": Entry("robust:make", "Krum, variance corrected",
                            dict(rule="krum", corrected=True), knobs=dict(f=_KRUM_F),
                            caps=_BUFFERS_VC),
    "gossip_flag": Entry("flag:make", "Flag Aggregator: the received updates projected on a "
                         "subspace fitted by FlagIRLS (Almasi et al.)", knobs=_FLAG,
                         caps=_BUFFERS),
    "gossip_flag_vc": Entry("flag:make", "Flag Aggregator, variance corrected",
                            dict(corrected=True), knobs=_FLAG, caps=_BUFFERS_VC),
    "gossip_topk": Entry("compressed:make", "compressed gossip: top-k residuals to the sender's "
                         "public copy (error feedback)",
                         dict(compressor="topk"), knobs=dict(fraction=_TOPK), caps=_COMPRESSED),
    "gossip_topk_vc": Entry("compressed:make", "top-k compressed gossip, variance corrected",
                            dict(compressor="topk", corrected=True), knobs=dict(fraction=_TOPK),
                            caps=_COMPRESSED_VC),
    "gossip_q8": Entry("compressed:make", "compressed gossip: stochastic int8 residuals to the "
                       "sender's public copy (error feedback)", dict(compressor="int8"),
                       caps=_COMPRESSED),
    "gossip_q8_vc": Entry("compressed:make", "int8 compressed gossip, variance corrected",
                          dict(compressor="int8", corrected=True), caps=_COMPRESSED_VC),
    "dpsgd": Entry("dpsgd:make", "synchronous decentralized SGD: train, then mix with W",
                   knobs=dict(local_steps=_SYNC_STEPS), caps=_SYNC),
    "dpsgd_vc": Entry("dpsgd:make", "D-PSGD with variance-corrected mixing", dict(corrected=True),
                      knobs=dict(local_steps=_SYNC_STEPS), caps=_SYNC._replace(corrected=True)),
    "gossip_align": Entry("align:make", "gossip that aligns each received model's hidden units "
                          "to the receiver's (Git Re-Basin / DIMAT matching), then averages",
                          knobs=_ALIGN, caps=_BUFFERS._replace(shardable=False)),
    "gossip_align_vc": Entry("align:make", "aligned gossip, variance corrected",
                             dict(corrected=True), knobs=_ALIGN,
                             caps=_BUFFERS_VC._replace(shardable=False)),
    "dimat": Entry("align:make_dimat", "DIMAT: synchronous rounds; each node aligns its "
                   "in-neighbours to itself (activation matching), mixes with W, trains",
                   knobs={**_ALIGN, "method": _ALIGN["method"]._replace(default="activation"),
                          "local_steps": _SYNC_STEPS},
                   caps=_SYNC._replace(shardable=False)),
    "dimat_vc": Entry("align:make_dimat", "DIMAT with variance-corrected mixing (the target as "
                      "dpsgd_vc's: the W-weighted mean of the mixed models' variances)",
                      dict(corrected=True),
                      knobs={**_ALIGN, "method": _ALIGN["method"]._replace(default="activation"),
                             "local_steps": _SYNC_STEPS},
                      caps=_SYNC._replace(shardable=False, corrected=True)),
    "modest": Entry("modest:make", "MoDeST: per round a sample of nodes trains and a sample of "
                    "aggregators averages, no server",
                    knobs=dict(round_ticks=_ROUND,
                               client_fraction=Knob(0.2, "fraction of the nodes sampled to "
                                                    "train per round",
                                                    checks.between(0, 1, lo_open=True)),
                               local_steps=Knob(1, "local steps per round, from its middle tick",
                                                checks.at_least(1)),
                               aggregators=Knob(4, "aggregators sampled per round (from the "
                                                "seed and the round index; all nodes if "
                                                "more than N)",
                                                checks.at_least(1))),
                    caps=Capabilities(cadence=Cadence.FL_ROUNDS, shared_init=True,
                                      shardable=False, round_knob="round_ticks"),
                    schedule=_ROUNDS_PLAN),
    "fl_async": Entry("fedasync:make_async", "FedAsync: each client update is mixed into the "
                      "server's model as it arrives, weighted alpha (1 + staleness)^-a; no "
                      "rounds",
                      knobs=dict(alpha=Knob(0.6, "mixing weight of a fresh update: x_s <- "
                                            "(1 - a_t) x_s + a_t x_c, a_t = alpha (1 + tau)^-a",
                                            checks.between(0, 1, lo_open=True)),
                                 **_ASYNC_KNOBS),
                      caps=_ASYNC, schedule=_ASYNC_PLAN),
    "fl_buff": Entry("fedasync:make_buff", "FedBuff: the server buffers staleness-weighted "
                     "client deltas and applies their mean every K updates; no rounds",
                     knobs=dict(K=Knob(10, "buffer size: updates per server step (at most "
                                       "the clients)", checks.at_least(1)),
                                eta=Knob(1.0, "server learning rate: x_s <- x_s + eta * "
                                         "mean(buffered deltas)",
                                         checks.finite_at_least(0, strict=True)),
                                **_ASYNC_KNOBS),
                     caps=_ASYNC, schedule=_ASYNC_PLAN),
}
NAMES: tuple[str, ...] = tuple(REGISTRY)  # the built-in names (REGISTRY may grow)

# What the builder supplies to factories that accept it (by keyword): sizes it derives from
# the plan, the `correction` section (variance.CorrectionConfig) for corrected rules, and the
# flax model (the alignment rules read its permutation spec and run it on activations).
BUILDER_ARGS = ("merge_slots", "inbox_capacity", "correction", "model")


def register(name: str, entry: Entry) -> None:
    """Adds a rule (from your own code or a test); its knobs join the config schema."""
    if name in REGISTRY:
        raise ValueError(f"algorithm {name!r} is already registered")
    REGISTRY[name] = entry


def _resolve(fn: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(fn):
        return fn
    module, _, attr = fn.partition(":")
    full = module if "." in module else f"vanish.algorithms.{module}"
    return getattr(importlib.import_module(full), attr)


def factory(name: str) -> Callable[..., Any]:
    """The registered factory of `name` (imported on first use)."""
    if name not in REGISTRY:
        raise KeyError(f"unknown algorithm {name!r}; choose from {', '.join(REGISTRY)}")
    return _resolve(REGISTRY[name].factory)


def hook(name: str, which: str) -> Callable[..., Any] | None:
    """`name`'s `which` hook ("schedule" or "consts"; see Entry), imported on first use, or
    None when the rule declares none."""
    fn = getattr(REGISTRY[name], which)
    return None if fn is None else _resolve(fn)


def knobs_of(name: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """`name`'s knobs: the defaults, overridden by `given`."""
    return {**{k: knob.default for k, knob in REGISTRY[name].knobs.items()}, **(given or {})}


def make(name: str, **kwargs: Any) -> Any:
    """Builds the Algorithm `name` from its knobs (defaults for those not given) and the
    builder arguments its factory accepts; returns a base.Algorithm carrying its name and
    declared capabilities."""
    entry = REGISTRY[name] if name in REGISTRY else None
    fn = factory(name)
    assert entry is not None
    unknown = set(kwargs) - set(entry.knobs) - set(BUILDER_ARGS)
    if unknown:
        raise TypeError(f"algorithm {name!r} has no knob(s) {sorted(unknown)}; its knobs: "
                        f"{sorted(entry.knobs) or 'none'}")
    accepted = inspect.signature(fn).parameters
    args = {k: v for k, v in kwargs.items() if k in entry.knobs or k in accepted}
    algo = fn(**entry.fixed, **knobs_of(name, args))
    return algo._replace(name=name, caps=entry.caps)


__all__ = ["REGISTRY", "NAMES", "Entry", "Knob", "Capabilities", "Placement", "Cadence",
           "PlanRequest", "register", "factory", "hook", "knobs_of", "make"]
