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
import difflib
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from vanish import (algorithms, checks, compat, config, data, network, partition, schedule,
                    topology, workdir)
from vanish import clock as clock_lib
from vanish.algorithms import Cadence, Placement
from vanish.errors import ConfigError, PartitionError, TopologyError
from vanish.schedule import WorkList

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------- parsers


def parse_algorithms(text: str) -> tuple[str, ...]:
    """'fl, gossip_vc' -> ('fl', 'gossip_vc'); every name registered, none twice."""
    names = [a.strip() for a in str(text).split(",") if a.strip()]
    if not names:
        raise ConfigError(
            "config.algorithms is empty; e.g. --config.algorithms=fl,gossip,gossip_vc")
    bad = [a for a in names if a not in algorithms.REGISTRY]
    if bad:
        hint = checks.did_you_mean(bad[0], algorithms.REGISTRY)
        raise ConfigError(f"unknown algorithm(s) {bad}{hint} (config.algorithms); choose from "
                          f"{', '.join(algorithms.REGISTRY)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"config.algorithms lists an algorithm twice: {names}")
    return tuple(names)


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


# --------------------------------------------------------------------------- the rule book
#
# A field rule gets the value (already of the field's type) and returns what is wrong as a
# phrase after "config.<field> = <value> ", or None. Rules between fields read the others
# through `View`. Each registry owns its names: the choices below are read from it.

View = Callable[[str], Any]


def _parses(parse: Callable[[Any], Any]) -> checks.Check:
    """The rule of a field with its own parser: the parser's message (it names the field)."""
    def check(value: Any) -> str | None:
        try:
            parse(value)
        except ConfigError as e:
            return str(e)
        return None
    return check


def _seed(value: Any) -> str | None:
    return None if 0 <= value < 2**32 else "must be in [0, 2**32)"


def _first_tick(value: Any) -> str | None:
    ok = value == "random" or re.fullmatch(r"\d+", value.strip())
    return None if ok else "must be a non-negative integer or 'random'"


def _host_port(value: Any) -> str | None:
    if value == "":
        return None
    host, _, port = str(value).rpartition(":")
    if host and port.isdigit() and 1 <= int(port) <= 65535:
        return None
    return ("must be 'host:port' with a port in 1..65535 (e.g. 'host0:1234'), or '' to read "
            "it from the environment")


def _straggler_interval(value: Any) -> str | None:
    if not str(value).strip():
        return None
    try:
        lo, _ = parse_range(value, "network.straggler_interval")
    except ConfigError as e:
        return str(e)
    return None if lo >= 1 else "is a training interval: lo must be >= 1 tick"


_DATASET_NAME = re.compile(r"[a-z0-9_]+(/[a-z0-9_.]+)?(:[0-9.*]+)?")


def _dataset(value: Any) -> str | None:
    key = value.strip().lower().replace("-", "_")
    if key in data.BUILTIN_DATASETS:
        return None
    builtin = f"the built-in datasets are {' and '.join(data.BUILTIN_DATASETS)}"
    if not _DATASET_NAME.fullmatch(key):
        return (f"is not a dataset name; {builtin}, other names are TensorFlow Datasets names "
                "such as 'mnist' or 'cifar10'")
    import importlib.util  # a look-up only: tensorflow_datasets is not imported here

    if importlib.util.find_spec("tensorflow_datasets") is None:
        return (f"is unknown: {builtin}; other names are loaded through TensorFlow Datasets, "
                "which is not installed (pip install 'vanish[data]')")
    return None


def _clock_spec(what: str) -> checks.Check:
    """A clock quantity's spec (vanish/clock.py): a number, a draw, or a readable file."""
    def check(value: Any) -> str | None:
        text = str(value).strip()
        if not text:
            return None
        head = text.partition(":")[0]
        if head not in ("lognormal", "uniform"):
            try:
                float(text)
            except ValueError:
                problem = _readable_file(text)
                return None if problem is None else (
                    f"is neither a number, lognormal:MEDIAN:SIGMA, uniform:LO:HI nor a readable "
                    f"file (it {problem})")
        try:
            clock_lib.parse(text, 1, 0, what, positive=what == "bandwidth")
        except ConfigError as e:
            return str(e)  # names the field
        return None
    return check


def _readable_file(value: Any) -> str | None:
    if not str(value).strip():
        return None
    path = Path(value).expanduser()
    if not path.exists():
        return "names no file"
    if path.is_dir():
        return "is a directory, not a file"
    if not os.access(path, os.R_OK):
        return "is not readable"
    return None


def _model_names() -> tuple[str, ...]:
    from vanish import models  # flax: imported when a model name is checked

    return tuple(models.MODELS)


def _model_inits() -> tuple[str, ...]:
    from vanish import models

    return tuple(models.INITIALIZERS)


def _conv_impls() -> tuple[str, ...]:
    from vanish import models

    return ("auto", *models.CONV_IMPLS)


def _nodes() -> Any:
    from vanish import nodes  # JAX and optax: imported when a check first runs

    return nodes


def _lazy_one_of(names: Callable[[], tuple[str, ...]]) -> checks.Check:
    return lambda value: checks.one_of(names())(value)


FIELD_RULES: dict[str, checks.Check] = {
    "seed": _seed,
    "algorithms": _parses(parse_algorithms),
    "data.name": _dataset,
    "data.partition": _lazy_one_of(lambda: tuple(partition.REGISTRY)),
    "data.test_per_class": checks.at_least(1),
    "model.name": _lazy_one_of(_model_names),
    "model.conv_impl": _lazy_one_of(_conv_impls),
    "model.init": _lazy_one_of(_model_inits),
    "optim.name": _lazy_one_of(lambda: tuple(_nodes().OPTIMIZERS)),
    "optim.lr": checks.finite_at_least(0),
    "optim.momentum": checks.between(0, 1, hi_open=True),
    "optim.schedule": _lazy_one_of(lambda: tuple(_nodes().LR_SCHEDULES)),
    "optim.weight_decay": checks.finite_at_least(0),
    "optim.batch_size": checks.at_least(1),
    "topology.name": _lazy_one_of(lambda: tuple(topology.REGISTRY)),
    "topology.num_nodes": checks.at_least(1),
    "topology.weighting": checks.one_of(topology.WEIGHTINGS),
    "schedule.interval_lo": checks.at_least(1),
    "schedule.interval_hi": checks.at_least(1),
    "schedule.first_tick": _first_tick,
    "schedule.send_every": checks.at_least(1),
    "schedule.threshold": checks.at_least(0, " (0 = the node's in-degree)"),
    "schedule.beta": checks.between(0, 1),
    "correction.target": checks.one_of(("others", "self", "blend", "none")),
    "correction.blend": checks.between(0, 1),
    "correction.eps": checks.finite_at_least(0),
    "correction.ddof": checks.at_least(0),
    "correction.strength": checks.between(0, 1),
    "network.drop_prob": checks.between(0, 1),
    "network.drop_file": _readable_file,
    "network.delay": _parses(lambda v: parse_range(v, "network.delay")),
    "network.churn_up": checks.finite_at_least(1),
    "network.churn_down": checks.finite_at_least(0),
    "network.churn_trace": _readable_file,
    "network.stragglers": checks.between(0, 1),
    "network.straggler_interval": _straggler_interval,
    "network.peer_k": checks.at_least(0, " (0 = every neighbour)"),
    "network.peer_mode": checks.one_of(network.PEER_MODES),
    "network.redraw_every": checks.at_least(0, " (0 = a fixed graph)"),
    "network.byzantine": checks.between(0, 1, hi_open=True),
    "network.byzantine_attack": checks.one_of(network.ATTACKS),
    "network.byzantine_scale": checks.finite_at_least(0),
    "clock.tick_seconds": checks.finite_at_least(0),
    "clock.compute": _clock_spec("compute"),
    "clock.latency": _clock_spec("latency"),
    "clock.bandwidth": _clock_spec("bandwidth"),
    "run.ticks": checks.at_least(0),
    "run.eval_every": checks.at_least(1),
    "run.target_accuracy": checks.between(0, 1),
    "run.checkpoint_every": checks.at_least(0, " (0 = at every evaluation)"),
    "run.keep_checkpoints": checks.at_least(1),
    "run.wandb_mode": checks.one_of(("", "online", "offline", "disabled")),
    "run.slots": checks.at_least(0, " (0 = chosen from the schedule)"),
    "run.fuse": checks.at_least(0, " (0 = per backend)"),
    "run.max_slots": checks.at_least(1),
    "run.merge_slots": checks.at_least(0, " (0 = 1.5x the mean trainers per tick)"),
    "run.eval_nodes": checks.at_least(1),
    "run.max_nodes_per_chunk": checks.at_least(0, " (0 = no cap)"),
    "run.shard_nodes": checks.one_of(("auto", "true", "false")),
    "run.coordinator_address": _host_port,
    "run.num_processes": checks.at_least(0, " (0 = from the environment)"),
    "run.process_id": checks.at_least(-1, " (-1 = from the environment)"),
    "run.heartbeat_timeout": checks.at_least(1),
}


def _cross_rules(get: View) -> list[str]:
    """The rules between fields (each value already passed its own rule)."""
    found = []
    names = parse_algorithms(get("algorithms"))
    n = get("topology.num_nodes")
    graph = [a for a in names if algorithms.REGISTRY[a].caps.placement is Placement.GRAPH]
    if n < 1:
        found.append(f"config.topology.num_nodes = {n} must be >= 1")
    elif n < 2 and graph:
        found.append(f"config.topology.num_nodes = {n}: {', '.join(graph)} need(s) at least 2 "
                     "nodes to communicate")
    if get("topology.name") == "edge_list":
        path = get("topology_args.edge_list.path")
        problem = "is empty" if not path.strip() else _readable_file(path)
        if problem:
            found.append("config.topology.name = 'edge_list' needs config.topology_args.edge_list"
                         ".path, a readable file of 'u v' lines; config.topology_args.edge_list."
                         f"path = {path!r} {problem}")
    lo, hi = get("schedule.interval_lo"), get("schedule.interval_hi")
    if hi < lo:
        found.append(f"config.schedule.interval_hi = {hi} is below config.schedule.interval_lo "
                     f"= {lo} (nodes train every U{{interval_lo..interval_hi}} ticks)")
    every, ckpt = get("run.eval_every"), get("run.checkpoint_every")
    if ckpt and ckpt % every:
        found.append(f"config.run.checkpoint_every = {ckpt} is not a multiple of "
                     f"config.run.eval_every = {every} (checkpoints are written at evaluations)")
    if get("run.wandb") and not get("run.wandb_project").strip():
        found.append("config.run.wandb_project is empty (W&B needs a project name)")
    if get("network.churn_down") > 0 and get("network.churn_trace").strip():
        found.append("config.network.churn_down and config.network.churn_trace are both set: "
                     "choose the Markov model or the trace file")
    if 0 < get("network.churn_down") < 1:
        found.append(f"config.network.churn_down = {get('network.churn_down')!r}: a mean "
                     "offline period is >= 1 tick (or 0)")
    if get("network.peer_mode") == "uniform" and get("network.peer_k") > n - 1 >= 1:
        found.append(f"config.network.peer_k = {get('network.peer_k')}: uniform peer sampling "
                     f"picks k of the other {n - 1} nodes")
    if get("data.download") is not True and get("data.data_dir"):
        path = Path(get("data.data_dir")).expanduser()
        if not path.is_dir():
            found.append(f"config.data.data_dir = {get('data.data_dir')!r} "
                         f"{'is not a directory' if path.exists() else 'does not exist'}")
        elif not any(path.iterdir()):
            found.append(f"config.data.data_dir = {get('data.data_dir')!r} is an empty "
                         "directory")
    if get("data.download") is True and get("data.data_dir"):
        path = Path(get("data.data_dir")).expanduser()
        if path.exists() and not path.is_dir():
            found.append(f"config.data.data_dir = {get('data.data_dir')!r} is not a directory")
    for name, entry in algorithms.REGISTRY.items():  # FL rounds: local steps from mid-round
        if entry.caps.cadence is Cadence.FL_ROUNDS and {"round_ticks", "local_steps"} <= set(
                entry.knobs):
            r = get(f"algorithm_args.{name}.round_ticks")
            e = get(f"algorithm_args.{name}.local_steps")
            if r // 2 + e > r:
                found.append(f"config.algorithm_args.{name}.local_steps = {e} does not fit a "
                             f"round of config.algorithm_args.{name}.round_ticks = {r} ticks "
                             "(local steps start at the round's middle tick)")
    return found


def _type_problem(path: str, default: Any, value: Any) -> str | None:
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "True or False"
    elif isinstance(default, int):
        ok, kind = checks.is_int(value), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    else:
        return None
    return None if ok else f"config.{path} = {value!r} must be {kind}, not {type(value).__name__}"


def _flatten(cfg: Any) -> dict[str, Any]:
    """{dotted path: value} of a config (ConfigDict or nested dict)."""
    return workdir.flatten(_plain(cfg))


def suggest(path: str) -> str:
    """' (did you mean 'optim.lr'?)' for a misspelt field path (its closest field, by the
    whole path or by its last name), or ''."""
    schema = list(config.fields())
    hint = checks.did_you_mean(path, schema)
    if hint:
        return hint
    by_leaf = {p.rsplit(".", 1)[-1]: p for p in reversed(schema)}
    close = difflib.get_close_matches(path.rsplit(".", 1)[-1], by_leaf, n=1, cutoff=0.6)
    return f" (did you mean {by_leaf[close[0]]!r}?)" if close else ""


def problems(cfg: Any) -> list[str]:
    """Everything wrong with `cfg` (a ConfigDict or nested dict), one message per problem."""
    schema = config.fields()
    values = _flatten(cfg)
    found: list[str] = []
    for path in values:
        if path not in schema:
            hint = compat.moved_hint(path) or suggest(path)
            found.append(f"unknown config field {path!r}{hint} (python -m vanish.run --list "
                         "shows every field)")
    missing = [p for p in schema if p not in values]
    if missing and not found:
        found.append(f"the config lacks field(s) {', '.join(missing)}; build configs from "
                     "vanish.config.default_config()")
    if found:
        return found
    for path, fld in schema.items():
        value = values[path]
        problem = _type_problem(path, fld.default, value)
        if problem is None:
            rule = FIELD_RULES.get(path) or _knob_rule(path)
            phrase = rule(value) if rule else None
            if phrase:  # a parser's message names the field itself
                problem = phrase if f"config.{path}" in phrase else (
                    f"config.{path} = {value!r} {phrase}")
        if problem:
            found.append(problem)
    if not found:
        found.extend(_cross_rules(values.__getitem__))
    return found


def _knob_rule(path: str) -> checks.Check | None:
    """The check of a component's knob (`<kind>_args.<name>.<knob>`, from its registry)."""
    parts = path.split(".")
    reg = config.component_registries().get(parts[0]) if len(parts) == 3 else None
    line = reg.get(parts[1]) if reg is not None else None
    knob = line.knobs.get(parts[2]) if line is not None else None
    return knob.check if knob is not None else None


def validate(cfg: Any) -> None:
    """Raises ConfigError naming every bad field of `cfg` (one line); reads no data."""
    found = problems(cfg)
    if found:
        raise ConfigError("; ".join(found))


# ----------------------------------------------------------------------------- the values


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How long, how often, where and how a run is measured and executed (result-neutral
    except `ticks`)."""

    ticks: int
    eval_every: int
    target_accuracy: float
    checkpoint_every: int  # resolved: 0 means every evaluation
    keep_checkpoints: int
    wandb: bool
    wandb_project: str
    wandb_mode: str
    tensorboard: bool


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """Engine strategy: never changes results beyond float summation order."""

    slots: int
    fuse: int
    max_slots: int
    merge_slots: int
    eval_nodes: int
    max_nodes_per_chunk: int
    masked_baseline: bool
    shard_nodes: str

    def capped(self, nodes_at_once: int) -> int:
        """`nodes_at_once` within the memory budget max_nodes_per_chunk (0: no cap)."""
        cap = self.max_nodes_per_chunk
        return min(nodes_at_once, cap) if cap > 0 else nodes_at_once


@dataclasses.dataclass(frozen=True)
class ProcessSettings:
    """Joining a multi-process run (read before anything starts a JAX backend)."""

    distributed: bool
    coordinator_address: str
    num_processes: int
    process_id: int
    heartbeat_timeout: int = 30  # seconds without a heartbeat before JAX counts a process lost


@dataclasses.dataclass(frozen=True)
class ScheduleSettings:
    """The reference tick model."""

    interval: tuple[int, int]
    first_tick: int | str
    send_every: int
    threshold: int  # 0: each node's in-degree (expected arrivals under peer sampling)
    beta: float


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The model: its name, convolution implementation and initializer (`model.*`)."""

    name: str
    conv_impl: str
    init: str


@dataclasses.dataclass(frozen=True)
class OptimSettings:
    """The optimizer (name, lr, momentum, lr schedule, weight decay), the batch size, and
    whether a node's optimizer state is reset when it merges (`optim.*`)."""

    name: str
    lr: float
    momentum: float
    schedule: str
    weight_decay: float
    batch_size: int
    reset_on_merge: bool


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A checked run: every value the layers below need, typed, and nothing else.

    `record` is the config as a plain nested dict, for the workdir and the trackers to store;
    nothing reads it for behaviour.
    """

    algorithms: tuple[str, ...]
    seed: int
    dataset: data.Dataset
    test_per_class: int
    partition: str
    partition_args: Mapping[str, Any]
    graph: topology.Spec
    model: ModelSettings
    optim: OptimSettings
    schedule: ScheduleSettings
    correction: Any  # variance.CorrectionConfig
    algorithm_args: Mapping[str, Mapping[str, Any]]
    network: network.Settings
    clock: clock_lib.Settings
    run: RunSettings
    engine: EngineSettings
    processes: ProcessSettings
    record: Mapping[str, Any]
    neutral: frozenset[str] = config.RESULT_NEUTRAL  # record fields that never change results

    @property
    def config_hash(self) -> str:
        """The digest of the record's result-relevant fields (stored with checkpoints)."""
        return workdir.config_hash(workdir.flatten(self.record), self.neutral)

    def setup(self) -> dict[str, Any]:
        """What a figure's title states: dataset, model, N, topology, partition, seed."""
        return setup_of(self.record)


def setup_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a figure's title states (dataset, model, N, topology, partition, seed) from a
    config or its stored record (vanish/workdir.py's run_config.json)."""
    g = _get(record)
    part = g("data.partition")
    if part.startswith("dirichlet"):
        part += f" alpha={g(f'partition_args.{part}.alpha'):g}"
    return dict(dataset=g("data.name"), model=g("model.name"), num_nodes=g("topology.num_nodes"),
                topology=g("topology.name"), partition=part, seeds=[g("seed")])


def expected_ends(cfg: Any) -> dict[str, int]:
    """{algorithm: the final tick its summary reports} for a (checked) config."""
    validate(cfg)
    g = _get(cfg)
    return {a: int(g("run.ticks")) for a in parse_algorithms(g("algorithms"))}


def _get(cfg: Any) -> View:
    flat = _flatten(cfg)
    return flat.__getitem__


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
                        bool(g("run.tensorboard"))),
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
    g = _get(cfg)
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
        record=_plain(cfg))
    # The knobs of the topology and partition not chosen never change this run.
    exp = dataclasses.replace(exp, neutral=config.RESULT_NEUTRAL | config.idle_knobs(
        workdir.flatten(exp.record)))
    from vanish import resources  # the size model

    resources.check_plan(exp)  # the schedule, the graph and the fault plan over run.ticks
    name = g("data.name").strip().lower().replace("-", "_")
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


