"""Gossip learning: push to every out-neighbour, merge at `threshold` messages.

    inbox = init(params_N)    # sum of received models, count, sum of their layer variances

Plain gossip is target 'none'; `gossip_vc` rescales each merged kernel to the mean variance of
the received models. The inbox is a fixed-shape accumulator, so a send is a
scatter-add over the message's routed receivers (`mixing.push_to`) and a merge needs no buffers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vanish import mixing, variance
from vanish.algorithms import base

PyTree = Any


class Inbox(NamedTuple):
    """Gossip's receive accumulator: what each node received since its last merge."""

    total: PyTree  # sum of received models (structure of params_N)
    # [N] messages since the last merge (duplicates count). The field shadows tuple.count
    # (hence the ignore); a rename would change the leaf paths that checkpoints record.
    count: jax.Array  # type: ignore[assignment]
    var_total: PyTree  # pytree of [N]: sum of the received models' per-layer variances


def init(params_N: PyTree) -> Inbox:
    """Zero accumulators for the N nodes of params_N."""
    n = base.num_nodes(params_N)
    return Inbox(total=jax.tree.map(jnp.zeros_like, params_N),
                 count=jnp.zeros((n,), jnp.int32),
                 var_total=jax.tree.map(lambda x: jnp.zeros((n,), x.dtype), params_N))


def emit(corr: variance.CorrectionConfig, inbox: Inbox, sent: base.Sent,
         consts: base.Consts) -> Inbox:
    """Adds each sent model to the inbox of every receiver it is routed to.

    With targets 'others' and 'blend' the message also carries its per-layer variances
    (`variance.correctable_variance`); other targets add zeros instead.
    """
    if corr.target in ("others", "blend"):
        var_K = variance.correctable_variance(sent.params, corr)
    else:  # the target does not read received variances: send zeros, skip the reductions
        var_K = jax.tree.map(lambda v: jnp.zeros(sent.node.shape, v.dtype), inbox.var_total)
    (total, var_total), count = mixing.push_to(
        (inbox.total, inbox.var_total), inbox.count, (sent.params, var_K),
        base.destinations(sent, consts.graph))
    return Inbox(total, count, var_total)



def end_of_tick(corr: variance.CorrectionConfig, slots: int, params_N: PyTree, inbox: Inbox,
                consts: base.Consts, tick: base.Tick) -> tuple[PyTree, Inbox, jax.Array]:
    """Nodes ready to merge (`base.ready_to_merge`) mix in what they received.

    The merge is `variance.mix_and_correct` (beta * own + (1 - beta) * mean received, then the
    correction `corr`), `slots` nodes at a time; merged inboxes are cleared.

    Returns:
      (params_N, inbox, merged_N): merged_N [N] bool, the nodes that merged.
    """
    merged_N = base.ready_to_merge(inbox.count, consts, tick)

    def merge(p_M: PyTree, ib_M: Inbox, valid_M: jax.Array, idx_M: jax.Array) -> PyTree:
        del idx_M
        return variance.mix_and_correct(p_M, ib_M.total, ib_M.count, ib_M.var_total,
                                        consts.beta, corr, active_N=valid_M)

    params_N, inbox = base.merge_selected(params_N, inbox, merged_N, slots, merge)
    return params_N, inbox, merged_N


def make(*, corrected: bool = False, correction: variance.CorrectionConfig | None = None,
         merge_slots: int = 8) -> base.Algorithm:
    """Gossip learning; `corrected` merges with `correction` (default: target 'others').

    Args:
      corrected: rescale merged kernels (gossip_vc); False is plain averaging.
      correction: the correction's settings (ignored unless corrected).
      merge_slots: rows per compacted merge group (a size, not a result: the builder sets it).
    Returns:
      The Algorithm.
    """
    corr = base.correction_for(corrected, correction)
    return base.Algorithm(
        name="gossip_vc" if corrected else "gossip",
        init=init,
        emit=lambda ib, s, c: emit(corr, ib, s, c),
        end_of_tick=lambda p, ib, c, t: end_of_tick(corr, merge_slots, p, ib, c, t),
    )
