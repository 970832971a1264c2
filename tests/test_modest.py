"""MoDeST (vanish/algorithms/modest.py): the per-round aggregator sample, the round's model
(the mean of its trainers' models, adopted by every node), the bytes on the wire by hand, a
short training run, and MoDeST under message loss, churn and the clock."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from helpers import make_sim, tiny_config
from vanish.algorithms import base, modest

N, R, A, E, TICKS = 12, 5, 4, 2, 40  # 3 trainers per round (fraction 0.25), 8 rounds


def _cfg(**fields):
    return tiny_config(**{"topology.num_nodes": N, "run.ticks": TICKS,
                          "algorithm_args.modest.round_ticks": R,
                          "algorithm_args.modest.client_fraction": 0.25,
                          "algorithm_args.modest.local_steps": E,
                          "algorithm_args.modest.aggregators": A, **fields})


@pytest.fixture(scope="module")
def sim():
    return make_sim(_cfg(), "modest")


def _trainers(sim, r):
    """The nodes that train (and send) in round r, from the work plan's schedule."""
    s = sim.schedule
    mask = (s.event_tick // R == r) & s.event_send
    return sorted(s.event_node[mask].tolist())


def _agg(r, n=N, a=A, seed=0):
    seed = None if seed is None else np.uint32(seed)
    return np.asarray(modest.aggregators(np.int32(r), n, a, seed)).tolist()


def test_aggregator_sample_is_a_function_of_the_round_distinct_and_varies():
    rounds = [_agg(r) for r in range(10)]
    assert all(len(set(ids)) == A and all(0 <= i < N for i in ids) for ids in rounds)
    assert len({tuple(sorted(ids)) for ids in rounds}) > 1  # differs across rounds
    assert rounds == [_agg(r) for r in range(10)]  # recomputed: the same
    assert sorted(_agg(3, n=6, a=50)) == list(range(6))  # A > N: every node


def test_the_aggregator_samples_are_drawn_from_the_runs_seed():
    """Seeds are replicates: each draws its own aggregator sequence, and a run with seed s
    sends its trainers' models to the sample of seed s."""
    assert [_agg(r, seed=0) for r in range(10)] != [_agg(r, seed=1) for r in range(10)]
    assert _agg(4, seed=7) == _agg(4, seed=7)
    assert _agg(2, seed=None) == _agg(2, seed=0)
    other = make_sim(_cfg(seed=1), "modest")
    assert int(other.consts.seed) == 1
    r = 0
    state = other.run_ticks(other.init_state(), 0, R // 2 + E)  # after the trainers' sends
    want = np.zeros(N, int)
    want[_agg(r, seed=1)] = len(_trainers(other, r))
    np.testing.assert_array_equal(np.asarray(state.inbox.count), want)


def test_the_aggregators_are_the_same_at_every_tick_of_a_round_and_receive_every_trainer(sim):
    state = sim.init_state()
    for t in range(3 * R):
        state = sim.run_ticks(state, t, t + 1)
        r = t // R
        rnd = np.asarray(state.inbox.round)
        assert np.all(rnd == (r + 1 if (t + 1) % R == 0 else r)), t
        count = np.asarray(state.inbox.count)
        if t % R == R // 2 + E - 1:  # the trainers' last step: they sent to the aggregators
            trainers = _trainers(sim, r)
            assert len(trainers) == 3
            expected = np.zeros(N, int)
            expected[_agg(r)] = len(trainers)  # an aggregator that trains counts itself
            np.testing.assert_array_equal(count, expected)
        elif t % R < R // 2 + E - 1:
            assert not count.any()
    # Two runs of one plan: the same models and the same bytes.
    again = sim.run_ticks(sim.init_state(), 0, 3 * R)
    for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(again.params)):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(sim.engine.traffic_bytes(state), sim.engine.traffic_bytes(again)):
        np.testing.assert_array_equal(x, y)


def test_after_a_round_end_every_node_holds_the_mean_of_the_rounds_trainers(sim):
    state = sim.run_ticks(sim.init_state(), 0, R - 1)  # trained, round end not yet
    trainers = _trainers(sim, 0)
    before = jax.tree.map(np.asarray, state.params)
    ref = jax.tree.map(lambda x: x[trainers].astype(np.float64).mean(0), before)
    state = sim.run_ticks(state, R - 1, R)
    np.testing.assert_array_equal(np.asarray(state.merges), np.ones(N))
    for x, m, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref),
                       jax.tree.leaves(before)):
        x = np.asarray(x)
        np.testing.assert_array_equal(x, np.broadcast_to(x[0], x.shape))  # one model
        np.testing.assert_allclose(x[0], m, rtol=1e-5, atol=1e-6)
        assert not np.allclose(x[trainers[0]], b[trainers[0]])  # the trainer's moved


def test_bytes_are_the_uploads_to_the_aggregators_and_one_download_per_other_node(sim):
    rounds = 3
    state = sim.run_ticks(sim.init_state(), 0, rounds * R)
    sent, received = sim.engine.traffic_bytes(state)
    (mb,) = sim.engine.message_sizes
    template = jax.tree.map(lambda x: x[0], state.params)
    assert mb == base.model_bytes(template)
    want_sent, want_received = np.zeros(N, np.int64), np.zeros(N, np.int64)
    for r in range(rounds):
        ids, trainers = _agg(r), _trainers(sim, r)
        for i in trainers:  # uploads: to every aggregator but itself
            want_sent[i] += A - (i in ids)
        for j in ids:
            want_received[j] += len(trainers) - (j in trainers)
        g = ids[0]  # downloads: the first aggregator to every other node
        want_sent[g] += N - 1
        want_received[np.arange(N) != g] += 1
    np.testing.assert_array_equal(sent, want_sent * mb)
    np.testing.assert_array_equal(received, want_received * mb)
    assert sent.sum() == received.sum()


