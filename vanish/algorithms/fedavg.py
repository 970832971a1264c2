"""Federated averaging: a star whose node 0 is a server that never trains.

`fl` is the authors' baseline (as the authors' simulator, DFL_torch, runs it): in every
round of R ticks each participating client (a `client_fraction` sample, drawn per round from
the seed) trains exactly E local steps from the server's model (E = 1, at the round's middle
tick) and sends its model to the server; at the round's end the server takes the mean of
what it received and every node adopts it. The server's inbox is the gossip accumulator, so
a send costs what it costs in gossip; the round end is one broadcast. With `round_ticks` 0
a round has no deadline: the participants train E steps from its first tick (on the
simulated clock, each step its node's compute time) and the round ends when the last of
their updates has arrived (`schedule.waiting_rounds`: synchronous FL, where the slowest
participant holds the round).

`fl_sched` is the earlier variant: clients train on the gossip schedule (some client-rounds
contribute 0 steps, others 2) and at each round's end the server averages the current
models of a client sample drawn on device.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vanish import mixing, schedule, treeutil, variance
from vanish.algorithms import base, gossip

PyTree = Any


def round_end(params_N: PyTree, inbox: gossip.Inbox, consts: base.Consts,
              tick: base.Tick) -> tuple[PyTree, gossip.Inbox, jax.Array]:
    """`fl`'s end of tick: at a round's end the server (node 0) averages what it received.

    If the server received models this round, every node (under churn: every online node)
    adopts their mean; the inboxes are cleared at every round's end. Other ticks change
    nothing.

    Returns:
      (params_N, inbox, merged_N): merged_N [N] bool, the clients that adopted the mean.
    """
    n = base.num_nodes(params_N)

    # The server is node 0: its inbox row, on every device when the nodes are sharded.
    server_count = base.node_row(inbox.count, tick, 0)

    def adopt(args: tuple[PyTree, gossip.Inbox]) -> tuple[PyTree, gossip.Inbox]:
        p, ib = args
        cnt = server_count
        mean = jax.tree.map(lambda t: t / jnp.maximum(cnt, 1).astype(t.dtype),
                            base.node_row(ib.total, tick, 0))
        new = mixing.broadcast(mean, n)
        take = cnt > 0 if tick.online is None else (cnt > 0) & tick.online  # churn: offline
        p = jax.tree.map(lambda old, x: jnp.where(treeutil.per_node(take, old.ndim), x, old), p,
                new)
        return p, base.zeros(ib)

    received = server_count > 0  # (a dropped-out round adopts nothing: no merge counted)
    params_N, inbox = jax.lax.cond(tick.round_end, adopt, lambda a: a, (params_N, inbox))
    merged = consts.is_client & tick.round_end & received
    return params_N, inbox, merged if tick.online is None else merged & tick.online


def client_weights(key: jax.Array, is_client_N: jax.Array, fraction: float) -> jax.Array:
    """Samples round(fraction * clients) participating clients (at least one) uniformly."""
    n_clients = jnp.sum(is_client_N)
    m = jnp.maximum(1, jnp.round(fraction * n_clients)).astype(jnp.int32)
    score = jnp.where(is_client_N, jax.random.uniform(key, is_client_N.shape), 2.0)
    rank = jnp.argsort(jnp.argsort(score))
    return (rank < m).astype(jnp.float32)


def fedavg_round(params_N: PyTree, weight_N: jax.Array) -> PyTree:
    """Every node adopts the weighted client mean (weight 0: the server, unsampled clients)."""
    return mixing.broadcast(mixing.federated_mean(params_N, weight_N), weight_N.shape[0])


def sched_round_end(fraction: float, params_N: PyTree, inbox: None, consts: base.Consts,
                    tick: base.Tick) -> tuple[PyTree, None, jax.Array]:
    """`fl_sched`'s end of tick: at a round's end every node adopts the mean of the
    current models of a `fraction` sample of the clients (`client_weights`, drawn from the
    tick's key).

    Returns:
      (params_N, None, merged_N): merged_N [N] bool, every client at a round's end.
    """
    n = base.num_nodes(params_N)
    weight = client_weights(jax.random.fold_in(tick.key, n), consts.is_client, fraction)
    params_N = jax.lax.cond(tick.round_end, lambda p: fedavg_round(p, weight), lambda p: p,
                            params_N)
    return params_N, inbox, consts.is_client & tick.round_end


def _psum(x: jax.Array, tick: base.Tick) -> jax.Array:
    return x if tick.axis is None else jax.lax.psum(x, tick.axis)


def _server_row(n: int, tick: base.Tick) -> jax.Array:
    """[n] bool: this device's row that is the server (global node 0), if any."""
    return (jnp.arange(n) + tick.offset) == 0


def broadcast_traffic(merged_N: jax.Array, inbox: Any, consts: base.Consts,
                      tick: base.Tick) -> tuple[jax.Array, jax.Array]:
    """A round's download: the server sends its model to every client that adopts it.
    (Uploads are the clients' sent slots, counted by the engine.)"""
    got = merged_N.astype(jnp.int32)
    sent = jnp.where(_server_row(got.shape[0], tick), _psum(jnp.sum(got), tick), 0)
    return sent[:, None], got[:, None]


def sched_traffic(fraction: float, merged_N: jax.Array, inbox: Any, consts: base.Consts,
                  tick: base.Tick) -> tuple[jax.Array, jax.Array]:
    """`fl_sched`'s round end: the sampled clients upload, every client downloads."""
    n = merged_N.shape[0]
    up = (client_weights(jax.random.fold_in(tick.key, n), consts.is_client, fraction) > 0)
    up = (up & tick.round_end).astype(jnp.int32)
    down = merged_N.astype(jnp.int32)
    server = _server_row(n, tick)
    sent = up + jnp.where(server, _psum(jnp.sum(down), tick), 0)
    received = down + jnp.where(server, _psum(jnp.sum(up), tick), 0)
    return sent[:, None], received[:, None]


def plan(request: Any) -> schedule.Schedule:
    """`fl`'s `schedule` hook: rounds with a deadline of round_ticks (`schedule.fl_rounds`),
    or, with round_ticks 0, rounds that wait for their slowest participant on the run's
    clock and network (`schedule.waiting_rounds`; the plan then carries the round ends)."""
    k = request.knobs
    if int(k["round_ticks"]) > 0:
        return schedule.rounds_plan(request)
    return schedule.waiting_rounds(
        request.n, request.ticks, seed=request.seed, local_steps=int(k["local_steps"]),
        fraction=float(k["client_fraction"]), trainers=request.trainers,
        trip=schedule.timing(request.n, request.clock, request.network))


def make(*, round_ticks: int = 10, client_fraction: float = 1.0,
         local_steps: int = 1) -> base.Algorithm:
    """`fl`. Its knobs shape the plan, not these functions: the builder draws the rounds
    (`schedule.fl_rounds`: R = round_ticks, E = local_steps, the client sample) from them."""
    del round_ticks, client_fraction, local_steps
    none = variance.CorrectionConfig(target="none")
    return base.Algorithm(
        name="fl", init=gossip.init, emit=lambda ib, s, c: gossip.emit(none, ib, s, c),
        end_of_tick=round_end, wire=base.FULL_MODEL._replace(rounds=broadcast_traffic))


def make_sched(*, round_ticks: int = 10, client_fraction: float = 1.0) -> base.Algorithm:
    """`fl_sched`: a `client_fraction` sample averaged every `round_ticks` (a plan value)."""
    del round_ticks
    return base.Algorithm(
        name="fl_sched", init=base.no_inbox, emit=base.no_emit,
        end_of_tick=lambda p, ib, c, t: sched_round_end(client_fraction, p, ib, c, t),
        wire=base.FULL_MODEL._replace(
            rounds=lambda m, ib, c, t: sched_traffic(client_fraction, m, ib, c, t), sends=False))
