"""Robust gossip merges over per-message buffers: coordinate-wise median and Krum.

Both reuse the trimmed mean's buffer inbox (`trimmed_mean.Inbox`, `make_init`, `emit`: each
node holds the received models themselves) and its merge (`trimmed_mean.buffered_merge`):
at a merge a node holding m > 0 messages mixes `beta * own + (1 - beta) * aggregate`, with

* `gossip_median`: the coordinate-wise median of the m held models (NumPy's: the mean of
  the two middle values when m is even);
* `gossip_krum`: Krum (Blanchard et al., NeurIPS 2017). With its knob f (the number of
  Byzantine neighbours tolerated), each held message i scores the sum of its squared L2
  distances (all leaves of the model together) to its max(m - f - 2, 1) nearest other held
  messages; the held message of lowest score is the aggregate (ties: the lowest slot; m = 1:
  the only message).

The `_vc` variants rescale each correctable kernel of the mix (`variance.correctable_mask`,
`variance.rescale`) to a target variance aggregated by the SAME robust rule over the held
messages' per-layer variances: their median (`gossip_median_vc`), the variance of the message
Krum chose (`gossip_krum_vc`); `gossip_trim_vc` takes their trimmed mean. A plain mean of the
variances, as `gossip_vc` uses, is itself not robust: one Byzantine sender moves it anywhere.
Memory: N * capacity models (as the trimmed mean); Krum adds an [M, C, C] distance matrix
per merge group.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from vanish import nodes, variance
from vanish.algorithms import base
from vanish.algorithms.trimmed_mean import (RANK_SLOTS, Aggregate, AggregateFn, Receiver,
                                            buffered_merge, slot_ranks,
                                            emit, make_init)

PyTree = Any


def _slots(buf_MC: jax.Array) -> jax.Array:
    """[1, C, 1, ...] slot indices, broadcast against buf_MC."""
    return nodes.per_node(jnp.arange(buf_MC.shape[1]), buf_MC.ndim - 1)[None]


def median(buf_MC: jax.Array, count_M: jax.Array) -> jax.Array:
    """Coordinate-wise median of the first m = count slots of axis 1 ([M, C, ...] -> [M, ...]).

    NumPy semantics: the mean of the two middle values when m is even. Rows with m = 0 give 0.
    """
    slot = _slots(buf_MC)
    m = nodes.per_node(count_M, buf_MC.ndim)
    lo, hi = jnp.maximum((m - 1) // 2, 0), m // 2  # equal when m is odd
    if buf_MC.shape[1] <= RANK_SLOTS:  # pairwise ranks, not a sort (trimmed_mean.RANK_SLOTS)
        vals, pos = buf_MC, slot_ranks(buf_MC, count_M)
    else:
        vals, pos = jnp.sort(jnp.where(slot < m, buf_MC, jnp.inf), axis=1), slot
    # Exactly one slot matches each index, so these sums are exact (no gather needed).
    a = jnp.sum(jnp.where(pos == lo, vals, 0.0), axis=1)
    b = jnp.sum(jnp.where(pos == hi, vals, 0.0), axis=1)
    return jnp.where(m[:, 0] > 0, (a + b) / 2, 0.0).astype(buf_MC.dtype)


def median_aggregate(buf_MC: PyTree, count_M: jax.Array, receiver: Receiver) -> Aggregate:
    """The coordinate-wise median, leaf by leaf, and of the per-message values."""
    del receiver
    return Aggregate(jax.tree.map(lambda b: median(b, count_M), buf_MC),
                     lambda v_MC: median(v_MC, count_M))


def sq_distances(buf_MC: PyTree) -> jax.Array:
    """[M, C, C] squared L2 distances between the C slots of each row, over all leaves."""
    def leaf(b: jax.Array) -> jax.Array:
        x = b.reshape(b.shape[:2] + (-1,)).astype(jnp.promote_types(b.dtype, jnp.float32))
        # A broadcast difference feeding a reduction: XLA fuses it, never storing [M, C, C, P].
        return jnp.sum(jnp.square(x[:, :, None] - x[:, None, :]), axis=-1)

    per_leaf = [leaf(b) for b in jax.tree.leaves(buf_MC)]
    total = per_leaf[0]
    for d in per_leaf[1:]:
        total = total + d
    return total


def krum_choice(buf_MC: PyTree, count_M: jax.Array, f: int) -> jax.Array:
    """[M] int32: the slot Krum chooses among the first m = count held messages of each row.

    f = the number of faulty messages tolerated; score_i = the sum of the
    k = max(m - f - 2, 1) smallest squared distances from message i to the other held
    messages (fewer if fewer exist: m = 1 scores 0); the lowest score wins, ties to the
    lowest slot. Rows with m = 0 give slot 0.
    """
    d = sq_distances(buf_MC)
    cap = d.shape[1]
    slot = jnp.arange(cap)
    m = count_M[:, None]
    held = slot[None] < m  # [M, C]
    other = held[:, None, :] & (slot[:, None] != slot[None, :])[None]  # [M, C(i), C(j)]
    nearest = jnp.sort(jnp.where(other, d, jnp.inf), axis=2)
    k = jnp.minimum(jnp.maximum(m - f - 2, 1), m - 1)  # [M, 1]
    score = jnp.sum(jnp.where(slot[None, None] < k[:, :, None], nearest, 0.0), axis=2)
    return jnp.argmin(jnp.where(held, score, jnp.inf), axis=1).astype(jnp.int32)


def krum(buf_MC: PyTree, count_M: jax.Array, f: int) -> PyTree:
    """The held message Krum chooses for each row: [M, ...] per leaf (see `krum_choice`)."""
    return _pick(buf_MC, krum_choice(buf_MC, count_M, f))


def _pick(buf_MC: PyTree, idx_M: jax.Array) -> PyTree:
    rows = jnp.arange(idx_M.shape[0])
    return jax.tree.map(lambda b: b[rows, idx_M], buf_MC)


def krum_aggregate(f: int) -> AggregateFn:
    """Krum's chosen message, and the per-message values of that same message."""

    def aggregate(buf_MC: PyTree, count_M: jax.Array, receiver: Receiver) -> Aggregate:
        del receiver
        idx = krum_choice(buf_MC, count_M, f)
        return Aggregate(_pick(buf_MC, idx), lambda v_MC: _pick(v_MC, idx))

    return aggregate


RULES = ("median", "krum")


def make(*, rule: str, corrected: bool = False, f: int = 1,
         correction: variance.CorrectionConfig | None = None, merge_slots: int = 8,
         inbox_capacity: int = 16) -> base.Algorithm:
    """gossip_{rule}[_vc] for rule in RULES, on the trimmed mean's message buffers.

    Args:
      rule: 'median' (coordinate-wise) or 'krum'.
      corrected: rescale kernels to the same rule applied to the held messages' variances.
      f: Krum's number of tolerated Byzantine neighbours (the median ignores it).
      correction: the correction's settings (ignored unless corrected).
      merge_slots, inbox_capacity: sizes the builder derives.
    """
    if rule not in RULES:
        raise KeyError(f"unknown robust rule {rule!r}; choose from {', '.join(RULES)}")
    corr = base.correction_for(corrected, correction)
    aggregate = median_aggregate if rule == "median" else krum_aggregate(f)
    merge = functools.partial(buffered_merge, merge_slots, corr, aggregate)
    return base.Algorithm(
        name=f"gossip_{rule}_vc" if corrected else f"gossip_{rule}",
        init=make_init(inbox_capacity), emit=emit, end_of_tick=merge)
