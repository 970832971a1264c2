"""Who trains, and who sends, at which tick: drawn ahead from the seed, packed into work chunks.

    sched = schedule.draw(n=50, ticks=1000, interval=(8, 12), seed=0)
    work = schedule.pack(sched, slots=8, end_of_tick=fl_round_ends)   # fixed-shape chunks

Training times in the reference simulator do not depend on training results, so the whole
schedule is a pure function of (seed, n, ticks, interval, first tick). The device engine
never sees per-tick variable-length lists: `pack` cuts every tick's trainers into chunks of
exactly `slots` node indices (padding marked invalid), so one compiled step serves every tick
and its cost is proportional to the nodes that train, not to N.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import numpy as np

from vanish.errors import ConfigError  # draw's argument checks: bad input


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Training events, sorted by (tick, node).

    Attributes:
      n: number of nodes.
      ticks: number of ticks covered, [0, ticks).
      event_tick: int32 [E] tick of each training event.
      event_node: int32 [E] node of each event.
      event_send: bool [E] whether the node sends its model after this event.
      round_end: optional bool [ticks]: the ticks whose end closes a round, for a rule whose
        rounds are planned with the events (`waiting_rounds`); None: rounds, if any, are the
        rule's fixed `round_ticks`.
    """

    n: int
    ticks: int
    event_tick: np.ndarray
    event_node: np.ndarray
    event_send: np.ndarray
    round_end: np.ndarray | None = None

    @classmethod
    def of_events(cls, n: int, ticks: int, tick: np.ndarray, node: np.ndarray,
                  send: np.ndarray, round_end: np.ndarray | None = None) -> "Schedule":
        """The schedule of these events (flat arrays, any order): those at or past the
        horizon dropped, the rest sorted by (tick, node)."""
        tick, node, send = (np.asarray(a).reshape(-1) for a in (tick, node, send))
        keep = tick < ticks
        tick, node, send = tick[keep], node[keep], send[keep]
        order = np.lexsort((node, tick))
        return cls(n=n, ticks=ticks, event_tick=tick[order].astype(np.int32),
                   event_node=node[order].astype(np.int32),
                   event_send=send[order].astype(bool), round_end=round_end)

    def counts_per_tick(self) -> np.ndarray:
        return np.bincount(self.event_tick, minlength=self.ticks)

    def fingerprint(self, upto: int | None = None) -> str:
        """A short digest of the events before tick `upto` (default: all), stored with
        checkpoints so a resume (or an extension to more ticks) can verify its schedule."""
        import hashlib

        keep = slice(None) if upto is None else self.event_tick < upto
        h = hashlib.sha256()
        for a in (self.event_tick, self.event_node, self.event_send):
            h.update(np.ascontiguousarray(a[keep]).tobytes())
        return h.hexdigest()[:16]


