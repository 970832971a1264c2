"""Classic gossip learning (Ormándi, Hegedűs, Jelasity 2013; Hegedűs, Danner, Jelasity 2019):
send to one random peer, merge every arriving model at once, weighted by model age.

    algo = algorithms.make("gossip_classic", age_weighted=True)

In the tick model: after each training event a node sends its model, with its age, to ONE of
its out-neighbours drawn uniformly at random (per message, from the message's key; under a
network plan, one of the receivers the network routes it to). A node that received models
merges them into its own at the end of that tick, whatever the merge threshold:
`x <- (a_self x_self + sum_j a_j x_j) / (a_self + sum_j a_j)` and its age becomes the largest
of the ages merged (`age_weighted=False`: equal weights, the plain mean). One arrival in a tick
is exactly the pairwise merge-on-arrival of the papers; several arrivals in one tick merge
together. A model's age counts the training events of its lineage: a node's own age grows by
one per training event that sends. Nothing is rescaled: this is the baseline the variance
correction is measured against, not a corrected rule.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vanish import mixing, treeutil
from vanish.algorithms import base

PyTree = Any
_PEER = 0xC1A5  # the key stream of the random peer (training uses the key itself)


class Inbox(NamedTuple):
    """Classic gossip's receive state: weighted sums of the models received, and ages."""

    total: PyTree  # sum of the received models, each times its weight (structure of params)
    weight: jax.Array  # [N] f32: sum of the received weights
    # [N] messages since the last merge. Shadows tuple.count, as gossip.Inbox does.
    count: jax.Array  # type: ignore[assignment]
    age: jax.Array  # [N] f32: the node's own model age
    age_in: jax.Array  # [N] f32: the largest age received since the last merge


def init(params_N: PyTree) -> Inbox:
    """Empty inboxes and age 0 for the N nodes of params_N."""
    n = base.num_nodes(params_N)
    # Separate arrays (the engine donates the inbox: one buffer may not appear twice).
    return Inbox(total=jax.tree.map(jnp.zeros_like, params_N),
                 weight=jnp.zeros((n,), jnp.float32), count=jnp.zeros((n,), jnp.int32),
                 age=jnp.zeros((n,), jnp.float32), age_in=jnp.zeros((n,), jnp.float32))


def one_peer(sent: base.Sent, graph: Any) -> jax.Array:
    """[K, 1] one receiver per message, uniform among its possible receivers (>= N: none)."""
    dest_KD = base.destinations(sent, graph)
    n = graph.self_weight.shape[0]
    valid = dest_KD < n
    score = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, _PEER),
                                                  (dest_KD.shape[1],)))(sent.key)
    pick = jnp.argmax(jnp.where(valid, score, -1.0), axis=1)
    chosen = jnp.take_along_axis(dest_KD, pick[:, None], axis=1)
    return jnp.where(valid.any(axis=1, keepdims=True), chosen, n)


def select(sent: base.Sent, consts: base.Consts) -> base.Sent:
    """The message goes to one of the receivers it was routed to (the engine calls this
    before `emit`, and counts the message at that receiver only)."""
    return sent._replace(dest=one_peer(sent, consts.graph))


def emit(age_weighted: bool, inbox: Inbox, sent: base.Sent, consts: base.Consts) -> Inbox:
    """Ages each sending node by one training event and delivers its model to its one peer.

    The peer is the one `select` chose. The message adds model x weight to the peer's total
    (weight: the sender's new age, or 1 without `age_weighted`), the weight to its weight sum,
    one to its count, and raises its largest received age.
    """
    sends = sent.send.astype(jnp.float32)
    age = inbox.age.at[sent.node].add(sends, mode="drop")  # this training event
    age_K = age[sent.node]
    weight_K = age_K if age_weighted else jnp.ones_like(age_K)
    dest_K1 = base.destinations(sent, consts.graph)  # one peer each (`select`)
    scaled = jax.tree.map(lambda x: x * treeutil.per_node(weight_K, x.ndim).astype(x.dtype),
                          sent.params)
    (total, weight), count = mixing.push_to((inbox.total, inbox.weight), inbox.count,
                                            (scaled, weight_K), dest_K1)
    age_in = inbox.age_in.at[dest_K1[:, 0]].max(age_K, mode="drop")
    return Inbox(total, weight, count, age, age_in)


def end_of_tick(age_weighted: bool, slots: int, params_N: PyTree, inbox: Inbox,
                consts: base.Consts, tick: base.Tick) -> tuple[PyTree, Inbox, jax.Array]:
    """At a tick's last chunk, every node that received a model merges it in.

    x <- (a_self x + sum_j a_j x_j) / (a_self + sum_j a_j), with ages as weights (all 1 without
    `age_weighted`); the node's age becomes the largest merged and its inbox is cleared. Merges
    run `slots` nodes at a time (`base.merge_selected`).

    Returns:
      (params_N, inbox, merged_N): merged_N [N] bool, the nodes that merged.
    """
    merged_N = tick.last & (inbox.count > 0)  # every arrival merges: no threshold

    def merge(p_M: PyTree, ib_M: Inbox, valid_M: jax.Array, idx_M: jax.Array) -> PyTree:
        del idx_M
        own = ib_M.age if age_weighted else jnp.ones_like(ib_M.age)
        denom = own + ib_M.weight

        def leaf(x: jax.Array, t: jax.Array) -> jax.Array:
            w = treeutil.per_node(own, x.ndim).astype(x.dtype)
            d = treeutil.per_node(jnp.maximum(denom, 1e-12), x.ndim).astype(x.dtype)
            return ((w * x + t) / d).astype(x.dtype)

        return jax.tree.map(leaf, p_M, ib_M.total)

    def empty(ib_M: Inbox) -> Inbox:  # cleared, the node's age now the largest merged
        return Inbox(base.zeros(ib_M.total), jnp.zeros_like(ib_M.weight),
                     jnp.zeros_like(ib_M.count), jnp.maximum(ib_M.age, ib_M.age_in),
                     jnp.zeros_like(ib_M.age_in))

    params_N, inbox = base.merge_selected(params_N, inbox, merged_N, slots, merge, empty)
    return params_N, inbox, merged_N


def make(*, age_weighted: bool = True, merge_slots: int = 8) -> base.Algorithm:
    """Classic gossip learning.

    Args:
      age_weighted: weight each merged model by its age (else equal weights).
      merge_slots: rows per compacted merge group (a size the builder sets).
    Returns:
      The Algorithm.
    """
    return base.Algorithm(
        name="gossip_classic", init=init,
        emit=lambda ib, s, c: emit(age_weighted, ib, s, c),
        end_of_tick=lambda p, ib, c, t: end_of_tick(age_weighted, merge_slots, p, ib, c, t),
        select=select, wire=base.FULL_MODEL._replace(fanout=1))
