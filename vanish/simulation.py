"""The tick engine: every algorithm of the paper as one compiled step over a fixed-shape state.

    sim = simulation.Simulation(cfg, "gossip_vc", dataset)
    state = sim.init_state()
    state = sim.run_ticks(state, 0, 100)      # device work; no host sync inside
    metrics = sim.evaluate(state)             # the only host pull

Design. The reference simulator (SPEC section 3) advances integer ticks; in each tick some
nodes train one SGD step and push their model to their neighbours' buffers, then nodes
whose buffer holds >= threshold models merge. Training times do not depend on training
results, so `schedule.draw` fixes them ahead from the seed and `schedule.pack` cuts each
tick's trainers into chunks of exactly K node slots. One jitted `chunk step` then:
  1. gathers the K nodes' params / optimizer state, samples their batches by index
     (per-(tick, node) keys), takes one vmapped optimizer step, scatters them back;
  2. delivers the new models to the out-neighbours' fixed-shape inboxes (gossip);
  3. if it is the last chunk of its tick, runs the end-of-tick rule: inbox merge with
     optional variance correction (gossip), a server round (FL), or W-mixing (D-PSGD).
Training cost is therefore proportional to the nodes that train (~N/10 per tick at
intervals U{8..12}), not to N; the masked baseline (`masked_baseline=True`) trains all N
every tick with a validity mask, for the benchmark. FL is a star topology plus the fedavg
rule, D-PSGD is the schedule "everyone every tick" plus the sync rule: one engine.

How many chunks run per compiled call (`fuse`) is a per-backend choice that never changes
results: 1 on XLA:CPU (a Python loop of jitted calls; loops inside compiled code measured
2.6-4x slower there), a `lax.scan` over `fuse` chunks on accelerators. The whole state is
one pytree (SimState), checkpointed whole; the schedule is re-derived from the seed and its
fingerprint is checked on resume.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vanish import config as config_lib
from vanish import mixing, models, nodes, partition, rules, schedule, topology, variance
from vanish.data import Dataset, balanced_subset

PyTree = Any


class SimState(NamedTuple):
    tick: jax.Array  # int32: ticks done
    params: PyTree  # stacked params_N
    opt_state: PyTree  # stacked optimizer state
    inbox: rules.Inbox  # receive buffers
    train_count: jax.Array  # [N] training events so far
    merges: jax.Array  # [N] averaging events so far
    loss_sum: jax.Array  # [N] training loss summed since the last evaluation
    loss_n: jax.Array  # [N] number of terms in loss_sum
    key: jax.Array  # root key of training randomness (uint32[2])


class Consts(NamedTuple):
    """Device arrays the step reads: arguments, never closed-over constants."""

    graph: topology.Graph
    x_train: jax.Array
    y_train: jax.Array
    part: partition.PartitionArrays
    threshold: jax.Array  # [N] int32
    beta: jax.Array  # f32
    is_client: jax.Array  # [N] bool: nodes that train (FL: all but the server)
    round_ticks: jax.Array  # int32: FL / D-PSGD round length
    part_ids: PyTree  # partitioned gossip: coordinate -> partition id


class Chunk(NamedTuple):
    tick: jax.Array
    node: jax.Array
    valid: jax.Array
    send: jax.Array
    last: jax.Array


def build_topology(cfg: ml_collections.ConfigDict, algo: config_lib.AlgorithmSpec) -> topology.Topology:
    n = int(cfg.num_nodes)
    if algo.rule == "none":
        return topology.make("complete", 1)
    if algo.rule == "fedavg":  # node 0 is the server, 1..n the clients
        return topology.star(n + 1, center=0)
    kw: dict[str, Any] = {}
    name = cfg.topology
    if name == "random_regular":
        kw = dict(degree=int(cfg.degree))
    elif name == "erdos_renyi":
        kw = dict(p=float(cfg.edge_prob))
    elif name == "watts_strogatz":
        kw = dict(k=int(cfg.degree), p=float(cfg.rewire_prob))
    elif name == "barabasi_albert":
        kw = dict(m=int(cfg.attach))
    elif name == "edge_list":
        kw = dict(path=cfg.edge_list)
    return topology.make(name, n, seed=int(cfg.seed), weighting=cfg.weighting, **kw)


def choose_fuse(requested: int, backend: str | None = None) -> int:
    """Chunks per compiled call: 1 on CPU (see module docstring), 32 on accelerators."""
    if requested > 0:
        return int(requested)
    return 1 if (backend or jax.default_backend()) == "cpu" else 32


class Simulation:
    """One algorithm's simulation: host-side plan + jitted device steps."""

    def __init__(self, cfg: ml_collections.ConfigDict, algorithm: str, dataset: Dataset):
        self.cfg = cfg
        self.algo = config_lib.algorithm_spec(algorithm, cfg)
        self.name = algorithm
        self.topo = build_topology(cfg, self.algo)
        n = self.n = self.topo.n
        ticks = int(cfg.ticks)
        has_server = self.algo.rule == "fedavg"
        is_client = np.ones(n, bool)
        if has_server:
            is_client[0] = False
        self.is_client = is_client
        self.n_clients = int(is_client.sum())
        # Data: the partition is over the training nodes (clients).
        y = np.asarray(dataset.y_train)
        kw: dict[str, Any] = {}
        if cfg.partition in ("dirichlet_weights", "dirichlet_split"):
            kw = dict(alpha=float(cfg.alpha))
        elif cfg.partition == "shards":
            kw = dict(shards_per_node=int(cfg.shards_per_node))
        elif cfg.partition == "label_subsets":
            kw = dict(subsets=config_lib.parse_label_subsets(cfg.label_subsets))
        part = partition.make_partition(cfg.partition, y, self.n_clients, seed=int(cfg.seed), **kw)
        if has_server:  # the server holds no data; give it the first client's row (never used)
            part = _prepend_node(part)
        self.partition = part
        self.label_hist = partition.label_histogram(part, y, dataset.num_classes)[is_client]
        x_test, y_test = balanced_subset(
            dataset.x_test, dataset.y_test, int(cfg.test_per_class), int(cfg.seed))
        self.x_test, self.y_test = jnp.asarray(x_test), jnp.asarray(y_test)
        # Schedule and work list.
        if self.algo.rule == "sync":
            interval, first = (1, 1), 0
        else:
            interval = (int(cfg.interval_lo), int(cfg.interval_hi))
            first = cfg.first_tick if cfg.first_tick == "random" else int(cfg.first_tick)
        self.schedule = schedule.draw(
            n, ticks, interval, seed=int(cfg.seed), first_tick=first,
            send_every=int(cfg.send_every), trainers=is_client)
        round_ticks = int(cfg.sync_local_steps if self.algo.rule == "sync" else cfg.fl_round_ticks)
        if round_ticks < 1:
            raise ValueError(f"round length must be >= 1 tick, got {round_ticks}")
        end_of_tick = None
        if self.algo.rule in ("fedavg", "sync"):
            end_of_tick = (np.arange(ticks) + 1) % round_ticks == 0
        counts = self.schedule.counts_per_tick()
        if cfg.masked_baseline:
            slots = n
        elif int(cfg.slots) > 0:
            slots = int(cfg.slots)
        else:
            slots = schedule.choose_slots(counts)
        self.work = (schedule.pack_masked(self.schedule, end_of_tick) if cfg.masked_baseline
                     else schedule.pack(self.schedule, slots, end_of_tick))
        self.fuse = choose_fuse(int(cfg.fuse))
        # Model and optimiser.
        self.model = models.make_model(
            cfg.model, num_classes=dataset.num_classes, conv_impl=cfg.conv_impl, init=cfg.init)
        self.tx = nodes.make_optimizer(
            cfg.optimizer, lr=float(cfg.lr), momentum=float(cfg.momentum),
            schedule=cfg.lr_schedule, weight_decay=float(cfg.weight_decay))
        self.input_shape = tuple(dataset.x_train.shape[1:])
        degree = np.asarray(self.topo.degree)
        threshold = degree if int(cfg.threshold) <= 0 else np.full(n, int(cfg.threshold))
        root = jax.random.PRNGKey(int(cfg.seed))
        self.keys = {name: jax.random.fold_in(root, i) for i, name in
                     enumerate(("init", "train", "partitions"))}
        params_shape = jax.eval_shape(
            lambda k: self.model.init(k, jnp.zeros((1, *self.input_shape)))["params"], root)
        self.consts = Consts(
            graph=self.topo.device_graph(),
            x_train=jnp.asarray(dataset.x_train),
            y_train=jnp.asarray(dataset.y_train),
            part=part.device_arrays(),
            threshold=jnp.asarray(np.maximum(threshold, 1), jnp.int32),
            beta=jnp.float32(0.0 if self.algo.rule == "fedavg" else float(cfg.beta)),
            is_client=jnp.asarray(is_client),
            round_ticks=jnp.int32(round_ticks),
            part_ids=(rules.partition_ids(
                jax.tree.map(lambda s: jnp.zeros((1, *s.shape)), params_shape),
                int(cfg.num_partitions), int(cfg.seed)) if self.algo.partitioned else None),
        )
        step = functools.partial(
            _chunk_step, self.algo, nodes.make_train_step(self.model, self.tx), self.tx,
            int(cfg.batch_size), float(cfg.fl_client_fraction), int(cfg.num_partitions),
            float(cfg.subsample), bool(cfg.reset_opt_on_merge))
        self._step = jax.jit(step, donate_argnums=(0,))
        self._scan = jax.jit(
            lambda s, c, w: jax.lax.scan(lambda s, w: (step(s, c, w), None), s, w)[0],
            donate_argnums=(0,))
        self._eval = jax.jit(functools.partial(_evaluate, nodes.make_eval_step(self.model)))
        self.mesh = node_mesh(n) if cfg.shard_nodes else None
        if self.mesh is not None:
            self.consts = jax.device_put(self.consts, _replicated(self.mesh))

    # ----------------------------------------------------------------------------- state
    def init_state(self) -> SimState:
        params = nodes.init_params(
            self.model, self.keys["init"], self.n, self.input_shape, shared=self.algo.shared_init)
        n = self.n
        state = SimState(
            tick=jnp.int32(0),
            params=params,
            opt_state=nodes.init_opt_state(self.tx, params),
            inbox=rules.empty_inbox(params, partitioned=self.algo.partitioned),
            train_count=jnp.zeros(n, jnp.int32),
            merges=jnp.zeros(n, jnp.int32),
            loss_sum=jnp.zeros(n, jnp.float32),
            loss_n=jnp.zeros(n, jnp.int32),
            # A copy: the step donates the state, which would delete self.keys["train"] and
            # break every later init_state() of this Simulation.
            key=jnp.array(self.keys["train"], copy=True),
        )
        if self.mesh is None:
            return state
        return jax.device_put(state, shard_state(state, self.mesh))

    # ------------------------------------------------------------------------------ run
    def run_ticks(self, state: SimState, t0: int, t1: int) -> SimState:
        """Runs ticks [t0, t1); asynchronous (returns before the device is done)."""
        work = self.work.between(t0, t1)
        if self.fuse == 1:
            for c in range(len(work)):
                state = self._step(state, self.consts, _chunk(work, c))
        elif len(work):
            length = -(-len(work) // self.fuse) * self.fuse
            work = work.padded(length)
            for c0 in range(0, length, self.fuse):
                sl = slice(c0, c0 + self.fuse)
                w = Chunk(*(jnp.asarray(a[sl]) for a in (work.tick, work.node, work.valid,
                                                          work.send, work.last)))
                state = self._scan(state, self.consts, w)
        return state._replace(tick=jnp.int32(t1))

    def evaluate(self, state: SimState) -> tuple[SimState, dict[str, Any]]:
        """Pulls this evaluation's metrics to the host and resets the loss accumulators."""
        out = jax.device_get(self._eval(state, self.x_test, self.y_test))
        eval_nodes = self.is_client
        acc, loss = out["acc_N"][eval_nodes], out["loss_N"][eval_nodes]
        m: dict[str, Any] = dict(
            acc_mean=float(acc.mean()), acc_min=float(acc.min()), acc_max=float(acc.max()),
            acc_std=float(acc.std()), loss_mean=float(loss.mean()), loss_min=float(loss.min()),
            loss_max=float(loss.max()), loss_std=float(loss.std()),
            consensus=float(out["consensus"]),
            averaging_events=int(out["merges"]),
            training_events=int(out["train_events"]),
        )
        if out["train_n"] > 0:
            m["train_loss"] = float(out["train_loss"])
        if self.algo.rule == "fedavg":
            m["server_acc"] = float(out["acc_N"][0])
        for path, v in out["layer_var"].items():
            m[f"var/{path}"] = float(v)
        state = state._replace(loss_sum=jnp.zeros_like(state.loss_sum),
                               loss_n=jnp.zeros_like(state.loss_n))
        return state, m


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
    """Shardings for a state: leaves with the leading node axis split over 'nodes'.

    The compiled step is unchanged: XLA's SPMD partitioner inserts the collectives that the
    gathers of the K training nodes and the scatter-adds of gossip need.
    """
    n = state.train_count.shape[0]
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("nodes"))
    return jax.tree.map(
        lambda x: split if getattr(x, "ndim", 0) >= 1 and x.shape[0] == n else _replicated(mesh),
        state)


