"""Aggregation rules on top of the mixing and variance kernels: what a node does with models.

    inbox = rules.empty_inbox(params_N, partitioned=False)
    inbox = rules.deliver(inbox, params_K, node_K, send_K, graph, corr)      # gossip "send"
    params_N, inbox, merged_N = rules.merge_inbox(params_N, inbox, threshold_N, beta, corr)

Rules:
  * gossip (plain or variance-corrected): received models accumulate in a fixed-shape inbox
    (sum of models, count, sum of their per-layer variances); a node merges once it holds
    `threshold` models (SPEC section 3). Plain gossip is the rule with target 'none'.
  * partitioned gossip (Hegedus et al. 2019/2021): a message carries one of P fixed
    parameter partitions (round-robin over the sender's events) or a random subset of
    coordinates; the receiver merges only the coordinates it received.
  * federated averaging: every round the server takes the mean of the participating
    clients and every node (server and clients) adopts it.
  * synchronous mixing (D-PSGD): params <- W @ params, optionally variance corrected.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vanish import mixing, nodes, variance
from vanish.topology import Graph

PyTree = Any


class Inbox(NamedTuple):
    """Fixed-shape receive buffers of all nodes.

    total: sum of received (masked) models, structure of params_N.
    count: [N] number of messages received since the last merge (duplicates count).
    var_total: pytree of [N]: sum of the received models' per-layer variances.
    coord_count: partitioned gossip only: per-coordinate number of receipts (like params_N),
      else None.
    """

    total: PyTree
    count: jax.Array
    var_total: PyTree
    coord_count: PyTree | None


def empty_inbox(params_N: PyTree, partitioned: bool = False) -> Inbox:
    n = jax.tree.leaves(params_N)[0].shape[0]
    zeros = jax.tree.map(jnp.zeros_like, params_N)
    return Inbox(
        total=zeros,
        count=jnp.zeros((n,), jnp.int32),
        var_total=jax.tree.map(lambda x: jnp.zeros((n,), x.dtype), params_N),
        coord_count=jax.tree.map(jnp.zeros_like, params_N) if partitioned else None,
    )


def partition_ids(params: PyTree, num_partitions: int, seed: int = 0) -> PyTree:
    """Fixed random assignment of every coordinate of one model to one of P partitions."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return treedef.unflatten(
        [jax.random.randint(k, x.shape[1:], 0, num_partitions).astype(jnp.int8)
         for k, x in zip(keys, leaves)]
    )


def message_masks(
    part_ids: PyTree, event_ord_K: jax.Array, keys_K: jax.Array, num_partitions: int,
    subsample: float,
) -> PyTree:
    """Which coordinates each of K messages carries (1.0 = carried).

    With subsample > 0 every coordinate is carried independently with that probability
    (random subsampling); otherwise message j of a sender carries partition j mod P.
    """
    if subsample > 0:
        leaves, treedef = jax.tree.flatten(part_ids)
        masks = []
        for i, ids in enumerate(leaves):
            k_K = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys_K)
            masks.append(jax.vmap(lambda k: jax.random.bernoulli(k, subsample, ids.shape))(k_K)
                         .astype(jnp.float32))
        return treedef.unflatten(masks)
    part_K = (event_ord_K % num_partitions).astype(jnp.int8)
    return jax.tree.map(
        lambda ids: (ids[None] == nodes.per_node(part_K, ids.ndim + 1)).astype(jnp.float32),
        part_ids,
    )


