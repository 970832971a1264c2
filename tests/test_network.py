"""Faults and dynamics (vanish/network.py), each against a reference, not just "it runs".

Tiny runs: the MLP on synthetic data, 4-10 nodes, 40-160 ticks. The delay reference is the
SPEC section 3 simulator of tests/test_simulation.py extended with a D-tick queue.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_cache import compile_cache
from test_simulation import ReferenceSim, _batch, _np, _take, make_cfg
from helpers import make_sim
from vanish import build, checkpoint, data, engine, network, nodes, variance
from vanish.algorithms import base
from vanish.errors import ConfigError

TICKS = 40


def cfg_of(**overrides):
    base = dict(num_nodes=6, topology="random_regular", degree=3, ticks=TICKS)
    base.update(overrides)
    cfg = make_cfg(**base)
    build.validate(cfg)
    return cfg


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
    with compile_cache(tmp_path_factory.getbasetemp() / "jax_cache_network"):
        yield


@pytest.fixture(scope="module")
def dataset():
    return data.load("synthetic", num_train=600, num_test=200, seed=0)


def run(sim, bounds=(0, TICKS)):
    state = sim.init_state()
    for t0, t1 in zip(bounds[:-1], bounds[1:]):
        state = sim.run_ticks(state, t0, t1)
    return state


def assert_bit_identical(a, b, what=""):
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y),
                                      err_msg=f"{what} {jax.tree_util.keystr(path)}")


def model_state(state):
    return (state.params, state.opt_state, state.inbox, state.train_count, state.merges)


# ----------------------------------------------------------------------------- drops


@pytest.mark.parametrize("name", ["gossip_vc", pytest.param("fl", marks=pytest.mark.slow),
                                  "gossip_median"])
def test_drop_probability_one_means_no_merge_ever(dataset, name):
    sim = make_sim(cfg_of(drop_prob=1.0), name, dataset)
    state = run(sim)
    stats = np.asarray(state.net_stats)
    assert int(np.sum(state.merges)) == 0
    assert stats[0] > 0 and stats[1] == 0 and stats[2] == stats[0], stats
    # Every client's model is its own training alone: FL clients never adopt a server model.
    assert int(np.sum(state.train_count)) > 0


@pytest.mark.parametrize("name", ["gossip_vc", pytest.param("fl", marks=pytest.mark.slow),
                                  pytest.param("gossip_trim", marks=pytest.mark.slow)])
def test_zero_faults_through_the_network_layer_equal_the_fault_free_run_bit_for_bit(
        dataset, name):
    """drop 0, no one offline, no Byzantine node: the routed program equals the plain one."""
    cfg = cfg_of()
    plain = make_sim(cfg, name, dataset)
    c = plain.components
    exp = plain.experiment
    plan = network.plan_for(exp.network, c.topology, c.is_client,
                            star=plain.algo.caps.has_server, ticks=exp.run.ticks, seed=exp.seed,
                            force=True)
    # Switch on the churn mask and the attack code paths too, with nothing to act on.
    spec = plan.spec._replace(churn=True, attack="sign_flip")
    routed = engine.Engine(
        c.algorithm, nodes.make_train_step(c.model, c.tx), c.tx, plain.engine._init_params,
        c.work, c.consts._replace(net=plan.net), batch_size=c.batch_size,
        train_key=c.keys["train"], merge_slots=c.merge_slots, network_spec=spec)
    a = plain.run_ticks(plain.init_state(), 0, TICKS)
    b = routed.run_ticks(routed.init_state(), 0, TICKS)
    assert int(np.sum(a.merges)) > 0
    assert_bit_identical(model_state(a), model_state(b), name)
    stats = np.asarray(b.net_stats)
    assert stats[0] == stats[1] > 0 and stats[2] == 0


def test_drop_rate_is_the_configured_probability(dataset):
    sim = make_sim(cfg_of(drop_prob=0.3, ticks=160), "gossip", dataset)
    sent, delivered, dropped = np.asarray(run(sim, (0, 160)).net_stats)
    assert sent == delivered + dropped
    # Binomial(sent, 0.3): 5 standard deviations.
    assert abs(dropped / sent - 0.3) < 5 * math.sqrt(0.3 * 0.7 / sent), (sent, dropped)


def test_per_edge_drop_file(dataset, tmp_path):
    cfg = cfg_of()
    topo = build.make_topology(build.experiment(cfg, dataset=dataset), "gossip")
    s, r = int(topo.senders[0]), int(topo.receivers[0])
    f = tmp_path / "drops.txt"
    f.write_text(f"# src dst p\n{s} {r} 1.0\n")
    table = network.read_drop_file(str(f), topo, 0.0)
    tab = topo.neighbor_table()
    j = int(np.flatnonzero(tab.out_nbr[s] == r)[0])
    assert table[s, j] == 1.0 and table.sum() == 1.0
    sim = make_sim(cfg_of(drop_file=str(f)), "gossip", dataset)
    sent, delivered, dropped = np.asarray(run(sim).net_stats)
    sends_of_s = int(np.sum(sim.schedule.event_send[sim.schedule.event_node == s]))
    assert dropped == sends_of_s > 0  # exactly the messages on that edge
    f.write_text(f"{s} {s} 0.5\n")
    with pytest.raises(ConfigError, match="not an edge"):
        network.read_drop_file(str(f), topo, 0.0)
    f.write_text(f"{s} {r} 1.5\n")
    with pytest.raises(ConfigError, match=r"not in \[0, 1\]"):
        network.read_drop_file(str(f), topo, 0.0)


# ----------------------------------------------------------------------------- delays


class DelayedReference(ReferenceSim):
    """ReferenceSim with a D-tick queue: a model sent at tick t joins the receiver's buffer at
    tick t + D, before that tick's averaging, as it was when sent."""

    def __init__(self, sim, correction, delay):
        super().__init__(sim, correction)
        self.delay, self.pending = delay, []

    def run_until(self, t1):
        while self.tick < t1:
            t = self.tick
            for i in range(self.n):
                if t >= self.next_train[i]:
                    x, y = _batch(self.sim, self.key, t, i)
                    self.params[i], self.opt[i] = self.step(self.params[i], self.opt[i], x, y)
                    k = self.train_count[i] = self.train_count[i] + 1
                    gaps = self.intervals[i]
                    self.next_train[i] += gaps[k - 1] if k - 1 < len(gaps) else math.inf
                    if k % self.send_every == 0:
                        self.pending += [(t + self.delay, r, self.params[i]) for r in self.out[i]]
            for _arrive, r, p in [m for m in self.pending if m[0] == t]:
                self.buffers[r].append(p)
            self.pending = [m for m in self.pending if m[0] != t]
            for i in range(self.n):
                if len(self.buffers[i]) >= self.threshold[i]:
                    received = jax.tree.map(lambda *xs: jnp.stack(xs), *self.buffers[i])
                    self.params[i] = variance.average_and_correct(
                        self.params[i], received, self.beta, self.correction)
                    self.buffers[i] = []
                    self.merges[i] += 1
            self.tick += 1