def _chunk(work: schedule.WorkList, c: int) -> Chunk:
    return Chunk(np.int32(work.tick[c]), work.node[c], work.valid[c], work.send[c],
                 np.bool_(work.last[c]))


def _prepend_node(part: partition.Partition) -> partition.Partition:
    prob = np.concatenate([part.node_group_prob[:1], part.node_group_prob], 0)
    return partition.Partition(
        group_index=part.group_index, group_size=part.group_size, node_group_prob=prob,
        name=part.name)


def _chunk_step(
    algo: config_lib.AlgorithmSpec, train_step, tx, batch_size: int, client_fraction: float,
    num_partitions: int, subsample: float, reset_opt: bool,
    state: SimState, consts: Consts, chunk: Chunk,
) -> SimState:
    node_K, valid_K = chunk.node, chunk.valid
    n = state.train_count.shape[0]
    # 1. Train the chunk's nodes, one step each, on batches drawn by (tick, node) keys.
    tick_key = jax.random.fold_in(state.key, chunk.tick)
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
    inbox, merges = state.inbox, state.merges
    # 2. Send.
    if algo.rule == "gossip":
        masks = None
        if algo.partitioned:
            masks = rules.message_masks(consts.part_ids, event_ord_K, keys_K,
                                        num_partitions, subsample)
        inbox = rules.deliver(inbox, out.params, node_K, chunk.send & valid_K,
                              consts.graph, algo.correction, masks)
    # 3. End of tick.
    round_end = chunk.last & ((chunk.tick + 1) % consts.round_ticks == 0)
    merged = jnp.zeros((n,), bool)
    if algo.rule == "gossip":
        def merge(args):
            p, ib = args
            return rules.merge_inbox(p, ib, consts.threshold, consts.beta, algo.correction)

        def skip(args):
            return args[0], args[1], jnp.zeros((n,), bool)

        params, inbox, merged = jax.lax.cond(chunk.last, merge, skip, (params, inbox))
    elif algo.rule == "fedavg":
        weight = rules.client_weights(
            jax.random.fold_in(tick_key, n), consts.is_client, client_fraction)
        params = jax.lax.cond(
            round_end, lambda p: rules.fedavg_round(p, weight), lambda p: p, params)
        merged = consts.is_client & round_end
    elif algo.rule == "sync":
        params = jax.lax.cond(
            round_end, lambda p: rules.sync_mix(p, consts.graph, algo.correction),
            lambda p: p, params)
        merged = jnp.broadcast_to(round_end, (n,))
    if reset_opt:
        fresh = jax.vmap(tx.init)(params)
        opt_state = jax.tree.map(
            lambda f, o: jnp.where(nodes.per_node(merged, o.ndim), f, o),
            fresh, opt_state)
    return SimState(
        tick=state.tick, params=params, opt_state=opt_state, inbox=inbox,
        train_count=train_count, merges=merges + merged.astype(jnp.int32),
        loss_sum=loss_sum, loss_n=loss_n, key=state.key)


def _evaluate(eval_step, state: SimState, x_T: jax.Array, y_T: jax.Array) -> dict[str, Any]:
    acc_N, loss_N = eval_step(state.params, x_T, y_T)
    var = variance.layer_variance(state.params)
    flat = jax.tree_util.tree_flatten_with_path(var)[0]
    layer_var = {"/".join(str(getattr(k, "key", k)) for k in path): jnp.mean(v)
                 for path, v in flat}
    total_n = jnp.sum(state.loss_n)
    return dict(
        acc_N=acc_N, loss_N=loss_N, layer_var=layer_var,
        consensus=mixing.consensus_distance(state.params),
        merges=jnp.sum(state.merges), train_events=jnp.sum(state.train_count),
        train_loss=jnp.sum(state.loss_sum) / jnp.maximum(total_n, 1), train_n=total_n,
    )
