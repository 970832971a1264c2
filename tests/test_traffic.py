"""Bytes on the wire: the engine's message counters against the analytic payload x messages.

Every expectation is computed from the host's own plans (the work plan: who trains and sends
at which tick; the topology: who receives) and the model's size, never from the counters.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from helpers import make_sim, tiny_config
from vanish import metrics, train

TICKS = 40


def _model_bytes(sim) -> int:
    one = jax.tree.map(lambda x: x[0], sim.init_state().params)
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(one))


def _sends(sim, ticks: int = TICKS) -> np.ndarray:
    """[N] training events that send, per node, in ticks [0, ticks) (from the work plan)."""
    w = sim.components.work.between(0, ticks)
    out = np.zeros(sim.engine.n, np.int64)
    np.add.at(out, w.node[w.valid & w.send], 1)
    return out


def _degrees(sim) -> tuple[np.ndarray, np.ndarray]:
    """([N] out-degree, [N] in-degree) of the algorithm's graph (host topology)."""
    topo = sim.components.topology
    n = sim.engine.n
    out_deg, in_deg = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for s, r in zip(topo.senders.tolist(), topo.receivers.tolist()):
        out_deg[s] += 1
        in_deg[r] += 1
    return out_deg, in_deg


def _run(name: str, ticks: int = TICKS, **fields):
    sim = make_sim(tiny_config(**fields), name)
    state = sim.run_ticks(sim.init_state(), 0, ticks)
    state, row = sim.evaluate(state)
    sent, received = sim.engine.traffic_bytes(state)
    return sim, state, row, sent, received


@pytest.mark.parametrize("name", ["gossip", "gossip_vc", "gossip_trim", "gossip_krum"])
def test_gossip_sends_one_model_to_every_out_neighbour(name):
    sim, state, row, sent, received = _run(name)
    size = _model_bytes(sim)
    assert sim.engine.message_sizes == (size,)
    out_deg, _ = _degrees(sim)
    np.testing.assert_array_equal(sent, _sends(sim) * out_deg * size)
    assert received.sum() == sent.sum() > 0  # no faults: everything sent arrives
    assert row[metrics.BYTES_SENT_TOTAL] == int(sent.sum())
    assert row[metrics.BYTES_SENT_MAX] == int(sent.max())
    assert row[metrics.BYTES_RECV_MEAN] == pytest.approx(received.mean())


