"""The Flag Aggregator rules (gossip_flag, gossip_flag_vc): FlagIRLS against a float64 NumPy
transcription, its limits, a sign-flip attack, one merge, the simulator, bad knobs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import make_sim, small_config
from jax_cache import compile_cache
from vanish import algorithms, build, config, data, errors, variance
from vanish.algorithms import base, flag, trimmed_mean

NAMES = ("gossip_flag", "gossip_flag_vc")

# ------------------------------------------------------------------------- NumPy reference


def np_flag(d, subspace, lam=0.0, iterations=1, eps=1e-6):
    """The Flag aggregate of m updates d [m, P] (float64), written from the paper's
    Algorithm 1 / the authors' code: an explicit P x (m + m(m-1)) weighted matrix with every
    ordered pair's difference column, its full SVD, no Gram matrix. Returns (g [P], weights
    [m], fit [m])."""
    d = np.asarray(d, np.float64)
    m = len(d)
    norms = np.linalg.norm(d, axis=1)
    u = np.array([x / n if n > 0 else np.zeros_like(x) for x, n in zip(d, norms)])
    y = np.zeros((d.shape[1], 0))  # the start: orthogonal to every update

    def weight(v):
        return (abs(1 - np.sum((y.T @ v) ** 2)) + eps) ** -0.25

    for _ in range(iterations):
        cols = [weight(ui) * ui for ui in u]
        if lam > 0:
            cols += [lam / (m * (m - 1)) * weight(u[i] - u[j]) * (u[i] - u[j])
                     for i in range(m) for j in range(m) if i != j]
        left, s, _ = np.linalg.svd(np.stack(cols, axis=1), full_matrices=False)
        y = left[:, :subspace][:, s[:subspace] > 1e-9 * s[0]]  # numerically zero: dropped
    fit = np.array([np.sum((y.T @ ui) ** 2) for ui in u])
    w = (abs(1 - fit) + eps) ** -0.25
    g = np.median(norms) * (y @ (y.T @ u.sum(0))) / m
    return g, w, fit


def flat(tree, i, m):
    """Rows [0, m) of node i's slots, all leaves flattened (float64): [m, P]."""
    return np.concatenate([np.asarray(b)[i, :m].reshape(m, -1) for b in jax.tree.leaves(tree)],
                          axis=1).astype(np.float64)


def flat_own(tree, i):
    return np.concatenate([np.asarray(x)[i].ravel() for x in jax.tree.leaves(tree)]
                          ).astype(np.float64)


CAP = 8
COUNTS = np.array([8, 7, 1, 2, 4, 5, 0])  # m = 1, 2, a full buffer, none


def _setup(seed, counts=COUNTS, cap=CAP):
    """Own models and buffers of per-message scales (update norms differ); slots not held
    are NaN (never read)."""
    rng = np.random.default_rng(seed)
    n = len(counts)
    own = {"Dense_0": {"kernel": rng.normal(size=(n, 5, 3)), "bias": rng.normal(size=(n, 3))}}
    scale = rng.uniform(0.3, 3.0, size=(n, cap))
    buf = {"Dense_0": {
        k: v[:, None] + scale.reshape(n, cap, *(1,) * (v.ndim - 1))
        * rng.normal(size=(n, cap) + v.shape[1:]) for k, v in own["Dense_0"].items()}}
    for v in buf["Dense_0"].values():
        for i, m in enumerate(counts):
            v[i, m:] = np.nan
    cast = lambda t: jax.tree.map(lambda x: x.astype(np.float32), t)  # noqa: E731
    return cast(own), cast(buf)


def _run_flag(own, buf, counts, **knobs):
    j = lambda t: jax.tree.map(jnp.asarray, t)  # noqa: E731
    fn = jax.jit(lambda b, o, c: flag.flag(b, o, c, **knobs))
    return fn(j(buf), j(own), jnp.asarray(counts))


