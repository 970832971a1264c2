"""Algorithms as values: each name maps to a factory Hyper -> Algorithm (see base.py).

    from vanish import algorithms
    algo = algorithms.get("gossip_vc", algorithms.Hyper(correction=vc))

Adding a rule is one file here plus one line in REGISTRY (docs/ARCHITECTURE.md shows the
trimmed mean as the worked example). The registry names its factories by module and
attribute and imports them on first use, so reading `NAMES` (the config check does, before
JAX is imported) costs nothing.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable

# name -> (module under vanish.algorithms, factory attribute, keyword arguments)
REGISTRY: dict[str, tuple[str, str, dict[str, Any]]] = {
    "single": ("single", "make", {}),
    "fl": ("fedavg", "make", {}),
    "fl_sched": ("fedavg", "make_sched", {}),
    "gossip": ("gossip", "make", {"corrected": False}),
    "gossip_vc": ("gossip", "make", {"corrected": True}),
    "gossip_part": ("partitioned", "make", {}),
    "gossip_trim": ("trimmed_mean", "make", {"corrected": False}),
    "gossip_trim_vc": ("trimmed_mean", "make", {"corrected": True}),
    "gossip_median": ("robust", "make", {"rule": "median", "corrected": False}),
    "gossip_median_vc": ("robust", "make", {"rule": "median", "corrected": True}),
    "gossip_krum": ("robust", "make", {"rule": "krum", "corrected": False}),
    "gossip_krum_vc": ("robust", "make", {"rule": "krum", "corrected": True}),
    "dpsgd": ("dpsgd", "make", {"corrected": False}),
    "dpsgd_vc": ("dpsgd", "make", {"corrected": True}),
}
NAMES: tuple[str, ...] = tuple(REGISTRY)


def factory(name: str) -> Callable[..., Any]:
    """The registered factory of `name`: a callable Hyper -> Algorithm."""
    if name not in REGISTRY:
        raise KeyError(f"unknown algorithm {name!r}; choose from {', '.join(NAMES)}")
    module, attr, kwargs = REGISTRY[name]
    fn = getattr(importlib.import_module(f"vanish.algorithms.{module}"), attr)
    return functools.partial(fn, **kwargs)


def get(name: str, hp: Any) -> Any:
    """Builds the Algorithm `name` (a vanish.algorithms.base.Algorithm) from hyperparameters."""
    return factory(name)(hp)


def __getattr__(attr: str) -> Any:  # the types of base.py, imported on first use
    if attr in ("Algorithm", "Consts", "Hyper", "Sent", "Tick"):
        from vanish.algorithms import base

        return getattr(base, attr)
    raise AttributeError(f"module 'vanish.algorithms' has no attribute {attr!r}")


__all__ = ["REGISTRY", "NAMES", "factory", "get", "Algorithm", "Consts", "Hyper", "Sent", "Tick"]
