"""Asynchronous FL (vanish/algorithms/fedasync.py): `fl_buff` is synchronous `fl` when their
schedules coincide; FedAsync's staleness and mixing weights and FedBuff's buffer on a
hand-made arrival sequence; the planned cycles (delays, the clock, concurrency); an offline or
lossy client never blocks the server; the bytes; bad knobs refused in one line; both names
through the command line."""

from __future__ import annotations

import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import make_sim, tiny_config
from vanish import algorithms, build, run, schedule
from vanish.algorithms import Cadence, Capabilities, Entry, Placement, PlanRequest, base, fedasync
from vanish.errors import ConfigError

N = 4  # clients (the star has N + 1 nodes, node 0 the server)


def _cfg(name: str, ticks: int = 12, **fields):
    return tiny_config(**{"topology.num_nodes": N, "run.ticks": ticks, "algorithms": name,
                          **fields})


def _leaf(tree) -> np.ndarray:
    return np.asarray(jax.tree.leaves(tree)[0])


# ------------------------------------------------------------------ fl_buff == synchronous fl

def test_fl_buff_equals_synchronous_fl_step_for_step():
    """K = N, a = 0, eta = 1, E = 1, no delays: every client trains every tick from the
    server's model and the K-th arrival flushes mean(x_c - x_s) into x_s = mean(x_c): fl with
    round_ticks 1 (its rounds train at tick r R + R // 2 = r). Params of every node, after
    every round, to float tolerance."""
    ticks = 6
    fl = make_sim(_cfg("fl", ticks, **{"algorithm_args.fl.round_ticks": 1,
                                       "algorithm_args.fl.local_steps": 1,
                                       "algorithm_args.fl.client_fraction": 1.0}), "fl")
    buff = make_sim(_cfg("fl_buff", ticks, **{"algorithm_args.fl_buff.K": N,
                                              "algorithm_args.fl_buff.a": 0.0,
                                              "algorithm_args.fl_buff.eta": 1.0,
                                              "algorithm_args.fl_buff.local_steps": 1}),
                    "fl_buff")
    for a, b in zip((fl.schedule.event_tick, fl.schedule.event_node, fl.schedule.event_send),
                    (buff.schedule.event_tick, buff.schedule.event_node,
                     buff.schedule.event_send)):
        np.testing.assert_array_equal(a, b)
    s_fl, s_buff = fl.init_state(), buff.init_state()
    first = _leaf(s_fl.params).copy()
    for t in range(ticks):
        s_fl, s_buff = fl.run_ticks(s_fl, t, t + 1), buff.run_ticks(s_buff, t, t + 1)
        for x, y in zip(jax.tree.leaves(s_fl.params), jax.tree.leaves(s_buff.params)):
            np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=2e-5, atol=2e-6,
                                       err_msg=f"tick {t}")
        assert int(s_buff.inbox.version[0]) == t + 1  # one flush per round
    p = _leaf(s_buff.params)
    assert not np.allclose(p, first) and np.allclose(p, p[:1])  # trained, all on the server's


# ----------------------------------------------------------------- the server, by hand

@pytest.fixture(scope="module")
def star():
    """The consts (star graph) of N clients, for driving a rule's functions by hand."""
    return make_sim(_cfg("fl_async", 2), "fl_async").consts


def _arrive(algo, inbox, star, models: dict[int, float]):
    """Clients `models` send a 1-coordinate model (delivered at once)."""
    nodes = np.array(sorted(models), np.int32)
    k = nodes.size
    sent = base.Sent({"w": jnp.asarray([[models[i]] for i in nodes.tolist()], jnp.float32)},
                     jnp.asarray(nodes), jnp.ones(k, bool),
                     jax.random.split(jax.random.PRNGKey(0), k), jnp.zeros(k, jnp.int32))
    return algo.emit(inbox, sent, star)


def _tick(t: int, last: bool = True) -> base.Tick:
    return base.Tick(jnp.int32(t), jnp.bool_(last), jnp.bool_(last), jax.random.PRNGKey(t))


