"""Compressed gossip with error feedback (vanish/algorithms/compressed.py): top-k and
stochastic int8 messages against NumPy, the exact error feedback, bit-identity with plain
gossip at fraction 1, message sizes by hand, and short training runs."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import make_sim, tiny_config
from vanish import algorithms
from vanish.algorithms import base, compressed


def _sent(params_K, nodes, send=None, seed=0):
    k = len(nodes)
    return base.Sent(params_K, jnp.asarray(nodes, jnp.int32),
                     jnp.ones(k, bool) if send is None else jnp.asarray(send),
                     jax.random.split(jax.random.PRNGKey(seed), k), jnp.zeros(k, jnp.int32))


def _tree(rng, n):
    return {"Dense_0": {"kernel": jnp.asarray(rng.normal(size=(n, 7, 5)), jnp.float32),
                        "bias": jnp.asarray(rng.normal(size=(n, 5)), jnp.float32)}}


def test_topk_moves_exactly_the_k_largest_residual_coordinates_of_each_leaf():
    rng = np.random.default_rng(0)
    public = _tree(rng, 4)
    algo = algorithms.make("gossip_topk", fraction=0.2)
    inbox = algo.init(public)
    model = jax.tree.map(lambda x: x[jnp.array([2, 0])] + 0.1, _tree(rng, 2))  # nodes 2, 0
    inbox2, sent = algo.encode(inbox, _sent(model, [2, 0], send=[True, False]), None)
    for path in (("Dense_0", "kernel"), ("Dense_0", "bias")):
        x = np.asarray(model[path[0]][path[1]])
        old = np.asarray(public[path[0]][path[1]])
        new = np.asarray(inbox2.public[path[0]][path[1]])
        wire = np.asarray(sent.params[path[0]][path[1]])
        numel = x[0].size
        k = max(1, round(0.2 * numel))  # kernel: 7 of 35; bias: 1 of 5
        assert k == {35: 7, 5: 1}[numel]
        for slot, node in enumerate((2, 0)):
            r = (x[slot] - old[node]).ravel()
            top = set(np.argsort(-np.abs(r))[:k].tolist())
            moved = np.flatnonzero(wire[slot].ravel() != old[node].ravel())
            assert set(moved.tolist()) == top  # exactly k, the k largest |r|
            np.testing.assert_array_equal(wire[slot].ravel()[moved], x[slot].ravel()[moved])
        # Only the sending slot (node 2) writes its public copy; node 0 and the others keep.
        np.testing.assert_array_equal(new[2], wire[0])
        np.testing.assert_array_equal(new[[0, 1, 3]], old[[0, 1, 3]])
    # The public copies start as the initial models, in buffers of their own (the engine
    # donates its state).
    for x, p in zip(jax.tree.leaves(public), jax.tree.leaves(inbox.public)):
        np.testing.assert_array_equal(x, p)
        assert x.unsafe_buffer_pointer() != p.unsafe_buffer_pointer()


def test_int8_quantization_is_unbiased_bounded_and_below_one_step():
    rng = np.random.default_rng(1)
    r = jnp.asarray(rng.normal(size=(300,)), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(3), 4000)
    q, s = jax.vmap(compressed.quantize, in_axes=(None, 0))(r, keys)
    q, s = np.asarray(q), float(np.asarray(s)[0])
    r = np.asarray(r)
    assert s == pytest.approx(np.abs(r).max() / 127)
    assert np.all(np.abs(q) <= 127) and np.all(q == np.round(q))
    err = q * s - r
    assert np.all(np.abs(err) < s)
    # Unbiased: each coordinate's mean of q s is r within 5 standard errors (Var <= s^2 / 4).
    se = s / 2 / math.sqrt(len(keys))
    assert np.all(np.abs(err.mean(0)) < 5 * se)
    assert np.abs(err.mean(0)).mean() < 1.5 * se  # and not merely inside a loose bound
    # The residual is spread over more than the two neighbouring levels' mean: real noise.
    assert np.all(err.std(0)[np.abs(r / s - np.round(r / s)) > 0.1] > 0)
    q0, s0 = compressed.quantize(jnp.zeros(5), keys[0])
    assert float(s0) == 0 and np.all(np.asarray(q0) == 0)


def test_int8_encode_draws_noise_per_slot_and_leaf_and_moves_by_q_times_s():
    rng = np.random.default_rng(2)
    public = _tree(rng, 3)
    algo = algorithms.make("gossip_q8_vc")
    assert algo.caps.corrected and not algo.caps.shardable
    model = jax.tree.map(lambda x: x + 0.5, public)
    inbox, sent = algo.encode(algo.init(public), _sent(model, [0, 1, 2]), None)
    for leaf_x, leaf_p, leaf_new in zip(jax.tree.leaves(model), jax.tree.leaves(public),
                                        jax.tree.leaves(inbox.public)):
        x, p, new = np.asarray(leaf_x), np.asarray(leaf_p), np.asarray(leaf_new)
        for i in range(3):
            s = np.abs(x[i] - p[i]).max() / 127
            q = (new[i] - p[i]) / s
            np.testing.assert_allclose(q, np.round(q), atol=1e-3)  # whole steps of s
            assert np.all(np.abs(new[i] - x[i]) <= s * 1.0001)
    np.testing.assert_array_equal(jax.tree.leaves(sent.params)[0],
                                  jax.tree.leaves(inbox.public)[0])


def test_error_feedback_keeps_what_was_not_sent_and_topk_reaches_a_fixed_model():
    rng = np.random.default_rng(4)
    public = _tree(rng, 2)
    model = jax.tree.map(lambda x: x + jnp.asarray(rng.normal(size=x.shape), x.dtype), public)
    algo = algorithms.make("gossip_topk", fraction=0.3)
    inbox = algo.init(public)
    inbox1, _ = algo.encode(inbox, _sent(model, [0, 1]), None)
    for x, p, p1 in zip(jax.tree.leaves(model), jax.tree.leaves(public),
                        jax.tree.leaves(inbox1.public)):
        x, p, p1 = np.asarray(x), np.asarray(p), np.asarray(p1)
        sent_part = p1 - p
        np.testing.assert_array_equal(x - p1, np.where(sent_part != 0, 0, x - p))
        assert 0 < np.count_nonzero(x - p1) < x.size
    # A fixed model: each message sends k coordinates not sent before (the sent ones have a
    # zero residual), so after t messages max(0, numel - t k) are left; all are sent within
    # ceil(numel / k) = ceil(1 / fraction) = 4 messages here (kernel 35: k = 10; bias 5: 2).
    numel = np.array([x[0].size for x in jax.tree.leaves(model)])
    k = np.array([compressed.top_k_count(int(m), 0.3) for m in numel])
    assert numel.tolist() == [5, 35] and k.tolist() == [2, 10]
    for t in range(1, 5):
        inbox, _ = algo.encode(inbox, _sent(model, [0, 1], seed=t), None)
        left = [int(np.count_nonzero(np.asarray(x) - np.asarray(p), axis=tuple(range(1, x.ndim)))
                    .max()) for x, p in zip(jax.tree.leaves(model), jax.tree.leaves(inbox.public))]
        assert left == np.maximum(0, numel - t * k).tolist(), t
    assert math.ceil(1 / 0.3) == 4
    for x, p in zip(jax.tree.leaves(model), jax.tree.leaves(inbox.public)):
        np.testing.assert_array_equal(x, p)


def test_message_sizes_by_hand():
    template = {"k": jax.ShapeDtypeStruct((10, 20), jnp.float32),
                "b": jax.ShapeDtypeStruct((20,), jnp.float32),
                "h": jax.ShapeDtypeStruct((3,), jnp.bfloat16)}
    topk = algorithms.make("gossip_topk", fraction=0.1).wire
    # k: 20 of 200 -> 80 B of values + min(80 B indices, 25 B bitmap) = 105;
    # b: 2 of 20 -> 8 + min(8, 3) = 11; h: max(1, round(0.3)) = 1 -> 2 + min(4, 1) = 3.
    assert topk.sizes(template, None) == (105 + 11 + 3,)
    sparse = algorithms.make("gossip_topk_vc", fraction=0.01).wire
    # k: 2 -> 8 + min(8, 25) = 16; b: 1 -> 4 + min(4, 3) = 7; h: 1 -> 3.
    assert sparse.sizes(template, None) == (16 + 7 + 3,)
    assert algorithms.make("gossip_topk", fraction=1.0).wire.sizes(template, None) == (
        800 + 25 + 80 + 3 + 6 + 1,)
    q8 = algorithms.make("gossip_q8").wire
    assert q8.sizes(template, None) == (200 + 4 + 20 + 4 + 3 + 4,)


# -------------------------------------------------------------------- through the simulator

TICKS = 12


def _params(name: str, ticks: int = TICKS, **fields):
    sim = make_sim(tiny_config(**{"run.ticks": ticks, **fields}), name)
    state = sim.run_ticks(sim.init_state(), 0, ticks)
    return sim, state


@pytest.mark.parametrize("plain,compressed_name", [("gossip", "gossip_topk"),
                                                   ("gossip_vc", "gossip_topk_vc")])
def test_topk_with_fraction_one_is_plain_gossip_bit_for_bit(plain, compressed_name):
    _, ref = _params(plain)
    sim, got = _params(compressed_name, **{f"algorithm_args.{compressed_name}.fraction": 1.0})
    assert int(np.asarray(got.merges).sum()) == int(np.asarray(ref.merges).sum()) > 0
    for a, b in zip(jax.tree.leaves(ref.params), jax.tree.leaves(got.params)):
        np.testing.assert_array_equal(a, b)
    # A message of all k = numel values: the values plus a bitmap (smaller than indices).
    assert sim.engine.message_sizes == (sum(x[0].size * 4 + math.ceil(x[0].size / 8)
                                            for x in jax.tree.leaves(got.params)),)


@pytest.mark.parametrize("name", ["gossip_q8_vc", "gossip_topk"])
def test_compressed_gossip_trains(name):
    sim, state = _params(name, ticks=40)
    _, before = sim.evaluate(sim.init_state())
    state, after = sim.evaluate(state)
    print(name, {k: (before[k], after[k]) for k in ("loss_mean", "global_loss", "global_acc")},
          after["averaging_events"], sim.engine.message_sizes)
    assert after["averaging_events"] > 0
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state.params))
    assert np.isfinite(after["loss_mean"]) and after["loss_mean"] < before["loss_mean"]
    assert after["global_acc"] > before["global_acc"]
