"""Evaluation, metric names and run summaries: everything measured about a simulation.

    evaluate = metrics.make_evaluator(model, nodes_per_chunk=64)
    out = evaluate(state.params, x_T, y_T, is_client_N, state)   # one jitted call, on device
    row = metrics.to_row(jax.device_get(out), is_client, has_server=False)
    summary = metrics.summarize(rows, target=0.8)

Evaluation is O(N) in time but not in memory: nodes are evaluated `nodes_per_chunk` at a
time (`lax.map` over chunks of a vmapped eval), so the activations alive at once are one
chunk's, whatever N is. The "global average model" (the plain mean of all clients' models,
"A Single Merging Suffices", 2025) is evaluated too: it shows whether the nodes stay
mergeable.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from vanish import mixing, nodes, registry, treeutil, variance

PyTree = Any

# Metric names (one constant each; rows, summaries, plots and W&B read these).
ACC_MEAN, ACC_MIN, ACC_MAX, ACC_STD = "acc_mean", "acc_min", "acc_max", "acc_std"
LOSS_MEAN, LOSS_MIN, LOSS_MAX, LOSS_STD = "loss_mean", "loss_min", "loss_max", "loss_std"
CONSENSUS = "consensus"
AVERAGING_EVENTS, TRAINING_EVENTS = "averaging_events", "training_events"
# Asynchronous FL's rows (vanish/algorithms/fedasync.py `stats`) and their run summary.
STALENESS_MEAN, MEAN_STALENESS = "staleness_mean", "mean_staleness"
TRAIN_LOSS = "train_loss"
SERVER_ACC = "server_acc"
GLOBAL_ACC, GLOBAL_LOSS = "global_acc", "global_loss"
TICKS_PER_S = "ticks_per_s"
MSGS_SENT, MSGS_DELIVERED, MSGS_DROPPED = "msgs_sent", "msgs_delivered", "msgs_dropped"
NODES_ONLINE = "nodes_online"
MERGES_MIN, MERGES_MEAN, MERGES_MAX = "merges_min", "merges_mean", "merges_max"
VAR_PREFIX, VAR_RATIO_PREFIX = "var/", "var_ratio/"
# Bytes on the wire so far: per node (mean, max over all nodes, an FL server included) and
# the network's total; sent counts every copy a sender put on the wire (lost ones too).
BYTES_SENT_MEAN, BYTES_SENT_MAX, BYTES_SENT_TOTAL = (
    "bytes_sent_mean", "bytes_sent_max", "bytes_sent_total")
BYTES_RECV_MEAN, BYTES_RECV_MAX = "bytes_recv_mean", "bytes_recv_max"
SIM_SECONDS = "sim_seconds"  # simulated time of the row (vanish/clock.py)
# Summary names.
FINAL_ACC, TICKS_TO_TARGET, VAR_RATIO = "final_acc", "ticks_to_target", "var_ratio"
# Mean bytes a node sent until the target accuracy was first reached, and the simulated
# seconds it took.
BYTES_TO_TARGET, SECONDS_TO_TARGET = "bytes_to_target", "seconds_to_target"


layer_name = treeutil.layer_name  # 'Conv_0/kernel' for a key path


def kernel_norm(params: PyTree) -> jax.Array:
    """The L2 norm of one node's kernels, all of them flattened into one vector."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for path, x in leaves
                        if "kernel" in jax.tree_util.keystr(path)))


# Extra per-node metrics a run can ask for by name (config.run.metrics; vanish/registry.py's
# shape): a line's factory maps ONE node's params to a scalar. The evaluator vmaps it over the
# nodes (each device over its own rows when the node axis is split); a metrics row gets its
# mean over the evaluated nodes under the metric's name, and the summary its final value as
# `final_<name>`. Adding a metric is a function plus a line (or `register`).
REGISTRY: dict[str, registry.Component] = {
    "kernel_norm": registry.Component(kernel_norm, "L2 norm of a node's kernels (mean over "
                                      "nodes): how far training and merging move the weights"),
}


def register(name: str, line: registry.Component) -> None:
    """Adds a per-node metric: a function of one node's params to a scalar."""
    registry.register(REGISTRY, name, line, kind="metric")