def test_fedasync_staleness_and_weights_match_a_hand_computation(star):
    algo = fedasync.make_async(alpha=0.5, a=1.0)
    params = {"w": jnp.zeros((N + 1, 1), jnp.float32)}  # server x = 0, version 0
    inbox = algo.init(params)
    # Tick 0: clients 3 and 1 arrive (both from version 0), applied in node order:
    #   client 1: tau 0, a_t = 0.5           -> x = 0.5 * 1                    = 0.5
    #   client 3: tau 1, a_t = 0.5 / 2       -> x = 0.75 * 0.5 + 0.25 * 3       = 1.125
    inbox = _arrive(algo, inbox, star, {3: 3.0, 1: 1.0})
    p, ib, merged = algo.end_of_tick(params, inbox, star, _tick(0, last=False))
    assert not np.asarray(merged).any() and int(ib.version[0]) == 0  # not the tick's end
    p, ib, merged = algo.end_of_tick(p, ib, star, _tick(0))
    np.testing.assert_array_equal(np.asarray(merged), [False, True, False, True, False])
    np.testing.assert_allclose(_leaf(p)[:, 0], [1.125, 1.125, 0.0, 1.125, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(ib.version), [2, 2, 0, 2, 0])
    np.testing.assert_array_equal(np.asarray(ib.staleness), [-1, 0, -1, 1, -1])
    # Tick 1: client 2 (from version 0): tau 2, a_t = 0.5 / 3 -> x = 5/6 1.125 + 1/6 2
    x = 5 / 6 * 1.125 + 1 / 6 * 2.0
    p, ib, _ = algo.end_of_tick(p, _arrive(algo, ib, star, {2: 2.0}), star, _tick(1))
    np.testing.assert_array_equal(np.asarray(ib.staleness), [-1, 0, 2, 1, -1])
    # Tick 2: client 1 (from version 2, the server is at 3): tau 1, a_t = 0.25
    x = 0.75 * x + 0.25 * 4.0
    p, ib, _ = algo.end_of_tick(p, _arrive(algo, ib, star, {1: 4.0}), star, _tick(2))
    np.testing.assert_allclose(_leaf(p)[[0, 1], 0], [x, x], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(ib.version), [4, 4, 3, 2, 0])
    np.testing.assert_array_equal(np.asarray(ib.staleness), [-1, 1, 2, 1, -1])
    assert not np.asarray(ib.arrived).any()


def test_fedbuff_buffers_weighted_deltas_and_flushes_every_k(star):
    algo = fedasync.make_buff(K=2, eta=0.5, a=1.0)
    params = {"w": jnp.zeros((N + 1, 1), jnp.float32)}
    inbox = algo.init(params)
    # Tick 0: clients 1, 2, 3 (start model 0, version 0) send 1, 2, 3:
    #   1: tau 0, s 1: buffer 1;  2: tau 0: buffer 3 -> flush x = 0 + 0.5 * 3 / 2 = 0.75, v 1
    #   3: tau 1, s 1/2: buffer 1.5 (one update waiting)
    inbox = _arrive(algo, inbox, star, {1: 1.0, 2: 2.0, 3: 3.0})
    p, ib, merged = algo.end_of_tick(params, inbox, star, _tick(0))
    np.testing.assert_array_equal(np.asarray(merged), [False, True, True, True, False])
    np.testing.assert_allclose(_leaf(p)[:, 0], [0.75, 0.75, 0.75, 0.75, 0.0])
    np.testing.assert_allclose(_leaf(ib.held)[:, 0], [1.5, 0.75, 0.75, 0.75, 0.0])  # 0: buffer
    np.testing.assert_array_equal(np.asarray(ib.version), [1, 1, 1, 1, 0])
    np.testing.assert_array_equal(np.asarray(ib.staleness), [-1, 0, 0, 1, -1])
    assert int(ib.in_buffer[0]) == 1
    # Tick 1: client 2 sends 1.75 (delta 1 from its start 0.75, tau 0): buffer 2.5 -> flush
    p, ib, _ = algo.end_of_tick(p, _arrive(algo, ib, star, {2: 1.75}), star, _tick(1))
    np.testing.assert_allclose(_leaf(p)[:, 0], [1.375, 0.75, 1.375, 0.75, 0.0])
    np.testing.assert_array_equal(np.asarray(ib.version), [2, 1, 2, 1, 0])
    assert int(ib.in_buffer[0]) == 0 and float(_leaf(ib.held)[0, 0]) == 0.0


# ------------------------------------------------------------------ the plan (host)

def test_concurrency_hands_each_finished_slot_to_the_next_waiting_client():
    clients = np.array([1, 2, 3])
    cycle = np.array([0, 2, 3, 5])
    node, start = fedasync.cycle_starts(clients, cycle, 2, 10)
    # t0: 1, 2 start; t2: 1 done -> 3; t3: 2 done -> 1; t5: 1 -> 2; t7: 3 -> 1; t8: 2 -> 3;
    # t9: 1 -> 2.
    assert list(zip(node.tolist(), start.tolist())) == [
        (1, 0), (2, 0), (3, 2), (1, 3), (2, 5), (1, 7), (3, 8), (2, 9)]
    # One cycle length: generations of c consecutive clients (the vectorised path equals the
    # queue, finishers rejoining in the order they started).
    clients = np.arange(1, 6)
    for c in (1, 2, 3, 4):
        got = fedasync.cycle_starts(clients, np.full(6, 3), c, 40)
        want = fedasync._queue_starts(clients, np.full(6, 3), c, 40)
        np.testing.assert_array_equal(np.stack(got), np.stack(want))
    node, start = fedasync.cycle_starts(clients, np.full(6, 1), 2, 4)
    assert node.tolist() == [1, 2, 3, 4, 5, 1, 2, 3] and start.tolist() == [0, 0, 1, 1, 2, 2,
                                                                             3, 3]


def test_cycles_add_the_delays_and_the_clocks_step_and_link_times():
    request = PlanRequest(4, 30, 0, np.array([False, True, True, True]),
                          dict(local_steps=2, concurrency=0))
    net = SimpleNamespace(net=SimpleNamespace(delay_hi=np.int32(2),
                                              link_ticks=np.array([[0], [0], [1], [4]])))
    clock = SimpleNamespace(interval_floor=lambda: np.array([1, 1, 3, 1]))
    t = schedule.timing(4, clock, net)
    np.testing.assert_array_equal(t.gap, [1, 1, 3, 1])
    np.testing.assert_array_equal(t.up, [2, 2, 3, 6])
    np.testing.assert_array_equal(t.down, [2, 2, 2, 2])
    # cycle = (E - 1) gap + up + down + 1: client 1: 1 + 2 + 2 + 1 = 6; 2: 3 + 3 + 2 + 1 = 9;
    # 3: 1 + 6 + 2 + 1 = 10
    np.testing.assert_array_equal(t.cycle(2)[1:], [6, 9, 10])
    s = fedasync.plan(request._replace(clock=clock, network=net))
    ev = {i: (s.event_tick[s.event_node == i].tolist(), s.event_send[s.event_node == i].tolist())
          for i in (1, 2, 3)}
    assert ev[1][0] == [0, 1, 6, 7, 12, 13, 18, 19, 24, 25]
    assert ev[2][0] == [0, 3, 9, 12, 18, 21, 27]  # its steps 3 ticks apart
    assert ev[3][0] == [0, 1, 10, 11, 20, 21]
    assert all(send == [j % 2 == 1 for j in range(len(send))] for _, send in ev.values())
    # Prefix-stable: a shorter horizon is a prefix.
    short = fedasync.plan(request._replace(ticks=13, clock=clock, network=net))
    keep = s.event_tick < 13
    np.testing.assert_array_equal(short.event_node, s.event_node[keep])
    np.testing.assert_array_equal(short.event_tick, s.event_tick[keep])


def test_a_clocked_run_applies_each_update_when_it_arrives():
    # compute 0.25 s, latency 0.1 s, ticks of 0.1 s: steps 3 ticks apart, an upload arrives
    # floor(3.5) = 3 ticks after the last step; E = 2: steps at 0 and 3, arrival at 6, next
    # cycle at 7.
    sim = make_sim(_cfg("fl_async", 14, **{"clock.tick_seconds": 0.1, "clock.compute": "0.25",
                                           "clock.latency": "0.1",
                                           "algorithm_args.fl_async.local_steps": 2}),
                   "fl_async")
    s = sim.schedule
    assert sorted(set(s.event_tick.tolist())) == [0, 3, 7, 10]
    state, versions = sim.init_state(), []
    _, row = sim.evaluate(state)
    assert (row["staleness_mean"], row["staleness_max"]) == (-1.0, -1)  # nothing applied yet
    for t in range(14):
        state = sim.run_ticks(state, t, t + 1)
        versions.append(int(state.inbox.version[0]))
    assert versions == [0] * 6 + [N] * 7 + [2 * N]
    np.testing.assert_array_equal(np.asarray(state.inbox.staleness)[1:], np.arange(N))
    _, row = sim.evaluate(state)  # the rows report it: over the clients' latest updates
    assert (row["staleness_mean"], row["staleness_max"]) == ((N - 1) / 2, N - 1)


# ------------------------------------------------------------ faults never block the server

@pytest.mark.parametrize("name", ["fl_async", "fl_buff"])
def test_an_offline_client_does_not_block_the_server(name, tmp_path):
    trace = tmp_path / "churn.txt"
    trace.write_text("0 2 40\n")  # client 0 (node 1) offline over ticks [2, 40)
    k = 3
    sim = make_sim(_cfg(name, 20, **{"network.churn_trace": str(trace),
                                     "algorithm_args.fl_buff.K": k}), name)
    state, versions = sim.init_state(), []
    for t in range(20):
        state = sim.run_ticks(state, t, t + 1)
        versions.append(int(state.inbox.version[0]))
    arrivals = np.cumsum([N if t < 2 else N - 1 for t in range(20)])  # E = 1, every tick
    want = arrivals if name == "fl_async" else arrivals // k
    np.testing.assert_array_equal(versions, want)  # the others' updates keep being applied
    assert int(state.train_count[1]) == 2 and int(state.train_count[2]) == 20
    assert int(state.inbox.version[1]) == want[1]  # node 1 holds its last reply


def test_lost_updates_are_skipped_and_every_delivered_one_is_applied():
    sim = make_sim(_cfg("fl_async", 20, **{"network.drop_prob": 0.4}), "fl_async")
    state = sim.run_ticks(sim.init_state(), 0, 20)
    sent, delivered, dropped = np.asarray(state.net_stats).tolist()
    assert dropped > 0 and delivered + dropped == sent == 20 * N
    assert int(state.inbox.version[0]) == delivered
    assert int(state.merges.sum()) == delivered  # every delivered update got its reply


# ------------------------------------------------------------------------------ bytes

def test_bytes_are_the_uploads_and_one_download_per_reply():
    sim = make_sim(_cfg("fl_buff", 12, **{"algorithm_args.fl_buff.K": 3,
                                          "algorithm_args.fl_buff.local_steps": 2,
                                          "network.delay": "1"}), "fl_buff")
    state = sim.run_ticks(sim.init_state(), 0, 12)
    sent, received = sim.engine.traffic_bytes(state)
    one = jax.tree.map(lambda x: x[0], state.params)
    size = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(one))
    # cycle = 1 + 1 + 1 + 1 = 4 ticks: sends at ticks 1, 5, 9; arrivals at 2, 6, 10.
    uploads = 3
    merges = np.asarray(state.merges)
    np.testing.assert_array_equal(merges[1:], uploads)
    np.testing.assert_array_equal(sent[1:], uploads * size)
    np.testing.assert_array_equal(received[1:], merges[1:] * size)
    assert sent[0] == merges.sum() * size and received[0] == uploads * N * size
    assert int(state.inbox.version[0]) == uploads * N // 3


