"""Asynchronous federated learning: FedAsync (`fl_async`, Xie et al. 2019) and FedBuff
(`fl_buff`, Nguyen et al. 2022), on `fl`'s star (node 0 a server that never trains).

Semantics (both rules; E = local_steps, c = concurrency):

* Every node starts from one model (shared init), the server's version 0.
* Cycles, planned on the host (`plan`, the rule's `schedule` hook): a client trains E steps,
  one per tick on consecutive ticks (on the simulated clock: every ceil(compute / tick
  seconds) ticks, its `interval_floor`), from the model it last received, and sends its
  model after the last step. The update reaches the server `up` ticks after that step: the
  network delay (the upper end of `network.delay`) plus, on the clock, the client's link
  time of one model (compute, latency, bytes / bandwidth: `Clock.link_ticks`), exactly as
  the engine's in-flight queue delivers it. The server's reply takes `down` ticks: the
  network delay again (the server's link is free on the clock, as for `fl`'s broadcast).
  The client's next cycle starts the tick after the reply arrived, so its cycle is
  (E - 1) * gap + up + down + 1 ticks (E ticks without delays and clock). With a delay
  range the plan assumes the longest delay: an update that arrives earlier is applied
  earlier, and its client idles until its planned start.
* Concurrency: c clients hold a training slot at once (0: all clients; more than the
  clients: all). Clients 1..c start at tick 0, the others wait in a queue in node order.
  A client that finishes its cycle (the tick it would start again) joins the queue's tail
  (clients finishing at the same tick in the order they started) and the freed slot goes to
  the queue's head, which starts at that tick. With c = all every client restarts at once.
  A waiting client trains on the reply it received when its last update was applied (it
  holds no slot meanwhile), so its wait counts in its staleness.
* The server (device side, `end_of_tick`): the updates that arrived in a tick are applied
  at the tick's end, in node-id order. tau, an update's staleness, is the server's version
  when it is applied minus the version of the model its client started from.
    - FedAsync: x_s <- (1 - a_t) x_s + a_t x_c, a_t = alpha * (1 + tau)^(-a); every
      update bumps the version (so the second update of a tick is at least 1 version stale).
    - FedBuff: the client's delta d = x_c - (the server model it started from), weighted
      s(tau) = (1 + tau)^(-a), joins a buffer; every K-th buffered update flushes it:
      x_s <- x_s + eta * (sum of the K weighted deltas) / K, one version bump per flush.
      A partial buffer waits for more updates (at the run's end it is left unapplied).
* Replies: at the end of the tick its update arrived, every such client receives the
  server's model as it stands then (after all of that tick's updates) and its version; its
  model row and (FedBuff) its start model are replaced. FedBuff clients do not wait for the
  flush that includes their update: the server acknowledges each update with its current
  model (which includes the update only if that tick's updates filled the buffer). The
  reply travels `down` ticks in the plan; on the device it is written at once, so between
  the reply and the next cycle the client's row already holds it (it does not train then).
* The plan is drawn before the run and ignores faults: an offline client keeps its slot, and
  a planned cycle runs whether or not the client's previous reply came.
* Faults: an offline client (churn) neither trains nor sends (the engine masks it), so its
  update is missing and the server goes on with the others'; a lost update (drops) the
  same. A client whose update was lost keeps its model and start model and trains on at
  its next planned cycle (as after a timeout): its next update then carries both cycles'
  progress, with the staleness of its old start. A reply to a client that went offline
  after sending is held for it (it cannot train before it is back), so it adopts at once.
  Byzantine clients' updates are the corrupted payloads, like every message.
* Bytes: uploads are the clients' sent slots (counted by the engine, lost ones included);
  downloads one model per reply (`Wire.rounds`: the server sends, the client receives).

`fl_buff` with K = the number of clients, a = 0, eta = 1, no delays, no clock, no faults and
concurrency all equals synchronous `fl` with client_fraction 1 whenever both train on the
same ticks: every client sends at the same tick, the K-th update flushes the mean delta
x_s + mean(x_c - x_s) = mean(x_c) (to float rounding), and every client receives it. That
is E = local_steps = 1 with fl's round_ticks = 1 (fl trains at tick r R + R // 2, here every
tick); for E > 1, fl starts a round's steps at its middle tick R // 2 >= 1 while an async
client starts a cycle at once, so their batches (drawn per (tick, node)) differ.

Device state (`Inbox`, fixed shapes): per node its start version, an arrival flag, the
staleness of its last applied update, and one model row (`held`): FedAsync the arrived
model; FedBuff the client's start model, replaced by its delta when its update arrives, and
in the server's row 0 the buffered sum. No loop over nodes: arrivals are compacted on the
device and applied in a `fori_loop` over the tick's arrivals (cost ~ arrivals x model).
Not written for a node axis split over devices (`shardable` False).
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vanish import schedule as schedule_lib
from vanish.algorithms import base, fedavg

PyTree = Any


# ------------------------------------------------------------------------------ host plan

def cycle_starts(clients: np.ndarray, cycle: np.ndarray, concurrency: int,
                 ticks: int) -> tuple[np.ndarray, np.ndarray]:
    """(node, start tick) of every cycle that starts before `ticks` (see the module
    docstring: c slots, a round-robin queue of waiting clients).

    Args:
      clients: the clients' node ids, ascending.
      cycle: [N] ticks of each node's cycle (>= 1).
      concurrency: slots (1 <= c <= clients).
      ticks: horizon.
    """
    m = clients.size
    c = int(concurrency)
    if m == 0 or ticks <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    length = cycle[clients]
    if c >= m:  # every client restarts at once: periodic, vectorised
        count = -(-ticks // length)
        node = np.repeat(clients, count)
        first = np.repeat(np.cumsum(count) - count, count)
        start = (np.arange(node.size) - first) * np.repeat(length, count)
        return node.astype(np.int64), start.astype(np.int64)
    if np.all(length == length[0]):  # one cycle length: generation g runs clients g c ..
        gens = -(-ticks // int(length[0]))
        pos = (np.arange(gens)[:, None] * c + np.arange(c)[None, :]) % m
        return (clients[pos].reshape(-1).astype(np.int64),
                np.repeat(np.arange(gens, dtype=np.int64) * int(length[0]), c))
    return _queue_starts(clients, cycle, c, ticks)


def _queue_starts(clients: np.ndarray, cycle: np.ndarray, c: int,
                  ticks: int) -> tuple[np.ndarray, np.ndarray]:
    """The slot queue, cycle by cycle (any cycle lengths): O(cycles log c) on the host."""
    waiting = deque(int(i) for i in clients[c:])
    heap = [(int(cycle[i]), q, int(i)) for q, i in enumerate(clients[:c])]  # (end, seq, node)
    heapq.heapify(heap)
    nodes, starts = [int(i) for i in clients[:c]], [0] * c
    seq = c
    while heap[0][0] < ticks:
        t = heap[0][0]
        freed = 0
        while heap and heap[0][0] == t:  # finishers of tick t, in the order they started
            waiting.append(heapq.heappop(heap)[2])
            freed += 1
        for _ in range(freed):
            i = waiting.popleft()
            nodes.append(i)
            starts.append(t)
            heapq.heappush(heap, (t + int(cycle[i]), seq, i))
            seq += 1
    return np.asarray(nodes, np.int64), np.asarray(starts, np.int64)


def plan(request: Any) -> schedule_lib.Schedule:
    """The `schedule` hook of `fl_async` / `fl_buff` (request: algorithms.PlanRequest with
    the run's clock and network plan): every client's cycles as training events, the last
    step of each cycle sending. Prefix-stable (events of [0, T) do not depend on the
    horizon beyond T). Raises ValueError for a buffer larger than the clients (K)."""
    k = request.knobs
    n, ticks = int(request.n), int(request.ticks)
    trainers = np.ones(n, bool) if request.trainers is None else np.asarray(request.trainers,
                                                                            bool)
    clients = np.flatnonzero(trainers)
    if "K" in k and int(k["K"]) > clients.size:
        raise ValueError(f"K = {k['K']} is more than the {clients.size} clients: a buffer "
                         f"of K updates from distinct clients could never fill; use K <= "
                         f"{clients.size}")
    steps = int(k["local_steps"])
    if steps < 1:
        raise ValueError(f"local_steps = {steps} must be >= 1")
    conc = int(k.get("concurrency", 0))
    if conc < 0:
        raise ValueError(f"concurrency = {conc} must be >= 0 (0 = all clients)")
    conc = clients.size if conc == 0 else min(conc, clients.size)
    t = schedule_lib.timing(n, getattr(request, "clock", None),
                            getattr(request, "network", None))
    node, start = cycle_starts(clients, t.cycle(steps), conc, ticks)
    step = np.arange(steps)
    tick = start[:, None] + step[None, :] * t.gap[node][:, None]  # [cycles, E]
    send = np.broadcast_to(step == steps - 1, tick.shape)
    node = np.broadcast_to(node[:, None], tick.shape)
    return schedule_lib.Schedule.of_events(n, ticks, tick, node, send)


# ---------------------------------------------------------------------------- the server

class Inbox(NamedTuple):
    """The server's receive state, one row per node (row 0: the server)."""

    held: PyTree  # models (see the module docstring: arrived model / start, delta / buffer)
    version: jax.Array  # [N] int32: row 0 the server's version; row i client i's start
    arrived: jax.Array  # [N] bool: client i's update arrived this tick
    staleness: jax.Array  # [N] int32: tau of client i's last applied update (-1: none yet)
    in_buffer: jax.Array  # [N] int32: row 0: FedBuff's updates in the buffer (< K)


def init(buffered: bool, params_N: PyTree) -> Inbox:
    """Every client starts from the shared model, version 0; FedBuff holds it as each
    client's start model (row 0, the buffer, empty)."""
    n = base.num_nodes(params_N)
    if buffered:
        held = jax.tree.map(lambda x: x.at[0].set(jnp.zeros_like(x[0])), params_N)
    else:
        held = jax.tree.map(jnp.zeros_like, params_N)
    return Inbox(held=held, version=jnp.zeros(n, jnp.int32), arrived=jnp.zeros(n, bool),
                 staleness=jnp.full(n, -1, jnp.int32), in_buffer=jnp.zeros(n, jnp.int32))


def emit(buffered: bool, inbox: Inbox, sent: base.Sent, consts: base.Consts) -> Inbox:
    """Holds each update that reaches the server (row = its client): the model, or for
    FedBuff its delta from the client's start model."""
    n = inbox.version.shape[0]
    reached = jnp.any(base.destinations(sent, consts.graph) == 0, axis=1)
    row = jnp.where(reached, sent.node, n)  # n: not delivered (dropped by the scatter)
    payload = sent.params
    if buffered:
        payload = jax.tree.map(lambda x, s: x - s.astype(x.dtype), sent.params,
                               base.take(inbox.held, row))
    return inbox._replace(held=base.put(inbox.held, row, payload),
                          arrived=inbox.arrived.at[row].set(True, mode="drop"))


def staleness_weight(tau: jax.Array, a: float) -> jax.Array:
    """s(tau) = (1 + tau)^(-a), float32 (polynomial staleness; a = 0: 1)."""
    return (1.0 + tau.astype(jnp.float32)) ** jnp.float32(-a)


# fori_loop carry: (server model, FedBuff's buffer sum, version, updates buffered, [N] tau)
_Carry = tuple[PyTree, PyTree, jax.Array, jax.Array, jax.Array]


def end_of_tick(rule: dict[str, Any], slots: int, params_N: PyTree, inbox: Inbox,
                consts: base.Consts, tick: base.Tick) -> tuple[PyTree, Inbox, jax.Array]:
    """At a tick's last chunk: the server applies the tick's arrivals in node order (FedAsync
    each at once; FedBuff through its buffer, see the module docstring), then every client
    that sent one receives the server's model and version.

    Returns:
      (params_N, inbox, merged_N): merged_N [N] bool, the clients that received the model.
    """
    del consts
    buffered = rule["K"] is not None
    merged = tick.last & inbox.arrived

    def apply(args: tuple[PyTree, Inbox]) -> tuple[PyTree, Inbox]:
        p, ib = args
        n = ib.version.shape[0]
        idx = jnp.nonzero(ib.arrived, size=n, fill_value=n)[0].astype(jnp.int32)
        count = jnp.sum(ib.arrived.astype(jnp.int32))
        row0 = lambda t: jax.tree.map(lambda x: x[0], t)  # noqa: E731

        def body(j: jax.Array, c: _Carry) -> _Carry:
            x_s, acc, version, filled, stale = c
            i = idx[j]
            tau = version - ib.version[i]
            upd = jax.tree.map(lambda h: h[i], ib.held)
            stale = stale.at[i].set(tau)
            if not buffered:
                w = rule["alpha"] * staleness_weight(tau, rule["a"])
                x_s = jax.tree.map(lambda x, u: ((1 - w) * x + w * u).astype(x.dtype), x_s,
                                   upd)
                return x_s, acc, version + 1, filled, stale
            s = staleness_weight(tau, rule["a"])
            acc = jax.tree.map(lambda b, u: (b + s * u).astype(b.dtype), acc, upd)
            filled = filled + 1
            full = filled == rule["K"]
            step = rule["eta"] / rule["K"]
            x_s = jax.tree.map(lambda x, b: jnp.where(full, (x + step * b).astype(x.dtype), x),
                               x_s, acc)
            acc = jax.tree.map(lambda b: jnp.where(full, jnp.zeros_like(b), b), acc)
            return (x_s, acc, version + full.astype(jnp.int32), jnp.where(full, 0, filled),
                    stale)

        init_c = (row0(p), row0(ib.held), ib.version[0], ib.in_buffer[0], ib.staleness)
        x_s, acc, version, filled, stale = jax.lax.fori_loop(0, count, body, init_c)

        def reply(c: tuple[PyTree, PyTree], idx_M: jax.Array,
                  valid_M: jax.Array) -> tuple[PyTree, PyTree]:
            pp, held = c
            rows = jnp.where(valid_M, idx_M, n)
            model = jax.tree.map(lambda x: jnp.broadcast_to(x, (idx_M.shape[0], *x.shape)),
                                 x_s)
            pp = base.put(pp, rows, model)
            if buffered:  # the reply is the client's new start model
                held = base.put(held, rows, model)
            return pp, held

        p, held = base.for_selected(ib.arrived, slots, reply, (p, ib.held))
        p = jax.tree.map(lambda x, s: x.at[0].set(s), p, x_s)
        if buffered:
            held = jax.tree.map(lambda h, b: h.at[0].set(b), held, acc)
        new_version = jnp.where(ib.arrived, version, ib.version).at[0].set(version)
        return p, Inbox(held=held, version=new_version, arrived=jnp.zeros_like(ib.arrived),
                        staleness=stale, in_buffer=ib.in_buffer.at[0].set(filled))

    params_N, inbox = jax.lax.cond(tick.last & jnp.any(inbox.arrived), apply, lambda a: a,
                                   (params_N, inbox))
    return params_N, inbox, merged


def _algorithm(name: str, rule: dict[str, Any], merge_slots: int) -> base.Algorithm:
    buffered = rule["K"] is not None
    return base.Algorithm(
        name=name, init=lambda p: init(buffered, p),
        emit=lambda ib, s, c: emit(buffered, ib, s, c),
        end_of_tick=lambda p, ib, c, t: end_of_tick(rule, merge_slots, p, ib, c, t),
        wire=base.FULL_MODEL._replace(rounds=fedavg.broadcast_traffic), stats=stats)


def stats(inbox: Inbox) -> dict[str, jax.Array]:
    """The rows' staleness: over the clients with an applied update, the mean and the largest
    tau of each one's latest (-1 before the first)."""
    tau = inbox.staleness[1:]  # row 0: the server
    has = tau >= 0
    count = jnp.sum(has)
    mean = jnp.sum(jnp.where(has, tau, 0)).astype(jnp.float32) / count.astype(jnp.float32)
    # (metrics.STALENESS_MEAN, which summarises it; metrics sits above the rules)
    return {"staleness_mean": jnp.where(count > 0, mean, -1.0),
            "staleness_max": jnp.where(count > 0, jnp.max(tau), -1)}


def _check(name: str, value: float, ok: bool, need: str) -> None:
    if not ok:
        raise ValueError(f"{name} = {value!r} must be {need}")


def _common(a: float, local_steps: int, concurrency: int) -> None:
    _check("a", a, bool(np.isfinite(a)) and a >= 0, "a finite number >= 0")
    _check("local_steps", local_steps, local_steps >= 1, ">= 1")
    _check("concurrency", concurrency, concurrency >= 0, ">= 0 (0 = all clients)")


def make_async(*, alpha: float = 0.6, a: float = 0.5, local_steps: int = 1,
               concurrency: int = 0, merge_slots: int = 8) -> base.Algorithm:
    """`fl_async` (FedAsync): each arriving update mixed in at once with weight
    alpha * (1 + tau)^(-a). local_steps and concurrency shape the plan (`plan`)."""
    _check("alpha", alpha, 0 < alpha <= 1, "in (0, 1]")
    _common(a, local_steps, concurrency)
    return _algorithm("fl_async", dict(alpha=float(alpha), a=float(a), K=None, eta=None),
                      merge_slots)


def make_buff(*, K: int = 10, eta: float = 1.0, a: float = 0.5, local_steps: int = 1,  # noqa: N803
              concurrency: int = 0, merge_slots: int = 8) -> base.Algorithm:
    """`fl_buff` (FedBuff): staleness-weighted deltas buffered, their mean applied with
    server learning rate eta every K updates. local_steps, concurrency: the plan's."""
    _check("K", K, K >= 1, ">= 1")
    _check("eta", eta, bool(np.isfinite(eta)) and eta > 0, "a finite number > 0")
    _common(a, local_steps, concurrency)
    return _algorithm("fl_buff", dict(alpha=None, a=float(a), K=int(K), eta=float(eta)),
                      merge_slots)
