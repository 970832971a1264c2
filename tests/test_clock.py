"""The simulated clock: its specs, its closed form inside the compiled program, and per-node
heterogeneity deciding who trains (and so finishes) first."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import make_sim, tiny_config
from vanish import build, clock, metrics
from vanish.errors import ConfigError

TICKS = 40


def test_specs_constant_drawn_and_from_a_file(tmp_path):
    np.testing.assert_array_equal(clock.parse("0.25", 3, 0, "compute"), [0.25] * 3)
    np.testing.assert_array_equal(clock.parse("", 2, 0, "bandwidth", default=math.inf),
                                  [math.inf] * 2)
    drawn = clock.parse("lognormal:0.05:0.5", 4000, 7, "compute")
    assert np.median(drawn) == pytest.approx(0.05, rel=0.05)
    assert np.std(np.log(drawn)) == pytest.approx(0.5, rel=0.05)
    np.testing.assert_array_equal(drawn, clock.parse("lognormal:0.05:0.5", 4000, 7, "compute"))
    u = clock.parse("uniform:1:2", 1000, 0, "latency")
    assert 1 <= u.min() and u.max() <= 2
    f = tmp_path / "compute.txt"
    f.write_text("# seconds per step\n0.1\n0.2\n\n0.3\n")
    np.testing.assert_array_equal(clock.parse(str(f), 3, 0, "compute"), [0.1, 0.2, 0.3])


@pytest.mark.parametrize("spec,n,message", [
    ("lognormal:0.05", 3, "two numbers"),
    ("lognormal:-1:0.5", 3, "median > 0"),
    ("uniform:2:1", 3, "lo <= hi"),
    ("-0.5", 3, ">= 0"),
    ("fast", 3, "neither a number"),
])
def test_bad_specs_are_refused_naming_the_field(spec, n, message):
    with pytest.raises(ConfigError, match=message) as e:
        clock.parse(spec, n, 0, "compute")
    assert "config.clock.compute" in str(e.value)


def test_a_file_must_hold_one_value_per_node(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("0.1\n0.2\n")
    with pytest.raises(ConfigError, match="holds 2 values; the run has 3 nodes"):
        clock.parse(str(f), 3, 0, "compute")
    f.write_text("0.1\nslow\n0.3\n")
    with pytest.raises(ConfigError, match=r"c.txt:2: 'slow' is not a number"):
        clock.parse(str(f), 3, 0, "compute")


def test_the_builder_refuses_a_clock_without_tick_seconds():
    with pytest.raises(ConfigError, match="tick_seconds is 0"):
        build.experiment(tiny_config(**{"clock.compute": "0.1"}))
    with pytest.raises(ConfigError, match="tick_seconds"):
        build.experiment(tiny_config(**{"clock.tick_seconds": -1.0}))
    with pytest.raises(ConfigError, match="config.clock.bandwidth"):
        build.experiment(tiny_config(**{"clock.tick_seconds": 0.1, "clock.bandwidth": "0"}))


def test_floors_and_link_times_are_the_closed_form():
    c = clock.Clock(0.1, np.array([0.0, 0.1, 0.25]), np.array([0.05, 0.05, 0.0]),
                    np.array([1e6, math.inf, 2e6]))
    np.testing.assert_array_equal(c.interval_floor(), [1, 1, 3])
    # floor((compute + latency + bytes / bandwidth) / tick)
    np.testing.assert_array_equal(c.link_ticks((200_000, 50_000)),
                                  [[2, 1], [1, 1], [3, 2]])
    assert c.seconds(40) == pytest.approx(4.0)


def _sends_by_tick(sim, ticks=TICKS) -> np.ndarray:
    """[T, N] messages each node sends at each tick (training events x out-degree)."""
    topo = sim.components.topology
    out_deg = np.bincount(topo.senders, minlength=sim.engine.n)
    w = sim.components.work.between(0, ticks)
    counts = np.zeros((ticks, sim.engine.n), np.int64)
    for tick, node, ok in zip(w.tick, w.node, w.valid & w.send):
        np.add.at(counts[tick], node[ok], 1)
    return counts * out_deg


def test_constant_times_give_the_closed_form_arrivals_in_the_compiled_program():
    """Every node trains every 2 ticks from tick 0; a message takes floor((latency + bytes /
    bandwidth) / tick) ticks: delivered = the messages whose arrival tick has passed."""
    tick_s, latency, bandwidth = 0.1, 0.05, 2e6
    cfg = tiny_config(**{"clock.tick_seconds": tick_s, "clock.latency": str(latency),
                         "clock.bandwidth": str(bandwidth), "schedule.first_tick": "0",
                         "schedule.interval_lo": 2, "schedule.interval_hi": 2})
    sim = make_sim(cfg, "gossip")
    size = sim.engine.message_sizes[0]
    delay = math.floor((latency + size / bandwidth) / tick_s)
    assert delay >= 2 and np.all(np.asarray(sim.consts.net.link_ticks) == delay)
    state = sim.run_ticks(sim.init_state(), 0, TICKS)
    state, row = sim.evaluate(state)
    sends = _sends_by_tick(sim)
    assert row[metrics.MSGS_SENT] == sends.sum()
    assert row[metrics.MSGS_DELIVERED] == sends[:TICKS - delay].sum()  # t + delay <= T - 1
    assert row[metrics.BYTES_RECV_MEAN] * sim.engine.n == sends[:TICKS - delay].sum() * size
    assert row[metrics.SIM_SECONDS] == pytest.approx(TICKS * tick_s)
    # The same run without a clock delivers everything at once.
    plain = make_sim(tiny_config(**{"schedule.first_tick": "0", "schedule.interval_lo": 2,
                                    "schedule.interval_hi": 2}), "gossip")
    s2, r2 = plain.evaluate(plain.run_ticks(plain.init_state(), 0, TICKS))
    assert metrics.SIM_SECONDS not in r2 and r2[metrics.BYTES_RECV_MEAN] > row[
        metrics.BYTES_RECV_MEAN]


def test_smaller_messages_travel_faster():
    """Partitioned gossip's messages are a quarter of the model: their link time is the
    closed form of their own size, shorter than a full model's."""
    tick_s, bandwidth = 0.01, 1e6
    cfg = tiny_config(**{"clock.tick_seconds": tick_s, "clock.bandwidth": str(bandwidth)})
    part = make_sim(cfg, "gossip_part")
    full = make_sim(cfg, "gossip")
    want = [math.floor(b / bandwidth / tick_s) for b in part.engine.message_sizes]
    np.testing.assert_array_equal(np.asarray(part.consts.net.link_ticks)[0], want)
    assert max(want) < int(np.asarray(full.consts.net.link_ticks).min())


