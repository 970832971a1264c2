"""The compiled tick engine: one state pytree, one jitted chunk step, run_ticks, sharding.

    eng = engine.Engine(algorithm, model, tx, work, consts, n=50, ...)
    state = eng.init_state()
    state = eng.run_ticks(state, 0, 100)      # device work; no host transfer inside

Design. The authors' reference simulator advances integer ticks; in each tick some
nodes train one SGD step and send their model, then the algorithm's end-of-tick rule runs.
Training times do not depend on training results, so `schedule` fixes them ahead from the
seed and packs each tick's trainers into chunks of exactly K node slots (the work plan). The
plan is put on the device once; the state carries the index of its next chunk, so a call
of the step transfers nothing. One jitted chunk step:
  1. gathers the K nodes' params / optimizer state, samples their batches by index
     (per-(tick, node) keys), takes one vmapped optimizer step, scatters them back;
  2. hands the K new models to the algorithm's `emit` (gossip: a scatter-add into the
     out-neighbours' fixed-shape inboxes, cost ~ K * degree rows);
  3. calls the algorithm's `end_of_tick` (on the last chunk of a tick it acts): node-local
     merges are compacted on device (`algorithms.base.for_selected`: an O(N) pass over int32
     flags, then the merge over groups of `merge_slots` gathered rows, in a while_loop that
     runs zero times when nobody merges), so a tick costs its trainings + deliveries + merges,
     not N; FL / D-PSGD rounds are one O(N) pass per round, which is their work.
Merges were not planned ahead on the host: which node merges when is known from the schedule,
but a planned merge list must be split across chunks by a host-side dependency analysis; the
on-device compaction gives the same cost with one mechanism and no extra plan (the flag pass
over N int32 flags reads 4 KB at N = 1000, less than one LeNet-5 row of 247 KB).
Scale-out (devices > 1): the node axis is split over a 1-D mesh 'nodes' of the devices (all
hosts after jax.distributed.initialize), and the whole chunk step runs under `shard_map`:
each device holds N/D nodes and a per-device work plan (`schedule.pack(..., devices=D)`:
block d of every chunk lists device d's trainers), so it trains only its own K/D slots. What
crosses devices is what the rules need: the sent models once per chunk (`all_gather`, or
on graphs whose edges reach only a few adjacent devices, such as a ring or a torus, one
`ppermute` per device shift: `build.halo_shifts`; then each device scatters into its own
inboxes: `Sent.dest` made local), the FL server's row at
a round end (`base.node_row`, a psum), all models at a D-PSGD round (`base.all_nodes`), and
the network counters (psum). Results do not depend on the device count up to the order of
floating-point sums in an inbox (tested to 1e-6).
How many chunks run per compiled call (`fuse`) is a per-backend choice that never changes
results: 1 on XLA:CPU (a Python loop of jitted calls; loops inside compiled code measured
2.6-4x slower there), a `lax.scan` over `fuse` chunks on accelerators.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from vanish import network, nodes, partition, schedule
from vanish.algorithms import base

PyTree = Any


class Traffic(NamedTuple):
    """Messages so far per node and message kind (base.Wire): sent (the sender pays for a
    message lost on the way too) and received. Bytes = counts x the kinds' sizes (host)."""

    sent: jax.Array  # [N, M] int32
    received: jax.Array  # [N, M] int32


class SimState(NamedTuple):
    """The whole simulation state the compiled step carries, as one pytree: models, optimizer
    and inbox state, counters, keys, the work-plan position and the network's state."""

    tick: jax.Array  # int32: ticks done
    params: PyTree  # stacked params_N
    opt_state: PyTree  # stacked optimizer state
    inbox: PyTree  # the algorithm's receive state (its own type)
    train_count: jax.Array  # [N] training events so far
    merges: jax.Array  # [N] averaging events so far
    loss_sum: jax.Array  # [N] training loss summed since the last evaluation
    loss_n: jax.Array  # [N] number of terms in loss_sum
    key: jax.Array  # root key of training randomness (uint32[2])
    chunk: jax.Array  # int32: index of the next work-plan chunk
    # Under a network plan (vanish/network.py), else None (no leaves: fault-free states and
    # their checkpoints are unchanged): [3] int32 messages sent / delivered / dropped, and
    # the ring of messages in flight (delays only).
    net_stats: jax.Array | None = None
    queue: network.Queue | None = None
    # Messages sent / received per node (None: not counted, a run resumed from a checkpoint
    # written before vanish counted them).
    traffic: Traffic | None = None


