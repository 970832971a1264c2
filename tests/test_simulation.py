"""The tick engine (vanish/engine.py, through train.Simulation) against the reference tick
model, closed forms, and itself.

Every Simulation is built once per module (`_sim`) and shared: building is cheap, but each
one compiles its own chunk step, which dominates the run time of this file on CPU (a
persistent XLA cache, scoped to the module, serves Simulations whose step is the same program).
Sizes are tiny: 4 nodes (16 for the variance test), the MLP, 600 synthetic images, 60 ticks.

What is NOT tested here: the schedule draw itself (tick rule, U{lo..hi} gaps, send_every) is
tested in test_schedule.py, the batch sampler and partitions in test_data.py, the averaging
kernel in test_variance.py. The reference simulator below takes the engine's drawn schedule
(intervals) and batch keys as given and checks everything the engine does with them.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jax_cache import compile_cache
from helpers import make_sim, override
from vanish import config, data, nodes, partition, variance

TICKS = 60


def make_cfg(**overrides):
    cfg = config.default_config()
    cfg.data.name = "synthetic"
    cfg.dataset_args.synthetic.num_train = 600
    cfg.dataset_args.synthetic.num_test = 200
    cfg.data.test_per_class = 5
    cfg.model.name = "mlp"
    cfg.optim.batch_size = 8
    cfg.optim.lr, cfg.optim.momentum = 0.05, 0.9
    cfg.topology.num_nodes, cfg.topology.name = 4, "ring"
    cfg.run.ticks = TICKS
    cfg.schedule.interval_lo = 2  # busy ticks: several trainers, duplicate sends
    cfg.schedule.interval_hi = 4
    override(cfg, **overrides)
    return cfg


# Configurations shared by several tests (each distinct one compiles once).
COMPLETE4 = dict(num_nodes=4, topology="complete", beta=0.3)  # degree 3, everyone starts at 0
RING4 = dict(num_nodes=4, topology="ring", send_every=2, first_tick="random")  # degree 2
RR16 = dict(num_nodes=16, topology="random_regular", degree=3, lr=0.01)


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
    """A persistent XLA cache for this module: Simulations of equal shapes (a fresh one of the
    same config, a resumed run) then load their compiled steps instead of compiling again.
    Results are unchanged (same executable); the previous settings are restored afterwards."""
    with compile_cache(tmp_path_factory.getbasetemp() / "jax_cache"):
        yield


@pytest.fixture(scope="module")
def dataset():
    return data.load("synthetic", num_train=600, num_test=200, seed=0)


@pytest.fixture(scope="module")
def _sim(dataset):
    cache = {}

    def get(algorithm, **overrides):
        key = (algorithm, tuple(sorted(overrides.items())))
        if key not in cache:
            cache[key] = make_sim(make_cfg(**overrides), algorithm, dataset)
        return cache[key]

    return get


def _np(tree):
    return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def _take(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def _run(sim, bounds, evaluate=False):
    """Runs [bounds[0], bounds[-1]) in run_ticks segments; returns (host state, metrics list)."""
    state, metrics = sim.init_state(), []
    for t0, t1 in zip(bounds[:-1], bounds[1:]):
        state = sim.run_ticks(state, t0, t1)
        if evaluate:
            state, m = sim.evaluate(state)
            metrics.append(m)
    return _np(state), metrics


def _assert_trees_equal(a, b):
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


_STEPS = {}


def _single_step(sim):
    """One optimizer step of ONE node (no vmap), jitted once per Simulation."""
    if id(sim) not in _STEPS:
        model, tx = sim.model, sim.tx

        @jax.jit
        def step(p, o, x, y):
            loss, g = jax.value_and_grad(lambda q: nodes.loss_and_accuracy(model, q, x, y)[0])(p)
            u, o = tx.update(g, o, p)
            return optax.apply_updates(p, u), o

        _STEPS[id(sim)] = step
    return _STEPS[id(sim)]


def _batch(sim, key, tick, node):
    """The engine's batch of `node` at `tick`: key fold_in(fold_in(state.key, tick), node)."""
    k = jax.random.fold_in(jax.random.fold_in(key, tick), node)
    idx = partition.sample_indices_for_keys(
        k[None], sim.consts.part, jnp.array([node], jnp.int32), sim.experiment.optim.batch_size)[0]
    return sim.consts.x_train[idx], sim.consts.y_train[idx]


