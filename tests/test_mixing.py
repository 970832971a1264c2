"""Tests for vanish.mixing against dense NumPy references and per-node Python loops."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vanish import mixing, topology

FAMILIES = {
    "ring": lambda: topology.ring(7),
    "torus": lambda: topology.torus(3, 4),
    "complete": lambda: topology.complete(11),  # D = 10 > chunk: exercises the chunk loop
    "star": lambda: topology.star(12, center=2),
    "random_regular": lambda: topology.random_regular(12, 3, seed=0),
    "erdos_renyi": lambda: topology.erdos_renyi(15, 0.3, seed=1),
    "watts_strogatz": lambda: topology.watts_strogatz(12, 4, 0.3, seed=0),
    "barabasi_albert": lambda: topology.barabasi_albert(14, 2, seed=0).with_weighting("metropolis"),
    "exponential": lambda: topology.exponential(9),
    "one_peer_exponential": lambda: topology.one_peer_exponential(8, 1),
    "single_node": lambda: topology.complete(1),
}
METHODS = mixing.METHODS + ("auto",)


def make_tree(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"kernel": rng.normal(size=(n, 3, 2)).astype(np.float32),
            "bias": rng.normal(size=(n,)).astype(np.float32)}


def apply_w(w: np.ndarray, tree: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: (w @ x.reshape(x.shape[0], -1).astype(np.float64)).reshape(x.shape)
            for k, x in tree.items()}


def masked_w(t: topology.Topology, edge_mask: np.ndarray, node_mask: np.ndarray) -> np.ndarray:
    """Reference: drop edges/nodes one by one and move the weight onto the receiver's diagonal."""
    w = t.dense()
    for e, (s, r) in enumerate(zip(t.senders, t.receivers)):
        if not (edge_mask[e] and node_mask[s] and node_mask[r]):
            w[r, r] += w[r, s]
            w[r, s] = 0.0
    return w


def assert_tree_close(got, want, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k], np.float64), want[k], rtol=rtol, atol=atol,
                                   err_msg=k)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", mixing.METHODS)
def test_mix_equals_dense_reference(family: str, method: str) -> None:
    t = FAMILIES[family]()
    tree = make_tree(t.n)
    out = mixing.mix(tree, t.device_graph(), method=method)
    assert jax.tree.structure(out) == jax.tree.structure(tree)
    assert_tree_close(out, apply_w(t.dense(), tree))


@pytest.mark.parametrize("family", ["ring", "complete", "star", "barabasi_albert"])
def test_mix_rows_is_a_block_of_the_dense_reference(family: str) -> None:
    """One device's rows of W @ x (sharded D-PSGD), with a traced start."""
    t = FAMILIES[family]()
    tree, want = make_tree(t.n), apply_w(t.dense(), make_tree(t.n))
    rows = jax.jit(mixing.mix_rows, static_argnums=3)
    for start, count in ((0, t.n), (1, 3), (t.n - 4, 4)):
        out = rows(tree, t.device_graph(), jnp.int32(start), count)
        assert_tree_close(out, {k: v[start:start + count] for k, v in want.items()})


@pytest.mark.parametrize("family", ["star", "barabasi_albert", "exponential"])
@pytest.mark.parametrize("method", mixing.METHODS)
def test_mix_with_masks_equals_reference(family: str, method: str) -> None:
    t = FAMILIES[family]()
    rng = np.random.default_rng(1)
    edge_mask = rng.random(t.num_edges) < 0.6
    node_mask = rng.random(t.n) < 0.75
    node_mask[0] = False
    tree = make_tree(t.n)
    g = t.device_graph()
    out = mixing.mix(tree, g, jnp.asarray(edge_mask), jnp.asarray(node_mask), method=method)
    assert_tree_close(out, apply_w(masked_w(t, edge_mask, node_mask), tree))
    for k in tree:  # dropped nodes keep their model bit-exactly
        np.testing.assert_array_equal(np.asarray(out[k])[~node_mask], tree[k][~node_mask])
    only_edges = mixing.mix(tree, g, edge_mask=jnp.asarray(edge_mask), method=method)
    assert_tree_close(only_edges, apply_w(masked_w(t, edge_mask, np.ones(t.n, bool)), tree))
    if method != "dense":  # sparse paths never read a dropped node, so its NaN cannot leak
        bad = tree | {"kernel": tree["kernel"].copy()}
        bad["kernel"][0] = np.nan
        out_bad = mixing.mix(bad, g, jnp.asarray(edge_mask), jnp.asarray(node_mask), method=method)
        np.testing.assert_array_equal(np.asarray(out_bad["kernel"])[1:],
                                      np.asarray(out["kernel"])[1:])


