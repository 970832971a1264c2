"""The network layer: who receives a sent model, when, and what it carries (faults, dynamics).

    plan = network.plan_for(settings, topo, is_client, star=False, ticks=T, seed=0)
    valid_K &= network.online(net, tick, node_K)                 # device: churn masks training
    sent, arrive_KD, stats = network.prepare(plan.spec, net, graph, tick, sent)

Every fault is a plan drawn on the host from the seed (churn intervals, straggler and
Byzantine nodes, redrawn graphs) or a mask drawn on the device from the per-(tick, node)
keys (drops, peer choices, delays, noise). Their values are arrays in `Net`, an argument
of the compiled step, of shapes fixed by (N, ticks, degree): churn is a [ticks, N/32] bitmap
of offline bits that masks training on the device (the work plan is the fault-free one),
so changing a probability, a rate, a fraction or a trace never recompiles; only the static
`Spec` (which features are on, the in-flight ring's length, the fan-out of uniform peer
sampling, the attack kind) is part of the program. Stragglers change the training schedule
itself (like interval_lo / interval_hi), hence the work plan. A fault-free config builds no
plan and runs the fault-free program.

Semantics (the authors' tick model, extended):
  * drops: each message (sender, receiver, tick) is lost with its edge's probability;
  * delays: a message sent at tick t reaches the receiver's inbox at tick t + d (d fixed or
    U{lo..hi} per message), before that tick's merges; it carries the model as sent;
  * churn: while offline a node neither trains, sends nor receives (messages arriving then
    are lost); it comes back with the model it had. FL clients offline at a round's end do
    not adopt the server's model;
  * stragglers: a fraction of nodes train every U{lo..hi} ticks of their own range;
  * peer sampling: a send goes to k of the sender's out-neighbours ('neighbors') or to k
    peers drawn uniformly from the whole network ('uniform'), instead of all neighbours;
  * time-varying topology: the graph is redrawn from its family every R ticks (epoch e uses
    the seed (seed, e); epoch 0 is the configured graph), or a round-varying family (the
    one-peer exponential graph) is rotated, epoch e being its round e; padded to one shape;
  * Byzantine nodes send a corrupted model (noise of scale s, -s * model, or the constant
    s in every coordinate) and keep training honestly; accuracy is reported over honest
    nodes.
Counts: messages sent (after peer sampling), delivered, and dropped (lost on the link or at
an offline receiver) are carried in the state's `net_stats`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vanish import schedule as schedule_lib
from vanish.algorithms import base
from vanish.errors import ConfigError
from vanish.topology import Graph, Topology
from vanish.topology import Spec as TopologySpec

PyTree = Any
ATTACKS = ("sign_flip", "noise", "constant")
PEER_MODES = ("neighbors", "uniform")
# Key streams derived from a sender's per-(tick, node) key (training uses the key itself).
_PEER, _DROP, _DELAY, _NOISE = 0x9EE2, 0xD209, 0xDE1A, 0xB12A


class Spec(NamedTuple):
    """The static part of a network plan (part of the compiled program)."""

    peer: str  # 'all' | 'neighbors' | 'uniform'
    uniform_k: int  # fan-out of 'uniform' peer sampling
    attack: str  # 'none' | one of ATTACKS
    queue: int  # in-flight chunk entries (0: no delays)
    churn: bool
    redraw: bool


class Net(NamedTuple):
    """The device arrays of a network plan (values: changing them never recompiles)."""

    drop: jax.Array  # [N, D] f32 loss probability per out-slot ([N, 1] for uniform peers)
    peer_k: jax.Array  # int32: 'neighbors' fan-out
    out_nbr: jax.Array  # [E, N, D] int32 out-neighbours per topology epoch
    out_valid: jax.Array  # [E, N, D] bool
    redraw_every: jax.Array  # int32 ticks per epoch
    offline: jax.Array  # [T, ceil(N / 32)] uint32: bit i % 32 of word i // 32 = i offline
    byzantine: jax.Array  # [N] bool
    attack_scale: jax.Array  # f32
    delay_lo: jax.Array  # int32
    delay_hi: jax.Array  # int32
    # [N, M] int32 ticks a message of each kind travels from each sender (the simulated
    # clock's link time, vanish/clock.py; added to the drawn delay), [N, 1] zeros without.
    link_ticks: jax.Array | None = None


class Queue(NamedTuple):
    """Messages in flight: entry q holds one chunk's routed sends (ring of `Spec.queue`)."""

    params: PyTree  # [Q, K, ...]
    node: jax.Array  # [Q, K]
    key: jax.Array  # [Q, K, 2]
    event_ord: jax.Array  # [Q, K]
    dest: jax.Array  # [Q, K, D] receivers (>= N: none)
    arrive: jax.Array  # [Q, K, D] arrival tick (-1: none)