# -------------------------------------------------------------------- refused in one line

@pytest.mark.parametrize("field,value,words", [
    ("algorithm_args.fl_async.a", -0.5, "algorithm_args.fl_async.a = -0.5 must be a finite"),
    ("algorithm_args.fl_async.alpha", 0.0, "algorithm_args.fl_async.alpha = 0.0 must be in (0"),
    ("algorithm_args.fl_async.alpha", 1.5, "algorithm_args.fl_async.alpha = 1.5 must be in (0"),
    ("algorithm_args.fl_buff.K", N + 1, f"K = {N + 1} is more than the {N} clients"),
    ("algorithm_args.fl_buff.K", 0, "algorithm_args.fl_buff.K = 0 must be >= 1"),
    ("algorithm_args.fl_buff.eta", 0.0, "algorithm_args.fl_buff.eta = 0.0 must be a finite"),
    ("algorithm_args.fl_buff.concurrency", -1, "concurrency = -1 must be >= 0"),
])
def test_bad_knobs_are_refused_in_one_line_before_the_workdir(field, value, words, tmp_path):
    name = field.split(".")[1]
    with pytest.raises(ConfigError) as err:
        build.experiment(_cfg(name, **{field: value}))
    assert "\n" not in str(err.value) and words in str(err.value), str(err.value)
    workdir = tmp_path / "w"
    code = run.command(["vanish", "--config=experiments/default/config.py",
                        f"--workdir={workdir}", *_flags(name), f"--config.{field}={value}"])
    assert code == 1 and not workdir.exists()