# --------------------------------------------------------------- FlagIRLS vs the reference


@pytest.mark.parametrize("lam", [0.0, 30.0])
@pytest.mark.parametrize("iterations", [1, 3])
def test_flag_equals_the_numpy_transcription(iterations, lam):
    subspace = 3
    own, buf = _setup(1)
    model, fit = _run_flag(own, buf, COUNTS, subspace=subspace, lam=lam, iterations=iterations)
    got_w, got_fit = np.asarray(fit.weights), np.asarray(fit.fit)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(model))
    for i, m in enumerate(COUNTS):
        x_self, got = flat_own(own, i), flat_own(model, i)
        if m == 0:  # nothing held: the own model
            np.testing.assert_array_equal(got, x_self)
            assert not np.any(got_w[i])
            continue
        g, w, fit_ref = np_flag(flat(buf, i, m) - x_self, subspace, lam, iterations)
        np.testing.assert_allclose(got - x_self, g, rtol=2e-4, atol=2e-4 * np.abs(g).max())
        np.testing.assert_allclose(got_fit[i, :m], fit_ref, atol=2e-4)
        # The weights (|1 - fit| + eps)^(-1/4) are float32 noise where fit ~ 1 (kept whole).
        ok = np.abs(1 - fit_ref) > 1e-2
        np.testing.assert_allclose(got_w[i, :m][ok], w[ok], rtol=1e-3)
        assert np.all(got_w[i, m:] == 0)
        if m <= subspace:  # every update kept whole
            np.testing.assert_allclose(fit_ref, 1.0, atol=1e-9)
            np.testing.assert_allclose(got_fit[i, :m], 1.0, atol=1e-4)
        else:
            assert fit_ref.min() < 0.99  # some update is cut
        if m == 1:  # the only message is adopted
            np.testing.assert_allclose(got, flat(buf, i, 1)[0], rtol=1e-5, atol=1e-5)


def test_lambda_and_iterations_change_the_aggregate():
    """The knobs are read: the pair term and more IRLS rounds move the subspace."""
    own, buf = _setup(2)
    base_model, _ = _run_flag(own, buf, COUNTS, subspace=3)
    for knobs in (dict(lam=30.0), dict(iterations=3)):
        other, _ = _run_flag(own, buf, COUNTS, subspace=3, **knobs)
        full = flat_own(other, 0) - flat_own(base_model, 0)  # node 0 holds 8 > 3 messages
        assert np.linalg.norm(full) > 1e-2 * np.linalg.norm(flat_own(base_model, 0)), knobs


# ----------------------------------------------------------------- every direction kept


