"""Synchronous decentralized SGD (D-PSGD): every node trains every tick, then every round
params <- W @ params over the topology's mixing matrix, optionally variance corrected (the
target of node i is the W-weighted mean of the pre-mix variances of the models it mixes)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vanish import mixing, variance
from vanish.algorithms import base
from vanish.topology import Graph

PyTree = Any


def sync_mix(params_N: PyTree, graph: Graph, corr: variance.CorrectionConfig) -> PyTree:
    """One D-PSGD mixing step, params <- W @ params, with optional variance correction."""
    mixed_N = mixing.mix(params_N, graph)
    if corr.target == "none":
        return mixed_N
    return corrected(mixed_N, mixing.mix(variance.correctable_variance(params_N, corr), graph),
                     corr)


def corrected(mixed_N: PyTree, target_N: PyTree, corr: variance.CorrectionConfig) -> PyTree:
    """Each correctable leaf of each node rescaled to its target variance."""
    mask = variance.correctable_mask(mixed_N, corr, stacked=True)

    def fix(x_N: jax.Array, t_N: jax.Array, correct: bool) -> jax.Array:
        if not correct:
            return x_N
        return jax.vmap(lambda x, t: variance.rescale(x, t, corr))(x_N, t_N)

    return jax.tree.map(fix, mixed_N, target_N, mask)


def sharded_mix(params_n: PyTree, graph: Graph, corr: variance.CorrectionConfig,
                tick: base.Tick) -> PyTree:
    """`sync_mix` of this device's n rows: every model is gathered, only own rows are mixed
    (the variances travel as their [n] per-leaf values, not recomputed from all models)."""
    n = base.num_nodes(params_n)
    mixed_n = mixing.mix_rows(base.all_nodes(params_n, tick), graph, tick.offset, n)
    if corr.target == "none":
        return mixed_n
    var_all = base.all_nodes(variance.correctable_variance(params_n, corr), tick)
    return corrected(mixed_n, mixing.mix_rows(var_all, graph, tick.offset, n), corr)


def end_of_tick(corr: variance.CorrectionConfig, params_N: PyTree, inbox: None,
                consts: base.Consts, tick: base.Tick) -> tuple[PyTree, None, jax.Array]:
    """At a round's end (`tick.round_end`), mixes every node with W, else changes nothing.

    Unsharded: `sync_mix`; under shard_map: `sharded_mix` of this device's rows.

    Returns:
      (params_N, None, merged_N): merged_N [N] bool, all True at a round's end, else all False.
    """
    n = base.num_nodes(params_N)

    def mix(p: PyTree) -> PyTree:
        if tick.axis is None:
            return sync_mix(p, consts.graph, corr)
        return sharded_mix(p, consts.graph, corr, tick)

    params_N = jax.lax.cond(tick.round_end, mix, lambda p: p, params_N)
    return params_N, inbox, jax.numpy.broadcast_to(tick.round_end, (n,))


def mixing_traffic(merged_N: jax.Array, inbox: Any, consts: base.Consts,
                   tick: base.Tick) -> tuple[jax.Array, jax.Array]:
    """A mixing round: every node sends its model to each out-neighbour and receives one
    from each in-neighbour."""
    n = merged_N.shape[0]
    g = consts.graph
    out_deg = base.local_rows(jnp.sum(g.out_valid.astype(jnp.int32), axis=1), tick, n)
    in_deg = base.local_rows(g.degree.astype(jnp.int32), tick, n)
    on = merged_N.astype(jnp.int32)
    return (on * out_deg)[:, None], (on * in_deg)[:, None]


def make(*, corrected: bool = False, local_steps: int = 1,
         correction: variance.CorrectionConfig | None = None) -> base.Algorithm:
    """D-PSGD: mix with W at every round's end (`local_steps` ticks a round: a plan value);
    `corrected` rescales the mixed kernels by `correction` (default: target 'others')."""
    del local_steps
    corr = base.correction_for(corrected, correction)
    return base.Algorithm(
        name="dpsgd_vc" if corrected else "dpsgd", init=base.no_inbox, emit=base.no_emit,
        end_of_tick=lambda p, ib, c, t: end_of_tick(corr, p, ib, c, t),
        wire=base.FULL_MODEL._replace(rounds=mixing_traffic, sends=False))