def make_evaluator(model: Any, nodes_per_chunk: int = 64,
                   mesh: jax.sharding.Mesh | None = None,
                   extra: tuple[str, ...] = ()) -> Callable[..., dict[str, Any]]:
    """A jitted evaluation (params_N, x_T, y_T, weight_N, state) -> device dict of metrics.

    `mesh`: the node axis is split over its axis 'nodes' (engine.py). Each device then
    evaluates only its own nodes, `nodes_per_chunk` at a time, and the node-wide numbers
    (means, the global average model, consensus) are combined with psums; the metrics come
    back replicated, so every process can read them. (A plain jit of the same function
    would all-gather every model to every device whenever nodes_per_chunk < N.)
    `extra`: names of REGISTRY metrics, each evaluated on every node ([N] in `extra`).
    """
    node_metrics = {name: jax.vmap(REGISTRY[name].factory) for name in extra}
    eval_N = nodes.make_eval_step(model)  # vmapped over a stack of nodes

    def one_chunk_at_a_time(params_N: PyTree, x_T: jax.Array,
                            y_T: jax.Array) -> tuple[jax.Array, jax.Array]:
        # A fori_loop of dynamic slices (not lax.map, which first copies the whole stack into
        # a [chunks, C, ...] layout). The last chunk is shifted back to end at N; the nodes it
        # shares with the previous chunk are evaluated twice, with identical results.
        n = jax.tree.leaves(params_N)[0].shape[0]
        c = min(max(1, int(nodes_per_chunk)), n)

        def body(i: jax.Array, out: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
            start = jnp.minimum(i * c, n - c)
            chunk = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, c), params_N)
            acc, loss = eval_N(chunk, x_T, y_T)
            return (jax.lax.dynamic_update_slice_in_dim(out[0], acc, start, 0),
                    jax.lax.dynamic_update_slice_in_dim(out[1], loss, start, 0))

        zeros = jnp.zeros((n,), jnp.float32)
        return jax.lax.fori_loop(0, -(-n // c), body, (zeros, zeros))

    def evaluate(params_N: PyTree, x_T: jax.Array, y_T: jax.Array, weight_N: jax.Array,
                 train_count: jax.Array, merges: jax.Array, loss_sum: jax.Array,
                 loss_n: jax.Array, axis: str | None = None) -> dict[str, Any]:
        acc_N, loss_N = one_chunk_at_a_time(params_N, x_T, y_T)
        extra_N = {name: fn(params_N).astype(jnp.float32) for name, fn in node_metrics.items()}
        var = variance.layer_variance(params_N)
        if axis is None:
            layer_var = {layer_name(path): jnp.mean(v)
                         for path, v in jax.tree_util.tree_flatten_with_path(var)[0]}
            avg = mixing.federated_mean(params_N, weight_N)
            consensus = mixing.consensus_distance(params_N)
            psum = lambda x: x  # noqa: E731
        else:  # this device's rows; node-wide sums by psum
            psum = functools.partial(jax.lax.psum, axis_name=axis)
            n_all = acc_N.shape[0] * jax.lax.axis_size(axis)
            layer_var = {layer_name(path): psum(jnp.sum(v)) / n_all
                         for path, v in jax.tree_util.tree_flatten_with_path(var)[0]}
            mine, everyone = jnp.sum(weight_N), psum(jnp.sum(weight_N))
            avg = jax.tree.map(lambda a: psum(a * mine) / jnp.where(everyone > 0, everyone, 1),
                               mixing.federated_mean(params_N, weight_N))
            consensus = _consensus_sharded(params_N, psum, n_all)
            acc_N, loss_N, extra_N = jax.lax.all_gather((acc_N, loss_N, extra_N), axis,
                                                        tiled=True)
        g_loss, g_acc = nodes.loss_and_accuracy(model, avg, x_T, y_T)
        total_n = psum(jnp.sum(loss_n))
        return dict(
            acc_N=acc_N, loss_N=loss_N, extra_N=extra_N, layer_var=layer_var, global_acc=g_acc,
            global_loss=g_loss, consensus=consensus,
            merges=psum(jnp.sum(merges)), train_events=psum(jnp.sum(train_count)),
            train_loss=psum(jnp.sum(loss_sum)) / jnp.maximum(total_n, 1), train_n=total_n)

    if mesh is None:
        return jax.jit(evaluate)
    split, rep = P(nodes.NODE_AXIS), P()
    return jax.jit(jax.shard_map(
        functools.partial(evaluate, axis=nodes.NODE_AXIS), mesh=mesh,
        in_specs=(split, rep, rep, split, split, split, split, split), out_specs=rep,
        check_vma=False))


def _consensus_sharded(tree_n: PyTree, psum: Callable[[jax.Array], jax.Array],
                       n_all: int) -> jax.Array:
    """`mixing.consensus_distance` of all nodes from this device's rows and psums."""
    total = jnp.float32(0.0)
    for v in jax.tree.leaves(tree_n):
        x = v.reshape(v.shape[0], -1).astype(jnp.result_type(v.dtype, jnp.float32))
        mean = psum(jnp.sum(x, axis=0)) / n_all
        total = total + psum(jnp.sum((x - mean) ** 2))
    return (total / n_all).astype(jnp.float32)


def to_row(out: dict[str, Any], eval_nodes: np.ndarray, *, has_server: bool) -> dict[str, Any]:
    """Host metrics of one evaluation from the evaluator's (device_get) output."""
    acc, loss = out["acc_N"][eval_nodes], out["loss_N"][eval_nodes]
    m: dict[str, Any] = {
        ACC_MEAN: float(acc.mean()), ACC_MIN: float(acc.min()), ACC_MAX: float(acc.max()),
        ACC_STD: float(acc.std()), LOSS_MEAN: float(loss.mean()), LOSS_MIN: float(loss.min()),
        LOSS_MAX: float(loss.max()), LOSS_STD: float(loss.std()),
        CONSENSUS: float(out["consensus"]), AVERAGING_EVENTS: int(out["merges"]),
        TRAINING_EVENTS: int(out["train_events"]),
        GLOBAL_ACC: float(out["global_acc"]), GLOBAL_LOSS: float(out["global_loss"]),
    }
    if out["train_n"] > 0:
        m[TRAIN_LOSS] = float(out["train_loss"])
    if has_server:
        m[SERVER_ACC] = float(out["acc_N"][0])
    for path, v in out["layer_var"].items():
        m[f"{VAR_PREFIX}{path}"] = float(v)
    for name, v_N in out.get("extra_N", {}).items():
        m[name] = float(np.asarray(v_N)[eval_nodes].mean())
    return m


def network_row(stats: np.ndarray, online_N: np.ndarray, merges_N: np.ndarray,
                is_client: np.ndarray) -> dict[str, Any]:
    """Message counts so far, clients online now, per-node merge counts (network plans)."""
    m = np.asarray(merges_N)[is_client]
    return {MSGS_SENT: int(stats[0]), MSGS_DELIVERED: int(stats[1]), MSGS_DROPPED: int(stats[2]),
            NODES_ONLINE: int(np.asarray(online_N)[is_client].sum()),
            MERGES_MIN: int(m.min()), MERGES_MEAN: float(m.mean()), MERGES_MAX: int(m.max())}


def traffic_row(sent_N: np.ndarray, received_N: np.ndarray) -> dict[str, Any]:
    """Bytes sent and received so far ([N] int64 each, vanish.engine.Engine.traffic_bytes)."""
    return {BYTES_SENT_MEAN: float(sent_N.mean()), BYTES_SENT_MAX: int(sent_N.max()),
            BYTES_SENT_TOTAL: int(sent_N.sum()), BYTES_RECV_MEAN: float(received_N.mean()),
            BYTES_RECV_MAX: int(received_N.max())}


def variance_ratios(row: dict[str, Any], var0: dict[str, float]) -> dict[str, float]:
    """Each layer's mean weight variance relative to its value at tick 0 (the one definition)."""
    return {f"{VAR_RATIO_PREFIX}{k}": row[f"{VAR_PREFIX}{k}"] / v for k, v in var0.items()
            if v > 0 and f"{VAR_PREFIX}{k}" in row}


def initial_variances(row: dict[str, Any]) -> dict[str, float]:
    """{layer path: variance} from a metrics row's 'var/' entries (the tick-0 row gives
    `variance_ratios` its reference)."""
    return {k[len(VAR_PREFIX):]: v for k, v in row.items() if k.startswith(VAR_PREFIX)}


def summarize(records: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """Final accuracy, ticks to the target mean accuracy and final per-layer variance ratios.

    `var_ratio` is the mean over kernel leaves of their final variance ratio.
    """
    if not records:
        return {}
    last = records[-1]
    # Accuracies are k / T in float32 (80 of 100 images: 0.79999995): compare with a margin
    # far below one image, or a run that reaches the target exactly would never count.
    hit = [r["tick"] for r in records if r.get(ACC_MEAN, -1.0) >= target - 1e-6]
    out: dict[str, Any] = dict(
        final_tick=last["tick"], final_acc=last[ACC_MEAN], final_acc_min=last[ACC_MIN],
        best_acc=max(r[ACC_MEAN] for r in records), target_accuracy=target,
        ticks_to_target=hit[0] if hit else None, averaging_events=last[AVERAGING_EVENTS],
    )
    if GLOBAL_ACC in last:
        out["final_global_acc"] = last[GLOBAL_ACC]
    for key, to_target in ((BYTES_SENT_MEAN, BYTES_TO_TARGET), (SIM_SECONDS, SECONDS_TO_TARGET)):
        if key in last:  # the value at the row that first reached the target
            out[key] = last[key]
            at = [r.get(key) for r in records if hit and r["tick"] == hit[0]]
            out[to_target] = at[0] if at else None
    out.update({f"final_{name}": last[name] for name in REGISTRY if name in last})
    stale = [r[STALENESS_MEAN] for r in records if r.get(STALENESS_MEAN, -1) >= 0]
    if stale:  # asynchronous FL: the rows' staleness, averaged over the run
        out[MEAN_STALENESS] = float(np.mean(stale))
    ratios = {k: v for k, v in last.items() if k.startswith(VAR_RATIO_PREFIX)}
    out.update(ratios)
    kernel = kernel_var_ratio(ratios)
    if kernel is not None:
        out[VAR_RATIO] = kernel
    return out


def kernel_var_ratio(values: dict[str, Any]) -> float | None:
    """THE variance ratio of a run: the mean over kernel leaves of 'var_ratio/<layer>'."""
    kernel = [v for k, v in values.items() if k.startswith(VAR_RATIO_PREFIX)
              and k.endswith("kernel") and isinstance(v, (int, float))]
    return float(np.mean(kernel)) if kernel else None