def test_slower_nodes_train_less_often_as_predicted(tmp_path):
    """Node i needs 3 (i + 1) ticks per step (a trace file): with interval 1 and first tick
    0 it trains at 0, 3 (i + 1), 6 (i + 1), ...: ceil(T / (3 (i + 1))) steps by tick T, so
    node 0 is the first to reach any number of steps."""
    n, tick_s = 6, 0.1
    f = tmp_path / "compute.txt"
    f.write_text("\n".join(str(3 * (i + 1) * tick_s) for i in range(n)) + "\n")
    cfg = tiny_config(**{"clock.tick_seconds": tick_s, "clock.compute": str(f),
                         "schedule.first_tick": "0", "schedule.interval_lo": 1,
                         "schedule.interval_hi": 1})
    sim = make_sim(cfg, "gossip")
    state = sim.run_ticks(sim.init_state(), 0, TICKS)
    want = [math.ceil(TICKS / (3 * (i + 1))) for i in range(n)]
    np.testing.assert_array_equal(np.asarray(state.train_count), want)


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_drawn_heterogeneity_orders_the_nodes_by_their_speed():
    cfg = tiny_config(**{"clock.tick_seconds": 0.1, "clock.compute": "lognormal:0.4:0.8",
                         "topology.num_nodes": 12, "schedule.interval_lo": 1,
                         "schedule.interval_hi": 1, "schedule.first_tick": "0"})
    exp = build.experiment(cfg)
    compute = build.clock_for(exp, "gossip").compute
    sim = make_sim(cfg, "gossip")
    count = np.asarray(sim.run_ticks(sim.init_state(), 0, TICKS).train_count)
    order = np.argsort(compute, kind="stable")
    assert np.all(np.diff(count[order]) <= 0)  # faster never trains less
    assert count.max() > count.min()
    np.testing.assert_array_equal(count, [math.ceil(TICKS / max(1, math.ceil(c / 0.1 - 1e-9)))
                                          for c in compute])


def test_fl_clients_share_the_gossip_nodes_clock_and_the_server_computes_nothing():
    exp = build.experiment(tiny_config(**{"clock.tick_seconds": 0.1,
                                          "clock.compute": "lognormal:0.2:0.5"}))
    g, f = build.clock_for(exp, "gossip"), build.clock_for(exp, "fl")
    np.testing.assert_array_equal(f.compute[1:], g.compute)
    assert f.compute[0] == 0 and f.bandwidth[0] == math.inf


def test_summary_reports_seconds_to_target():
    rows = [dict(tick=t, acc_mean=a, acc_min=a, acc_max=a, averaging_events=0,
                 sim_seconds=t * 0.5) for t, a in ((0, 0.1), (10, 0.85), (20, 0.9))]
    s = metrics.summarize(rows, target=0.8)
    assert s[metrics.SECONDS_TO_TARGET] == 5.0 and s[metrics.SIM_SECONDS] == 10.0