@dataclasses.dataclass(frozen=True)
class Plan:
    """A host-side network plan: the static spec, the device arrays and the host views."""

    spec: Spec
    net: Net
    offline: np.ndarray  # [T, N] bool: node offline at tick (host view)
    stragglers: np.ndarray  # [N] bool
    straggler_interval: tuple[int, int]
    byzantine: np.ndarray  # [N] bool
    max_delay: int
    peer_k: int = 0  # peer sampling's k (0: every neighbour)

    def online_at(self, tick: int) -> np.ndarray:
        """[N] bool: the nodes online at `tick` (host view, for metrics; past the horizon:
        as at its last tick)."""
        if self.offline.shape[0] == 0:
            return np.ones(self.offline.shape[1], bool)
        return ~self.offline[min(max(tick, 0), self.offline.shape[0] - 1)]

    def queue_length(self, work: schedule_lib.WorkList) -> int:
        """Ring entries so that no chunk's entry is overwritten before its last arrival."""
        if self.max_delay == 0:
            return 0
        if len(work) == 0:
            return 1
        reach = np.searchsorted(work.tick, work.tick + self.max_delay, side="right")
        return int(max(1, (reach - np.arange(len(work))).max()))


# ---------------------------------------------------------------------------------- host

def _read_lines(path: str, what: str, width: int) -> list[tuple[int, list[str]]]:
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{what} {path!r}: cannot read it ({e.strerror or e})") from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != width:
            raise ConfigError(f"{what} {path!r} line {i}: expected {width} fields, got "
                              f"{line!r}")
        rows.append((i, parts))
    return rows


def read_churn_trace(path: str, n: int, ticks: int) -> np.ndarray:
    """[ticks, n] offline: 'node start end' lines, node (a client index) offline over
    [start, end) (overlapping periods merge; periods past the horizon are cut)."""
    out = np.zeros((ticks, n), bool)
    for i, (node, start, end) in _read_lines(path, "churn_trace", 3):
        try:
            v, s, e = int(node), int(start), int(end)
        except ValueError:
            raise ConfigError(f"churn_trace {path!r} line {i}: 'node start end' must be "
                              f"integers, got {node} {start} {end}") from None
        if not 0 <= v < n:
            raise ConfigError(f"churn_trace {path!r} line {i}: node {v} is not in [0, {n})")
        if not 0 <= s < e:
            raise ConfigError(f"churn_trace {path!r} line {i}: need 0 <= start < end, got "
                              f"{s} {e}")
        out[s:e, v] = True
    return out


def markov_churn(n: int, ticks: int, mean_up: float, mean_down: float,
                 rng: np.random.Generator) -> np.ndarray:
    """[ticks, n] offline: an on/off Markov chain per node, started in its stationary state.

    Each tick an online node goes offline with probability 1 / mean_up and an offline one
    comes back with probability 1 / mean_down (geometric periods with those means), so the
    long-run offline fraction is mean_down / (mean_up + mean_down).
    """
    online = rng.random(n) >= mean_down / (mean_up + mean_down)
    offline = np.empty((ticks, n), bool)
    for t in range(ticks):
        offline[t] = ~online
        u = rng.random(n)
        online = np.where(online, u >= 1.0 / mean_up, u < 1.0 / mean_down)
    return offline


def read_drop_file(path: str, topo: Topology, default: float) -> np.ndarray:
    """[N, Do] per out-slot loss probabilities: 'src dst p' lines, other edges `default`."""
    table = topo.neighbor_table()
    drop = np.full(table.out_nbr.shape, default, np.float32)
    snd_E, slot_E = np.nonzero(table.out_valid)
    slot = dict(zip(zip(snd_E.tolist(), table.out_nbr[snd_E, slot_E].tolist()), slot_E.tolist()))
    for i, (src, dst, p) in _read_lines(path, "drop_file", 3):
        try:
            s, r, q = int(src), int(dst), float(p)
        except ValueError:
            raise ConfigError(f"drop_file {path!r} line {i}: 'src dst p' must be two integers "
                              f"and a probability, got {src} {dst} {p}") from None
        if (s, r) not in slot:
            raise ConfigError(f"drop_file {path!r} line {i}: {s} -> {r} is not an edge of the "
                              f"{topo.name} topology")
        if not 0.0 <= q <= 1.0:
            raise ConfigError(f"drop_file {path!r} line {i}: probability {q} is not in [0, 1]")
        drop[s, slot[(s, r)]] = q
    return drop


