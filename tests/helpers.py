"""Shared test helpers: small configs and one algorithm's simulation from a config."""

from __future__ import annotations

from typing import Any

from vanish import build, compat, config, train


def tiny_config(**sections: Any) -> Any:
    """A small synthetic config (MLP, 6 nodes, 40 ticks); `sections` sets dotted fields,
    e.g. tiny_config(**{"topology.num_nodes": 8})."""
    cfg = config.default_config()
    cfg.data.name = "synthetic"
    cfg.dataset_args.synthetic.num_train = 600
    cfg.dataset_args.synthetic.num_test = 200
    cfg.data.test_per_class = 5
    cfg.model.name, cfg.optim.batch_size, cfg.optim.lr = "mlp", 8, 0.05
    cfg.topology.num_nodes, cfg.topology_args.random_regular.degree = 6, 3
    cfg.run.ticks, cfg.run.eval_every = 40, 10
    cfg.schedule.interval_lo, cfg.schedule.interval_hi = 2, 4
    set_fields(cfg, sections)
    return cfg


def small_config(**overrides: Any) -> Any:
    """The algorithm tests' synthetic set-up (MLP, 6 nodes of a random 3-regular graph, 20
    ticks, FL rounds of 5); `overrides` by short name, as `override`."""
    cfg = config.default_config()
    cfg.data.name, cfg.data.test_per_class = "synthetic", 3
    cfg.dataset_args.synthetic.num_train, cfg.dataset_args.synthetic.num_test = 400, 100
    cfg.model.name, cfg.optim.batch_size, cfg.optim.lr = "mlp", 8, 0.05
    cfg.topology.num_nodes, cfg.topology.name = 6, "random_regular"
    cfg.topology_args.random_regular.degree = 3
    cfg.run.ticks, cfg.schedule.interval_lo, cfg.schedule.interval_hi = 20, 2, 4
    return override(cfg, fl_round_ticks=5, **overrides)


def set_fields(cfg: Any, fields: dict[str, Any]) -> Any:
    """Sets {dotted path: value} on a config; returns it."""
    for path, value in fields.items():
        *sections, leaf = path.split(".")
        node = cfg
        for s in sections:
            node = node[s]
        node[leaf] = value
    return cfg


def make_sim(cfg: Any, name: str, dataset: Any = None) -> train.Simulation:
    """One algorithm's Simulation of `cfg` (checked by the builder as an experiment of that
    algorithm alone), on `dataset` if given."""
    cfg = cfg.copy_and_resolve_references()
    cfg.algorithms = name
    return train.Simulation(build.experiment(cfg, dataset=dataset), name)


def override(cfg: Any, **flat: Any) -> Any:
    """Sets fields by their short (pre-section) names, e.g. override(cfg, num_nodes=3,
    fl_round_ticks=5): each goes to its place(s) in the sections (compat.OLD_NAMES); a dotted
    name is set as it is. Returns cfg."""
    for name, value in flat.items():
        for path in compat.OLD_NAMES.get(name, (name,)):
            set_fields(cfg, {path: value})
    return cfg
