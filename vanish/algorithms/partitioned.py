"""Partitioned / subsampled gossip (Hegedus, Danner, Jelasity 2019, 2021).

A message carries one of P fixed parameter partitions (message j of a sender carries partition
j mod P) or, with `subsample` > 0, a random subset of coordinates (each kept with that
probability); the receiver merges only the coordinates it received, each with its own count.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vanish import mixing, nodes
from vanish.algorithms import base

PyTree = Any


class Inbox(NamedTuple):
    """Masked receive accumulator: values, message count and per-coordinate receipt counts."""

    total: PyTree  # sum of received (masked) models
    # The field shadows tuple.count (hence the ignore); a rename would change the leaf
    # paths that checkpoints record.
    count: jax.Array  # type: ignore[assignment]  # [N] messages since the last merge
    coord_count: PyTree  # per-coordinate number of receipts (structure of params_N)


def init(params_N: PyTree) -> Inbox:
    """Zero accumulators for the N nodes of params_N."""
    zeros = lambda: jax.tree.map(jnp.zeros_like, params_N)  # noqa: E731
    return Inbox(zeros(), jnp.zeros((base.num_nodes(params_N),), jnp.int32), zeros())


def partition_ids(params: PyTree, num_partitions: int, seed: int = 0) -> PyTree:
    """Fixed random assignment of every coordinate of one model to one of P partitions."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(
        treedef, [jax.random.randint(k, x.shape[1:], 0, num_partitions).astype(jnp.int8)
                  for k, x in zip(keys, leaves)])


def device_consts(knobs: dict[str, Any], template: PyTree, seed: int) -> dict[str, PyTree]:
    """The registry's `consts` hook: the coordinates' partition ids (`part_ids`), drawn from
    the run's seed for one node's parameter shapes (`template`)."""
    zeros = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), template)
    return {"part_ids": partition_ids(zeros, int(knobs["num_partitions"]), seed)}


def message_masks(part_ids: PyTree, event_ord_K: jax.Array, keys_K: jax.Array,
                  num_partitions: int, subsample: float) -> PyTree:
    """Which coordinates each of K messages carries (1.0 = carried)."""
    if subsample > 0:
        leaves, treedef = jax.tree.flatten(part_ids)
        masks = []
        for i, ids in enumerate(leaves):
            # Loop variables bound as defaults (vmap calls the lambdas here, but B023).
            k_K = jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys_K)
            masks.append(
                jax.vmap(lambda k, shape=ids.shape: jax.random.bernoulli(k, subsample, shape))(k_K)
                .astype(jnp.float32))
        return jax.tree.unflatten(treedef, masks)
    part_K = (event_ord_K % num_partitions).astype(jnp.int8)
    return jax.tree.map(
        lambda ids: (ids[None] == nodes.per_node(part_K, ids.ndim + 1)).astype(jnp.float32),
        part_ids)


def emit(num_partitions: int, subsample: float, inbox: Inbox, sent: base.Sent,
         consts: base.Consts) -> Inbox:
    """Adds each sent model, masked to the coordinates its message carries
    (`message_masks`), and the mask itself to the inbox of every receiver it is routed to."""
    masks_K = message_masks(consts.part_ids, sent.event_ord, sent.key, num_partitions,
                            subsample)
    payload_K = jax.tree.map(jnp.multiply, sent.params, masks_K)
    (total, coord_count), count = mixing.push_to(
        (inbox.total, inbox.coord_count), inbox.count, (payload_K, masks_K),
        base.destinations(sent, consts.graph))
    return Inbox(total, count, coord_count)


def end_of_tick(slots: int, params_N: PyTree, inbox: Inbox, consts: base.Consts,
                tick: base.Tick) -> tuple[PyTree, Inbox, jax.Array]:
    """Nodes ready to merge (`base.ready_to_merge`) mix in what they received.

    Each coordinate received at least once becomes beta * x + (1 - beta) * the mean of its
    received values; the others keep x. Merged inboxes are cleared.

    Returns:
      (params_N, inbox, merged_N): merged_N [N] bool, the nodes that merged.
    """
    merged_N = base.ready_to_merge(inbox.count, consts, tick)
    beta = consts.beta

    def merge(p_M: PyTree, ib_M: Inbox, valid_M: jax.Array, idx_M: jax.Array) -> PyTree:
        del idx_M

        def coords(x: jax.Array, total: jax.Array, cnt: jax.Array) -> jax.Array:
            take = nodes.per_node(valid_M, x.ndim) & (cnt > 0)
            mixed = beta * x + (1 - beta) * total / jnp.where(take, cnt, 1.0)
            return jnp.where(take, mixed, x)

        return jax.tree.map(coords, p_M, ib_M.total, ib_M.coord_count)

    params_N, inbox = base.merge_selected(params_N, inbox, merged_N, slots, merge)
    return params_N, inbox, merged_N


def wire(num_partitions: int, subsample: float) -> base.Wire:
    """Message kinds: partition p (its coordinates' values; the receiver knows which
    coordinates from the shared partition ids), or with `subsample`, one kind of the
    expected size (subsample x the model: the count of kept coordinates varies around it
    by a binomial spread; which ones is known from the message's key)."""
    if subsample > 0:
        return base.Wire(sizes=lambda t, c: (round(subsample * base.model_bytes(t)),))

    def sizes(template: PyTree, consts: base.Consts) -> tuple[int, ...]:
        out = [0] * num_partitions
        for x, ids in zip(jax.tree.leaves(template), jax.tree.leaves(consts.part_ids)):
            counts = np.bincount(np.asarray(ids).ravel(), minlength=num_partitions)
            for p in range(num_partitions):
                out[p] += int(counts[p]) * jnp.dtype(x.dtype).itemsize
        return tuple(out)

    return base.Wire(sizes=sizes,
                     kind=lambda s, c: (s.event_ord % num_partitions).astype(jnp.int32))


def make(*, num_partitions: int = 4, subsample: float = 0.0,
         merge_slots: int = 8) -> base.Algorithm:
    """Partitioned gossip: a message carries partition (event ordinal mod `num_partitions`)
    of the coordinates (ids from Consts.part_ids, drawn with the same count by the builder),
    or a random `subsample` fraction of them when > 0."""
    return base.Algorithm(
        name="gossip_part", init=init,
        emit=lambda ib, s, c: emit(num_partitions, subsample, ib, s, c),
        end_of_tick=lambda p, ib, c, t: end_of_tick(merge_slots, p, ib, c, t),
        wire=wire(num_partitions, subsample))