def test_modest_trains(sim):
    state = sim.run_ticks(sim.init_state(), 0, TICKS)
    _, before = sim.evaluate(sim.init_state())
    state, after = sim.evaluate(state)
    print({k: (before[k], after[k]) for k in ("loss_mean", "global_loss", "global_acc")})
    assert after["averaging_events"] == N * (TICKS // R)
    assert after["global_loss"] < before["global_loss"]
    assert after["global_acc"] > before["global_acc"] + 0.2


def test_lost_messages_cost_the_sender_and_the_round_still_ends_on_one_model():
    lossy = make_sim(_cfg(**{"network.drop_prob": 0.3}), "modest")
    state, row = lossy.evaluate(lossy.run_ticks(lossy.init_state(), 0, 4 * R))
    (mb,) = lossy.engine.message_sizes
    sent, received = lossy.engine.traffic_bytes(state)
    assert row["msgs_dropped"] > 0
    uploads_sent = row["msgs_sent"]  # rule-addressed: every aggregator but itself
    assert uploads_sent == sum(A - (i in _agg(r)) for r in range(4)
                               for i in _trainers(lossy, r))
    downloads = sent.sum() // mb - uploads_sent
    assert received.sum() // mb == row["msgs_delivered"] + downloads
    for x in jax.tree.leaves(state.params):  # a round end: every node holds one model
        x = np.asarray(x)
        np.testing.assert_array_equal(x, np.broadcast_to(x[0], x.shape))


def test_an_offline_aggregator_loses_its_messages_and_another_carries_the_round(tmp_path):
    """Round 0's first aggregator is offline for the whole round: every upload to it is lost,
    the second aggregator's mean (the same trainers) is the round's model, and the offline
    node keeps its own model."""
    g, second = _agg(0)[0], _agg(0)[1]
    trace = tmp_path / "churn.txt"
    trace.write_text(f"{g} 0 {R}\n")
    sim = make_sim(_cfg(**{"network.churn_trace": str(trace)}), "modest")
    trainers = _trainers(sim, 0)
    assert g not in trainers  # this plan: it only aggregates
    state = sim.run_ticks(sim.init_state(), 0, R - 1)
    before = jax.tree.map(np.asarray, state.params)
    assert np.asarray(state.inbox.count)[g] == 0
    assert np.asarray(state.inbox.count)[second] == len(trainers)  # its own model counts
    state = sim.run_ticks(state, R - 1, R)
    ref = jax.tree.map(lambda x: x[trainers].astype(np.float64).mean(0), before)
    online = [i for i in range(N) if i != g]
    for x, m, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref),
                       jax.tree.leaves(before)):
        x = np.asarray(x)
        np.testing.assert_allclose(x[online], np.broadcast_to(m, x[online].shape), rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_array_equal(x[g], b[g])  # offline: did not adopt
    assert np.asarray(state.merges)[g] == 0
    # The download is on the aggregator whose mean was adopted (the second), not on the
    # offline first one: it sends to the other N - 2 online nodes, each receives one.
    (mb,) = sim.engine.message_sizes
    sent, received = (x // mb for x in sim.engine.traffic_bytes(state))
    uploads = {i: A - (i in _agg(0)) for i in trainers}  # every aggregator but itself
    want_sent = np.array([uploads.get(i, 0) for i in range(N)])
    want_sent[second] += N - 2
    np.testing.assert_array_equal(sent, want_sent)
    assert sent[g] == 0 and received[g] == 0  # offline: received nothing, sent nothing
    downloads = np.array([int(i not in (g, second)) for i in range(N)])
    np.testing.assert_array_equal(received - downloads, [
        (len(trainers) - (j in trainers)) if j in _agg(0) and j != g else 0 for j in range(N)])


def test_the_clock_delays_uploads_by_their_link_time():
    """A link time of 1 tick: the trainers' uploads (sent after their last step, tick
    R // 2 + E - 1) reach the aggregators one tick later, at the round's last tick, before
    its end: the round's model is still the mean of its trainers."""
    clocked = make_sim(_cfg(**{"clock.tick_seconds": 0.1, "clock.latency": "0.1"}), "modest")
    assert int(np.asarray(clocked.consts.net.link_ticks).max()) == 1
    last = R // 2 + E - 1
    trainers = _trainers(clocked, 0)
    waiting = [i for i in _agg(0) if i not in trainers]
    state = clocked.run_ticks(clocked.init_state(), 0, last + 1)
    assert not np.asarray(state.inbox.count)[waiting].any()  # in flight
    before = jax.tree.map(np.asarray, state.params)
    state = clocked.run_ticks(state, last + 1, R)
    np.testing.assert_array_equal(np.asarray(state.merges), np.ones(N))
    ref = jax.tree.map(lambda x: x[trainers].astype(np.float64).mean(0), before)
    for x, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(x)[0], m, rtol=1e-5, atol=1e-6)