@pytest.mark.parametrize("name,delay,overrides", [
    pytest.param("gossip_vc", 2, dict(num_nodes=4, topology="complete", beta=0.3),
                 marks=pytest.mark.slow),  # the default suite's time; CI runs it with -m slow
    ("gossip", 3, dict(num_nodes=5, topology="ring", first_tick="random")),
], ids=["vc-complete4-D2", "plain-ring5-D3-randomstart"])
def test_delay_matches_the_reference_with_a_d_tick_queue(dataset, name, delay, overrides):
    sim = make_sim(cfg_of(delay=str(delay), **overrides), name, dataset)
    correction = (sim.experiment.correction if name == "gossip_vc"
                  else variance.CorrectionConfig(target="none"))
    ref = DelayedReference(sim, correction, delay)
    state = sim.init_state()
    idle_ticks = set(range(TICKS)) - set(sim.schedule.event_tick.tolist())
    assert idle_ticks  # arrivals at ticks nobody trains are delivered too
    for t0, t1 in zip([0, 1, 7, 23], [1, 7, 23, TICKS]):
        state = sim.run_ticks(state, t0, t1)
        ref.run_until(t1)
        host = _np(state)
        np.testing.assert_array_equal(host.train_count, ref.train_count, err_msg=f"tick {t1}")
        np.testing.assert_array_equal(host.merges, ref.merges, err_msg=f"tick {t1}")
        np.testing.assert_array_equal(host.inbox.count, [len(b) for b in ref.buffers])
        for i in range(sim.n):
            for got, want in zip(jax.tree.leaves(_take(host.params, i)),
                                 jax.tree.leaves(ref.params[i])):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5,
                                           err_msg=f"node {i} tick {t1}")
    assert min(ref.merges) >= 3
    sent, delivered, dropped = np.asarray(state.net_stats)
    in_flight = len(ref.pending)
    assert dropped == 0 and sent == delivered + in_flight and in_flight > 0


