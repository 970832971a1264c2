"""Coordinate-wise trimmed-mean gossip: a robust merge over per-message buffers.

The worked example of docs/ARCHITECTURE.md ("adding a rule"): a trimmed mean needs the
received models themselves, not their sum, so this rule's inbox is a buffer of
`inbox_capacity` messages per node. At a merge, every coordinate's received values are
sorted, floor(trim_fraction * m) are cut at each end (m = messages held) and the rest
averaged; the node then mixes `beta * own + (1 - beta) * trimmed mean`. `gossip_trim_vc`
rescales each kernel afterwards to the TRIMMED mean of the held models' per-layer
variances (the same rule applied to the variances; a plain mean of them, which one
Byzantine sender can move arbitrarily far, would not be robust).
Memory: N * capacity models; the builder sizes capacity to threshold - 1 + in-degree, the
most a node can hold at a tick's end, so no message is ever dropped.

The buffer (`Inbox`, `make_init`, `emit`) and the merge (`buffered_merge`: mix with any
robust aggregate of the held messages, optionally rescale to the same aggregate of their
variances) are shared with the median and Krum rules of `robust.py`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from vanish import nodes, variance
from vanish.algorithms import base

PyTree = Any


class Inbox(NamedTuple):
    """Per-node message buffers: the models received since the last merge."""

    buf: PyTree  # [N, C, ...] received models, slots [0, count) filled
    # The field shadows tuple.count (hence the ignore); a rename would change the leaf
    # paths that checkpoints record.
    count: jax.Array  # type: ignore[assignment]  # [N] messages held


def make_init(capacity: int) -> Callable[[PyTree], Inbox]:
    """`init` of buffers of `capacity` messages per node: zeros, no message held."""
    def init(params_N: PyTree) -> Inbox:
        n = base.num_nodes(params_N)
        buf = jax.tree.map(lambda x: jnp.zeros((n, capacity, *x.shape[1:]), x.dtype), params_N)
        return Inbox(buf, jnp.zeros((n,), jnp.int32))

    return init


def emit(inbox: Inbox, sent: base.Sent, consts: base.Consts) -> Inbox:
    """Writes each sent model into the next free slot of every receiver it is routed to.

    Messages to one receiver within a chunk take consecutive slots; one that finds the buffer
    full is dropped (and not counted), which a builder-sized capacity never causes.
    """
    n, cap = inbox.count.shape[0], jax.tree.leaves(inbox.buf)[0].shape[1]
    dest_KD = base.destinations(sent, consts.graph)
    k, d = dest_KD.shape
    dest = dest_KD.reshape(-1)
    # Messages to the same receiver within this chunk take consecutive slots.
    same = (dest[:, None] == dest[None, :]) & jnp.tri(k * d, k=-1, dtype=bool)
    pos = inbox.count[jnp.minimum(dest, n - 1)] + jnp.sum(same, axis=1)
    dest = jnp.where(pos < cap, dest, n)  # never taken when capacity is sized by the builder
    src = jnp.repeat(jnp.arange(k), d)
    buf = jax.tree.map(lambda b, x: b.at[dest, pos].set(x[src], mode="drop"), inbox.buf,
                       sent.params)
    count = inbox.count.at[dest].add(1, mode="drop")
    return Inbox(buf, count)


# Up to this many slots the order statistics come from pairwise ranks (C^2 comparisons per
# coordinate, vectorised) instead of a sort along the slot axis: XLA:CPU sorts a non-minor axis
# one column at a time, 8.9x slower for 8 nodes x 15 slots of the MLP (628 vs 71 ms per merge
# group; gossip_trim / gossip_median 1.7 ticks/s against gossip_vc's 95 at N = 50). Beyond
# it, the C^2 comparison array would outgrow a sort's memory.
RANK_SLOTS = 32


def slot_ranks(buf_MC: jax.Array, count_M: jax.Array) -> jax.Array:
    """[M, C, ...] int32: each held value's position in its coordinate's stable sort of the
    first m = count slots (held slots rank 0..m-1, ties by slot; padding slots rank >= m)."""
    cap = buf_MC.shape[1]
    extra = (1,) * (buf_MC.ndim - 2)
    held = jnp.arange(cap).reshape(1, cap, *extra) < count_M.reshape(-1, 1, *extra)
    v = jnp.where(held, buf_MC, jnp.inf)
    a, b = v[:, :, None], v[:, None, :]  # [M, C, C, ...]: slot i against slot j
    before = (jnp.arange(cap)[None, :] < jnp.arange(cap)[:, None]).reshape(1, cap, cap, *extra)
    return jnp.sum((b < a) | ((b == a) & before), axis=2, dtype=jnp.int32)


def trimmed_mean(buf_MC: jax.Array, count_M: jax.Array, fraction: float) -> jax.Array:
    """Coordinate-wise mean of slots [t, m - t) of the sorted first m values, t = floor(f m)
    (ties ranked by slot: the same set of values as a stable sort keeps)."""
    cap = buf_MC.shape[1]
    extra = (1,) * (buf_MC.ndim - 2)
    slot = jnp.arange(cap).reshape(1, cap, *extra)
    m = count_M.reshape(-1, 1, *extra)
    held = slot < m
    t = jnp.floor(fraction * m).astype(jnp.int32)
    if cap <= RANK_SLOTS:
        rank = slot_ranks(buf_MC, count_M)
        keep = held & (rank >= t) & (rank < m - t)
        total = jnp.sum(jnp.where(keep, buf_MC, 0.0), axis=1)
    else:
        vals = jnp.sort(jnp.where(held, buf_MC, jnp.inf), axis=1)
        keep = (slot >= t) & (slot < m - t)
        total = jnp.sum(jnp.where(keep, vals, 0.0), axis=1)
    return total / jnp.maximum(m - 2 * t, 1)[:, 0].astype(buf_MC.dtype)


class Aggregate(NamedTuple):
    """A robust aggregate of the held messages of M nodes (what `buffered_merge` mixes in).

    model: [M, ...] per leaf, the aggregated model of each node.
    reduce: [M, C] per-message values (e.g. per-layer variances) -> [M], aggregated by the
        same rule (the `_vc` rules' target variance).
    """

    model: PyTree
    reduce: Callable[[jax.Array], jax.Array]


class Receiver(NamedTuple):
    """The M merging nodes, for an aggregate that reads more than the held messages (the
    alignment rules align each message to the receiver's own model, on its own data)."""

    params: PyTree  # [M, ...] their own models, before the merge
    node: jax.Array  # [M] int32 their rows of the node axis (padding: >= N)
    consts: base.Consts
    tick: base.Tick


# (buf [M, C, ...] per leaf, count [M], receiver) -> Aggregate; rows with count 0 may hold
# anything.
AggregateFn = Callable[[PyTree, jax.Array, Receiver], Aggregate]


def trimmed_aggregate(fraction: float) -> AggregateFn:
    """The coordinate-wise trimmed mean, leaf by leaf, and of the per-message values."""

    def aggregate(buf_MC: PyTree, count_M: jax.Array, receiver: Receiver) -> Aggregate:
        del receiver
        return Aggregate(jax.tree.map(lambda b: trimmed_mean(b, count_M, fraction), buf_MC),
                         lambda v_MC: trimmed_mean(v_MC, count_M, fraction))

    return aggregate


def target_variance(buf_MC: jax.Array, reduce: Callable[[jax.Array], jax.Array],
                    ddof: int) -> jax.Array:
    """[M] the `_vc` target of one leaf: its held messages' variances aggregated by `reduce`.

    buf_MC: [M, C, ...] one leaf of the buffers; the per-message variances ([M, C], with
    `ddof`) of every slot go to `reduce`, which reads only the held ones.
    """
    return reduce(jax.vmap(lambda b: variance.layer_variance(b, ddof))(buf_MC))


def buffered_merge(merge_slots: int, corr: variance.CorrectionConfig, aggregate: AggregateFn,
                   params_N: PyTree, inbox: Inbox, consts: base.Consts,
                   tick: base.Tick) -> tuple[PyTree, Inbox, jax.Array]:
    """The robust merge: params <- beta * own + (1 - beta) * aggregate(held messages).

    Only nodes ready to merge (`base.ready_to_merge`, so count > 0) change; their buffers are
    emptied. With `corr.target != 'none'` each correctable kernel of the mix is rescaled to
    `aggregate(...).reduce` of the held messages' variances (`target_variance`); the
    target kinds 'others' / 'self' / 'blend' are not told apart (always the received one).
    """
    merged_N = base.ready_to_merge(inbox.count, consts, tick)
    beta = consts.beta

    def merge(p_M: PyTree, ib_M: Inbox, valid_M: jax.Array, idx_M: jax.Array) -> PyTree:
        cnt = ib_M.count
        agg = aggregate(ib_M.buf, cnt, Receiver(p_M, idx_M, consts, tick))
        mixed = jax.tree.map(lambda x, a: beta * x + (1 - beta) * a, p_M, agg.model)
        if corr.target != "none":
            mask = variance.correctable_mask(p_M, corr, stacked=True)

            def fix(x: jax.Array, b: jax.Array, correct: bool) -> jax.Array:
                if not correct:
                    return x
                t_M = target_variance(b, agg.reduce, corr.ddof)
                return jax.vmap(lambda xx, tt: variance.rescale(xx, tt, corr))(x, t_M)

            mixed = jax.tree.map(fix, mixed, ib_M.buf, mask)
        ok = valid_M & (cnt > 0)
        return jax.tree.map(lambda new, old: jnp.where(nodes.per_node(ok, old.ndim), new, old),
                            mixed, p_M)

    empty = lambda ib_M: Inbox(ib_M.buf, jnp.zeros_like(ib_M.count))  # noqa: E731
    params_N, inbox = base.merge_selected(params_N, inbox, merged_N, merge_slots, merge, empty)
    return params_N, inbox, merged_N


def make(*, corrected: bool = False, fraction: float = 0.2,
         correction: variance.CorrectionConfig | None = None, merge_slots: int = 8,
         inbox_capacity: int = 16) -> base.Algorithm:
    """Coordinate-wise trimmed mean: cut floor(fraction * m) of the m held values at each end.

    Args:
      corrected: rescale kernels to the trimmed mean of the held messages' variances.
      fraction: the cut at each end, in [0, 0.5).
      correction: the correction's settings (ignored unless corrected).
      merge_slots, inbox_capacity: sizes the builder derives (rows per merge group; messages
        a node can hold at a tick's end).
    """
    corr = base.correction_for(corrected, correction)
    aggregate = trimmed_aggregate(fraction)
    return base.Algorithm(
        name="gossip_trim_vc" if corrected else "gossip_trim",
        init=make_init(inbox_capacity), emit=emit,
        end_of_tick=lambda p, ib, c, t: buffered_merge(merge_slots, corr, aggregate, p, ib, c,
                                                       t))
