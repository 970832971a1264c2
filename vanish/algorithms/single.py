"""Single-node training: one node alone, no communication (the paper's baseline)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vanish.algorithms import base

PyTree = Any


def end_of_tick(params_N: PyTree, inbox: None, consts: base.Consts,
                tick: base.Tick) -> tuple[PyTree, None, jax.Array]:
    """Nothing merges: params and inbox unchanged, merged_N [N] all False."""
    del consts, tick
    return params_N, inbox, jnp.zeros((base.num_nodes(params_N),), bool)


def make() -> base.Algorithm:
    """One node alone: no inbox, nothing sent, never merges."""
    return base.Algorithm(name="single", init=base.no_inbox, emit=base.no_emit,
                          end_of_tick=end_of_tick)