def test_an_async_rule_without_its_own_plan_is_refused():
    name = "test_async_unplanned"
    algorithms.register(name, Entry("fedasync:make_async", "FedAsync without a plan",
                                    caps=Capabilities(placement=Placement.STAR,
                                                      cadence=Cadence.ASYNC,
                                                      shared_init=True, shardable=False)))
    try:
        with pytest.raises(ConfigError, match="declares none") as err:
            build.experiment(_cfg(name))
        assert "\n" not in str(err.value)
    finally:
        del algorithms.REGISTRY[name]


# ------------------------------------------------------------------ the command line

def _flags(algorithms_: str) -> list[str]:
    return ["--config.data.name=synthetic", "--config.dataset_args.synthetic.num_train=400",
            "--config.dataset_args.synthetic.num_test=100", "--config.data.test_per_class=3",
            "--config.model.name=mlp", "--config.optim.batch_size=8",
            f"--config.topology.num_nodes={N}", "--config.run.ticks=10",
            "--config.run.eval_every=5", "--config.run.checkpoint_every=5",
            f"--config.algorithms={algorithms_}"]


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_both_rules_run_through_the_command_line_and_are_listed(tmp_path, capsys):
    workdir = tmp_path / "w"
    code = run.command(["vanish", "--config=experiments/default/config.py",
                        f"--workdir={workdir}", *_flags("fl_async,fl_buff"),
                        "--config.algorithm_args.fl_buff.K=2",
                        "--config.algorithm_args.fl_async.concurrency=2"])
    assert code == 0 and (workdir / "summary.json").is_file()
    assert (workdir / "fl_async").is_dir() and (workdir / "fl_buff").is_dir()
    capsys.readouterr()
    assert run.command(["vanish", "--list"]) == 0
    out = capsys.readouterr().out
    for name, entry in (("fl_async", "FedAsync"), ("fl_buff", "FedBuff")):
        assert any(line.startswith(f"  {name} ") and entry in line for line in out.splitlines())
        for knob, spec in algorithms.REGISTRY[name].knobs.items():
            assert f"algorithm_args.{name}.{knob} = {spec.default!r}" in out