class Plan(NamedTuple):
    """The work plan on the device: chunk c trains node[c][valid[c]] at tick[c]."""

    tick: jax.Array  # [C + 1] (one trailing no-op chunk, so an empty plan indexes safely)
    node: jax.Array  # [C + 1, K]
    valid: jax.Array
    send: jax.Array
    last: jax.Array  # [C + 1]


def choose_fuse(requested: int, backend: str | None = None) -> int:
    """Chunks per compiled call: 1 on CPU (see module docstring), 32 on accelerators."""
    if requested > 0:
        return int(requested)
    return 1 if (backend or jax.default_backend()) == "cpu" else 32


def device_plan(work: schedule.WorkList) -> Plan:
    """The work plan as device arrays, with one trailing no-op chunk (see `Plan`)."""
    padded = work.padded(len(work) + 1)
    return Plan(*(jnp.asarray(a) for a in (padded.tick, padded.node, padded.valid, padded.send,
                                            padded.last)))


AXIS = nodes.NODE_AXIS  # the mesh axis of the node dimension
# SimState fields whose leaves carry the node axis (split over devices); the others are
# replicated scalars, keys, counters and the in-flight ring (which holds gathered messages).
NODE_FIELDS = ("params", "opt_state", "inbox", "train_count", "merges", "loss_sum", "loss_n",
               "traffic")