def _plain(cfg: Any) -> dict[str, Any]:
    items = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else cfg
    return {k: _plain(v) if isinstance(v, Mapping) else v for k, v in items.items()}


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
    broadcast is not delayed (round ends are deadlines)."""
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
    return int(exp.algorithm_args[name][knob]) if knob else 1


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
    if caps.round_knob is not None:
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
        is_client=jnp.asarray(is_client), round_ticks=jnp.int32(round_ticks(exp, name)),
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



# ------------------------------------------------------------------------------- the listing


def _first_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def _model_line(fn: Any) -> str:
    args = getattr(fn, "args", None)  # a functools.partial of models.ConvNet
    if args:
        convs, dense = args
        layers = [f"conv {c.features}@{c.kernel}x{c.kernel}" for c in convs]
        return "convolutional net: " + ", ".join(layers + [f"dense {d}" for d in dense])
    return _first_line(fn)


def _lines(reg: Mapping[str, Any], section: str) -> dict[str, str]:
    """{name: its description, then one line per knob} of a registry, for `listing`."""
    return {name: line.description + "".join(
        f"\n      {section}.{name}.{k} = {kn.default!r}: {kn.help}"
        for k, kn in line.knobs.items()) for name, line in reg.items()}


def listing() -> str:
    """Every registered algorithm, topology, model, partition and dataset with its one-line
    description (and an algorithm's own knobs with defaults), then every config field with
    its default and help: `python -m vanish.run --list`. One source: the registries and the
    schema."""
    from vanish import models

    out: list[str] = []

    def table(title: str, rows: Mapping[str, str]) -> None:
        out.append(f"{title}:")
        width = max(map(len, rows), default=0)
        out.extend(f"  {name:<{width}}  {text}" for name, text in rows.items())
        out.append("")

    table("algorithms (config.algorithms, comma separated)",
          _lines(algorithms.REGISTRY, "algorithm_args"))
    table("topologies (config.topology.name; knobs: config.topology_args.<name>)",
          _lines(topology.REGISTRY, "topology_args"))
    table("models (config.model.name)", {k: _model_line(v) for k, v in models.MODELS.items()})
    table("partitions (config.data.partition; knobs: config.partition_args.<name>)",
          _lines(partition.REGISTRY, "partition_args"))
    table("datasets (config.data.name; knobs: config.dataset_args.<name>)",
          {**_lines(data.REGISTRY, "dataset_args"), "<tfds name>": data.TFDS_DESCRIPTION})
    fields = {f"config.{path} = {f.default!r}": f.help for path, f in config.fields().items()}
    table("config fields (--config.<section>.<field>=<value>)", fields)
    return "\n".join(out)