def test_every_direction_kept_is_plain_averaging_of_the_updates():
    counts = np.array([8, 5, 3])
    own, buf = _setup(3, counts)
    # Equal update norms: the aggregate IS the plain mean of the held models.
    for k in range(3):
        d = flat(buf, k, counts[k]) - flat_own(own, k)
        d *= 2.0 / np.linalg.norm(d, axis=1, keepdims=True)
        sizes = [x.size // (len(counts) * CAP) for x in jax.tree.leaves(buf)]
        parts = np.split(d, np.cumsum(sizes)[:-1], axis=1)
        for leaf, part, x in zip(jax.tree.leaves(buf), parts, jax.tree.leaves(own)):
            leaf[k, :counts[k]] = (x[k].ravel() + part).reshape(leaf[k, :counts[k]].shape)
    model, fit = _run_flag(own, buf, counts, subspace=CAP)
    for k, m in enumerate(counts):
        x_self = flat_own(own, k)
        mean = flat(buf, k, m).mean(0) - x_self
        got = flat_own(model, k) - x_self
        assert got @ mean / (np.linalg.norm(got) * np.linalg.norm(mean)) > 1 - 1e-6
        np.testing.assert_allclose(got, mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(fit.fit)[k, :m], 1.0, atol=1e-4)
    # Unequal norms: the mean of the unit updates, scaled by the median norm.
    own, buf = _setup(4, counts)
    model, _ = _run_flag(own, buf, counts, subspace=CAP)
    for k, m in enumerate(counts):
        x_self = flat_own(own, k)
        d = flat(buf, k, m) - x_self
        norms = np.linalg.norm(d, axis=1)
        unit_mean = (d / norms[:, None]).mean(0)
        got = flat_own(model, k) - x_self
        np.testing.assert_allclose(got, np.median(norms) * unit_mean, rtol=1e-4, atol=1e-5)
        mean = d.mean(0)
        assert got @ mean / (np.linalg.norm(got) * np.linalg.norm(mean)) < 1 - 1e-4


# --------------------------------------------------------------------- a sign-flip attack


@pytest.mark.parametrize("subspace,iterations", [(1, 1), (3, 1), (3, 3)])
def test_a_sign_flip_attacker_barely_moves_the_flag_aggregate(subspace, iterations):
    rng = np.random.default_rng(5)
    p, m, s, bad = 300, 6, 100.0, 2
    x_self = rng.normal(size=p)
    c = 0.1 * rng.normal(size=p)  # the honest models' common step away from x_self
    honest = x_self + c + 0.02 * rng.normal(size=(m, p))
    sent = honest.copy()
    sent[bad] = -s * honest[bad]  # the attacker sends -s * its model
    own = {"w": x_self[None].astype(np.float32)}
    buf = {"w": sent[None].astype(np.float32)}
    model, fit = _run_flag(own, buf, np.array([m]), subspace=subspace, iterations=iterations)
    g = np.asarray(model["w"][0], np.float64) - x_self
    plain = sent.mean(0) - x_self
    honest_mean = np.delete(honest, bad, axis=0).mean(0) - x_self
    err_flag = np.linalg.norm(g - honest_mean) / np.linalg.norm(honest_mean)
    err_plain = np.linalg.norm(plain - honest_mean) / np.linalg.norm(honest_mean)
    assert err_plain > 100  # plain averaging is dragged ~ s / m model norms away
    assert err_flag < 0.35  # the Flag aggregate keeps ~ (m - 1) / m of the honest step
    cos = g @ honest_mean / (np.linalg.norm(g) * np.linalg.norm(honest_mean))
    assert cos > 0.95
    w = np.asarray(fit.weights[0])
    if subspace == 1:  # the subspace is the honest direction: the attacker's weight is low
        assert w[bad] < 0.5 * np.delete(w, bad).min()
    else:  # the attacker takes a dimension of its own: the largest weight (fit ~ 1)
        assert w[bad] == w.max()
    # So the _vc target is the median of the variances, not a Flag-weighted mean of them.
    var = sent.var(axis=1)
    honest_var = np.delete(var, bad).mean()
    target = flag.flag_aggregate(subspace, iterations=iterations)(
        buf, np.array([m]), own).reduce(jnp.asarray(var[None], jnp.float32))
    assert abs(float(target[0]) / honest_var - 1) < 0.1
    assert np.sum(w / w.sum() * var) > 100 * honest_var


# -------------------------------------------------------- one merge on explicit buffers


@pytest.mark.parametrize("name", NAMES)
def test_merge_mixes_the_flag_aggregate_and_rescales_kernels_to_the_median_target(name):
    beta, subspace = 0.5, 3
    algo = algorithms.make(name, subspace=subspace, lam=5.0,
                           correction=variance.CorrectionConfig(target="others"),
                           inbox_capacity=CAP, merge_slots=4)
    assert algo.name == name and algo.caps.message_buffers
    assert algo.caps.corrected == name.endswith("_vc")
    own, buf = _setup(6)
    threshold = np.array([3, 3, 1, 3, 1, 1, 1])  # node 3 holds too few to merge, 6 none
    consts = base.Consts(None, None, None, None, jnp.asarray(threshold), jnp.float32(beta),
                         None, None, None)
    tick = base.Tick(jnp.int32(0), jnp.bool_(True), jnp.bool_(False), jax.random.PRNGKey(0))
    j = lambda t: jax.tree.map(jnp.asarray, t)  # noqa: E731
    inbox = trimmed_mean.Inbox(j(buf), jnp.asarray(COUNTS))
    out, inbox2, merged = jax.jit(algo.end_of_tick)(j(own), inbox, consts, tick)
    merged = np.asarray(merged)
    np.testing.assert_array_equal(merged, [1, 1, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(np.asarray(inbox2.count), np.where(merged, 0, COUNTS))
    agg, _ = _run_flag(own, buf, COUNTS, subspace=subspace, lam=5.0)
    for i, m in enumerate(COUNTS):
        k_own, b_own = own["Dense_0"]["kernel"][i], own["Dense_0"]["bias"][i]
        k_got, b_got = (np.asarray(out["Dense_0"][k][i]) for k in ("kernel", "bias"))
        if not merged[i]:
            np.testing.assert_array_equal(k_got, k_own)
            np.testing.assert_array_equal(b_got, b_own)
            continue
        # The aggregate itself is checked against the float64 reference above.
        g, _, _ = np_flag(flat(buf, i, m) - flat_own(own, i), subspace, 5.0)
        np.testing.assert_allclose(flat_own(agg, i) - flat_own(own, i), g, rtol=2e-4,
                                   atol=2e-4 * np.abs(g).max())
        a_k, a_b = (np.asarray(agg["Dense_0"][k][i]) for k in ("kernel", "bias"))
        np.testing.assert_allclose(b_got, beta * b_own + (1 - beta) * a_b, rtol=1e-5, atol=1e-5)
        k_mix = beta * k_own + (1 - beta) * a_k
        if name.endswith("_vc"):  # the median of the held kernels' variances
            t = np.median([np.var(x) for x in buf["Dense_0"]["kernel"][i, :m]])
            np.testing.assert_allclose(np.var(k_got), t, rtol=1e-4)
            k_mix = (k_mix - k_mix.mean()) * np.sqrt(t / k_mix.var()) + k_mix.mean()
        np.testing.assert_allclose(k_got, k_mix, rtol=1e-4, atol=1e-5)


def test_the_aggregate_needs_the_receivers_own_models():
    own, buf = _setup(7)
    fn = flag.flag_aggregate(2)
    with pytest.raises(ValueError, match="own"):
        fn(buf, jnp.asarray(COUNTS))
    j = lambda t: jax.tree.map(jnp.asarray, t)  # noqa: E731
    a = fn(j(buf), jnp.asarray(COUNTS), j(own)).model  # own models, or the receivers
    r = trimmed_mean.Receiver(j(own), jnp.arange(len(COUNTS)), None, None)
    b = fn(j(buf), jnp.asarray(COUNTS), r).model
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ------------------------------------------------------------------ registry and knobs


def test_flag_rules_are_registered_with_their_knobs():
    for name in NAMES:
        assert name in algorithms.NAMES and algorithms.factory(name) is flag.make
        assert algorithms.make(name).name == name
    assert dict(config.default_config().algorithm_args.gossip_flag) == {
        "subspace": 8, "lam": 0.0, "iterations": 1, "eps": 1e-6}


@pytest.mark.parametrize("knob,value", [("subspace", 0), ("lam", -0.5), ("lam", float("nan")),
                                        ("iterations", 0), ("eps", 0.0)])
def test_bad_knobs_are_refused(knob, value):
    check = algorithms.REGISTRY["gossip_flag"].knobs[knob].check
    assert check is not None and check(value) is not None
    assert check(algorithms.REGISTRY["gossip_flag"].knobs[knob].default) is None
    with pytest.raises(errors.ConfigError, match=knob if knob != "lam" else "lam >= 0"):
        algorithms.make("gossip_flag", **{knob: value})
    cfg = _tiny_cfg(**{f"algorithm_args.gossip_flag.{knob}": value})
    cfg.algorithms = "gossip_flag"
    with pytest.raises(errors.ConfigError, match=f"gossip_flag.{knob}"):
        build.experiment(cfg)


def test_a_subspace_larger_than_the_inbox_is_refused():
    algorithms.make("gossip_flag", subspace=8, inbox_capacity=8)  # fits
    with pytest.raises(errors.ConfigError, match="subspace = 9 exceeds the 8 messages"):
        algorithms.make("gossip_flag_vc", subspace=9, inbox_capacity=8)
    # The tiny graph (degree 3, threshold 3): a node holds at most 3 - 1 + 3 = 5 messages.
    ds = data.load("synthetic", num_train=400, num_test=100, seed=0)
    with pytest.raises(errors.ConfigError, match="subspace = 8 exceeds the 5 messages"):
        make_sim(_tiny_cfg(), "gossip_flag", ds)


# ------------------------------------------------------------------------- end to end


_tiny_cfg = small_config  # tests/helpers.py


@pytest.mark.parametrize("name", NAMES)
def test_simulation_merges_to_finite_params_and_vc_kernels_hit_their_targets(name, tmp_path):
    cfg = _tiny_cfg(**{f"algorithm_args.{name}.subspace": 2})
    with compile_cache(tmp_path / "jax_cache_flag"):
        ds = data.load("synthetic", num_train=400, num_test=100, seed=0)
        sim = make_sim(cfg, name, ds)
        state = sim.run_ticks(sim.init_state(), 0, 8)
        jax.block_until_ready(state)
        assert int(np.asarray(state.merges).sum()) > 0
        assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state.params))
        # One more merge by hand, on the trained models: every node sends to its
        # neighbours, and every node holding a message merges.
        n = sim.n
        sent = base.Sent(state.params, jnp.arange(n, dtype=jnp.int32), jnp.ones(n, bool),
                         jax.random.split(jax.random.PRNGKey(0), n), jnp.zeros(n, jnp.int32))
        inbox = sim.algo.emit(sim.algo.init(state.params), sent, sim.consts)
        consts = sim.consts._replace(threshold=jnp.ones(n, jnp.int32))
        tick = base.Tick(jnp.int32(8), jnp.bool_(True), jnp.bool_(False), jax.random.PRNGKey(1))
        out, _, merged = jax.jit(sim.algo.end_of_tick)(state.params, inbox, consts, tick)
    count = np.asarray(inbox.count)
    assert np.all(np.asarray(merged) == (count > 0)) and count.min() > 0
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(out))
    agg, _ = flag.flag(inbox.buf, state.params, inbox.count, subspace=2)
    beta = float(sim.consts.beta)
    corr = sim.experiment.correction
    mask = variance.correctable_mask(state.params, corr, stacked=True)
    checked = 0
    for x, a, b, o, correct in zip(*(jax.tree.leaves(t) for t in (
            state.params, agg, inbox.buf, out, mask))):
        x, a, b, o = (np.asarray(v, np.float64) for v in (x, a, b, o))
        for i in range(n):
            mix = beta * x[i] + (1 - beta) * a[i]
            if not (name.endswith("_vc") and correct):
                np.testing.assert_allclose(o[i], mix, rtol=1e-4, atol=1e-5)
                continue
            t = np.median([np.var(v, ddof=corr.ddof) for v in b[i, :count[i]]])
            np.testing.assert_allclose(np.var(o[i], ddof=corr.ddof), t, rtol=1e-3)
            assert abs(np.var(mix, ddof=corr.ddof) / t - 1) > 1e-3  # the rescale did something
            checked += 1
    assert checked > 0 or not name.endswith("_vc")
