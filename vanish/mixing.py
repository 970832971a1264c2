"""Jitted kernels over the node axis: gossip mixing W @ X, push-style sends, federated means.

    graph = topology.random_regular(64, 8, seed=0).device_graph()
    mixed_N = mixing.mix(params_N, graph)              # every leaf [N, ...] -> W @ leaf
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from vanish import treeutil
from vanish.topology import Graph

PyTree = Any
METHODS = ("gather", "segment_sum", "dense")

# Neighbour slots accumulated per pass over a leaf. Up to this many gathers fuse into ONE loop
# over the output (XLA:CPU keeps the ~9 rows it reads per output row in cache, so an 8-regular
# mix costs about one elementwise pass); wider tables loop over chunks of this size.
_CHUNK = 8

# Cost per unit of work, fitted to scripts/bench_mixing.py and ad-hoc runs on the 2-core CPU
# (LeNet-5 stacks, 62k params/node; x = time of one elementwise pass over the same arrays):
#   random 8-regular N=1024: gather 0.9-1.3x, segment_sum 4.7-5.6x, dense 5.5-6.8x
#   star N=1024 (E = 2N, D = N-1): segment_sum 2.8-3.7x, dense 10-14x, gather 21-27x
#   Barabasi-Albert m=4 N=1024 (D = 98): gather 2.2-3.5x, segment_sum 6-9x, dense 6-12x
#   complete N=256: dense 3.9x, gather 9.5x;  star N=128: dense best, segment_sum next.
# gather pays per table cell N * (D + 1) (padding cells read the node itself from cache);
# segment_sum per edge (it materialises the [E, P] messages); dense per N^2 matrix cell.
_COST = {"gather": 1.0, "segment_sum": 25.0, "dense": 0.5}


def select_method(backend: str, n: int, max_degree: int, num_edges: int) -> str:
    """The mixing method 'auto' uses for a graph of this shape on `backend`.

    Args:
      backend: `jax.default_backend()` ('cpu', 'gpu', 'tpu').
      n: number of nodes N; max_degree: width D of the neighbour table; num_edges: E.
    Returns:
      one of METHODS.

    The cost model was measured on XLA:CPU only (no accelerator was available); other
    backends reuse it. There gather and segment_sum are bandwidth-bound as on CPU and dense
    matmuls are relatively cheaper, so the CPU choice is a safe default until measured.
    """
    del backend  # one table today; kept so callers and benchmarks state the backend
    cost = {
        "gather": _COST["gather"] * n * (max_degree + 1),
        "segment_sum": _COST["segment_sum"] * (n + num_edges),
        "dense": _COST["dense"] * n * n,
    }
    return min(METHODS, key=cost.__getitem__)


def _resolve(method: str, graph: Graph) -> str:
    if method == "auto":
        return select_method(jax.default_backend(), graph.self_weight.shape[0],
                             graph.nbr.shape[1], graph.senders.shape[0])
    if method not in METHODS:
        raise ValueError(f"unknown mixing method {method!r}; valid: auto, {', '.join(METHODS)}")
    return method


def _ctype(dtype: Any) -> Any:
    # Accumulate in at least f32 (bf16 leaves), cast back to the leaf dtype at the end.
    return jnp.result_type(dtype, jnp.float32)



# ----------------------------------------------------------------------------- neighbour sums
# Each returns init_NP + sum over in-edges (s -> r) of w * x_NP[s], rows indexed by r.


def _sum_gather(init: jax.Array, x: jax.Array, nbr: jax.Array, w: jax.Array) -> jax.Array:
    n, d = nbr.shape
    acc = init
    head = min(d, _CHUNK)
    for j in range(head):  # unrolled: one fused pass for init + the first _CHUNK neighbours
        acc = acc + treeutil.per_node(w[:, j], x.ndim) * x[nbr[:, j]]
    rest = d - head
    if rest == 0:
        return acc
    chunks = -(-rest // _CHUNK)
    pad = chunks * _CHUNK - rest
    self_idx = jnp.broadcast_to(jnp.arange(n, dtype=nbr.dtype)[:, None], (n, pad))
    nbr_c = jnp.concatenate([nbr[:, head:], self_idx], 1).reshape(n, chunks, _CHUNK)
    w_c = jnp.pad(w[:, head:], ((0, 0), (0, pad))).reshape(n, chunks, _CHUNK)

    def body(c: jax.Array, acc: jax.Array) -> jax.Array:
        nb, wc = nbr_c[:, c], w_c[:, c]
        for j in range(_CHUNK):
            acc = acc + treeutil.per_node(wc[:, j], x.ndim) * x[nb[:, j]]
        return acc

    return lax.fori_loop(0, chunks, body, acc)


def _sum_segment(init: jax.Array, x: jax.Array, snd: jax.Array, rcv: jax.Array,
                 w: jax.Array) -> jax.Array:
    # The jraph formulation: materialises [E, P] messages (a lot of memory on dense graphs).
    msgs = treeutil.per_node(w, x.ndim) * x[snd]
    return init + jax.ops.segment_sum(msgs, rcv, num_segments=x.shape[0], indices_are_sorted=True)


def _dense_matrix(n: int, snd: jax.Array, rcv: jax.Array, w: jax.Array,
                  diag: jax.Array | None) -> jax.Array:
    mat = jnp.zeros((n, n), w.dtype).at[rcv, snd].add(w)
    if diag is not None:
        mat = mat.at[jnp.arange(n), jnp.arange(n)].add(diag)
    return mat


def _matmul(mat: jax.Array, x: jax.Array) -> jax.Array:
    # HIGHEST: accelerators would otherwise round f32 inputs to TF32/bf16.
    return jnp.einsum("ij,jp->ip", mat.astype(x.dtype), x, precision=lax.Precision.HIGHEST)


def _edge_keep(graph: Graph, edge_mask: jax.Array | None,
               node_mask: jax.Array | None) -> jax.Array | None:
    keep = None if edge_mask is None else edge_mask.astype(bool)
    if node_mask is not None:
        node_mask = node_mask.astype(bool)
        ends = node_mask[graph.senders] & node_mask[graph.receivers]
        keep = ends if keep is None else keep & ends
    return keep


def _table(graph: Graph, w_E: jax.Array, keep_E: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Neighbour table for per-edge weights; dropped slots read the node itself at weight 0.

    Pointing dropped slots at the node itself (not at the dropped neighbour) means a NaN in a
    dropped neighbour cannot leak in through 0 * NaN.
    """
    n = graph.nbr.shape[0]
    valid = graph.nbr_valid & keep_E[graph.nbr_edge]
    nbr = jnp.where(valid, graph.nbr, jnp.arange(n, dtype=graph.nbr.dtype)[:, None])
    return nbr, jnp.where(valid, w_E[graph.nbr_edge], 0.0)