def draw(
    n: int,
    ticks: int,
    interval: tuple[int, int] = (8, 12),
    *,
    seed: int,
    first_tick: str | int = 0,
    send_every: int = 1,
    trainers: np.ndarray | None = None,
    node_interval: tuple[np.ndarray, np.ndarray] | None = None,
) -> Schedule:
    """Draws every node's training ticks for [0, ticks).

    A node trains when tick >= next_train_tick, then next_train_tick += U{lo..hi}.

    Args:
      n: number of nodes.
      ticks: horizon.
      interval: inclusive integer range (lo, hi) of the gap between two trainings.
      seed: schedule seed (independent of model / data seeds).
      first_tick: an int (every node starts at that tick; the reference uses 0), or
        "random" (each node's first tick is drawn from U{0..hi-1}).
      send_every: a node sends after its P-th, 2P-th, ... training event (P = send_every).
      trainers: optional bool [n]; nodes marked False never train (e.g. the FL server).
      node_interval: optional per-node (lo [n], hi [n]) overriding `interval` (stragglers);
        without it the draws are those of the scalar range, bit for bit.
    """
    lo, hi = (int(v) for v in interval)
    if not 1 <= lo <= hi:
        raise ConfigError(f"interval must satisfy 1 <= lo <= hi, got {interval}")
    if n < 1 or ticks < 0:
        raise ConfigError(f"need n >= 1 and ticks >= 0, got n={n}, ticks={ticks}")
    if send_every < 1:
        raise ConfigError(f"send_every must be >= 1, got {send_every}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5C4ED]))
    if first_tick == "random":
        start = rng.integers(0, hi, size=n)
    elif isinstance(first_tick, (int, np.integer)) and first_tick >= 0:
        start = np.full(n, int(first_tick))
    else:
        raise ConfigError(f"first_tick must be a non-negative int or 'random', got {first_tick!r}")
    # Enough draws that even the shortest gaps cover the horizon; one matrix, no node loop.
    # Drawn gap by gap across the nodes ([m, n], then transposed), so a longer horizon only
    # appends draws: the schedule of [0, T) does not depend on the horizon beyond T, and a
    # finished run extends to more ticks on the very schedule it ran (`truncated`).
    if node_interval is None:
        m = max(1, -(-max(ticks - int(start.min()), 0) // lo) + 1)
        gaps = rng.integers(lo, hi + 1, size=(m, n)).T
    else:
        lo_n, hi_n = (np.asarray(a, np.int64) for a in node_interval)
        if lo_n.shape != (n,) or hi_n.shape != (n,) or not np.all((1 <= lo_n) & (lo_n <= hi_n)):
            raise ConfigError("node_interval needs [n] arrays with 1 <= lo <= hi")
        m = max(1, -(-max(ticks - int(start.min()), 0) // int(lo_n.min())) + 1)
        gaps = rng.integers(lo_n[None, :], hi_n[None, :] + 1, size=(m, n)).T
    times = start[:, None] + np.concatenate(
        [np.zeros((n, 1), np.int64), np.cumsum(gaps, 1)[:, :-1]], 1)
    ordinal = np.broadcast_to(np.arange(m), (n, m))
    keep = times < ticks
    if trainers is not None:
        keep &= np.asarray(trainers, bool)[:, None]
    node = np.broadcast_to(np.arange(n)[:, None], (n, m))[keep]
    send = ((ordinal[keep] + 1) % send_every) == 0
    return Schedule.of_events(n, ticks, times[keep], node, send)


@dataclasses.dataclass(frozen=True)
class WorkList:
    """Fixed-shape chunks of work, in execution order.

    Chunk c trains the valid slots of node[c] at tick[c]; `last[c]` marks the final chunk
    of its tick, after which the tick's end-of-tick actions (averaging, FL rounds) run.
    """

    tick: np.ndarray  # int32 [C]
    node: np.ndarray  # int32 [C, K]
    valid: np.ndarray  # bool [C, K]
    send: np.ndarray  # bool [C, K]
    last: np.ndarray  # bool [C]

    @property
    def slots(self) -> int:
        return self.node.shape[1]

    def __len__(self) -> int:
        return self.tick.shape[0]

    def between(self, t0: int, t1: int) -> "WorkList":
        """The chunks of ticks [t0, t1)."""
        lo, hi = np.searchsorted(self.tick, [t0, t1])
        return WorkList(*(a[lo:hi] for a in dataclasses.astuple(self)))

    def padded(self, length: int) -> "WorkList":
        """Appends no-op chunks (no valid slot, not last) up to `length` chunks."""
        extra = length - len(self)
        if extra < 0:
            raise ValueError(f"cannot pad {len(self)} chunks down to {length}")
        tick = np.concatenate(
            [self.tick, np.full(extra, self.tick[-1] if len(self) else 0, np.int32)])
        pad2 = lambda a, v: np.concatenate([a, np.full((extra, self.slots), v, a.dtype)])  # noqa: E731
        return WorkList(
            tick, pad2(self.node, 0), pad2(self.valid, False), pad2(self.send, False),
            np.concatenate([self.last, np.zeros(extra, bool)]),
        )


def choose_slots(counts: np.ndarray, overhead: float = 2.0, max_slots: int | None = None) -> int:
    """Chunk width K minimising sum_t ceil(n_t / K) * (K + overhead).

    `overhead` is the fixed cost of one chunk call in units of one node's training step
    (dispatch, averaging pass); larger values favour wider chunks.
    """
    busy = counts[counts > 0]
    if busy.size == 0:
        return 1
    top = int(busy.max()) if max_slots is None else min(int(busy.max()), max_slots)
    ks = np.arange(1, max(top, 1) + 1)
    cost = (np.ceil(busy[None, :] / ks[:, None]) * (ks[:, None] + overhead)).sum(1)
    return int(ks[np.argmin(cost)])


def choose_merge_slots(counts: np.ndarray) -> int:
    """Rows per merge group: 1.5x the mean trainers of a busy tick, a multiple of 8.

    In steady state a node merges about once per training interval (threshold = degree), so
    merges per tick track trainers per tick; the margin keeps the rare overflow group (tick 0,
    where every node trains) out of the common path.
    """
    busy = counts[counts > 0]
    if busy.size == 0:
        return 8
    return int(8 * -(-int(np.ceil(1.5 * busy.mean())) // 8))


def pack(sched: Schedule, slots: int, end_of_tick: np.ndarray | None = None, *,
         devices: int = 1) -> WorkList:
    """Packs the schedule into chunks of `slots` nodes (per device when `devices` > 1).

    Args:
      sched: the training events.
      slots: K, the fixed chunk width (of each device's block).
      end_of_tick: optional bool [ticks]; ticks that need their end-of-tick step even when
        nobody trains (e.g. FL round ends) get one empty chunk.
      devices: D shards of the node axis, each training its own nodes: nodes
        [d n/D, (d + 1) n/D) live on device d, and chunk c holds D blocks of `slots` columns,
        block d listing device d's trainers of tick[c] (global ids; padding repeats the block's
        first node, marked invalid), so under `shard_map` every device reads a [slots] row of
        its own nodes. A tick gets max_d ceil(trainers_d / slots) chunks, so every device
        sees the same ticks and `last` flags; the events of a tick do not depend on D, only
        their split into chunks does. D = 1 is the single-device plan.
    """
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    if devices < 1 or sched.n % devices:
        raise ValueError(f"cannot split {sched.n} nodes evenly over {devices} devices")
    local = sched.n // devices
    dev = sched.event_node // local
    group = sched.event_tick.astype(np.int64) * devices + dev
    counts = np.bincount(group, minlength=sched.ticks * devices).reshape(sched.ticks, devices)
    need = counts.sum(1) > 0
    if end_of_tick is not None:
        need = need | np.asarray(end_of_tick, bool)[: sched.ticks]
    chunks_per_tick = np.where(need, np.maximum(1, -(-counts.max(1) // slots)), 0)
    total = int(chunks_per_tick.sum())
    tick = np.repeat(np.arange(sched.ticks, dtype=np.int32), chunks_per_tick)
    first_chunk = np.concatenate([[0], np.cumsum(chunks_per_tick)[:-1]])
    last = np.zeros(total, bool)
    last[(first_chunk + chunks_per_tick - 1)[need]] = True
    # Event e, the r-th of its (tick, device) group (events are sorted by (tick, node), hence
    # by (tick, device, node)), goes to chunk first_chunk[tick] + r // K, column d K + r % K.
    first_event = np.concatenate([[0], np.cumsum(counts.reshape(-1))[:-1]])
    rank = np.arange(group.size) - first_event[group]
    chunk = first_chunk[sched.event_tick] + rank // slots
    col = dev * slots + rank % slots
    node = np.repeat(np.arange(devices, dtype=np.int32) * local, slots)[None].repeat(total, 0)
    valid = np.zeros((total, devices * slots), bool)
    send = np.zeros((total, devices * slots), bool)
    node[chunk, col] = sched.event_node
    valid[chunk, col] = True
    send[chunk, col] = sched.event_send
    return WorkList(tick, node, valid, send, last)


def pack_masked(sched: Schedule, end_of_tick: np.ndarray | None = None) -> WorkList:
    """The naive baseline: one chunk of all N nodes per busy tick, non-trainers masked out.

    Same events in the same order of ticks as `pack`, so results agree; only the cost
    differs (every chunk trains N models). Used by scripts/bench_sim.py.
    """
    counts = sched.counts_per_tick()
    need = counts > 0
    if end_of_tick is not None:
        need = need | np.asarray(end_of_tick, bool)[: sched.ticks]
    ticks = np.flatnonzero(need).astype(np.int32)
    row = np.searchsorted(ticks, sched.event_tick)
    valid = np.zeros((ticks.size, sched.n), bool)
    send = np.zeros((ticks.size, sched.n), bool)
    valid[row, sched.event_node] = True
    send[row, sched.event_node] = sched.event_send
    node = np.broadcast_to(np.arange(sched.n, dtype=np.int32), (ticks.size, sched.n)).copy()
    return WorkList(ticks, node, valid, send, np.ones(ticks.size, bool))


def rounds_plan(request: Any) -> Schedule:
    """The `schedule` hook of round-based rules (fl, modest): `fl_rounds` from the rule's own
    knobs round_ticks, local_steps and client_fraction (request: algorithms.PlanRequest)."""
    k = request.knobs
    gap = None if request.clock is None else timing(request.n, request.clock).gap
    return fl_rounds(request.n, request.ticks, int(k["round_ticks"]), seed=request.seed,
                     local_steps=int(k["local_steps"]), fraction=float(k["client_fraction"]),
                     trainers=request.trainers, gap=gap)


def fl_rounds(
    n: int,
    ticks: int,
    round_ticks: int,
    *,
    seed: int,
    local_steps: int = 1,
    fraction: float = 1.0,
    trainers: np.ndarray | None = None,
    gap: np.ndarray | None = None,
) -> Schedule:
    """The authors' FL schedule: each round, every participant trains exactly E local steps.

    Round r covers ticks [r R, (r + 1) R). Its participants (round(fraction * clients), at
    least one, uniformly per round) train at ticks r R + R // 2 + s, s < E (E = 1: the round's
    middle tick), and send their model to the server after the last step.

    On the simulated clock (`gap`: each node's interval floor, the ticks one step takes) a
    participant is busy for E x gap ticks from its round's first step: one still busy when
    a later round it was drawn for starts sits that round out (its update, delayed by the
    same compute time, reaches the server in a later round), so a straggler slower than the
    deadline trains every few rounds instead of every round.

    Args:
      n: number of nodes; trainers: bool [n] (False: the server, which never trains).
      ticks: horizon; round_ticks: R; local_steps: E (1 <= E, R // 2 + E <= R).
      seed: schedule seed; fraction: client fraction in (0, 1].
      gap: int [n] ticks per local step (None: 1, the tick model's instantaneous steps).
    """
    if round_ticks < 1 or local_steps < 1 or round_ticks // 2 + local_steps > round_ticks:
        raise ValueError(
            f"fl rounds need 1 <= local_steps and round_ticks // 2 + local_steps <= "
            f"round_ticks, got round_ticks={round_ticks}, local_steps={local_steps}")
    draw_round = participants(n, seed, fraction, trainers)
    rounds = -(-ticks // round_ticks)
    chosen = draw_round(rounds)
    m = chosen.shape[1]
    start = np.arange(rounds) * round_ticks + round_ticks // 2
    step = np.arange(local_steps)
    tick = (start[:, None, None] + step[None, None, :]).repeat(m, 1)  # [rounds, m, E]
    node = np.broadcast_to(chosen[:, :, None], tick.shape)
    send = np.broadcast_to(step == local_steps - 1, tick.shape)
    busy_for = None if gap is None else local_steps * np.asarray(gap, np.int64)
    if busy_for is not None and (busy_for > round_ticks).any():
        free_at = np.zeros(n, np.int64)  # the tick from which each node can train again
        joins = np.ones(chosen.shape, bool)  # [rounds, m]
        for r in range(rounds):  # round r's choice depends on earlier rounds: prefix-stable
            who = chosen[r]
            joins[r] = free_at[who] <= start[r]
            free_at[who[joins[r]]] = start[r] + busy_for[who[joins[r]]]
        keep = np.broadcast_to(joins[:, :, None], tick.shape)
        tick, node, send = tick[keep], node[keep], send[keep]
    return Schedule.of_events(n, ticks, tick, node, send)


def participants(n: int, seed: int, fraction: float,
                 trainers: np.ndarray | None = None) -> Callable[[int], np.ndarray]:
    """The clients of FL's rounds: `draw(count)` -> int [count, m] node ids (ascending per
    round) of the next `count` rounds, m = round(fraction * clients) >= 1, a uniform sample
    per round from the seed. Successive calls continue one stream, so the rounds drawn in
    blocks equal the rounds drawn at once (a plan is prefix-stable)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"client fraction must lie in (0, 1], got {fraction}")
    clients = np.flatnonzero(np.ones(n, bool) if trainers is None else np.asarray(trainers, bool))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xF1]))
    m = max(1, int(round(fraction * clients.size)))

    def draw(count: int) -> np.ndarray:
        if m == clients.size:
            return np.broadcast_to(clients, (count, m))
        # one permutation per round, vectorised: argsort of uniform scores
        return clients[np.sort(np.argsort(rng.random((count, clients.size)), 1)[:, :m], 1)]

    return draw


class Timing(NamedTuple):
    """Per-node ticks of a client's trip to the server and back (host arrays [N], int64),
    from the run's clock and network plan (`timing`)."""

    gap: np.ndarray  # ticks between two local steps (1; the clock's interval floor)
    up: np.ndarray  # ticks from the last step to the update's arrival at the server
    down: np.ndarray  # ticks the server's reply travels

    def cycle(self, local_steps: int) -> np.ndarray:
        """[N] ticks from a cycle's first step to the client's next cycle."""
        return (local_steps - 1) * self.gap + self.up + self.down + 1


def timing(n: int, clock: Any = None, network: Any = None) -> Timing:
    """A client's trip from the run's clock (vanish/clock.py Clock, the server's row
    included) and network plan (vanish/network.py Plan; None: no delays, no link times):
    steps `gap` ticks apart, the update's arrival `up` ticks after the last step (the upper
    end of network.delay plus the clock's link time of one model, its step included:
    exactly as the engine's in-flight queue delivers it), the reply `down` ticks (the delay
    again; the server's link is free on the clock)."""
    gap = np.ones(n, np.int64)
    if clock is not None:
        gap = np.asarray(clock.interval_floor(), np.int64)
    up = np.zeros(n, np.int64)
    down = np.zeros(n, np.int64)
    if network is not None:
        hi = int(np.asarray(network.net.delay_hi))
        link = network.net.link_ticks
        link_n = (np.zeros(n, np.int64) if link is None
                  else np.asarray(link, np.int64).max(axis=1))
        up = hi + link_n
        down = np.full(n, hi, np.int64)
    return Timing(gap, up, down)


def waiting_rounds(
    n: int,
    ticks: int,
    *,
    seed: int,
    local_steps: int = 1,
    fraction: float = 1.0,
    trainers: np.ndarray | None = None,
    trip: Timing | None = None,
) -> Schedule:
    """Synchronous FL without a deadline: every round waits for its slowest participant.

    Round r starts at tick s_r (s_0 = 0) with the server's model. Its participants (drawn
    as in `fl_rounds`) train E local steps from s_r, `trip.gap` ticks apart (on the clock:
    a step lasts its node's compute time), and send after the last; participant i's update
    arrives at a_i = s_r + (E - 1) gap_i + up_i. The round ends at the end of tick
    e_r = max_i a_i, when the last update has arrived, the server averages and broadcasts,
    and the next round starts when the broadcast has arrived: s_{r+1} = e_r + down + 1.
    Without delays and clock a round is E ticks, i.e. `fl_rounds` with round_ticks = E = 1
    when E = 1. An update lost or held by churn is not waited for beyond its planned arrival
    (the server's timeout); the plan, like every plan, ignores faults.

    Returns the events and `round_end` (bool [ticks]); prefix-stable.
    """
    if local_steps < 1:
        raise ValueError(f"local_steps = {local_steps} must be >= 1")
    trip = timing(n) if trip is None else trip
    draw_round = participants(n, seed, fraction, trainers)
    step = np.arange(local_steps)
    down = int(trip.down.max(initial=0))
    round_end = np.zeros(ticks, bool)
    ticks_, nodes_ = [], []
    start, block = 0, np.zeros((0, 0), np.int64)
    while start < ticks:
        if block.shape[0] == 0:
            block = draw_round(256)
        who, block = block[0], block[1:]
        when = start + step[None, :] * trip.gap[who][:, None]  # [m, E]
        ticks_.append(when.reshape(-1))
        nodes_.append(np.repeat(who, local_steps))
        end = int((start + (local_steps - 1) * trip.gap[who] + trip.up[who]).max())
        if end < ticks:
            round_end[end] = True
        start = end + down + 1
    tick = np.concatenate(ticks_) if ticks_ else np.zeros(0, np.int64)
    node = np.concatenate(nodes_) if nodes_ else np.zeros(0, np.int64)
    send = np.tile(step == local_steps - 1, tick.size // local_steps)
    return Schedule.of_events(n, ticks, tick, node, send, round_end)
