"""Robust merge rules (issue #9): coordinate-wise median and Krum, their _vc targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_cache import compile_cache
from helpers import make_sim, small_config
from vanish import algorithms, config, data, variance
from vanish.algorithms import base, robust, trimmed_mean

NEW = ("gossip_median", "gossip_median_vc", "gossip_krum", "gossip_krum_vc")


# ------------------------------------------------------------------------- NumPy references


def np_trimmed(v, fraction):
    m = len(v)
    t = int(np.floor(fraction * m))
    return np.sort(v, axis=0)[t:m - t].mean(0)


def np_krum(leaves, i, m, f):
    """Krum's slot for node i holding m messages, f of them assumed faulty: a loop over
    messages, float64."""
    x = np.concatenate([b[i, :m].reshape(m, -1) for b in leaves], axis=1).astype(np.float64)
    k = max(m - f - 2, 1)
    scores = []
    for a in range(m):
        d = sorted(float(np.sum((x[a] - x[b]) ** 2)) for b in range(m) if b != a)
        scores.append(sum(d[:k]))
    return int(np.argmin(scores))


def _buffers(seed, m_nodes=6, cap=8):
    rng = np.random.default_rng(seed)
    # Per-message scales make the per-layer variances differ between messages.
    scale = rng.uniform(0.5, 2.0, size=(m_nodes, cap, 1, 1)).astype(np.float32)
    return {"Dense_0": {"kernel": rng.normal(size=(m_nodes, cap, 5, 3)).astype(np.float32) * scale,
                        "bias": rng.normal(size=(m_nodes, cap, 3)).astype(np.float32)}}


COUNTS = np.array([8, 7, 1, 2, 4, 5])  # even and odd m, m = 1, a full buffer


# ----------------------------------------------------------------------------------- median


def test_median_equals_numpy_on_explicit_buffers():
    rng = np.random.default_rng(0)
    buf = rng.normal(size=(7, 8, 3, 2)).astype(np.float32)
    count = np.array([8, 7, 1, 2, 4, 5, 0])
    got = np.asarray(robust.median(jnp.asarray(buf), jnp.asarray(count)))
    assert got.shape == (7, 3, 2) and np.all(np.isfinite(got))
    for i, m in enumerate(count[:-1]):
        np.testing.assert_allclose(got[i], np.median(buf[i, :m], axis=0), rtol=1e-6, atol=1e-6)
    # Values outside the held slots never matter.
    buf2 = buf.copy()
    for i, m in enumerate(count):
        buf2[i, m:] = 1e6
    np.testing.assert_array_equal(
        np.asarray(robust.median(jnp.asarray(buf2), jnp.asarray(count)))[:-1], got[:-1])


# ------------------------------------------------------------------------------------- Krum


@pytest.mark.parametrize("f", [1, 2, 0])
def test_krum_equals_numpy_reference_on_a_two_leaf_tree(f):
    tree = _buffers(1)
    leaves = jax.tree.leaves(tree)
    idx = np.asarray(robust.krum_choice(jax.tree.map(jnp.asarray, tree), jnp.asarray(COUNTS),
                                        f))
    want = [np_krum(leaves, i, m, f) for i, m in enumerate(COUNTS)]
    np.testing.assert_array_equal(idx, want)
    assert idx[2] == 0 and idx[3] == 0  # m = 1: the only message; m = 2: a tie, lowest slot
    chosen = robust.krum(jax.tree.map(jnp.asarray, tree), jnp.asarray(COUNTS), f)
    for got, b in zip(jax.tree.leaves(chosen), leaves):
        np.testing.assert_array_equal(np.asarray(got), b[np.arange(len(COUNTS)), want])


def test_krum_never_picks_an_outlier():
    rng = np.random.default_rng(2)
    center = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=(6,))}
    tree = {k: np.broadcast_to(v, (3, 8) + v.shape).copy() for k, v in center.items()}
    for v in tree.values():
        v += 0.01 * rng.normal(size=v.shape)
    outliers = {0: (0, 3), 1: (5, 6), 2: (1,)}  # node -> Byzantine slots
    for i, slots in outliers.items():
        for s in slots:
            tree["a"][i, s] += 50.0 * rng.normal(size=(4, 3))
            tree["b"][i, s] -= 40.0
    tree = {k: v.astype(np.float32) for k, v in tree.items()}
    count = np.array([8, 8, 6])
    for f in (1, 2):
        idx = np.asarray(robust.krum_choice(jax.tree.map(jnp.asarray, tree), jnp.asarray(count),
                                            f))
        want = [np_krum(jax.tree.leaves(tree), i, m, f) for i, m in enumerate(count)]
        np.testing.assert_array_equal(idx, want)
        for i, slots in outliers.items():
            assert idx[i] not in slots and idx[i] < count[i]


# ------------------------------------------------------------------ the _vc target variances


@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("rule", ["trim", "median", "krum"])
def test_target_variance_is_the_robust_rule_over_the_held_variances(rule, ddof):
    tree = _buffers(3)
    kernel = tree["Dense_0"]["kernel"]
    jtree, jcount = jax.tree.map(jnp.asarray, tree), jnp.asarray(COUNTS)
    aggregate = {"trim": trimmed_mean.trimmed_aggregate(0.2), "median": robust.median_aggregate,
                 "krum": robust.krum_aggregate(1)}[rule](jtree, jcount, None)
    got = np.asarray(trimmed_mean.target_variance(jtree["Dense_0"]["kernel"], aggregate.reduce,
                                                  ddof))
    for i, m in enumerate(COUNTS):
        v = np.array([np.var(kernel[i, j].astype(np.float64), ddof=ddof) for j in range(m)])
        if rule == "trim":
            want = np_trimmed(v, 0.2)
        elif rule == "median":
            want = np.median(v)
        else:
            want = v[np_krum(jax.tree.leaves(tree), i, m, 1)]
        np.testing.assert_allclose(got[i], want, rtol=1e-5)


# ------------------------------------------------------- one merge on explicit buffers (vc)


@pytest.mark.parametrize("name", ["gossip_trim_vc", "gossip_median", "gossip_median_vc",
                                  "gossip_krum", "gossip_krum_vc"])
def test_merge_mixes_the_robust_aggregate_and_rescales_kernels_to_its_target(name):
    n, cap, beta, frac, f = 6, 8, 0.5, 0.2, 1
    knobs = {"gossip_trim_vc": dict(fraction=frac), "gossip_krum": dict(f=f),
             "gossip_krum_vc": dict(f=f)}.get(name, {})
    algo = algorithms.make(name, correction=variance.CorrectionConfig(target="others"),
                           inbox_capacity=cap, merge_slots=4, **knobs)
    assert algo.name == name
    rng = np.random.default_rng(4)
    params = {"Dense_0": {"kernel": rng.normal(size=(n, 5, 3)).astype(np.float32),
                          "bias": rng.normal(size=(n, 3)).astype(np.float32)}}
    buf = _buffers(5, n, cap)
    count = np.array([8, 7, 1, 2, 0, 5])
    threshold = np.array([3, 3, 1, 3, 1, 1])  # node 3 holds too few to merge, node 4 none
    consts = base.Consts(None, None, None, None, jnp.asarray(threshold), jnp.float32(beta),
                         None, None, None)
    tick = base.Tick(jnp.int32(0), jnp.bool_(True), jnp.bool_(False), jax.random.PRNGKey(0))
    inbox = trimmed_mean.Inbox(jax.tree.map(jnp.asarray, buf), jnp.asarray(count))
    out, inbox2, merged = jax.jit(algo.end_of_tick)(jax.tree.map(jnp.asarray, params), inbox,
                                                    consts, tick)
    merged = np.asarray(merged)
    np.testing.assert_array_equal(merged, [1, 1, 1, 0, 0, 1])
    np.testing.assert_array_equal(np.asarray(inbox2.count), np.where(merged, 0, count))
    rule = name.split("_")[1]
    for i in range(n):
        m = count[i]
        k_own, b_own = params["Dense_0"]["kernel"][i], params["Dense_0"]["bias"][i]
        k_got = np.asarray(out["Dense_0"]["kernel"][i])
        b_got = np.asarray(out["Dense_0"]["bias"][i])
        if not merged[i]:
            np.testing.assert_array_equal(k_got, k_own)
            np.testing.assert_array_equal(b_got, b_own)
            continue
        held = {k: v[i, :m] for k, v in buf["Dense_0"].items()}
        if rule == "trim":
            agg = {k: np_trimmed(v, frac) for k, v in held.items()}
            t = np_trimmed(np.array([np.var(x) for x in held["kernel"]]), frac)
        elif rule == "median":
            agg = {k: np.median(v, axis=0) for k, v in held.items()}
            t = np.median([np.var(x) for x in held["kernel"]])
        else:
            j = np_krum(jax.tree.leaves(buf), i, m, f)
            agg = {k: v[j] for k, v in held.items()}
            t = np.var(held["kernel"][j])
        np.testing.assert_allclose(b_got, beta * b_own + (1 - beta) * agg["bias"], rtol=1e-5,
                                   atol=1e-6)
        k_mix = beta * k_own + (1 - beta) * agg["kernel"]
        if name.endswith("_vc"):
            k_mix = (k_mix - k_mix.mean()) * np.sqrt(t / k_mix.var()) + k_mix.mean()
        np.testing.assert_allclose(k_got, k_mix, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------- registry and end to end


def test_robust_rules_are_registered_and_allowed_by_the_config():
    for name in NEW:
        assert name in algorithms.NAMES and name in config.default_config().algorithm_args
        assert algorithms.factory(name) is robust.make
        assert algorithms.make(name).name == name
    assert dict(config.default_config().algorithm_args.gossip_krum) == {"f": 1}  # its own knob
    with pytest.raises(KeyError, match="unknown robust rule"):
        robust.make(rule="mean")


_tiny_cfg = small_config  # tests/helpers.py


def test_median_vc_simulation_merges_to_finite_params(tmp_path):
    with compile_cache(tmp_path / "jax_cache_robust"):
        ds = data.load("synthetic", num_train=400, num_test=100, seed=0)
        sim = make_sim(_tiny_cfg(), "gossip_median_vc", ds)
        assert isinstance(sim.algo.init(sim.init_state().params), trimmed_mean.Inbox)
        state = sim.run_ticks(sim.init_state(), 0, 8)
        jax.block_until_ready(state)
    assert int(np.asarray(state.merges).sum()) > 0
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state.params))


def test_ranks_and_a_sort_give_the_same_order_statistics_ties_included(tmp_path, monkeypatch):
    """The rules' pairwise ranks (up to RANK_SLOTS slots) against the sort they replace, on
    buffers with ties and every fill level: the median bit for bit, the trimmed mean to
    float tolerance; and scripts/bench_robust.py runs on a tiny input."""
    import importlib.util
    import json

    x = jnp.round(jax.random.normal(jax.random.PRNGKey(3), (6, 7, 5, 4)) * 2) / 2  # ties
    count = jnp.array([0, 1, 2, 4, 6, 7])
    got = (robust.median(x, count), trimmed_mean.trimmed_mean(x, count, 0.2))
    monkeypatch.setattr(robust, "RANK_SLOTS", 0)
    monkeypatch.setattr(trimmed_mean, "RANK_SLOTS", 0)
    want = (robust.median(x, count), trimmed_mean.trimmed_mean(x, count, 0.2))
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), rtol=1e-6, atol=1e-6)
    path = __import__("pathlib").Path(__file__).parents[1] / "scripts" / "bench_robust.py"
    spec = importlib.util.spec_from_file_location("bench_robust", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "r.json"
    assert bench.main(["--slots", "5", "--nodes", "2", "--repeats", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["rule"] for r in rows] == ["trimmed mean 0.2", "median"]
    assert rows[1]["max_abs_diff"] == 0.0 and rows[0]["max_abs_diff"] < 1e-5
    assert set(json.loads(out.read_text())["aggregates"]) == {
        "mean", "trimmed mean 0.2", "median", "krum f=1", "flag m=8"}
