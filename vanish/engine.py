"""The compiled tick engine: one state pytree, one jitted chunk step, run_ticks, sharding.

    eng = engine.Engine(algorithm, model, tx, work, consts, n=50, ...)
    state = eng.init_state()
    state = eng.run_ticks(state, 0, 100)      # device work; no host transfer inside

Design. The reference simulator (SPEC section 3) advances integer ticks; in each tick some
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

from vanish import network, nodes, partition, schedule
from vanish.algorithms import base

PyTree = Any


class SimState(NamedTuple):
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
    padded = work.padded(len(work) + 1)
    return Plan(*(jnp.asarray(a) for a in (padded.tick, padded.node, padded.valid, padded.send,
                                            padded.last)))


class Engine:
    """State, compiled step and run_ticks of one algorithm (no config, no metrics)."""

    def __init__(self, algorithm: base.Algorithm, train_step: Callable[..., nodes.TrainStep],
                 tx: Any, init_params: Callable[[], PyTree], work: schedule.WorkList,
                 consts: base.Consts, *, batch_size: int, train_key: jax.Array, fuse: int = 0,
                 reset_opt: bool = False, merge_slots: int = 8, shard: bool = False,
                 network_spec: network.Spec | None = None):
        self.algorithm, self.tx, self.work = algorithm, tx, work
        self.network_spec = network_spec
        self._init_params = init_params
        self.fuse = choose_fuse(fuse)
        self.mesh = node_mesh(consts.is_client.shape[0]) if shard else None
        self.train_key = train_key
        self.consts = consts
        self.plan = device_plan(work)
        if self.mesh is not None:
            rep = _replicated(self.mesh)
            self.consts = jax.device_put(consts, rep)
            self.plan = jax.device_put(self.plan, rep)
        step = functools.partial(_chunk_step, algorithm, train_step, tx, int(batch_size),
                                 bool(reset_opt), int(merge_slots), network_spec)
        self._step = jax.jit(step, donate_argnums=(0,))

        def scan(s: SimState, c: base.Consts, p: Plan, end: jax.Array) -> SimState:
            def body(s: SimState, _: None) -> tuple[SimState, None]:
                return jax.lax.cond(s.chunk < end, lambda s: step(s, c, p), lambda s: s, s), None
            return jax.lax.scan(body, s, None, length=self.fuse)[0]

        self._scan = jax.jit(scan, donate_argnums=(0,))

    @property
    def n(self) -> int:
        return int(self.consts.is_client.shape[0])

    def _scalar(self, value: int) -> jax.Array:
        """An explicit (transfer-guard friendly) int32 on the state's devices."""
        if self.mesh is None:
            return jax.device_put(np.int32(value))
        return jax.device_put(np.int32(value), _replicated(self.mesh))

    def init_state(self) -> SimState:
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
        spec = self.network_spec
        if spec is not None:
            state = state._replace(net_stats=jnp.zeros((3,), jnp.int32))
            if spec.queue:
                net = self.consts.net
                width = spec.uniform_k if spec.peer == "uniform" else net.out_nbr.shape[2]
                state = state._replace(queue=network.init_queue(spec, params, self.work.slots,
                                                                width))
        if self.mesh is None:
            return state
        return jax.device_put(state, shard_state(state, self.mesh))

    def run_ticks(self, state: SimState, t0: int, t1: int) -> SimState:
        """Runs ticks [t0, t1); asynchronous (returns before the device is done)."""
        c0, c1 = (int(c) for c in np.searchsorted(self.work.tick, [t0, t1]))
        state = state._replace(chunk=self._scalar(c0))
        if self.fuse == 1:
            for _ in range(c1 - c0):
                state = self._step(state, self.consts, self.plan)
        elif c1 > c0:
            end = self._scalar(c1)
            for _ in range(-(-(c1 - c0) // self.fuse)):
                state = self._scan(state, self.consts, self.plan, end)
        return state._replace(tick=self._scalar(t1))


def node_mesh(n: int) -> jax.sharding.Mesh:
    """A 1-D mesh 'nodes' over every device (all hosts after jax.distributed.initialize)."""
    devices = np.array(jax.devices())
    if n % devices.size:
        raise ValueError(
            f"shard_nodes: {n} nodes cannot be split evenly over {devices.size} devices; "
            f"choose num_nodes as a multiple of {devices.size} (FL adds one server node)")
    return jax.sharding.Mesh(devices, ("nodes",))


def _replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def shard_state(state: SimState, mesh: jax.sharding.Mesh) -> Any:
    """Shardings for a state: leaves with the leading node axis split over 'nodes'."""
    n = state.train_count.shape[0]
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("nodes"))
    return jax.tree.map(
        lambda x: split if getattr(x, "ndim", 0) >= 1 and x.shape[0] == n else _replicated(mesh),
        state)


def _chunk_step(algo: base.Algorithm, train_step: Callable[..., nodes.TrainStep], tx: Any,
                batch_size: int, reset_opt: bool, merge_slots: int,
                spec: network.Spec | None, state: SimState, consts: base.Consts,
                plan: Plan) -> SimState:
    c = state.chunk
    tick, node_K, valid_K = plan.tick[c], plan.node[c], plan.valid[c]
    send_K, last = plan.send[c], plan.last[c]
    n = state.train_count.shape[0]
    if spec is not None and spec.churn:  # offline nodes neither train nor send
        valid_K = valid_K & network.online(consts.net, tick, node_K)
    # 1. Train the chunk's nodes, one step each, on batches drawn by (tick, node) keys.
    tick_key = jax.random.fold_in(state.key, tick)
    keys_K = jax.vmap(lambda i: jax.random.fold_in(tick_key, i))(node_K)
    idx_KB = partition.sample_indices_for_keys(keys_K, consts.part, node_K, batch_size)
    x_KB, y_KB = consts.x_train[idx_KB], consts.y_train[idx_KB]
    out = train_step(nodes.tree_take(state.params, node_K),
                     nodes.tree_take(state.opt_state, node_K), x_KB, y_KB)
    params = nodes.tree_put(state.params, node_K, out.params, valid_K)
    opt_state = nodes.tree_put(state.opt_state, node_K, out.opt_state, valid_K)
    slot = jnp.where(valid_K, node_K, n)  # padding slots scatter out of bounds (dropped)
    event_ord_K = state.train_count[node_K]
    train_count = state.train_count.at[slot].add(1, mode="drop")
    loss_sum = state.loss_sum.at[slot].add(out.loss, mode="drop")
    loss_n = state.loss_n.at[slot].add(1, mode="drop")
    # 2. Send (through the network layer when there is one), 3. end of tick: the algorithm's.
    sent = base.Sent(out.params, node_K, send_K & valid_K, keys_K, event_ord_K)
    net_stats, queue, online_N = state.net_stats, state.queue, None
    if spec is None:
        inbox = algo.emit(state.inbox, sent, consts)
    else:
        sent, arrive_KD, stats = network.prepare(spec, consts.net, consts.graph, tick, sent)
        assert state.net_stats is not None
        if spec.queue:  # in flight until the arrival tick's last chunk
            assert state.queue is not None
            queue = network.enqueue(state.queue, c % spec.queue, sent, arrive_KD)
            inbox, delivered = network.deliver(algo.emit, queue, state.inbox, consts, tick,
                                               last, n)
            stats = stats.at[1].add(delivered)
        else:
            inbox = algo.emit(state.inbox, sent, consts)
        net_stats = state.net_stats + stats
        if spec.churn:
            online_N = network.online(consts.net, tick, jnp.arange(n))
    round_end = last & ((tick + 1) % consts.round_ticks == 0)
    params, inbox, merged = algo.end_of_tick(params, inbox, consts,
                                             base.Tick(tick, last, round_end, tick_key,
                                                       online_N))
    if reset_opt:  # fresh optimizer state for the merged rows only
        def body(o: PyTree, idx_M: jax.Array, valid_M: jax.Array) -> PyTree:
            fresh = jax.vmap(tx.init)(base.take(params, idx_M))
            return base.put(o, jnp.where(valid_M, idx_M, n), fresh)

        opt_state = base.for_selected(merged, merge_slots, body, opt_state)
    return SimState(
        tick=state.tick, params=params, opt_state=opt_state, inbox=inbox,
        train_count=train_count, merges=state.merges + merged.astype(jnp.int32),
        loss_sum=loss_sum, loss_n=loss_n, key=state.key, chunk=c + 1, net_stats=net_stats,
        queue=queue)