class Engine:
    """State, compiled step and run_ticks of one algorithm (no config, no metrics)."""

    def __init__(self, algorithm: base.Algorithm, train_step: Callable[..., nodes.TrainStep],
                 tx: Any, init_params: Callable[[], PyTree], work: schedule.WorkList,
                 consts: base.Consts, *, batch_size: int, train_key: jax.Array, fuse: int = 0,
                 reset_opt: bool = False, merge_slots: int = 8, devices: int = 1,
                 network_spec: network.Spec | None = None,
                 halo: tuple[int, ...] | None = None, count_traffic: bool = True):
        self.algorithm, self.tx, self.work = algorithm, tx, work
        self.wire = algorithm.wire or base.FULL_MODEL
        # False: states without Traffic (a run resumed from a checkpoint that predates it).
        self._count_traffic = bool(count_traffic)
        self._sizes: tuple[int, ...] | None = None
        self.network_spec = network_spec
        self._init_params = init_params
        self.fuse = choose_fuse(fuse)
        n = int(consts.is_client.shape[0])
        self.mesh = node_mesh(n, devices) if devices > 1 else None
        self.devices = 1 if self.mesh is None else int(self.mesh.size)
        # Several XLA:CPU devices share one thread pool: with many sharded steps in flight, the
        # devices that finished a step wait in the next step's all-gather on every pool
        # thread while a slower one still needs a thread for its merge loop (observed as a
        # rendezvous deadlock with 8 fake devices). One step in flight at a time there.
        self._sync = self.mesh is not None and jax.default_backend() == "cpu"
        if work.slots % self.devices:
            raise ValueError(f"a sharded work plan has {self.devices} blocks per chunk "
                             f"(schedule.pack with devices); got {work.slots} columns")
        self.train_key = train_key
        self.consts = consts
        self.plan = device_plan(work)
        axis = None if self.mesh is None else AXIS
        # Sent models cross devices by an all-gather, or (halo: the device shifts that the
        # graph's edges cross, build.halo_shifts) by one ppermute per shift.
        self.halo = None if self.mesh is None else halo
        exchange = None if axis is None else functools.partial(_exchange, self.devices,
                                                                self.halo)
        step = functools.partial(_chunk_step, Step(
            algorithm, self.wire, train_step, tx, int(batch_size), bool(reset_opt),
            int(merge_slots), network_spec, axis, exchange))
        if self.mesh is not None:
            rep = replicated(self.mesh)
            self.consts = put_global(consts, rep)
            self.plan = put_global(self.plan, rep)
            self._shapes = jax.eval_shape(self._init_local)
            specs = state_specs(self._shapes)
            plan_spec = Plan(*(P(None, AXIS) if f in ("node", "valid", "send") else P()
                               for f in Plan._fields))  # type: ignore[arg-type]
            step = jax.shard_map(step, mesh=self.mesh, in_specs=(specs, P(), plan_spec),
                                 out_specs=specs, check_vma=False)
        self._step = jax.jit(step, donate_argnums=(0,))
        if self.mesh is not None:
            self._replicate = jax.jit(lambda x: x, out_shardings=replicated(self.mesh))

        def scan(s: SimState, c: base.Consts, p: Plan, end: jax.Array) -> SimState:
            def body(s: SimState, _: None) -> tuple[SimState, None]:
                return jax.lax.cond(s.chunk < end, lambda s: step(s, c, p), lambda s: s, s), None
            return jax.lax.scan(body, s, None, length=self.fuse)[0]

        self._scan = jax.jit(scan, donate_argnums=(0,))

    @property
    def count_traffic(self) -> bool:
        """Whether the state carries message counters (fixed when the engine is built)."""
        return self._count_traffic

    @property
    def n(self) -> int:
        return int(self.consts.is_client.shape[0])

    @property
    def message_sizes(self) -> tuple[int, ...]:
        """Bytes of each of the rule's message kinds (base.Wire), host ints."""
        if self._sizes is None:
            shapes = jax.eval_shape(self._init_params)
            template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype),
                                    shapes)
            self._sizes = tuple(int(b) for b in self.wire.sizes(template, self.consts))
        return self._sizes

    def traffic_bytes(self, state: SimState) -> tuple[np.ndarray, np.ndarray] | None:
        """([N] bytes sent, [N] bytes received) so far, int64, or None if not counted."""
        if state.traffic is None:
            return None
        size_M = np.asarray(self.message_sizes, np.int64)
        sent, received = (self.fetch(x).astype(np.int64) @ size_M for x in state.traffic)
        return sent, received

    def _scalar(self, value: int) -> jax.Array:
        """An explicit (transfer-guard friendly) int32 on the state's devices."""
        if self.mesh is None:
            return jax.device_put(np.int32(value))
        return put_global(np.int32(value), replicated(self.mesh))

    def fetch(self, x: jax.Array) -> np.ndarray:
        """A state array on the host, whole, on every process (sharded ones are gathered)."""
        if self.mesh is not None and not x.is_fully_addressable:
            x = self._replicate(x)
        return np.asarray(jax.device_get(x))

    def _init_local(self) -> SimState:
        params = self._init_params()
        n = self.n
        state = SimState(
            tick=jnp.int32(0),
            params=params,
            opt_state=nodes.init_opt_state(self.tx, params),
            inbox=self.algorithm.init(params),
            train_count=jnp.zeros(n, jnp.int32),
            merges=jnp.zeros(n, jnp.int32),
            loss_sum=jnp.zeros(n, jnp.float32),
            loss_n=jnp.zeros(n, jnp.int32),
            # A copy: the step donates the state, which would delete the key and break every
            # later init_state().
            key=jnp.array(self.train_key, copy=True),
            chunk=jnp.int32(0),
        )
        if self.count_traffic:
            m = len(self.message_sizes)
            state = state._replace(traffic=Traffic(jnp.zeros((n, m), jnp.int32),
                                                   jnp.zeros((n, m), jnp.int32)))
        spec = self.network_spec
        if spec is not None:
            state = state._replace(net_stats=jnp.zeros((3,), jnp.int32))
            if spec.queue:
                net = self.consts.net
                width = spec.uniform_k if spec.peer == "uniform" else net.out_nbr.shape[2]
                width = max(width, self.wire.dest_width)
                state = state._replace(queue=network.init_queue(spec, params, self.work.slots,
                                                                width))
        return state

    def init_state(self) -> SimState:
        if self.mesh is None:
            return self._init_local()
        # Built by a jit whose outputs are already split: every process makes only its own
        # shards (no host array of all N models, which also works across hosts).
        return jax.jit(self._init_local, out_shardings=shard_state(self._shapes, self.mesh))()

    def run_ticks(self, state: SimState, t0: int, t1: int) -> SimState:
        """Runs ticks [t0, t1); asynchronous (returns before the device is done)."""
        c0, c1 = (int(c) for c in np.searchsorted(self.work.tick, [t0, t1]))
        state = state._replace(chunk=self._scalar(c0))
        if self.fuse == 1:
            for _ in range(c1 - c0):
                state = self._step(state, self.consts, self.plan)
                if self._sync:
                    state = jax.block_until_ready(state)
        elif c1 > c0:
            end = self._scalar(c1)
            for _ in range(-(-(c1 - c0) // self.fuse)):
                state = self._scan(state, self.consts, self.plan, end)
        return state._replace(tick=self._scalar(t1))


def node_mesh(n: int, count: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh 'nodes' over the first `count` devices (default: every device, of all
    hosts after jax.distributed.initialize)."""
    devices = np.array(jax.devices()[:count])
    if n % devices.size:
        raise ValueError(
            f"shard_nodes: {n} nodes cannot be split evenly over {devices.size} devices; "
            f"choose num_nodes as a multiple of {devices.size} (FL adds one server node)")
    return jax.sharding.Mesh(devices, (AXIS,))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    """Every device of `mesh` holds the whole array (public: train.py places the test set)."""
    return jax.sharding.NamedSharding(mesh, P())


def put_global(tree: PyTree, sharding: jax.sharding.Sharding) -> PyTree:
    """Host values (the same on every process) as global arrays with `sharding` (public:
    train.py places the test set and the evaluation weights the same way)."""
    def put(x: Any) -> jax.Array:
        a = np.asarray(x)
        return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])
    return jax.tree.map(put, tree)


def state_specs(state: Any) -> Any:
    """PartitionSpecs of a SimState (or its shapes): NODE_FIELDS split over 'nodes'."""
    return SimState(**{f: jax.tree.map(lambda _, f=f: P(AXIS) if f in NODE_FIELDS else P(),
                                       getattr(state, f)) for f in SimState._fields})


def shard_state(state: SimState, mesh: jax.sharding.Mesh) -> Any:
    """Shardings for a state: NODE_FIELDS split over 'nodes', the rest replicated."""
    return jax.tree.map(lambda spec: jax.sharding.NamedSharding(mesh, spec), state_specs(state),
                        is_leaf=lambda x: isinstance(x, P))


def _localize(sent: base.Sent, offset: jax.Array, n: int) -> base.Sent:
    """Receivers as rows of this device's nodes; other devices' nodes -> n (dropped)."""
    assert sent.dest is not None
    local = sent.dest - offset
    return sent._replace(dest=jnp.where((local >= 0) & (local < n), local, n))


def _local_consts(consts: base.Consts, offset: jax.Array, n: int) -> base.Consts:
    """The per-node consts the rules read by local row (graph and partition stay global)."""
    rows = lambda x: jax.lax.dynamic_slice_in_dim(x, offset, n)  # noqa: E731
    return consts._replace(threshold=rows(consts.threshold), is_client=rows(consts.is_client))


def _exchange(devices: int, halo: tuple[int, ...] | None, tree: PyTree) -> PyTree:
    """Every device's sent block to the devices that may hold its receivers: all of them
    (all-gather, in device order), or this device's own block followed by the blocks of the
    devices `s` places before it, for each shift s of the halo (ring, torus: 2 ppermutes)."""
    if halo is None:
        return jax.lax.all_gather(tree, AXIS, tiled=True)
    blocks = [tree] + [jax.lax.ppermute(tree, AXIS, [(d, (d + s) % devices)
                                                    for d in range(devices)]) for s in halo]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *blocks)


class Step(NamedTuple):
    """What one compiled chunk step is made of (static: fixed when the Engine is built)."""

    algo: base.Algorithm
    wire: base.Wire
    train_step: Callable[..., nodes.TrainStep]
    tx: Any
    batch_size: int
    reset_opt: bool
    merge_slots: int
    spec: network.Spec | None  # the network layer (None: fault-free, no delays)
    axis: str | None  # None: the whole node axis here; 'nodes': under shard_map
    exchange: Callable[[PyTree], PyTree] | None  # sent models across devices (sharded)

    def kind(self, sent: base.Sent, consts: base.Consts) -> jax.Array:
        """Each sent slot's message kind (base.Wire; one kind: all 0)."""
        if self.wire.kind is None:
            return jnp.zeros_like(sent.node)
        return self.wire.kind(sent, consts)


class Chunk(NamedTuple):
    """Where one chunk stands: its tick, its nodes (global ids and this device's rows), which
    of them train and send, and the constants of this device's rows."""

    chunk: jax.Array  # the work-plan chunk
    tick: jax.Array
    last: jax.Array  # the tick's final chunk
    node_K: jax.Array
    row_K: jax.Array  # node_K as rows of this device's block
    valid_K: jax.Array  # slots that train (padding and offline nodes do not)
    send_K: jax.Array
    slot_K: jax.Array | None  # row_K, padding out of bounds (scatters drop it); from _train
    n: int  # nodes on this device
    offset: jax.Array  # global id of this device's first node
    consts: base.Consts  # this device's rows
    tick_key: jax.Array


class Routed(NamedTuple):
    """What the route phase hands to delivery: the messages (and, with delays, their
    arrival ticks), each slot's kind, the network's counters and who is online."""

    sent: base.Sent
    kind_K: jax.Array
    arrive_KD: jax.Array | None
    stats: jax.Array | None
    online_N: jax.Array | None


def _locate(step: Step, state: SimState, consts: base.Consts, plan: Plan) -> Chunk:
    """The chunk's tick and nodes from the plan (offline nodes neither train nor send)."""
    c = state.chunk
    tick, node_K, valid_K = plan.tick[c], plan.node[c], plan.valid[c]
    send_K, last = plan.send[c], plan.last[c]
    n = state.train_count.shape[0]
    offset = (jnp.int32(0) if step.axis is None
              else jax.lax.axis_index(step.axis).astype(jnp.int32) * n)
    if step.axis is not None:
        local_consts = _local_consts(consts, offset, n)
        row_K = jnp.where(valid_K, node_K - offset, 0)
    else:
        local_consts, row_K = consts, node_K
    if step.spec is not None and step.spec.churn:
        valid_K = valid_K & network.online(consts.net, tick, node_K)
    tick_key = jax.random.fold_in(state.key, tick)
    return Chunk(c, tick, last, node_K, row_K, valid_K, send_K, None, n, offset,
                 local_consts, tick_key)


def _train(step: Step, ch: Chunk, state: SimState,
           consts: base.Consts) -> tuple[Chunk, SimState, base.Sent]:
    """Trains the chunk's nodes one step each, on batches drawn by (tick, node) keys; returns
    the chunk (with its scatter slots), the state with their new models and counters, and
    what they send."""
    keys_K = jax.vmap(lambda i: jax.random.fold_in(ch.tick_key, i))(ch.node_K)
    idx_KB = partition.sample_indices_for_keys(keys_K, consts.part, ch.node_K,
                                               step.batch_size)
    x_KB, y_KB = consts.x_train[idx_KB], consts.y_train[idx_KB]
    out = step.train_step(nodes.tree_take(state.params, ch.row_K),
                          nodes.tree_take(state.opt_state, ch.row_K), x_KB, y_KB)
    params = nodes.tree_put(state.params, ch.row_K, out.params, ch.valid_K)
    opt_state = nodes.tree_put(state.opt_state, ch.row_K, out.opt_state, ch.valid_K)
    ch = ch._replace(slot_K=jnp.where(ch.valid_K, ch.row_K, ch.n))
    event_ord_K = state.train_count[ch.row_K]
    state = state._replace(
        params=params, opt_state=opt_state,
        train_count=state.train_count.at[ch.slot_K].add(1, mode="drop"),
        loss_sum=state.loss_sum.at[ch.slot_K].add(out.loss, mode="drop"),
        loss_n=state.loss_n.at[ch.slot_K].add(1, mode="drop"))
    sent = base.Sent(out.params, ch.node_K, ch.send_K & ch.valid_K, keys_K, event_ord_K)
    return ch, state, sent


def _route(step: Step, ch: Chunk, state: SimState, consts: base.Consts,
           sent: base.Sent) -> tuple[SimState, Routed]:
    """What goes on the wire (the rule's encoder), through the network layer (losses,
    delays, peer sampling), counted at the senders, and (sharded) to the devices that hold
    the receivers."""
    if step.algo.encode is not None:  # a compressor and its own state
        inbox, sent = step.algo.encode(state.inbox, sent, ch.consts)
        state = state._replace(inbox=inbox)
    kind_K = step.kind(sent, ch.consts)
    arrive_KD = stats = online_N = None
    if step.spec is not None:
        sent, arrive_KD, stats, tried_KD = network.prepare(step.spec, consts.net, consts.graph,
                                                           ch.tick, sent, kind_K)
        if step.axis is not None:
            stats = jax.lax.psum(stats, step.axis)
        if step.spec.churn:
            online_N = network.online(consts.net, ch.tick, ch.offset + jnp.arange(ch.n))
    else:
        tried_KD = base.destinations(sent, consts.graph) < consts.graph.self_weight.shape[0]
    state = _count_sent(step, ch, state, tried_KD, kind_K)
    if step.axis is not None:
        # The sent models to the devices that hold receivers, once per chunk; each then
        # scatters only into its own inboxes.
        assert step.exchange is not None
        if sent.dest is None:
            sent = sent._replace(dest=base.destinations(sent, consts.graph))
        sent, arrive_KD = step.exchange((sent, arrive_KD))
    return state, Routed(sent, kind_K, arrive_KD, stats, online_N)


def _count_sent(step: Step, ch: Chunk, state: SimState, tried_KD: jax.Array,
                kind_K: jax.Array) -> SimState:
    """The sender pays for every copy it tried, lost ones too (at most the rule's fan-out)."""
    traffic = state.traffic
    if traffic is None or not step.wire.sends:
        return state
    tries_K = jnp.sum(tried_KD.astype(jnp.int32), axis=1)
    if step.wire.fanout:
        tries_K = jnp.minimum(tries_K, step.wire.fanout)
    sent = traffic.sent.at[ch.slot_K, kind_K].add(tries_K, mode="drop")
    return state._replace(traffic=traffic._replace(sent=sent))


def _deliver(step: Step, ch: Chunk, state: SimState, routed: Routed) -> SimState:
    """Hands the messages that arrive to the rule's inbox (at once, or from the in-flight
    queue at their arrival tick's last chunk) and counts them at their receivers."""
    algo, axis, n = step.algo, step.axis, ch.n

    def emit(carry: tuple[PyTree, jax.Array | None], s: base.Sent,
             cs: base.Consts) -> tuple[PyTree, jax.Array | None]:
        """Delivered messages to the rule (after its own choice of receivers, on this
        device's rows), counted at their receivers."""
        ib, received = carry
        if algo.select is not None:
            s = algo.select(s, cs)
        if axis is not None:
            s = _localize(s, ch.offset, n)
        ib = algo.emit(ib, s, cs)
        if received is not None:
            dest_KD = base.destinations(s, cs.graph)
            kind_KD = jnp.broadcast_to(step.kind(s, cs)[:, None], dest_KD.shape)
            received = received.at[dest_KD, kind_KD].add(1, mode="drop")
        return ib, received

    traffic = state.traffic
    counted = traffic is not None and step.wire.sends
    carry = (state.inbox, traffic.received if counted else None)  # type: ignore[union-attr]
    queue, net_stats = state.queue, state.net_stats
    stats: jax.Array | None
    if step.spec is not None and step.spec.queue:  # in flight until the arrival tick
        assert queue is not None and routed.arrive_KD is not None
        assert routed.stats is not None
        queue = network.enqueue(queue, ch.chunk % step.spec.queue, routed.sent,
                                routed.arrive_KD)
        n_all = n if axis is None else n * jax.lax.axis_size(axis)
        carry, delivered = network.deliver(emit, queue, carry, ch.consts, ch.tick, ch.last,
                                           n_all)
        stats = routed.stats.at[1].add(delivered)
    else:
        carry = emit(carry, routed.sent, ch.consts)
        stats = routed.stats
    if step.spec is not None:
        assert net_stats is not None and stats is not None
        net_stats = net_stats + stats
    inbox, received = carry
    if counted:
        assert traffic is not None and received is not None
        traffic = traffic._replace(received=received)
    return state._replace(inbox=inbox, queue=queue, net_stats=net_stats, traffic=traffic)


def _end_of_tick(step: Step, ch: Chunk, state: SimState, consts: base.Consts,
                 online_N: jax.Array | None) -> SimState:
    """The rule's end of tick (its merges; a round's end), the round's transfers counted,
    fresh optimizer state for merged rows (reset_on_merge); then the next chunk."""
    if consts.round_end is None:
        round_end = ch.last & ((ch.tick + 1) % consts.round_ticks == 0)
    else:  # rounds planned with the events (fl without a deadline)
        round_end = ch.last & consts.round_end[ch.tick]
    now = base.Tick(ch.tick, ch.last, round_end, ch.tick_key, online_N, step.axis, ch.offset)
    inbox_in = state.inbox  # what the tick delivered (a round's traffic may read who merged)
    params, inbox, merged = step.algo.end_of_tick(state.params, state.inbox, ch.consts, now)
    traffic = state.traffic
    if traffic is not None and step.wire.rounds is not None:
        # Transfers of a round's end (an FL broadcast, a D-PSGD mixing round).
        sent_NM, received_NM = step.wire.rounds(merged, inbox_in, ch.consts, now)
        traffic = Traffic(traffic.sent + sent_NM, traffic.received + received_NM)
    opt_state = state.opt_state
    if step.reset_opt:  # fresh optimizer state for the merged rows only
        def body(o: PyTree, idx_M: jax.Array, valid_M: jax.Array) -> PyTree:
            fresh = jax.vmap(step.tx.init)(base.take(params, idx_M))
            return base.put(o, jnp.where(valid_M, idx_M, ch.n), fresh)

        opt_state = base.for_selected(merged, step.merge_slots, body, opt_state)
    return state._replace(params=params, opt_state=opt_state, inbox=inbox, traffic=traffic,
                          merges=state.merges + merged.astype(jnp.int32),
                          chunk=ch.chunk + 1)


def _chunk_step(step: Step, state: SimState, consts: base.Consts, plan: Plan) -> SimState:
    """One chunk, in phases: train its nodes, route what they send, deliver it to the inboxes,
    then the end of tick (traffic is counted where it happens: sent in route, received in
    delivery, a round's transfers at its end). axis=None: the whole node axis here;
    axis='nodes' (under shard_map): this device's N / D nodes, plan rows its own block."""
    ch = _locate(step, state, consts, plan)
    ch, state, sent = _train(step, ch, state, consts)
    state, routed = _route(step, ch, state, consts, sent)
    state = _deliver(step, ch, state, routed)
    return _end_of_tick(step, ch, state, consts, routed.online_N)