def test_drawn_delays_lie_in_their_range_and_use_all_of_it(dataset):
    sim = make_sim(cfg_of(delay="1-3"), "gossip", dataset)
    state = sim.init_state()
    seen = set()
    for t in range(12):
        state = sim.run_ticks(state, t, t + 1)
        q = _np(state.queue)
        slot = (int(state.chunk) - 1) % sim.engine.network_spec.queue
        arrive = q.arrive[slot][q.arrive[slot] >= 0]
        seen |= set((arrive - t).tolist()) if t in set(sim.schedule.event_tick.tolist()) else set()
    assert seen == {1, 2, 3}


# ----------------------------------------------------------------------------- churn


@pytest.mark.parametrize("name", ["gossip_vc", "fl"])
def test_an_offline_node_is_frozen_and_comes_back_with_its_model(dataset, tmp_path, name):
    trace = tmp_path / "trace.txt"
    trace.write_text("1 10 30  # client 1 offline over ticks [10, 30)\n")
    sim = make_sim(cfg_of(churn_trace=str(trace)), name, dataset)
    node = 1 + sim.algo.caps.has_server  # FL: node 0 is the server
    assert sim.network.online_at(9)[node] and not sim.network.online_at(10)[node]
    state = sim.init_state()
    snaps = {}
    for t0, t1 in ((0, 10), (10, 20), (20, 30), (30, TICKS)):
        state = sim.run_ticks(state, t0, t1)
        host = _np(state)
        snaps[t1] = (_take(host.params, node), _take(host.opt_state, node),
                     int(host.train_count[node]), int(host.merges[node]))
    for t in (20, 30):
        assert_bit_identical(snaps[10][:2], snaps[t][:2], f"tick {t}")
        assert snaps[t][2:] == snaps[10][2:]
    assert snaps[10][2] > 0 and snaps[TICKS][2] > snaps[30][2]  # trains before and after
    others = [i for i in range(sim.n) if i != node and sim.is_client[i]]
    assert int(np.sum(host.train_count[others])) > 0
    if name == "gossip_vc":
        assert int(np.asarray(state.net_stats)[2]) > 0  # what was sent to it was lost


def test_markov_churn_has_the_configured_offline_share_and_periods():
    rng = np.random.default_rng(0)
    off = network.markov_churn(300, 4000, mean_up=80.0, mean_down=20.0, rng=rng)
    assert abs(off.mean() - 0.2) < 0.02
    d = np.diff(np.concatenate([np.zeros((1, 300), np.int8), off.astype(np.int8)]), axis=0)
    starts = np.sum(d == 1)
    assert abs(off.sum() / starts - 20.0) < 2.0  # mean offline period (ticks)


def test_churn_trace_errors_name_the_line(tmp_path):
    f = tmp_path / "t.txt"
    for text, match in (("9 1 4\n", r"line 1: node 9 is not in \[0, 6\)"),
                        ("1 5 5\n", "line 1: need 0 <= start < end"),
                        ("0 1\n", "line 1: expected 3 fields"),
                        ("# ok\n1 2 x\n", "line 2: 'node start end' must be integers")):
        f.write_text(text)
        with pytest.raises(ConfigError, match=match):
            network.read_churn_trace(str(f), 6, 40)


def test_online_bitmap_matches_the_host_plan():
    offline = np.random.default_rng(1).random((7, 70)) < 0.3
    net = network.Net(*([None] * 5), offline=jnp.asarray(network.pack_bits(offline)),
                      byzantine=None, attack_scale=None, delay_lo=None, delay_hi=None)
    t, i = np.meshgrid(np.arange(7), np.arange(70), indexing="ij")
    got = np.asarray(network.online(net, jnp.asarray(t), jnp.asarray(i)))
    np.testing.assert_array_equal(got, ~offline)