def test_auto_selection_follows_the_cost_model() -> None:
    assert mixing.select_method("cpu", 1024, 8, 8192) == "gather"
    assert mixing.select_method("cpu", 1024, 1023, 2046) == "segment_sum"  # star: huge padding
    assert mixing.select_method("cpu", 1024, 98, 8160) == "gather"  # Barabasi-Albert
    for family in ("star", "torus"):
        t = FAMILIES[family]()
        tree, g = make_tree(t.n), t.device_graph()
        chosen = mixing.select_method(jax.default_backend(), t.n, g.nbr.shape[1], t.num_edges)
        assert_tree_close(mixing.mix(tree, g), apply_w(t.dense(), tree))
        np.testing.assert_array_equal(np.asarray(mixing.mix(tree, g)["kernel"]),
                                      np.asarray(mixing.mix(tree, g, method=chosen)["kernel"]))
    with pytest.raises(ValueError, match="unknown mixing method 'fast'"):
        mixing.mix(make_tree(7), topology.ring(7).device_graph(), method="fast")


def test_mix_preserves_dtype_and_works_inside_jit() -> None:
    t = topology.ring(6)
    g = t.device_graph()
    x = jnp.arange(6 * 4, dtype=jnp.bfloat16).reshape(6, 4)
    out = jax.jit(lambda x, g: mixing.mix({"a": x}, g))(x, g)["a"]
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float64), t.dense() @ np.asarray(x, np.float64),
                               rtol=1e-2)


def test_mean_preserved_under_doubly_stochastic_w() -> None:
    t = topology.barabasi_albert(20, 2, seed=1).with_weighting("metropolis")
    tree = make_tree(t.n)
    out = mixing.mix(tree, t.device_graph())
    for k in tree:
        np.testing.assert_allclose(np.asarray(out[k]).mean(0), tree[k].mean(0), atol=1e-6)


def test_repeated_mixing_reaches_consensus() -> None:
    t = topology.ring(10).with_weighting("metropolis")
    g = t.device_graph()
    tree = jax.tree.map(jnp.asarray, make_tree(t.n))
    start = float(mixing.consensus_distance(tree))
    dists = []
    for _ in range(100):
        tree = mixing.mix(tree, g)
        dists.append(float(mixing.consensus_distance(tree)))
    # Symmetric doubly stochastic W never increases it (up to f32 noise near zero).
    assert all(b <= a + 1e-12 for a, b in zip(dists, dists[1:]))
    assert dists[-1] < 1e-6 * start


def test_mix_does_not_retrace_for_new_graph_or_masks() -> None:
    counted = jax.jit(chex.assert_max_traces(mixing.mix.__wrapped__, n=1),
                      static_argnames=("method",))
    tree = make_tree(16)
    g0 = topology.random_regular(16, 4, seed=0).device_graph()
    g1 = topology.random_regular(16, 4, seed=1).device_graph()
    e = g0.senders.shape[0]
    masks = [(jnp.ones(e, bool), jnp.ones(16, bool)),
             (jnp.arange(e) % 3 > 0, jnp.arange(16) % 5 > 0)]
    before = mixing.mix._cache_size()
    for g, (em, nm) in zip((g0, g1), masks):
        counted(tree, g, em, nm, method="gather")
        mixing.mix(tree, g, em, nm, method="gather")
    assert mixing.mix._cache_size() - before == 1
    with pytest.raises(AssertionError):  # the counter is live: a new shape must trip it
        counted(make_tree(17), topology.ring(17).device_graph(), method="gather")


def reference_push(t, acc, count, tree, send, edge_mask=None):
    acc = {k: v.astype(np.float64).copy() for k, v in acc.items()}
    count = count.copy()
    for e, (s, r) in enumerate(zip(t.senders, t.receivers)):
        if send[s] and (edge_mask is None or edge_mask[e]):
            for k in acc:
                acc[k][r] += tree[k][s]
            count[r] += 1
    return acc, count


@pytest.mark.parametrize("family", ["star", "barabasi_albert", "exponential"])
@pytest.mark.parametrize("method", mixing.METHODS)
def test_push_equals_per_node_loop(family: str, method: str) -> None:
    t = FAMILIES[family]()
    rng = np.random.default_rng(2)
    acc, tree = make_tree(t.n, 3), make_tree(t.n, 4)
    count = rng.integers(0, 3, t.n).astype(np.int32)
    send = rng.random(t.n) < 0.5
    edge_mask = rng.random(t.num_edges) < 0.7
    got_acc, got_count = mixing.push(acc, count, tree, send, t.device_graph(), edge_mask,
                                     method=method)
    ref_acc, ref_count = reference_push(t, acc, count, tree, send, edge_mask)
    assert_tree_close(got_acc, ref_acc)
    np.testing.assert_array_equal(np.asarray(got_count), ref_count)
    assert got_count.dtype == jnp.int32


