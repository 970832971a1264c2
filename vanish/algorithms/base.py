"""The Algorithm type: a small NamedTuple of pure functions the engine calls, plus helpers.

    algo = algorithms.make("gossip_vc", correction=vc, merge_slots=8)
    inbox = algo.init(params_N)                                   # per-node receive state
    inbox = algo.emit(inbox, sent, consts)                        # K trained nodes send
    params_N, inbox, merged_N = algo.end_of_tick(params_N, inbox, consts, tick)

The shape is optax's `GradientTransformation` / FedJAX's `FederatedAlgorithm`: the engine
knows nothing about any rule; an algorithm owns its inbox type (accumulated sums, message
buffers, nothing), what a sender emits into it, and what happens at the end of every chunk
(`tick.last` marks the tick's final chunk, `tick.round_end` an FL / D-PSGD round's end).
What the builder must plan for (where the nodes sit, when they train) is the algorithm's
declared `caps` (vanish/algorithms/__init__.py: Capabilities), never a name compared.

Node-local merges cost what the merges cost, not N: `for_selected` compacts the [N] mask of
merging nodes on device (an O(N) pass over int32 flags) and runs the merge on `slots`
gathered rows (more groups only on the rare ticks with more merges); nothing of model size
is touched for the other nodes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from vanish import treeutil, variance
from vanish.algorithms import Capabilities
from vanish.topology import Graph

PyTree = Any


class Consts(NamedTuple):
    """Device arrays the step reads: arguments of the compiled step, never captured.

    A rule's own constants (`part_ids`) come from its registry `consts` hook; the message
    sizes of a rule see a Consts holding only those (`Wire.sizes`)."""

    graph: Graph = None  # type: ignore[assignment]
    x_train: jax.Array = None  # type: ignore[assignment]
    y_train: jax.Array = None  # type: ignore[assignment]
    part: Any = None  # partition.PartitionArrays
    threshold: jax.Array = None  # type: ignore[assignment]  # [N] int32: merge at this count
    beta: jax.Array = None  # type: ignore[assignment]  # f32: weight of the own model
    is_client: jax.Array = None  # type: ignore[assignment]  # [N] bool: nodes that train
    round_ticks: jax.Array = None  # type: ignore[assignment]  # int32: FL / D-PSGD round
    # bool [ticks]: the ticks that close a round when the plan sets them (fl without a
    # deadline: schedule.waiting_rounds); None: every round_ticks-th tick
    round_end: jax.Array | None = None
    part_ids: PyTree = None  # partitioned gossip: coordinate -> partition id, else None
    net: Any = None  # vanish.network.Net: faults and dynamics; None = the fault-free network
    # uint32: the run's seed, for a rule that draws its own randomness on the device
    # (modest's aggregator samples); None = 0
    seed: Any = None


class Sent(NamedTuple):
    """What K trained slots hand to `emit`."""

    params: PyTree  # [K, ...] the freshly trained models
    node: jax.Array  # [K] int32 node ids
    send: jax.Array  # [K] bool: the slot is valid and sends after this event
    key: jax.Array  # [K] per-(tick, node) keys
    event_ord: jax.Array  # [K] the sender's training-event ordinal (before this one)
    # [K, D] int32 receivers of each slot's message (>= N: none), routed by the engine's
    # network layer (vanish/network.py); None: every out-neighbour of a sending slot.
    dest: jax.Array | None = None


class Tick(NamedTuple):
    """Where the engine is when it calls `end_of_tick`."""

    tick: jax.Array  # int32
    last: jax.Array  # bool: the final chunk of this tick
    round_end: jax.Array  # bool: last and (tick + 1) % round_ticks == 0 (or consts.round_end)
    key: jax.Array  # this tick's key
    online: jax.Array | None = None  # [N] bool under churn (vanish/network.py), else None
    # Scale-out (vanish/engine.py): under shard_map the rule sees this device's rows of the
    # node axis, global rows [offset, offset + n); `axis` names the mesh axis (None: all
    # nodes are here). Rules that read other nodes' rows use node_row / all_nodes.
    axis: str | None = None
    offset: Any = 0  # int32 global id of local row 0


class Wire(NamedTuple):
    """What a rule puts on the wire, for the byte counters (vanish/engine.py).

    A rule's messages are of M kinds, each of a fixed size in bytes: `sizes(template,
    consts)` gives them (host ints) from one node's params (arrays or ShapeDtypeStructs, no
    node axis) and the consts; `kind(sent, consts)` says which kind each sent slot is ([K]
    int32; None: all kind 0). A message goes to every receiver it is routed to, or to at
    most `fanout` of them (0: all); with `sends` False the trained slots send nothing.
    Transfers that are not sent slots (an FL server's broadcast at a round's end, a D-PSGD
    mixing round) are `rounds(merged_N, inbox, consts, tick) -> (sent, received)`, [N, M]
    int32 message counts of this call (None: none); `inbox` is the one `end_of_tick` was
    given (before a round's end clears it: who aggregated what). The engine counts messages
    on the device (int32, exact); bytes are counts x sizes on the host.
    """

    sizes: Callable[[PyTree, Consts], tuple[int, ...]]
    kind: Callable[[Sent, Consts], jax.Array] | None = None
    rounds: Callable[[jax.Array, Any, Consts, Tick], tuple[jax.Array, jax.Array]] | None = None
    fanout: int = 0
    sends: bool = True  # False: the trained slots send nothing (rules that talk at rounds)
    # > 0: the rule addresses its own receivers (`encode` sets Sent.dest), at most this many
    # per message (the in-flight queue's width under delays).
    dest_width: int = 0


def model_bytes(template: PyTree) -> int:
    """Bytes of one full model: every leaf's elements times its item size."""
    return int(sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(template)))


FULL_MODEL = Wire(sizes=lambda template, consts: (model_bytes(template),))


def local_rows(x_N: jax.Array, tick: Tick, n: int) -> jax.Array:
    """This device's n rows of a global [N, ...] array (all of it when not sharded)."""
    if tick.axis is None:
        return x_N
    return lax.dynamic_slice_in_dim(x_N, tick.offset, n)


class Algorithm(NamedTuple):
    """A rule as a value: three pure functions, its registered name and its capabilities
    (declared in its registry line; `algorithms.make` fills both), plus optional hooks:

    * `encode(inbox, sent, consts) -> (inbox, sent)`: what the K trained nodes put on the
      wire, called right after training, before the network routes the messages (a
      compressor with its sender-side state; None: the trained models themselves);
    * `select(sent, consts) -> sent`: the receivers a delivered message goes to, among those
      the network routed it to (`Sent.dest`, [K, D'], >= N: none), called before `emit`
      (one random peer for classic gossip; None: all of them);
    * `wire`: its message kinds and sizes for the byte counters (None: every message is
      one full model, `FULL_MODEL`);
    * `stats(inbox) -> {name: scalar}`: numbers of its own receive state for every metrics
      row (the staleness of asynchronous FL's updates; None: none).
    """

    name: str
    init: Callable[[PyTree], PyTree]
    emit: Callable[[PyTree, Sent, Consts], PyTree]
    end_of_tick: Callable[[PyTree, PyTree, Consts, Tick], tuple[PyTree, PyTree, jax.Array]]
    caps: Capabilities = Capabilities()
    encode: Callable[[PyTree, Sent, Consts], tuple[PyTree, Sent]] | None = None
    select: Callable[[Sent, Consts], Sent] | None = None
    wire: Wire | None = None
    stats: Callable[[PyTree], dict[str, jax.Array]] | None = None


def correction_for(corrected: bool,
                   correction: variance.CorrectionConfig | None) -> variance.CorrectionConfig:
    """The correction a rule applies: `correction` (default: target 'others') if corrected,
    else plain averaging (target 'none')."""
    if not corrected:
        return variance.CorrectionConfig(target="none")
    return variance.CorrectionConfig() if correction is None else correction


def no_inbox(params_N: PyTree) -> None:
    """`init` of a rule with no receive state: the inbox is None."""
    del params_N
    return None


def no_emit(inbox: PyTree, sent: Sent, consts: Consts) -> PyTree:
    """`emit` of a rule that receives nothing from the trained nodes: the inbox unchanged."""
    del sent, consts
    return inbox


def num_nodes(params_N: PyTree) -> int:
    """Rows of a node-stacked tree: the leading axis of its first leaf."""
    return jax.tree.leaves(params_N)[0].shape[0]


def take(tree_N: PyTree, idx_M: jax.Array) -> PyTree:
    """Rows idx_M of every leaf of a node-stacked tree: [N, ...] -> [M, ...].

    Ids >= N (padding) are clamped to the last row by JAX's gather; callers discard them.
    """
    return jax.tree.map(lambda x: x[idx_M], tree_N)


def put(tree_N: PyTree, idx_M: jax.Array, tree_M: PyTree) -> PyTree:
    """Writes rows back; indices >= N (padding) are dropped."""
    return jax.tree.map(lambda x, v: x.at[idx_M].set(v.astype(x.dtype), mode="drop"),
                        tree_N, tree_M)



def for_selected(mask_N: jax.Array, slots: int, body: Callable[[PyTree, jax.Array, jax.Array],
                 PyTree], carry: PyTree) -> PyTree:
    """Runs body(carry, idx_M, valid_M) over the selected nodes, `slots` at a time.

    idx_M holds selected node ids (padding: N, out of bounds, so `put` drops it and `take`
    clamps it to a real row whose result is then discarded). The loop runs
    ceil(count / slots) times: zero when nothing is selected. The body must write rows that
    are computed from what it gathered (see `merge_selected`), so XLA updates the carried
    stacks in place; size `slots` to the usual merges per tick (the builder does).
    """
    n = mask_N.shape[0]
    count = jnp.sum(mask_N.astype(jnp.int32))
    idx = jnp.nonzero(mask_N, size=n, fill_value=n)[0].astype(jnp.int32)
    idx = jnp.concatenate([idx, jnp.full((slots,), n, jnp.int32)])

    def step(g: jax.Array, c: PyTree) -> PyTree:
        idx_M = lax.dynamic_slice(idx, (g * slots,), (slots,))
        return body(c, idx_M, idx_M < n)

    return lax.fori_loop(0, (count + slots - 1) // slots, step, carry)


def destinations(sent: Sent, graph: Graph) -> jax.Array:
    """[K, D] receivers of the sent messages (ids >= N: not delivered)."""
    if sent.dest is not None:
        return sent.dest
    n = graph.self_weight.shape[0]
    ok = graph.out_valid[sent.node] & sent.send[:, None]
    return jnp.where(ok, graph.out_nbr[sent.node], n)


def node_row(tree_N: PyTree, tick: Tick, i: int) -> PyTree:
    """Row of global node i of a node-stacked tree, on every device (one psum when sharded)."""
    if tick.axis is None:
        return jax.tree.map(lambda x: x[i], tree_N)
    n = num_nodes(tree_N)
    local = i - tick.offset
    mine = (local >= 0) & (local < n)
    row = jax.tree.map(lambda x: jnp.where(mine, x[jnp.clip(local, 0, n - 1)],
                                           jnp.zeros_like(x[0])), tree_N)
    return lax.psum(row, tick.axis)


def all_nodes(tree_N: PyTree, tick: Tick) -> PyTree:
    """Every node's rows (all-gathered when sharded): for rules that mix all of them."""
    if tick.axis is None:
        return tree_N
    return lax.all_gather(tree_N, tick.axis, tiled=True)


def zeros(tree: PyTree) -> PyTree:
    """Cleared inbox rows: every leaf zero (the accumulator inboxes)."""
    return jax.tree.map(jnp.zeros_like, tree)


def ready_to_merge(count_N: jax.Array, consts: Consts, tick: Tick) -> jax.Array:
    """[N] bool: at a tick's last chunk, nodes holding >= threshold (and > 0) messages."""
    return tick.last & (count_N >= consts.threshold) & (count_N > 0)


def merge_selected(params_N: PyTree, inbox: PyTree, merged_N: jax.Array, slots: int,
                   merge: Callable[[PyTree, PyTree, jax.Array, jax.Array], PyTree],
                   empty: Callable[[PyTree], PyTree] = zeros) -> tuple[PyTree, PyTree]:
    """Node-local merges of the nodes in merged_N: params <- merge(params, inbox), inbox emptied.

    merge(params_M, inbox_M, valid_M, idx_M) -> params_M works on gathered rows (idx_M: their
    rows of the node axis, for a rule that reads per-node data); `empty(inbox_M)` gives the
    cleared rows. Cost ~ merges * model size (see the module docstring).
    """

    def body(c: tuple[PyTree, PyTree], idx_M: jax.Array,
             valid_M: jax.Array) -> tuple[PyTree, PyTree]:
        p, ib = c
        ib_M = take(ib, idx_M)
        new_M = merge(take(p, idx_M), ib_M, valid_M, idx_M)
        # The cleared rows are computed FROM the gathered ones (a select on valid_M): with no
        # data dependence XLA may not order the gather before the in-place scatter, and then
        # copies every inbox stack (measured: 30 full-N copies per call at N = 1000).
        cleared = jax.tree.map(lambda e, x: jnp.where(treeutil.per_node(valid_M, x.ndim), e, x),
                empty(ib_M), ib_M)
        return put(p, idx_M, new_M), put(ib, idx_M, cleared)

    return for_selected(merged_N, slots, body, (params_N, inbox))