# ------------------------------------------------- fl without a deadline (round_ticks 0)

def test_waiting_rounds_last_until_the_slowest_participants_update_arrives():
    """Hand-computed plan: clients 1-3 with steps 1 / 3 / 1 ticks apart and uploads 2 / 3 / 6
    ticks long, replies 2 ticks, E = 2: round 0 starts at 0, arrivals 0+1+2 = 3, 0+3+3 = 6,
    0+1+6 = 7 -> ends at 7, the next starts at 7 + 2 + 1 = 10 (then 20, ...)."""
    trip = schedule.Timing(gap=np.array([1, 1, 3, 1]), up=np.array([2, 2, 3, 6]),
                           down=np.full(4, 2))
    s = schedule.waiting_rounds(4, 30, seed=0, local_steps=2,
                                trainers=np.array([False, True, True, True]), trip=trip)
    assert np.flatnonzero(s.round_end).tolist() == [7, 17, 27]
    ev = {i: s.event_tick[s.event_node == i].tolist() for i in (1, 2, 3)}
    assert ev == {1: [0, 1, 10, 11, 20, 21], 2: [0, 3, 10, 13, 20, 23], 3: [0, 1, 10, 11, 20, 21]}
    assert s.event_send.tolist() == [j % 2 == 1 for j in range(s.event_send.size)] or all(
        s.event_send[s.event_node == i].tolist() == [False, True] * 3 for i in (1, 2, 3))
    # Prefix-stable, client samples included.
    full = schedule.waiting_rounds(40, 3000, seed=3, fraction=0.3)
    short = schedule.waiting_rounds(40, 1234, seed=3, fraction=0.3)
    keep = full.event_tick < 1234
    np.testing.assert_array_equal(short.event_node, full.event_node[keep])
    np.testing.assert_array_equal(short.round_end, full.round_end[:1234])
    assert np.unique(full.event_tick).size == 3000  # one round per tick, 12 clients each
    assert np.all(np.bincount(full.event_tick) == 12)