def deliver(
    inbox: Inbox,
    params_K: PyTree,
    node_K: jax.Array,
    send_K: jax.Array,
    graph: Graph,
    corr: variance.CorrectionConfig,
    masks_K: PyTree | None = None,
) -> Inbox:
    """Pushes the models of K senders into their out-neighbours' inboxes.

    Args:
      inbox: the receive buffers.
      params_K: the senders' current models (leading axis K).
      node_K: sender node ids; send_K: which of the K slots really send.
      graph: the device graph.
      corr: correction config (decides whether per-layer variances travel along).
      masks_K: partitioned gossip: per-message coordinate masks (see `message_masks`).
    """
    payload_K = params_K if masks_K is None else jax.tree.map(jnp.multiply, params_K, masks_K)
    if corr.target in ("others", "blend"):
        var_K = variance.correctable_variance(params_K, corr)
    else:  # the target does not read received variances: send zeros, skip the reductions
        var_K = jax.tree.map(lambda v: jnp.zeros(node_K.shape, v.dtype), inbox.var_total)
    # coord_count and masks_K are both None unless partitioned: empty subtrees on both sides.
    (total, var_total, coord_count), count = mixing.push_from(
        (inbox.total, inbox.var_total, inbox.coord_count), inbox.count,
        (payload_K, var_K, masks_K), node_K, send_K, graph)
    return Inbox(total, count, var_total, coord_count)


def merge_inbox(
    params_N: PyTree,
    inbox: Inbox,
    threshold_N: jax.Array,
    beta: jax.Array | float,
    corr: variance.CorrectionConfig,
) -> tuple[PyTree, Inbox, jax.Array]:
    """Merges every node whose inbox holds >= threshold messages, then empties those inboxes.

    Returns (params_N, inbox, merged_N) where merged_N [N] bool marks the nodes that merged.
    """
    merged_N = (inbox.count >= threshold_N) & (inbox.count > 0)
    if inbox.coord_count is None:
        new_N = variance.mix_and_correct(
            params_N, inbox.total, inbox.count, inbox.var_total, beta, corr, active_N=merged_N
        )
    else:
        def merge_coords(x, total, cnt):
            take = nodes.per_node(merged_N, x.ndim) & (cnt > 0)
            mixed = beta * x + (1 - beta) * total / jnp.where(take, cnt, 1.0)
            return jnp.where(take, mixed, x)

        new_N = jax.tree.map(merge_coords, params_N, inbox.total, inbox.coord_count)
    keep = lambda x: jnp.where(nodes.per_node(merged_N, x.ndim), 0, x)  # noqa: E731
    inbox = Inbox(
        total=jax.tree.map(keep, inbox.total),
        count=keep(inbox.count),
        var_total=jax.tree.map(keep, inbox.var_total),
        coord_count=None if inbox.coord_count is None else jax.tree.map(keep, inbox.coord_count),
    )
    return new_N, inbox, merged_N


def fedavg_round(params_N: PyTree, weight_N: jax.Array) -> PyTree:
    """Server step of federated averaging: every node adopts the weighted client mean.

    weight_N is 0 for the server and for clients not sampled this round.
    """
    n = weight_N.shape[0]
    return mixing.broadcast(mixing.federated_mean(params_N, weight_N), n)


def client_weights(key: jax.Array, is_client_N: jax.Array, fraction: float) -> jax.Array:
    """Samples round(fraction * clients) participating clients (at least one) uniformly."""
    n_clients = jnp.sum(is_client_N)
    m = jnp.maximum(1, jnp.round(fraction * n_clients)).astype(jnp.int32)
    score = jnp.where(is_client_N, jax.random.uniform(key, is_client_N.shape), 2.0)
    rank = jnp.argsort(jnp.argsort(score))
    return (rank < m).astype(jnp.float32)


def sync_mix(params_N: PyTree, graph: Graph, corr: variance.CorrectionConfig) -> PyTree:
    """One D-PSGD mixing step, params <- W @ params, with optional variance correction.

    The correction target of node i is the W-weighted mean of the pre-mix per-layer
    variances of the models it mixes (the synchronous analogue of 'others').
    """
    mixed_N = mixing.mix(params_N, graph)
    if corr.target == "none":
        return mixed_N
    var_N = variance.correctable_variance(params_N, corr)
    target_N = mixing.mix(var_N, graph)
    mask = variance.correctable_mask(params_N, corr, stacked=True)

    def fix(x_N, t_N, correct):
        if not correct:
            return x_N
        return jax.vmap(lambda x, t: variance.rescale(x, t, corr))(x_N, t_N)

    return jax.tree.map(fix, mixed_N, target_N, mask)
