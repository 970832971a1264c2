"""Algorithms as values: each name maps to a factory Hyper -> Algorithm (see base.py).

    algo = algorithms.get("gossip_vc", algorithms.Hyper(correction=vc))

Adding a rule is one file here plus one line in REGISTRY (docs/ARCHITECTURE.md shows the
trimmed mean as the worked example).
"""

from __future__ import annotations

import functools
from typing import Callable

from vanish.algorithms import dpsgd, fedavg, gossip, partitioned, single, trimmed_mean
from vanish.algorithms.base import Algorithm, Consts, Hyper, Sent, Tick

REGISTRY: dict[str, Callable[[Hyper], Algorithm]] = {
    "single": single.make,
    "fl": fedavg.make,
    "fl_sched": fedavg.make_sched,
    "gossip": functools.partial(gossip.make, corrected=False),
    "gossip_vc": functools.partial(gossip.make, corrected=True),
    "gossip_part": partitioned.make,
    "gossip_trim": functools.partial(trimmed_mean.make, corrected=False),
    "gossip_trim_vc": functools.partial(trimmed_mean.make, corrected=True),
    "dpsgd": functools.partial(dpsgd.make, corrected=False),
    "dpsgd_vc": functools.partial(dpsgd.make, corrected=True),
}
NAMES: tuple[str, ...] = tuple(REGISTRY)
# Algorithms that read the variance-correction fields of the config.
CORRECTED: frozenset[str] = frozenset({"gossip_vc", "gossip_trim_vc", "dpsgd_vc"})


def get(name: str, hp: Hyper) -> Algorithm:
    if name not in REGISTRY:
        raise KeyError(f"unknown algorithm {name!r}; choose from {', '.join(NAMES)}")
    return REGISTRY[name](hp)


__all__ = ["Algorithm", "Consts", "Hyper", "Sent", "Tick", "REGISTRY", "NAMES", "get"]