def test_fl_without_deadline_and_delays_equals_one_tick_rounds_bit_for_bit():
    """No clock, no delays, E = 1: a waiting round is one tick, i.e. fl with round_ticks 1."""
    base_ = {"algorithm_args.fl.local_steps": 1, "algorithm_args.fl.client_fraction": 0.5}
    one = make_sim(_cfg("fl", 8, **{"algorithm_args.fl.round_ticks": 1, **base_}), "fl")
    wait = make_sim(_cfg("fl", 8, **{"algorithm_args.fl.round_ticks": 0, **base_}), "fl")
    assert wait.schedule.round_end.all()
    np.testing.assert_array_equal(one.schedule.event_node, wait.schedule.event_node)
    a = one.run_ticks(one.init_state(), 0, 8)
    b = wait.run_ticks(wait.init_state(), 0, 8)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("round_ticks", [0, 4])
def test_each_waiting_round_averages_exactly_its_own_updates_on_the_clock(round_ticks,
                                                                           tmp_path):
    """Compute times 0.1-0.45 s per client (ticks of 0.1 s), latency 0.05 s: without a
    deadline every round end's model is the mean of what the clients trained that round
    (their rows the tick before); with a 4-tick deadline the stragglers' updates miss it."""
    times = tmp_path / "compute.txt"
    times.write_text("0.1\n0.25\n0.45\n0.1\n")  # clients 1-4 (the server: none)
    fields = {"clock.tick_seconds": 0.1, "clock.compute": str(times),
              "clock.latency": "0.05", "algorithm_args.fl.round_ticks": round_ticks,
              "algorithm_args.fl.local_steps": 1}
    sim = make_sim(_cfg("fl", 24, **fields), "fl")
    ends = (np.flatnonzero(sim.schedule.round_end) if round_ticks == 0
            else np.arange(round_ticks - 1, 24, round_ticks))
    state, exact = sim.init_state(), []
    for t in range(24):
        before = _leaf(state.params).copy()
        state = sim.run_ticks(state, t, t + 1)
        if t in ends:
            after = _leaf(state.params)
            exact.append(bool(np.allclose(after[1:], before[1:].mean(0), atol=1e-6)))
    if round_ticks == 0:
        # the slowest client: compute 0.45 s + latency: its upload arrives floor(5.0) = 5
        # ticks after its step at the round's start; a round lasts 6 ticks
        assert ends.tolist() == [5, 11, 17, 23]
        assert all(exact)
    else:
        assert not all(exact)