# --------------------------------------------------------------- 1. reference equivalence


class ReferenceSim:
    """SPEC section 3 written out node by node, tick by tick, with Python-list buffers.

    Shares with the engine only: the initial state (params, key), the drawn schedule's first
    ticks and intervals (the draw itself is tested in test_schedule.py), the batch sampler,
    the model / optimizer, and the one-node averaging function `variance.average_and_correct`.
    """

    def __init__(self, sim, correction):
        exp, state = sim.experiment, sim.init_state()
        self.sim, self.n, self.key = sim, sim.n, state.key
        self.params = [_take(state.params, i) for i in range(self.n)]
        self.opt = [sim.tx.init(p) for p in self.params]
        self.beta, self.correction = float(exp.schedule.beta), correction
        self.send_every = int(exp.schedule.send_every)
        assert int(exp.schedule.threshold) == 0  # threshold = degree
        snd, rcv = np.asarray(sim.topo.senders), np.asarray(sim.topo.receivers)
        self.out = [rcv[snd == i].tolist() for i in range(self.n)]
        self.threshold = [int(np.sum(rcv == i)) for i in range(self.n)]
        sched = sim.schedule
        ticks_of = [sched.event_tick[sched.event_node == i] for i in range(self.n)]
        self.next_train = [int(t[0]) if t.size else math.inf for t in ticks_of]
        self.intervals = [np.diff(t).tolist() for t in ticks_of]
        self.buffers = [[] for _ in range(self.n)]
        self.train_count = [0] * self.n
        self.merges = [0] * self.n
        self.tick = 0
        self.step = _single_step(sim)

    def run_until(self, t1):
        while self.tick < t1:
            t = self.tick
            for i in range(self.n):  # training (+ sending) of the tick
                if t >= self.next_train[i]:
                    x, y = _batch(self.sim, self.key, t, i)
                    self.params[i], self.opt[i] = self.step(self.params[i], self.opt[i], x, y)
                    k = self.train_count[i] = self.train_count[i] + 1
                    gaps = self.intervals[i]
                    self.next_train[i] += gaps[k - 1] if k - 1 < len(gaps) else math.inf
                    if k % self.send_every == 0:
                        for r in self.out[i]:
                            self.buffers[r].append(self.params[i])
            for i in range(self.n):  # then averaging, after all training of the tick
                if len(self.buffers[i]) >= self.threshold[i]:
                    received = jax.tree.map(lambda *xs: jnp.stack(xs), *self.buffers[i])
                    self.params[i] = variance.average_and_correct(
                        self.params[i], received, self.beta, self.correction)
                    self.buffers[i] = []
                    self.merges[i] += 1
            self.tick += 1


@pytest.mark.parametrize(
    "algorithm,overrides",
    [("gossip", COMPLETE4), ("gossip_vc", RING4), ("gossip_vc", dict(COMPLETE4, merge_slots=1))],
    # merge_slots=1: every merging node is its own group of the compacted merge loop
    ids=["gossip-complete4-beta0.3", "gossip_vc-ring4-send2-randomstart",
         "gossip_vc-complete4-one-row-merge-groups"])