def pack_bits(offline: np.ndarray) -> np.ndarray:
    """[T, N] bool -> [T, ceil(N / 32)] uint32, bit i % 32 of word i // 32 (at least 1 x 1)."""
    t, n = offline.shape
    w = max(1, -(-n // 32))
    padded = np.zeros((max(t, 1), w * 32), bool)
    padded[:t, :n] = offline
    weights = (np.uint64(1) << np.arange(32, dtype=np.uint64))
    return (padded.reshape(max(t, 1), w, 32) * weights).sum(-1).astype(np.uint32)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The network section of a run: every fault and dynamic, typed (the builder fills it).

    The defaults are the fault-free network (`faulty` is False: no plan is built).
    """

    drop_prob: float = 0.0
    drop_file: str = ""
    delay: tuple[int, int] = (0, 0)  # ticks a message travels, U{lo..hi}
    churn_up: float = 100.0
    churn_down: float = 0.0
    churn_trace: str = ""
    stragglers: float = 0.0
    straggler_interval: tuple[int, int] | None = None  # None: 3x the training interval
    peer_k: int = 0
    peer_mode: str = "neighbors"
    redraw_every: int = 0
    byzantine: float = 0.0
    byzantine_attack: str = "sign_flip"
    byzantine_scale: float = 1.0

    @property
    def faulty(self) -> bool:
        """Whether any fault or dynamic is on (else: no plan, the fault-free program)."""
        return bool(self.drop_prob > 0 or self.drop_file or self.delay[1] > 0
                    or self.churn_down > 0 or self.churn_trace or self.stragglers > 0
                    or self.peer_k > 0 or self.redraw_every > 0 or self.byzantine > 0)


def _epochs(topo: Topology, redraw: int, ticks: int, seed: int,
            family: TopologySpec | None) -> tuple[np.ndarray, np.ndarray]:
    tables = [topo.neighbor_table()]
    if redraw:
        if family is None or not family.time_varying:
            name = "this" if family is None else repr(family.name)
            raise ConfigError(f"redraw_every: the {name} topology has no random draw to "
                              "redraw; use random_regular, erdos_renyi, watts_strogatz, "
                              "barabasi_albert or one_peer_exponential")
        for e in range(1, -(-ticks // redraw)):
            tables.append(family.epoch(e, seed).neighbor_table())
    d = max(tab.out_nbr.shape[1] for tab in tables)
    nbr = np.zeros((len(tables), topo.n, d), np.int32)
    valid = np.zeros((len(tables), topo.n, d), bool)
    for e, tab in enumerate(tables):
        w = tab.out_nbr.shape[1]
        nbr[e, :, :w], valid[e, :, :w] = tab.out_nbr, tab.out_valid
    return nbr, valid


def plan_for(s: Settings, topo: Topology, is_client: np.ndarray, *, star: bool, ticks: int,
             seed: int, interval: tuple[int, int] = (8, 12),
             family: TopologySpec | None = None, force: bool = False,
             link_ticks: np.ndarray | None = None) -> Plan | None:
    """The network plan of one algorithm's run (None when the settings are fault-free).

    Args:
      s: the faults and dynamics.
      topo: the algorithm's graph; is_client: [N] bool (FL: node 0 is the server).
      star: the algorithm runs on a star (FL): peer sampling, redrawn graphs and the drop
        file do not apply; its edges use drop_prob.
      ticks, seed: the run's horizon and root seed; interval: the training interval (the
        stragglers' default is 3x it).
      family: the topology family a time-varying graph is redrawn from (redraw_every).
      force: build a plan for fault-free settings too (its zero faults must equal no plan).
      link_ticks: [N, M] ticks each sender's messages of each kind travel (the simulated
        clock, vanish/clock.py); any > 0 builds a plan with the in-flight queue.

    Client-indexed choices (offline periods, stragglers, Byzantine nodes) are drawn over
    the clients, so gossip and FL runs of one config share them (FL's node 0 is the server:
    never offline, never Byzantine).
    """
    if link_ticks is not None and not np.any(link_ticks):
        link_ticks = None
    if not (force or s.faulty or link_ticks is not None):
        return None
    n = topo.n
    clients = np.flatnonzero(is_client)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xFA17]))
    # Churn (per client), stragglers, Byzantine nodes: drawn in this fixed order.
    offline = np.zeros((ticks, n), bool)
    churn = bool(s.churn_trace) or s.churn_down > 0
    if s.churn_trace:
        offline[:, clients] = read_churn_trace(s.churn_trace, clients.size, ticks)
    elif s.churn_down > 0:
        offline[:, clients] = markov_churn(clients.size, ticks, float(s.churn_up),
                                           float(s.churn_down), rng)

    def pick(fraction: float, salt: int) -> np.ndarray:
        r = np.random.default_rng(np.random.SeedSequence([seed, salt]))
        chosen = np.zeros(n, bool)
        m = int(round(fraction * clients.size))
        chosen[clients[np.sort(r.permutation(clients.size)[:m])]] = True
        return chosen

    stragglers = pick(float(s.stragglers), 0x57A6)
    byzantine = pick(float(s.byzantine), 0xB1A5)
    lo, hi = s.delay
    peer = "all"
    if s.peer_k > 0 and not star:
        peer = s.peer_mode
    redraw = int(s.redraw_every) if not star else 0
    if redraw and s.drop_file:
        raise ConfigError("drop_file names edges of one graph; it cannot be combined with "
                          "redraw_every (the graph changes every epoch)")
    nbr, valid = _epochs(topo, redraw, ticks, seed, family)
    if peer == "uniform":
        drop = np.full((n, 1), float(s.drop_prob), np.float32)
    elif s.drop_file and not star:
        drop = read_drop_file(s.drop_file, topo, float(s.drop_prob))
        drop = np.pad(drop, ((0, 0), (0, nbr.shape[2] - drop.shape[1])))
    else:
        drop = np.full((n, nbr.shape[2]), float(s.drop_prob), np.float32)
    spec = Spec(peer=peer, uniform_k=int(s.peer_k) if peer == "uniform" else 0,
                attack=s.byzantine_attack if s.byzantine > 0 else "none",
                queue=0, churn=churn, redraw=bool(redraw))
    net = Net(drop=jnp.asarray(drop), peer_k=jnp.int32(int(s.peer_k)),
              out_nbr=jnp.asarray(nbr), out_valid=jnp.asarray(valid),
              redraw_every=jnp.int32(max(redraw, 1)),
              offline=jnp.asarray(pack_bits(offline if churn else offline[:0, :0])),
              byzantine=jnp.asarray(byzantine),
              attack_scale=jnp.float32(float(s.byzantine_scale)),
              delay_lo=jnp.int32(lo), delay_hi=jnp.int32(hi),
              link_ticks=jnp.asarray(np.zeros((n, 1), np.int32) if link_ticks is None
                                     else link_ticks, jnp.int32))
    straggler_interval = s.straggler_interval or (3 * interval[0], 3 * interval[1])
    return Plan(spec=spec, net=net, offline=offline, stragglers=stragglers,
                straggler_interval=straggler_interval, byzantine=byzantine,
                max_delay=hi + (0 if link_ticks is None else int(link_ticks.max())),
                peer_k=int(s.peer_k))


def with_queue(plan: Plan, work: schedule_lib.WorkList) -> Plan:
    """The plan with its in-flight ring sized for `work` (delays only)."""
    if plan.max_delay == 0:
        return plan
    return dataclasses.replace(plan, spec=plan.spec._replace(queue=plan.queue_length(work)))


def expected_arrivals(plan: Plan | None, topo: Topology) -> np.ndarray:
    """[N] messages a node expects per training interval: the default merge threshold.

    All neighbours: its in-degree. Peer sampling to k of d out-neighbours:
    in-degree * min(k, d) / d (k on a regular graph); uniform peers: k.
    """
    if plan is None or plan.spec.peer == "all":
        return np.asarray(topo.degree)
    k = plan.peer_k
    if plan.spec.peer == "uniform":
        return np.full(topo.n, k)
    out_deg = np.bincount(topo.senders, minlength=topo.n).astype(np.float64)
    share = np.minimum(k, out_deg[topo.senders]) / out_deg[topo.senders]  # per edge
    mean_share = np.bincount(topo.receivers, weights=share, minlength=topo.n)
    return np.maximum(np.rint(mean_share), 1).astype(np.int64)


# -------------------------------------------------------------------------------- device

def online(net: Net, tick: jax.Array, node: jax.Array) -> jax.Array:
    """bool, broadcast shape of (tick, node): whether `node` is online at `tick` (ticks past
    the horizon read its last row; node ids >= N read as online only if their bit is 0)."""
    t = jnp.clip(tick, 0, net.offline.shape[0] - 1)
    word = jnp.clip(node // 32, 0, net.offline.shape[1] - 1)
    bits = net.offline[t, word]
    return ((bits >> (node % 32).astype(jnp.uint32)) & jnp.uint32(1)) == 0


def _keys(key_K: jax.Array, salt: int) -> jax.Array:
    return jax.vmap(lambda k: jax.random.fold_in(k, salt))(key_K)


def corrupt(spec: Spec, net: Net, sent: base.Sent) -> PyTree:
    """The models Byzantine senders put on the wire (honest senders' unchanged)."""
    if spec.attack == "none":
        return sent.params
    bad_K = net.byzantine[sent.node]
    s = net.attack_scale
    leaves, treedef = jax.tree.flatten(sent.params)
    keys = _keys(sent.key, _NOISE)
    out = []
    for i, x in enumerate(leaves):
        if spec.attack == "sign_flip":
            y = -s * x
        elif spec.attack == "constant":
            y = jnp.full_like(x, s)
        else:  # noise
            k_i = jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys)
            y = s * jax.vmap(lambda k, shape=x.shape[1:]: jax.random.normal(k, shape))(k_i)
        out.append(jnp.where(bad_K.reshape((-1,) + (1,) * (x.ndim - 1)), y.astype(x.dtype), x))
    return jax.tree.unflatten(treedef, out)


def route(spec: Spec, net: Net, graph: Graph, tick: jax.Array, sent: base.Sent,
          kind_K: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(dest_KD, arrive_KD, stats[3], tried_KD) of the sent messages: receivers (>= N:
    lost), arrival ticks, counts (sent, delivered now, dropped) and the receivers each
    message was sent to before any loss (bool; what the sender pays for).

    Receivers are the graph's (or sampled peers); a message whose rule set `Sent.dest`
    itself (an `encode` hook) goes to those, lost with its sender's first link's probability
    (drop_prob without a drop file), delayed and lost at offline receivers like any other."""
    n = graph.self_weight.shape[0]
    node_K, send_K = sent.node, sent.send
    rule_dest = sent.dest is not None
    if sent.dest is not None:  # the rule addressed its own receivers (MoDeST's aggregators)
        nbr = sent.dest
        ok = (nbr < n) & send_K[:, None]
    elif spec.peer == "uniform":
        # k distinct peers, uniform over the other nodes: the top k of random scores (O(K N)).
        u = jax.vmap(lambda k: jax.random.uniform(k, (n,)))(_keys(sent.key, _PEER))
        u = jnp.where(jnp.arange(n)[None] == node_K[:, None], -1.0, u)
        nbr = jax.lax.top_k(u, spec.uniform_k)[1].astype(jnp.int32)
        ok = jnp.broadcast_to(send_K[:, None], nbr.shape)
    else:
        e = jnp.minimum(tick // net.redraw_every, net.out_nbr.shape[0] - 1) if spec.redraw \
            else jnp.int32(0)
        nbr, ok = net.out_nbr[e][node_K], net.out_valid[e][node_K] & send_K[:, None]
        if spec.peer == "neighbors":  # k of the valid out-slots, uniformly
            u = jax.vmap(lambda k: jax.random.uniform(k, (nbr.shape[1],)))(
                _keys(sent.key, _PEER))
            rank = jnp.argsort(jnp.argsort(jnp.where(ok, u, 2.0), axis=1), axis=1)
            ok &= rank < net.peer_k
    shape = nbr.shape
    sent_n = jnp.sum(ok.astype(jnp.int32))
    u = jax.vmap(lambda k: jax.random.uniform(k, (shape[1],)))(_keys(sent.key, _DROP))
    drop = net.drop[node_K] if net.drop.shape[1] == shape[1] and not rule_dest else \
        jnp.broadcast_to(net.drop[node_K][:, :1], shape)
    ok_link = ok & ~(u < drop)
    if spec.queue:
        d = jax.vmap(lambda k: jax.random.randint(k, (shape[1],), net.delay_lo,
                                                  net.delay_hi + 1))(_keys(sent.key, _DELAY))
        arrive = tick + d.astype(jnp.int32)
        if net.link_ticks is not None:  # the clock's link time of the message's kind
            kind = jnp.zeros_like(node_K) if kind_K is None else kind_K
            kind = jnp.minimum(kind, net.link_ticks.shape[1] - 1)
            arrive = arrive + net.link_ticks[node_K, kind][:, None]
    else:
        arrive = jnp.broadcast_to(tick, shape).astype(jnp.int32)
    if spec.churn:
        ok_link &= online(net, arrive, nbr)
    dest = jnp.where(ok_link, nbr, n).astype(jnp.int32)
    kept = jnp.sum(ok_link.astype(jnp.int32))
    delivered_now = jnp.int32(0) if spec.queue else kept
    stats = jnp.stack([sent_n, delivered_now, sent_n - kept]).astype(jnp.int32)
    return dest, jnp.where(ok_link, arrive, -1), stats, ok


def prepare(spec: Spec, net: Net, graph: Graph, tick: jax.Array, sent: base.Sent,
            kind_K: jax.Array | None = None
            ) -> tuple[base.Sent, jax.Array, jax.Array, jax.Array]:
    """The sent slots as the network delivers them (corrupted payloads, routed receivers),
    arrival ticks, counts, and the receivers tried before losses (see `route`)."""
    dest, arrive, stats, tried = route(spec, net, graph, tick, sent, kind_K)
    return sent._replace(params=corrupt(spec, net, sent), dest=dest), arrive, stats, tried


def init_queue(spec: Spec, params_N: PyTree, slots: int, width: int) -> Queue:
    """An empty in-flight ring: `spec.queue` entries of `slots` messages, each to up to
    `width` receivers (arrive -1: no message)."""
    q = spec.queue
    return Queue(
        params=jax.tree.map(lambda x: jnp.zeros((q, slots, *x.shape[1:]), x.dtype), params_N),
        node=jnp.zeros((q, slots), jnp.int32),
        key=jnp.zeros((q, slots, 2), jnp.uint32),
        event_ord=jnp.zeros((q, slots), jnp.int32),
        dest=jnp.zeros((q, slots, width), jnp.int32),
        arrive=jnp.full((q, slots, width), -1, jnp.int32))


def enqueue(queue: Queue, slot: jax.Array, sent: base.Sent, arrive: jax.Array) -> Queue:
    """Writes one chunk's routed sends into ring entry `slot`, replacing what it held.

    `sent.dest` and `arrive` ([K, D] arrival ticks) are padded to the queue's width D' >= D
    (receiver >= N, arrive -1: none).
    """
    def put(buf: jax.Array, x: jax.Array) -> jax.Array:
        return jax.lax.dynamic_update_index_in_dim(buf, x.astype(buf.dtype), slot, 0)

    dest = sent.dest
    assert dest is not None
    width = queue.dest.shape[2]
    if dest.shape[1] < width:  # narrower receiver lists (graph vs rule-addressed): pad
        pad = ((0, 0), (0, width - dest.shape[1]))
        dest = jnp.pad(dest, pad, constant_values=jnp.iinfo(jnp.int32).max)  # >= N: none
        arrive = jnp.pad(arrive, pad, constant_values=-1)
    return Queue(jax.tree.map(put, queue.params, sent.params), put(queue.node, sent.node),
                 put(queue.key, sent.key),
                 put(queue.event_ord, sent.event_ord), put(queue.dest, dest),
                 put(queue.arrive, arrive))


def deliver(emit: Any, queue: Queue, inbox: PyTree, consts: base.Consts, tick: jax.Array,
            last: jax.Array, n: int) -> tuple[PyTree, jax.Array]:
    """At a tick's last chunk, hands every in-flight message arriving now to `emit`.

    Returns (inbox, messages delivered). Cost ~ the entries holding an arrival this tick.
    """
    due_Q = last & jnp.any(queue.arrive == tick, axis=(1, 2))

    def body(c: tuple[PyTree, jax.Array], idx_M: jax.Array,
             valid_M: jax.Array) -> tuple[PyTree, jax.Array]:
        ib, count = c
        q = jnp.minimum(idx_M[0], queue.arrive.shape[0] - 1)
        now = queue.arrive[q] == tick
        dest = jnp.where(now, queue.dest[q], n)
        sent = base.Sent(params=jax.tree.map(lambda x: x[q], queue.params),
                         node=queue.node[q], send=jnp.any(now, axis=1), key=queue.key[q],
                         event_ord=queue.event_ord[q], dest=dest)
        return emit(ib, sent, consts), count + jnp.sum(now.astype(jnp.int32))

    return base.for_selected(due_Q, 1, body, (inbox, jnp.int32(0)))
