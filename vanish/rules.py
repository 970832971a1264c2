"""The rule book of the run config: each field's parser and check, the rules between fields,
the names each registry owns; `problems(cfg)` lists everything wrong, `validate` refuses it in
one line. Reads no file but those a field names, loads no data (vanish/build.py does the rest).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ml_collections

from vanish import (algorithms, checks, compat, config, data, network, partition, registry,
                    topology, workdir)
from vanish import clock as clock_lib
from vanish.algorithms import Cadence, Placement
from vanish.errors import ConfigError


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


def parse_names(text: str) -> tuple[str, ...]:
    """'a, b' -> ('a', 'b') (a comma-separated list of names; '' -> ())."""
    return tuple(n.strip() for n in str(text).split(",") if n.strip())


def _metric_names(value: Any) -> str | None:
    from vanish import metrics  # JAX: only when the field is checked

    names = parse_names(value)
    bad = [n for n in names if n not in metrics.REGISTRY]
    if bad:
        return (f"names unknown metric(s) {bad}{checks.did_you_mean(bad[0], metrics.REGISTRY)}; "
                f"choose from {', '.join(metrics.REGISTRY)}")
    if len(set(names)) != len(names):
        return "lists a metric twice"
    return None


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
    return checks.parses(parse, ConfigError)


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
    key = registry.key(value)
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

    return tuple(models.REGISTRY)


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
    "run.metrics": _metric_names,
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
            if r and r // 2 + e > r:  # (round_ticks 0: no deadline, nothing to fit)
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
    return workdir.flatten(plain(cfg))


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
            rule = FIELD_RULES.get(path) or knob_rule(path)
            phrase = rule(value) if rule else None
            if phrase:  # a parser's message names the field itself
                problem = phrase if f"config.{path}" in phrase else (
                    f"config.{path} = {value!r} {phrase}")
        if problem:
            found.append(problem)
    if not found:
        found.extend(_cross_rules(values.__getitem__))
    return found


def knob_rule(path: str) -> checks.Check | None:
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


def view(cfg: Any) -> View:
    """The reader of a config (ConfigDict or nested dict): view(cfg)("optim.lr")."""
    flat = _flatten(cfg)
    return flat.__getitem__


def plain(cfg: Any) -> dict[str, Any]:
    """A config as nested plain dicts (what a record stores)."""
    items = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else cfg
    return {k: plain(v) if isinstance(v, Mapping) else v for k, v in items.items()}