def test_classic_gossip_sends_each_model_to_one_peer():
    sim, state, row, sent, received = _run("gossip_classic")
    size = _model_bytes(sim)
    np.testing.assert_array_equal(sent, _sends(sim) * size)
    assert received.sum() == sent.sum()
    # Each arrival merges at the end of its tick: received messages >= merges, > 0.
    assert (received // size >= np.asarray(state.merges)).all() and received.sum() > 0


def test_partitioned_gossip_pays_per_partition():
    sim, state, row, sent, received = _run("gossip_part")
    sizes = sim.engine.message_sizes
    assert len(sizes) == 4 and sum(sizes) == _model_bytes(sim)  # 4 partitions of one model
    ids = jax.tree.leaves(sim.consts.part_ids)
    one = jax.tree.leaves(jax.tree.map(lambda x: x[0], sim.init_state().params))
    for p in range(4):
        assert sizes[p] == sum(int((np.asarray(i) == p).sum()) * x.dtype.itemsize
                               for i, x in zip(ids, one))
    # A node's j-th message carries partition j mod 4, to every out-neighbour.
    out_deg, _ = _degrees(sim)
    want = np.array([sum(sizes[j % 4] for j in range(k)) for k in _sends(sim)]) * out_deg
    np.testing.assert_array_equal(sent, want)
    assert received.sum() == sent.sum()


def test_fl_uploads_and_the_servers_broadcast():
    sim, state, row, sent, received = _run("fl")
    size = _model_bytes(sim)
    merges = np.asarray(state.merges).astype(np.int64)
    uploads = _sends(sim)
    assert uploads[0] == 0 and merges[0] == 0  # node 0 is the server
    # Clients: their uploads out, one download per round they adopted in.
    np.testing.assert_array_equal(sent[1:], uploads[1:] * size)
    np.testing.assert_array_equal(received[1:], merges[1:] * size)
    # The server: every upload in, one download out per adopting client.
    assert sent[0] == merges.sum() * size and received[0] == uploads.sum() * size
    assert row[metrics.BYTES_SENT_MAX] == sent[0]  # the server is the busiest node


def test_fl_sched_uploads_the_sample_and_broadcasts_at_round_ends():
    sim, state, row, sent, received = _run("fl_sched")
    size = _model_bytes(sim)
    rounds = TICKS // 10  # round_ticks 10, client_fraction 1: every client, every round
    clients = sim.engine.n - 1
    np.testing.assert_array_equal(sent[1:], rounds * size)
    np.testing.assert_array_equal(received[1:], rounds * size)
    assert sent[0] == received[0] == rounds * clients * size


def test_dpsgd_exchanges_with_every_neighbour_every_round():
    sim, state, row, sent, received = _run("dpsgd")
    size = _model_bytes(sim)
    out_deg, in_deg = _degrees(sim)
    np.testing.assert_array_equal(sent, TICKS * out_deg * size)  # local_steps 1: every tick
    np.testing.assert_array_equal(received, TICKS * in_deg * size)


def test_dropped_messages_cost_the_sender_not_the_receiver():
    sim, state, row, sent, received = _run("gossip", **{"network.drop_prob": 0.3})
    size = _model_bytes(sim)
    out_deg, _ = _degrees(sim)
    np.testing.assert_array_equal(sent, _sends(sim) * out_deg * size)  # lost ones paid too
    assert row[metrics.MSGS_SENT] * size == sent.sum()
    assert row[metrics.MSGS_DELIVERED] * size == received.sum()
    assert 0 < row[metrics.MSGS_DROPPED] and received.sum() < sent.sum()


def test_delayed_messages_are_received_when_they_arrive():
    sim, state, row, sent, received = _run("gossip", **{"network.delay": "1-3"})
    size = _model_bytes(sim)
    assert row[metrics.MSGS_SENT] * size == sent.sum()
    assert row[metrics.MSGS_DELIVERED] * size == received.sum()
    assert received.sum() < sent.sum()  # the last ticks' messages are still in flight


def test_summary_reports_bytes_to_target():
    rows = [dict(tick=t, acc_mean=a, acc_min=a, acc_max=a, averaging_events=0,
                 bytes_sent_mean=b) for t, a, b in ((0, 0.1, 0.0), (10, 0.5, 80.0),
                                                    (20, 0.9, 160.0), (30, 0.95, 240.0))]
    s = metrics.summarize(rows, target=0.8)
    assert s["ticks_to_target"] == 20 and s[metrics.BYTES_TO_TARGET] == 160.0
    assert s[metrics.BYTES_SENT_MEAN] == 240.0
    assert metrics.summarize(rows, target=0.99)[metrics.BYTES_TO_TARGET] is None


def test_counting_changes_no_result():
    """The counters only observe: the models are the same with and without them."""
    sim = make_sim(tiny_config(), "gossip_vc")
    a = sim.run_ticks(sim.init_state(), 0, 20)
    off = train.Simulation(sim.exp, "gossip_vc", count_traffic=False)
    b = off.run_ticks(off.init_state(), 0, 20)
    assert b.traffic is None and a.traffic is not None
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_the_counting_cost_benchmark_runs(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "bench_traffic_cost", Path(__file__).parents[1] / "scripts" / "bench_traffic_cost.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "cost.json"
    assert bench.main(["--tiny", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    for row in rows.values():  # counting adds work, a little
        assert row["on"]["flops"] >= row["off"]["flops"] > 0