def test_engine_matches_reference_simulator(_sim, algorithm, overrides):
    sim = _sim(algorithm, **overrides)
    correction = (sim.experiment.correction if algorithm == "gossip_vc"
                  else variance.CorrectionConfig(target="none"))
    ref = ReferenceSim(sim, correction)
    state = sim.init_state()
    bounds = [0, 1, 13, 31, TICKS]
    saw_partial_inbox = False
    for t0, t1 in zip(bounds[:-1], bounds[1:]):
        state = sim.run_ticks(state, t0, t1)
        ref.run_until(t1)
        host = _np(state)
        assert int(host.tick) == t1
        np.testing.assert_array_equal(host.train_count, ref.train_count, err_msg=f"tick {t1}")
        np.testing.assert_array_equal(host.merges, ref.merges, err_msg=f"tick {t1}")
        np.testing.assert_array_equal(host.inbox.count, [len(b) for b in ref.buffers])
        saw_partial_inbox |= any(ref.buffers)
        for i in range(sim.n):
            for (path, got), want in zip(
                    jax.tree_util.tree_flatten_with_path(_take(host.params, i))[0],
                    jax.tree.leaves(ref.params[i])):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5,
                                           err_msg=f"node {i} {jax.tree_util.keystr(path)} "
                                                   f"tick {t1}")
            if ref.buffers[i]:  # the fixed-shape inbox holds the sum of the buffered models
                total = jax.tree.map(lambda *xs: sum(xs), *ref.buffers[i])
                for got, want in zip(jax.tree.leaves(_take(host.inbox.total, i)),
                                     jax.tree.leaves(total)):
                    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The comparison is not vacuous: every node trained and merged several times, and some
    # inboxes were caught holding models between merges.
    assert min(ref.train_count) >= 10 and min(ref.merges) >= 3, (ref.train_count, ref.merges)
    assert saw_partial_inbox


# ------------------------------------------------ 2. FL with one client == single-node training


def _single_node_reference(sim, node, t1):
    """Plain single-node SGD on the node's own data stream, at the node's scheduled ticks."""
    state = sim.init_state()
    p = _take(state.params, node)
    o = sim.tx.init(p)
    step = _single_step(sim)
    ticks = sim.schedule.event_tick[sim.schedule.event_node == node]
    for t in ticks[ticks < t1]:
        p, o = step(p, o, *_batch(sim, state.key, int(t), node))
    return p, int(np.sum(ticks < t1))


def test_fl_sched_with_one_client_is_single_node_training(_sim):
    """fl_sched (clients on the gossip schedule), one client: plain single-node SGD.

    The engine's FL client is node 1 (node 0 is the server), its batches use key
    fold_in(., 1), its schedule row is node 1's, and it starts from the shared server init;
    the 'single' algorithm is node 0 with an independently drawn init, schedule and data keys.
    So the engine's FL and 'single' runs cannot be compared with each other exactly; the FL
    client is compared with a single-node SGD loop on the client's own stream instead.
    """
    fl = _sim("fl_sched", num_nodes=1, beta=0.0)
    assert fl.n == 2 and not fl.is_client[0]
    state, _ = _run(fl, [0, 25, TICKS])
    want, events = _single_node_reference(fl, 1, TICKS)
    assert events >= 10
    assert int(state.train_count[1]) == events and int(state.train_count[0]) == 0
    rounds = TICKS // int(fl.experiment.algorithm_args["fl"]["round_ticks"])
    assert int(state.merges[1]) == rounds  # one per round
    for got_server, got_client, w in zip(jax.tree.leaves(_take(state.params, 0)),
                                         jax.tree.leaves(_take(state.params, 1)),
                                         jax.tree.leaves(want)):
        np.testing.assert_allclose(got_client, w, rtol=1e-5, atol=1e-5)
        # The last tick ends a round: the server holds the (one-client) average.
        np.testing.assert_array_equal(got_server, got_client)