# --------------------------------------------------------------------- stragglers, peers


def test_stragglers_train_at_their_interval(dataset):
    sim = make_sim(cfg_of(stragglers=0.5, straggler_interval="9-11", ticks=200),
                                "gossip", dataset)
    slow = sim.network.stragglers
    assert slow.sum() == 3
    sched = sim.schedule
    for i in range(sim.n):
        gaps = np.diff(sched.event_tick[sched.event_node == i])
        lo, hi = (9, 11) if slow[i] else (2, 4)
        assert gaps.min() >= lo and gaps.max() <= hi, (i, gaps)


def test_peer_sampling_with_k_equal_degree_equals_all_neighbours(dataset):
    a = run(make_sim(cfg_of(), "gossip_vc", dataset))
    b = run(make_sim(cfg_of(peer_k=3), "gossip_vc", dataset))
    assert_bit_identical(model_state(a), model_state(b))


@pytest.mark.parametrize("mode", ["neighbors", "uniform"])
def test_peer_sampling_sends_k_messages_to_valid_peers(dataset, mode):
    sim = make_sim(cfg_of(peer_k=2, peer_mode=mode), "gossip", dataset)
    spec, net, graph = sim.engine.network_spec, sim.consts.net, sim.consts.graph
    tab = sim.topo.neighbor_table()
    n, k = sim.n, 16
    node = jnp.asarray(np.arange(k) % n, jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(3), k)
    sent = base.Sent(
        None, node, jnp.ones(k, bool), keys, jnp.zeros(k, jnp.int32))
    dest, _, stats, _ = network.route(spec, net, graph, jnp.int32(0), sent)
    dest = np.asarray(dest)
    for s, row in zip(np.asarray(node), dest):
        got = row[row < n]
        assert got.size == 2 and len(set(got.tolist())) == 2 and s not in got
        if mode == "neighbors":
            assert set(got.tolist()) <= set(tab.out_nbr[s][tab.out_valid[s]].tolist())
    assert int(stats[0]) == 2 * k
    # The default threshold counts the messages a node expects per interval: k here.
    np.testing.assert_array_equal(np.asarray(sim.consts.threshold), np.full(n, 2))


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_redrawn_topology_routes_over_each_epochs_graph(dataset):
    sim = make_sim(cfg_of(redraw_every=10), "gossip", dataset)
    net = sim.consts.net
    nbr, valid = np.asarray(net.out_nbr), np.asarray(net.out_valid)
    assert nbr.shape[0] == 4 and not all(np.array_equal(nbr[0], nbr[e]) for e in (1, 2, 3))
    np.testing.assert_array_equal(nbr[0], sim.topo.neighbor_table().out_nbr)
    node = jnp.arange(sim.n, dtype=jnp.int32)
    sent = base.Sent(None, node, jnp.ones(sim.n, bool),
                             jax.random.split(jax.random.PRNGKey(0), sim.n),
                             jnp.zeros(sim.n, jnp.int32))
    for tick in (0, 15, 39):
        dest, _, _, _ = network.route(sim.engine.network_spec, net, sim.consts.graph,
                                   jnp.int32(tick), sent)
        e = tick // 10
        for i, row in enumerate(np.asarray(dest)):
            assert sorted(row[row < sim.n].tolist()) == sorted(nbr[e, i][valid[e, i]].tolist())
    # A redraw period past the horizon is the fixed graph.
    a = run(make_sim(cfg_of(), "gossip", dataset))
    b = run(make_sim(cfg_of(redraw_every=TICKS), "gossip", dataset))
    assert_bit_identical(model_state(a), model_state(b))


def test_redraw_refuses_a_deterministic_family(dataset):
    with pytest.raises(ConfigError, match="no random draw"):
        make_sim(cfg_of(topology="ring", redraw_every=5), "gossip", dataset)


# ---------------------------------------------------------------------------- Byzantine