def _flat(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


# ----------------------------------------------------------------------------- public kernels


@functools.partial(jax.jit, static_argnames=("method",))
def mix(tree_N: PyTree, graph: Graph, edge_mask: jax.Array | None = None,
        node_mask: jax.Array | None = None, *, method: str = "auto") -> PyTree:
    """Gossip mixing: every leaf x [N, ...] becomes W @ x (over the node axis).

    A dropped edge's weight moves to its receiver's self weight, so rows stay stochastic;
    a dropped node neither sends nor receives and keeps its own model exactly. Masks are
    traced arguments: changing them (or the graph, at equal shapes) never recompiles.

    Args:
      tree_N: pytree whose leaves all have leading axis N.
      graph: `Topology.device_graph()`.
      edge_mask: optional [E] bool, False drops that edge for this call.
      node_mask: optional [N] bool, False drops that node for this call.
      method: 'gather', 'segment_sum', 'dense' or 'auto' (see `select_method`); all equal
        W @ x up to float rounding, none but 'dense' builds an N x N matrix. The sparse
        paths never read dropped nodes; 'dense' multiplies them by 0 (NaN would spread).
    Returns:
      pytree like tree_N.

    Example:
      >>> mixed_N = mix({"w": jnp.ones((4, 3))}, topology.ring(4).device_graph())
    """
    method = _resolve(method, graph)
    n, num_edges = graph.self_weight.shape[0], graph.senders.shape[0]
    keep = _edge_keep(graph, edge_mask, node_mask)
    ew, sw = graph.edge_weight, graph.self_weight
    if keep is not None:
        ew = jnp.where(keep, ew, 0.0)
        sw = sw + jax.ops.segment_sum(graph.edge_weight - ew, graph.receivers, num_segments=n)
        if node_mask is not None:
            sw = jnp.where(node_mask.astype(bool), sw, 1.0)  # exactly 1: keeps its model bit-exact
    if num_edges == 0:
        return jax.tree.map(lambda x: (treeutil.per_node(sw, x.ndim) * x).astype(x.dtype), tree_N)

    if method == "gather":
        nbr, w = (graph.nbr, graph.nbr_weight) if keep is None else _table(graph, ew, keep)
    elif method == "segment_sum":
        # Dropped edges read the receiver itself at weight 0 (NaN-safe, as in _table).
        snd = graph.senders if keep is None else jnp.where(keep, graph.senders, graph.receivers)
    else:
        mat = _dense_matrix(n, graph.senders, graph.receivers, ew, sw)

    def leaf(x: jax.Array) -> jax.Array:
        x2 = _flat(x).astype(_ctype(x.dtype))
        if method == "dense":
            out = _matmul(mat, x2)
        elif method == "gather":
            out = _sum_gather(treeutil.per_node(sw, x2.ndim) * x2, x2, nbr, w.astype(x2.dtype))
        else:
            out = _sum_segment(treeutil.per_node(sw, x2.ndim) * x2, x2, snd, graph.receivers,
                    ew.astype(x2.dtype))
        return out.reshape(x.shape).astype(x.dtype)

    return jax.tree.map(leaf, tree_N)


def mix_rows(tree_N: PyTree, graph: Graph, start: jax.Array | int, count: int) -> PyTree:
    """Rows [start, start + count) of `mix(tree_N, graph)`, read from all N rows.

    The part of a mixing step one device computes when the node axis is split over devices
    (each holds `count` rows from `start`, after gathering everyone's models): cost
    ~ count x degree rows, not N x degree. Padded-neighbour gather; `start` may be traced.

    Example:
      >>> mine = mix_rows(everyone_N, graph, start=offset, count=n_local)
    """
    take = lambda a: lax.dynamic_slice_in_dim(a, start, count)  # noqa: E731
    nbr, w, sw = take(graph.nbr), take(graph.nbr_weight), take(graph.self_weight)

    def leaf(x: jax.Array) -> jax.Array:
        x2 = _flat(x).astype(_ctype(x.dtype))
        own = take(x2)
        out = _sum_gather(treeutil.per_node(sw, own.ndim) * own, x2, nbr, w.astype(x2.dtype))
        return out.reshape((count, *x.shape[1:])).astype(x.dtype)

    return jax.tree.map(leaf, tree_N)


@functools.partial(jax.jit, static_argnames=("method",))
def push(acc_N: PyTree, count_N: jax.Array, tree_N: PyTree, send_mask_N: jax.Array,
         graph: Graph, edge_mask: jax.Array | None = None, *,
         method: str = "auto") -> tuple[PyTree, jax.Array]:
    """Gossip send from a node mask: each sender's model is added to all its out-neighbours.

    acc_N[r] += sum of tree_N[s] over in-edges s -> r with send_mask_N[s] (unweighted), and
    count_N[r] += the number of models r received.

    Args:
      acc_N: receive accumulators, same structure as tree_N.
      count_N: [N] models received so far (any numeric dtype; kept).
      tree_N: the models to send; send_mask_N: [N] bool, who sends.
      graph: the device graph; edge_mask: optional [E] bool, False drops that edge.
      method: as in `mix`.
    Returns:
      (acc_N, count_N).

    Example:
      >>> acc_N, count_N = push(zeros_N, jnp.zeros(4), params_N, jnp.ones(4, bool), graph)
    """
    method = _resolve(method, graph)
    n, num_edges = graph.self_weight.shape[0], graph.senders.shape[0]
    if num_edges == 0:
        return acc_N, count_N
    keep = send_mask_N.astype(bool)[graph.senders]
    if edge_mask is not None:
        keep = keep & edge_mask.astype(bool)
    w_E = keep.astype(jnp.float32)
    received = jax.ops.segment_sum(w_E, graph.receivers, num_segments=n)
    count_N = (count_N + received).astype(count_N.dtype)
    if method == "gather":
        nbr, w = _table(graph, w_E, keep)
    elif method == "dense":
        mat = _dense_matrix(n, graph.senders, graph.receivers, w_E, None)
    snd = jnp.where(keep, graph.senders, graph.receivers)

    def leaf(acc: jax.Array, x: jax.Array) -> jax.Array:
        ct = _ctype(jnp.result_type(acc.dtype, x.dtype))
        a2, x2 = _flat(acc).astype(ct), _flat(x).astype(ct)
        if method == "dense":
            out = a2 + _matmul(mat, x2)
        elif method == "gather":
            out = _sum_gather(a2, x2, nbr, w.astype(ct))
        else:
            out = _sum_segment(a2, x2, snd, graph.receivers, w_E.astype(ct))
        return out.reshape(acc.shape).astype(acc.dtype)

    return jax.tree.map(leaf, acc_N, tree_N), count_N


@jax.jit
def push_from(acc_N: PyTree, count_N: jax.Array, tree_K: PyTree, sender_K: jax.Array,
              valid_K: jax.Array, graph: Graph) -> tuple[PyTree, jax.Array]:
    """Gossip send from K sender slots; cost ~ K * Do rows, independent of N inside a jit.

    Slot k (if valid_K[k]) adds tree_K[k] to acc_N[r] for every out-neighbour r of node
    sender_K[k] and counts one model there. Repeated senders accumulate (scatter-add).

    Args:
      acc_N: receive accumulators (leaves [N, ...]); tree_K: same structure, leaves [K, ...].
      count_N: [N] models received so far.
      sender_K: [K] int node ids; valid_K: [K] bool, which slots really send.
      graph: the device graph (uses out_nbr / out_valid).
    Returns:
      (acc_N, count_N). Outside a jit acc_N is copied once; inside one it updates in place.

    Example:
      >>> acc_N, count_N = push_from(acc_N, count_N, params_N[:2], jnp.array([0, 3]),
      ...                            jnp.array([True, True]), graph)
    """
    n = graph.self_weight.shape[0]
    ok_KD = graph.out_valid[sender_K] & valid_K.astype(bool)[:, None]
    # Index n is out of bounds: mode='drop' discards padding slots and invalid senders.
    return push_to(acc_N, count_N, tree_K, jnp.where(ok_KD, graph.out_nbr[sender_K], n))


def push_to(acc_N: PyTree, count_N: jax.Array, tree_K: PyTree,
            dest_KD: jax.Array) -> tuple[PyTree, jax.Array]:
    """Adds tree_K[k] to acc_N[dest_KD[k, j]] for every j, counting one model per delivery.

    The routed form of `push_from`: destinations come from the network layer (drops, peer
    sampling, churn, redrawn graphs: vanish/network.py); ids >= N (no delivery) are dropped.
    Cost ~ K * D rows.
    """
    count_N = count_N.at[dest_KD.reshape(-1)].add(
        jnp.ones(dest_KD.size, count_N.dtype), mode="drop")

    def leaf(acc: jax.Array, x: jax.Array) -> jax.Array:
        x = x.astype(acc.dtype)
        # One scatter per out-slot: a single scatter of K*Do rows would materialise [K, Do, P].
        if dest_KD.shape[1] <= _CHUNK:
            for j in range(dest_KD.shape[1]):
                acc = acc.at[dest_KD[:, j]].add(x, mode="drop")
            return acc
        return lax.fori_loop(0, dest_KD.shape[1],
                             lambda j, a: a.at[dest_KD[:, j]].add(x, mode="drop"), acc)

    return jax.tree.map(leaf, acc_N, tree_K), count_N


@jax.jit
def federated_mean(tree_N: PyTree, weight_N: jax.Array) -> PyTree:
    """Weighted mean over nodes (leaves lose the N axis); weight 0 excludes a node.

    All-zero weights give zeros rather than NaN. Excluded nodes are multiplied by 0, so they
    must hold finite values.

    Args:
      tree_N: leaves [N, ...]; weight_N: [N] non-negative weights (e.g. a client mask).
    Returns:
      pytree with leaves [...].

    Example:
      >>> server = federated_mean(params_N, jnp.array([0.0, 1.0, 1.0]))  # node 0 excluded
    """
    w = weight_N.astype(jnp.float32)
    total = jnp.sum(w)
    scale = jnp.where(total > 0, 1.0 / jnp.where(total > 0, total, 1.0), 0.0)

    def leaf(x: jax.Array) -> jax.Array:
        x2 = _flat(x).astype(_ctype(x.dtype))
        s = jnp.tensordot(w.astype(x2.dtype), x2, axes=1, precision=lax.Precision.HIGHEST)
        return (s * scale).reshape(x.shape[1:]).astype(x.dtype)

    return jax.tree.map(leaf, tree_N)


def broadcast(tree: PyTree, n: int) -> PyTree:
    """Stacks n copies of a model along a new leading node axis (works inside jit).

    Example:
      >>> params_N = broadcast(server_params, 8)
    """
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + jnp.shape(x)), tree)


@jax.jit
def consensus_distance(tree_N: PyTree) -> jax.Array:
    """Mean over nodes of the squared L2 distance (all leaves) to the node-average model.

    Args:
      tree_N: leaves [N, ...].
    Returns:
      f32 scalar; 0 iff all nodes hold the same model.

    Example:
      >>> consensus_distance({"w": jnp.array([[0.0], [2.0]])})  # == 1.0
    """
    leaves = jax.tree.leaves(tree_N)
    n = leaves[0].shape[0]
    total = sum(jnp.sum((x - jnp.mean(x, axis=0)) ** 2)
                for x in (_flat(v).astype(_ctype(v.dtype)) for v in leaves))
    return (total / n).astype(jnp.float32)