def test_fl_is_the_authors_round_loop(_sim):
    """fl (DFL_torch): each round of R ticks every participant trains exactly one step at the
    round's middle tick from the server model; the server averages them at the round's end and
    every node adopts it. Reference: a plain per-round loop with the engine's batch keys."""
    fl = _sim("fl", num_nodes=3, fl_client_fraction=0.67)
    rounds_ticks = int(fl.experiment.algorithm_args["fl"]["round_ticks"])
    state = fl.init_state()
    server = _take(state.params, 0)
    opt = [fl.tx.init(_take(state.params, i)) for i in range(fl.n)]
    step = _single_step(fl)
    sched = fl.schedule
    for r in range(TICKS // rounds_ticks):
        mid = r * rounds_ticks + rounds_ticks // 2
        who = sched.event_node[sched.event_tick == mid]
        assert len(who) == 2 and 0 not in who  # round(0.67 * 3) clients, never the server
        assert not np.any((sched.event_tick >= r * rounds_ticks)
                          & (sched.event_tick < (r + 1) * rounds_ticks)
                          & (sched.event_tick != mid))
        trained = []
        for i in who:
            p, opt[i] = step(server, opt[i], *_batch(fl, state.key, mid, int(i)))
            trained.append(p)
        server = jax.tree.map(lambda *xs: sum(xs[1:], xs[0]) / len(xs), *trained)
    got, _ = _run(fl, [0, 23, TICKS])
    for i in range(fl.n):
        for g, w in zip(jax.tree.leaves(_take(got.params, i)), jax.tree.leaves(server)):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert int(got.train_count.sum()) == 2 * (TICKS // rounds_ticks)
    np.testing.assert_array_equal(got.merges, [0] + [TICKS // rounds_ticks] * 3)


# ---------------------------------------------------- 3. closed form on the complete graph


def test_complete_graph_one_round_is_closed_form_average(_sim):
    """All nodes train at tick 0 and send to all; threshold = degree = n - 1, so after the
    tick node i = beta y_i + (1 - beta) mean_{j != i} y_j, y = the models after that step."""
    sim = _sim("gossip", **COMPLETE4)
    n, beta = sim.n, float(sim.experiment.schedule.beta)
    assert beta != 0.5  # so that beta and 1 - beta cannot be swapped unnoticed
    assert sorted(sim.schedule.event_node[sim.schedule.event_tick == 0]) == list(range(n))
    init = sim.init_state()
    step = _single_step(sim)
    trained = [step(_take(init.params, i), sim.tx.init(_take(init.params, i)),
                    *_batch(sim, init.key, 0, i))[0] for i in range(n)]
    y = _np(jax.tree.map(lambda *xs: jnp.stack(xs), *trained))
    after, _ = _run(sim, [0, 1])
    np.testing.assert_array_equal(after.merges, np.ones(n))
    np.testing.assert_array_equal(after.inbox.count, np.zeros(n))
    for y0, x1 in zip(jax.tree.leaves(y), jax.tree.leaves(after.params)):
        others = (y0.sum(0, keepdims=True) - y0) / (n - 1)
        np.testing.assert_allclose(x1, beta * y0 + (1 - beta) * others, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------- 4. the vanishing variance itself


def _kernel_variance(params):
    var = variance.layer_variance(params)
    return {"/".join(str(k.key) for k in p): float(np.mean(v))
            for p, v in jax.tree_util.tree_flatten_with_path(var)[0] if p[-1].key == "kernel"}


def test_variance_correction_keeps_kernel_variance_plain_gossip_shrinks_it(_sim):
    ratios = {}
    for algorithm in ("gossip", "gossip_vc"):
        sim = _sim(algorithm, **RR16)
        state, _ = _run(sim, [0, TICKS])
        assert state.merges.min() >= 8, state.merges
        v0 = _kernel_variance(sim.init_state().params)
        v1 = _kernel_variance(state.params)
        ratios[algorithm] = {k: v1[k] / v0[k] for k in v0}
    assert len(ratios["gossip"]) == 3
    assert all(r < 0.5 for r in ratios["gossip"].values()), ratios
    assert all(r > 0.8 for r in ratios["gossip_vc"].values()), ratios


# ------------------------------------------------------------------------- 5. determinism

SEGMENTS = [0, 7, 20, 33, 41, TICKS]


@pytest.fixture(scope="module")
def vc_reference_run(_sim):
    """gossip_vc on RR16 run once in one call, with one evaluation at the end."""
    return _run(_sim("gossip_vc", **RR16), [0, TICKS], evaluate=True)


def test_same_seed_is_bit_identical_other_seed_differs(_sim, dataset, vc_reference_run):
    state, metrics = vc_reference_run
    # A fresh Simulation of the same config: host plan, init and trajectory all repeat.
    again = make_sim(make_cfg(**RR16), "gossip_vc", dataset)
    state2, metrics2 = _run(again, [0, TICKS], evaluate=True)
    _assert_trees_equal(state, state2)
    assert metrics == metrics2
    other = _sim("gossip_vc", **RR16, seed=1)
    state3, metrics3 = _run(other, [0, TICKS], evaluate=True)
    assert _max_diff(state.params, state3.params) > 1e-3
    assert metrics3[-1]["loss_mean"] != metrics[-1]["loss_mean"]


def test_results_do_not_depend_on_run_ticks_segments(_sim, vc_reference_run):
    sim = _sim("gossip_vc", **RR16)
    whole, metrics = vc_reference_run
    # Segments that cut through busy ticks' neighbourhoods, with evaluations in between.
    split, split_metrics = _run(sim, SEGMENTS, evaluate=True)
    _assert_trees_equal(whole._replace(loss_sum=0, loss_n=0), split._replace(loss_sum=0, loss_n=0))
    for k, v in metrics[-1].items():
        if k != "train_loss":  # training loss averages since the last evaluation
            assert split_metrics[-1][k] == v, k


def test_fuse_scan_path_matches_python_loop(_sim, vc_reference_run):
    """cfg.run.fuse = 4 runs chunks inside lax.scan; it must not change results."""
    whole, metrics = vc_reference_run
    fused_sim = _sim("gossip_vc", **RR16, fuse=4)
    bounds = SEGMENTS[:1] + SEGMENTS[2:]
    assert fused_sim.fuse == 4
    assert any(len(fused_sim.work.between(t0, t1)) % 4 for t0, t1 in zip(bounds, bounds[1:]))
    fused, fused_metrics = _run(fused_sim, bounds, evaluate=True)
    fused = fused._replace(loss_sum=0, loss_n=0)
    whole = whole._replace(loss_sum=0, loss_n=0)
    np.testing.assert_array_equal(fused.train_count, whole.train_count)
    np.testing.assert_array_equal(fused.merges, whole.merges)
    np.testing.assert_array_equal(fused.inbox.count, whole.inbox.count)
    # Bit-identical on XLA:CPU (measured); if a JAX upgrade ever breaks that, this assertion
    # reports the max difference (the allclose below is the tolerance that must still hold).
    diff = _max_diff(fused, whole)
    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(whole)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert diff == 0.0, f"fuse=4 differs from fuse=1 by up to {diff:g}"


# ------------------------------------------------------------------- 6. masked baseline


def test_masked_baseline_matches_packed_engine(_sim, vc_reference_run):
    whole, metrics = vc_reference_run
    masked_sim = _sim("gossip_vc", **RR16, masked_baseline=True)
    assert masked_sim.work.slots == masked_sim.n > _sim("gossip_vc", **RR16).work.slots
    masked, masked_metrics = _run(masked_sim, [0, TICKS], evaluate=True)
    np.testing.assert_array_equal(masked.train_count, whole.train_count)
    np.testing.assert_array_equal(masked.merges, whole.merges)
    np.testing.assert_array_equal(masked.inbox.count, whole.inbox.count)
    for a, b in zip(jax.tree.leaves(masked.params), jax.tree.leaves(whole.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for k in ("acc_mean", "loss_mean", "consensus", "train_loss"):
        np.testing.assert_allclose(masked_metrics[-1][k], metrics[-1][k], rtol=1e-4, atol=1e-6)
    assert masked_metrics[-1]["averaging_events"] == metrics[-1]["averaging_events"]


def test_memory_budget_processes_nodes_in_chunks_without_changing_results(_sim,
                                                                          vc_reference_run):
    """max_nodes_per_chunk = 2: training chunks, merge groups and evaluation chunks of at
    most 2 nodes; the same trajectory up to float summation order."""
    whole, metrics = vc_reference_run
    full_sim, sim = _sim("gossip_vc", **RR16), _sim("gossip_vc", **RR16, max_nodes_per_chunk=2)
    c = sim.components
    assert sim.work.slots == 2 < full_sim.work.slots
    assert c.merge_slots == 2 < full_sim.components.merge_slots and c.eval_nodes == 2
    assert len(sim.work) > len(full_sim.work)  # the same events in more, narrower chunks
    chunked, chunked_metrics = _run(sim, [0, TICKS], evaluate=True)
    np.testing.assert_array_equal(chunked.train_count, whole.train_count)
    np.testing.assert_array_equal(chunked.merges, whole.merges)
    assert chunked.merges.sum() > 0
    for a, b in zip(jax.tree.leaves(chunked.params), jax.tree.leaves(whole.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for k, v in metrics[-1].items():
        np.testing.assert_allclose(chunked_metrics[-1][k], v, rtol=1e-5, atol=1e-6, err_msg=k)


# ----------------------------------------------------------------- 7. no recompilation


def test_no_recompilation_across_segments_and_evaluations(_sim):
    sim = _sim("gossip_vc", **RR16)
    state = sim.init_state()  # warm-up: one segment and one evaluation
    state = sim.run_ticks(state, 0, 5)
    state, _ = sim.evaluate(state)
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(kwargs.get("fun_name", "?"))

    step_cache, eval_cache = sim.engine._step._cache_size(), sim._eval._cache_size()
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        state = sim.init_state()
        for t0, t1 in zip(SEGMENTS[:-1], SEGMENTS[1:]):
            state = sim.run_ticks(state, t0, t1)
            state, m = sim.evaluate(state)
        jax.block_until_ready(state)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    assert (sim.engine._step._cache_size(), sim._eval._cache_size()) == (step_cache, eval_cache)


# ------------------------------------------------------ 8. partitioned gossip and D-PSGD


def test_partitioned_gossip_merges_only_received_coordinates(_sim):
    """Star graph, everyone trains (lr 0) and sends every tick: message j of a sender carries
    partition j mod P, so at tick t every node merges exactly partition t mod P, with the
    mean over its in-neighbours (3 for the hub, 1 for a leaf) on those coordinates."""
    beta, parts = 0.3, 4
    sim = _sim("gossip_part", num_nodes=4, topology="star", lr=0.0, beta=beta,
               interval_lo=1, interval_hi=1, num_partitions=parts)
    n, ids = sim.n, _np(sim.consts.part_ids)
    adj = np.zeros((n, n))
    adj[sim.topo.receivers, sim.topo.senders] = 1.0
    assert sorted(adj.sum(1)) == [1, 1, 1, 3]
    sizes = [sum(int(np.sum(x == p)) for x in jax.tree.leaves(ids)) for p in range(parts)]
    assert min(sizes) > 1000  # every partition is a real share of the model
    state = sim.init_state()
    for t in range(parts + 1):
        before = _np(state.params)
        state = sim.run_ticks(state, t, t + 1)
        after = _np(state.params)
        np.testing.assert_array_equal(_np(state.merges), np.full(n, t + 1))
        for x0, x1, pid in zip(jax.tree.leaves(before), jax.tree.leaves(after),
                               jax.tree.leaves(ids)):
            received = np.broadcast_to(pid == t % parts, x0.shape)
            # Coordinates not received are bit-identical ...
            np.testing.assert_array_equal(x1[~received], x0[~received])
            # ... and the received ones are beta * own + (1 - beta) * mean of the senders.
            nbr_mean = np.tensordot(adj / adj.sum(1, keepdims=True), x0, axes=1)
            want = beta * x0 + (1 - beta) * nbr_mean
            np.testing.assert_allclose(x1[received], want[received], rtol=1e-5, atol=1e-6)
        assert _max_diff(before, after) > 1e-3


def test_dpsgd_with_lr_zero_is_w_times_params(_sim):
    sim = _sim("dpsgd", num_nodes=4, topology="star", lr=0.0)
    w = sim.topo.dense()
    assert not np.allclose(w, w.T)  # uniform weights on a star: W is not symmetric
    state = sim.init_state()
    x = _np(state.params)
    for t in range(2):
        state = sim.run_ticks(state, t, t + 1)
        x = jax.tree.map(lambda a: np.tensordot(w, a, axes=1).astype(np.float32), x)
        for got, want in zip(jax.tree.leaves(_np(state.params)), jax.tree.leaves(x)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_np(state.merges), np.full(sim.n, 2))
    np.testing.assert_array_equal(_np(state.train_count), np.full(sim.n, 2))