def test_byzantine_payloads(dataset):
    for attack, want in (("sign_flip", lambda x: -2.0 * x), ("constant", lambda x: 2.0 + 0 * x)):
        sim = make_sim(cfg_of(byzantine=0.5, byzantine_attack=attack,
                                           byzantine_scale=2.0), "gossip", dataset)
        params = sim.init_state().params
        node = jnp.arange(sim.n, dtype=jnp.int32)
        sent = base.Sent(params, node, jnp.ones(sim.n, bool),
                                 jax.random.split(jax.random.PRNGKey(0), sim.n),
                                 jnp.zeros(sim.n, jnp.int32))
        out = network.corrupt(sim.engine.network_spec, sim.consts.net, sent)
        bad = sim.network.byzantine
        assert bad.sum() == 3
        for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(out)):
            x, y = np.asarray(x), np.asarray(y)
            np.testing.assert_array_equal(y[~bad], x[~bad])
            np.testing.assert_allclose(y[bad], want(x[bad]))


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_median_keeps_accuracy_where_averaging_collapses_under_sign_flips():
    """20% of 20 nodes send -4 x their model: plain averaging (and its variance-corrected
    form) is dragged to chance, the coordinate-wise median is not (honest nodes' accuracy;
    measured 0.65 vs 0.10 here; 0.85 vs 0.10 on 28x28 images, a 4 min test). Small 7x7
    images keep the median's sort over 19 buffered models cheap. With degree 5 instead of
    10 (up to 2 of 5 received models flipped) the median collapses too: each merge then takes
    the honest extreme nearest zero and shrinks the model."""
    small = data.load("synthetic", num_train=600, num_test=200, seed=0, image_shape=(7, 7, 1),
                      noise=1.5)
    over = dict(num_nodes=20, degree=10, ticks=160, byzantine=0.2, merge_slots=8,
                byzantine_attack="sign_flip", byzantine_scale=4.0)
    acc = {}
    for name in ("gossip", "gossip_median"):
        sim = make_sim(cfg_of(**over), name, small)
        _, m = sim.evaluate(sim.run_ticks(sim.init_state(), 0, 160))
        acc[name] = m["acc_mean"]
    assert acc["gossip"] < 0.2, acc  # chance is 0.1
    assert acc["gossip_median"] > 0.5 and acc["gossip_median"] > acc["gossip"] + 0.4, acc


# ----------------------------------------------------- no recompilation, determinism, resume

FAULTS_A = dict(drop_prob=0.1, delay="1-2", churn_up=20.0, churn_down=20.0, peer_k=1,
                byzantine=0.2, byzantine_attack="noise", byzantine_scale=0.5)
FAULTS_B = dict(drop_prob=0.4, delay="1-2", churn_up=50.0, churn_down=10.0, peer_k=2,
                byzantine=0.4, byzantine_attack="noise", byzantine_scale=2.0)


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_no_recompilation_when_fault_values_change(dataset):
    a = make_sim(cfg_of(**FAULTS_A), "gossip_vc", dataset)
    b = make_sim(cfg_of(**FAULTS_B), "gossip_vc", dataset)
    assert a.engine.network_spec == b.engine.network_spec
    want = run(b)
    eng = a.engine
    run(a)
    assert eng._step._cache_size() == 1
    eng.consts = b.consts  # B's fault values through A's compiled step
    got = eng.run_ticks(eng.init_state(), 0, TICKS)
    assert eng._step._cache_size() == 1
    assert_bit_identical((model_state(got), got.net_stats, got.queue),
                         (model_state(want), want.net_stats, want.queue))


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_faulty_runs_are_deterministic_and_resume_through_checkpoints(dataset, tmp_path):
    sim = make_sim(cfg_of(**FAULTS_A), "gossip_vc", dataset)
    whole = _np(run(sim))
    again = _np(run(sim))
    assert_bit_identical(whole, again)
    state = sim.run_ticks(sim.init_state(), 0, 17)
    checkpoint.save(tmp_path, 17, state)
    restored, _ = checkpoint.restore(tmp_path, sim.init_state())
    resumed = _np(sim.run_ticks(restored, 17, TICKS))
    assert_bit_identical(whole, resumed)


def test_dpsgd_refuses_fault_options(dataset):
    with pytest.raises(ConfigError, match="message-passing algorithms only"):
        make_sim(cfg_of(drop_prob=0.1), "dpsgd", dataset)