def test_a_deadline_round_leaves_out_a_client_still_computing(tmp_path):
    """fl with a 4-tick deadline on the clock (ticks of 0.1 s): client 2's step takes 1.5 s
    = 15 ticks, so after training at round 0's middle tick 2 it is busy until tick 17 and
    joins again in round 4 (tick 18), round 8 (tick 34); the others train every round.
    Without the clock every client trains every round, as in the authors' schedule."""
    times = tmp_path / "compute.txt"
    times.write_text("0.1\n1.5\n0.1\n0.1\n")  # clients 1-4 (the server: none)
    fields = {"clock.tick_seconds": 0.1, "clock.compute": str(times),
              "algorithm_args.fl.round_ticks": 4, "algorithm_args.fl.local_steps": 1}
    sched = make_sim(_cfg("fl", 40, **fields), "fl").schedule
    ticks_of = {i: sched.event_tick[sched.event_node == i].tolist() for i in range(1, 5)}
    assert ticks_of[2] == [2, 18, 34]
    assert all(ticks_of[i] == list(range(2, 40, 4)) for i in (1, 3, 4))
    plain = schedule.fl_rounds(5, 40, 4, seed=0, trainers=np.arange(5) > 0)
    ones = schedule.fl_rounds(5, 40, 4, seed=0, trainers=np.arange(5) > 0,
                              gap=np.ones(5, np.int64))
    np.testing.assert_array_equal(plain.event_node, ones.event_node)
    assert plain.event_tick.size == 10 * 4
    # E = 2 steps of 3 ticks: busy 6 ticks > R = 4, so node 1 joins every other round;
    # the plan is prefix-stable (the first 21 ticks of a 40-tick plan are a 21-tick plan)
    gap = np.array([1, 3, 1, 1, 1])
    long = schedule.fl_rounds(5, 40, 4, seed=0, local_steps=2, gap=gap, trainers=np.arange(5) > 0)
    short = schedule.fl_rounds(5, 21, 4, seed=0, local_steps=2, gap=gap, trainers=np.arange(5) > 0)
    assert long.event_tick[long.event_node == 1].tolist() == [2, 3, 10, 11, 18, 19, 26, 27, 34, 35]
    keep = long.event_tick < 21
    np.testing.assert_array_equal(short.event_tick, long.event_tick[keep])
    np.testing.assert_array_equal(short.event_node, long.event_node[keep])


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_waiting_rounds_resume_and_extend_bit_for_bit(tmp_path):
    """A fresh Simulation (plan and consts rebuilt, as on resume) continuing at tick 9, and a
    run planned for 12 ticks extended to 24, both equal one 24-tick run."""
    times = tmp_path / "compute.txt"
    times.write_text("0.1\n0.25\n0.45\n0.1\n")
    fields = {"clock.tick_seconds": 0.1, "clock.compute": str(times), "clock.latency": "0.05",
              "algorithm_args.fl.round_ticks": 0}
    whole = make_sim(_cfg("fl", 24, **fields), "fl")
    want = whole.run_ticks(whole.init_state(), 0, 24)
    first = make_sim(_cfg("fl", 12, **fields), "fl")
    np.testing.assert_array_equal(first.schedule.round_end, whole.schedule.round_end[:12])
    half = first.run_ticks(first.init_state(), 0, 9)
    again = make_sim(_cfg("fl", 24, **fields), "fl")
    got = again.run_ticks(half, 9, 24)
    for x, y in zip(jax.tree.leaves(want.params), jax.tree.leaves(got.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