@pytest.mark.parametrize("family", ["ring", "star", "barabasi_albert", "exponential"])
def test_push_from_equals_per_node_loop_with_duplicate_senders(family: str) -> None:
    t = FAMILIES[family]()
    rng = np.random.default_rng(5)
    acc = make_tree(t.n, 6)
    count = np.zeros(t.n, np.float32)
    sender = np.array([2, 0, 2, 5, 1, 2], np.int32)
    valid = np.array([True, True, True, False, True, True])
    tree_k = {k: rng.normal(size=(6,) + v.shape[1:]).astype(np.float32) for k, v in acc.items()}
    got_acc, got_count = mixing.push_from(acc, count, tree_k, sender, valid, t.device_graph())
    ref_acc = {k: v.astype(np.float64).copy() for k, v in acc.items()}
    ref_count = count.copy()
    for slot, s in enumerate(sender):
        if valid[slot]:
            for r in t.receivers[t.senders == s]:
                for k in acc:
                    ref_acc[k][r] += tree_k[k][slot]
                ref_count[r] += 1
    assert_tree_close(got_acc, ref_acc)
    np.testing.assert_array_equal(np.asarray(got_count), ref_count)


def test_push_from_matches_push_when_every_node_sends() -> None:
    t = topology.complete(11)  # out-degree 10 > chunk: exercises the loop over out-slots
    acc, tree = make_tree(t.n, 1), make_tree(t.n, 2)
    count = np.zeros(t.n, np.int32)
    g = t.device_graph()
    a1, c1 = mixing.push(acc, count, tree, np.ones(t.n, bool), g)
    a2, c2 = mixing.push_from(acc, count, tree, np.arange(t.n, dtype=np.int32),
                              np.ones(t.n, bool), g)
    assert_tree_close(a2, {k: np.asarray(v, np.float64) for k, v in a1.items()})
    np.testing.assert_array_equal(np.asarray(c1), np.asarray(c2))


def test_federated_mean_and_broadcast() -> None:
    tree = make_tree(5)
    weight = np.array([0.0, 1.0, 2.0, 0.0, 1.0], np.float32)
    got = mixing.federated_mean(tree, weight)
    for k, x in tree.items():
        want = np.tensordot(weight, x.astype(np.float64), axes=1) / weight.sum()
        np.testing.assert_allclose(np.asarray(got[k]), want, rtol=1e-6)
        assert got[k].shape == x.shape[1:]
    zero = mixing.federated_mean(tree, np.zeros(5, np.float32))
    assert all(np.all(np.asarray(v) == 0) for v in jax.tree.leaves(zero))
    stacked = mixing.broadcast(got, 4)
    assert stacked["kernel"].shape == (4, 3, 2)
    np.testing.assert_array_equal(np.asarray(stacked["kernel"][3]), np.asarray(got["kernel"]))


def test_consensus_distance_matches_numpy() -> None:
    tree = make_tree(6)
    flat = np.concatenate([x.reshape(6, -1).astype(np.float64) for x in tree.values()], axis=1)
    want = np.mean(np.sum((flat - flat.mean(0)) ** 2, axis=1))
    np.testing.assert_allclose(float(mixing.consensus_distance(tree)), want, rtol=1e-5)
    same = mixing.broadcast({"w": jnp.ones((3, 2))}, 4)
    assert float(mixing.consensus_distance(same)) == 0.0


@settings(deadline=None, max_examples=25)
@given(
    n=st.integers(2, 12),
    p=st.floats(0.3, 1.0),
    seed=st.integers(0, 10_000),
    shapes=st.lists(st.lists(st.integers(1, 4), max_size=2), min_size=1, max_size=3),
    method=st.sampled_from(METHODS),
    weighting=st.sampled_from(topology.WEIGHTINGS),
)
def test_property_mix_equals_dense(n, p, seed, shapes, method, weighting) -> None:
    t = topology.erdos_renyi(n, p, seed=seed, weighting=weighting)
    rng = np.random.default_rng(seed)
    tree = {f"l{i}": rng.normal(size=(n, *s)).astype(np.float32) for i, s in enumerate(shapes)}
    assert_tree_close(mixing.mix(tree, t.device_graph(), method=method), apply_w(t.dense(), tree))
