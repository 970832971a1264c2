"""Alignment (vanish/alignment.py) and the rules that merge aligned models (gossip_align,
gossip_align_vc, dimat): oracles are permutations drawn at random, SciPy's assignment, the
models' own functions and D-PSGD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from helpers import make_sim, tiny_config
from vanish import algorithms, alignment, build, models
from vanish.algorithms import base
from vanish.algorithms.trimmed_mean import Receiver

SHAPES = {"mlp": (28, 28, 1), "lenet5": (28, 28, 1), "caffe_lenet": (28, 28, 1),
          "cifar_cnn": (32, 32, 3)}
ALIGN_RULES = ("gossip_align", "gossip_align_vc", "dimat")


def _model(name, seed=0):
    m = models.make_model(name, conv_impl="xla")
    x = jax.random.normal(jax.random.PRNGKey(100 + seed), (128, *SHAPES[name]))
    params = m.init(jax.random.PRNGKey(seed), x[:1])["params"]
    # Non-zero biases (flax initialises them to 0), so a mis-permuted bias shows.
    rng = np.random.default_rng(seed)
    params = {k: {**v, "bias": jnp.asarray(rng.normal(0, 0.05, v["bias"].shape), jnp.float32)}
              for k, v in params.items()}
    return m, params, x


def _random_perms(spec, seed):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.permutation(p.size), jnp.int32) for p in spec.perms]


def _assert_trees_equal(a, b, atol=0.0):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


# ------------------------------------------------------------------------------ the spec


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "cifar_cnn"
                                  else n for n in sorted(SHAPES)])
def test_permuted_model_computes_the_same_function(name):
    m, params, x = _model(name)
    spec = alignment.spec_for(m)
    perm_params = alignment.permute(spec, _random_perms(spec, 1), params)
    out = f"Dense_{sum(p.layer.startswith('Dense') for p in spec.perms)}"
    for layer in params:
        for leaf in ("kernel", "bias"):
            moved = not np.array_equal(np.asarray(params[layer][leaf]),
                                       np.asarray(perm_params[layer][leaf]))
            assert moved == (not (layer == out and leaf == "bias")), (layer, leaf)
    np.testing.assert_allclose(np.asarray(m.apply({"params": perm_params}, x)),
                               np.asarray(m.apply({"params": params}, x)), atol=2e-5, rtol=0)


def test_specs_permute_hidden_layers_only():
    for name, widths in (("mlp", [128, 64]), ("lenet5", [6, 16, 120, 84]),
                         ("caffe_lenet", [20, 50, 500]), ("cifar_cnn", [32, 64, 64, 64])):
        spec = alignment.spec_for(models.make_model(name))
        assert [p.size for p in spec.perms] == widths
        touched = {a.path[0] for p in spec.perms for a in p.axes}
        last = f"Dense_{len([p for p in spec.perms if p.layer.startswith('Dense')])}"
        assert last in touched  # the output layer's inputs move, its outputs never
        assert all(not (a.path[0] == last and a.path[1] == "bias") for p in spec.perms
                   for a in p.axes)


# ------------------------------------------------------------------------ the assignment


@pytest.mark.parametrize("n", [1, 5, 40, 120])
def test_hungarian_equals_scipy_on_random_costs(n):
    rng = np.random.default_rng(n)
    for _ in range(3):
        sim = rng.normal(size=(n, n)).astype(np.float32)
        got = np.asarray(jax.jit(alignment.assign)(jnp.asarray(sim)))
        rows, cols = linear_sum_assignment(sim, maximize=True)
        np.testing.assert_array_equal(got, cols)  # unique optimum: the same assignment


def test_hungarian_with_ties_reaches_scipys_optimum():
    rng = np.random.default_rng(7)
    for n in (4, 16, 64):
        # Few distinct values: many optimal assignments; both must be permutations of equal
        # (optimal) total.
        sim = rng.integers(0, 3, size=(n, n)).astype(np.float32)
        got = np.asarray(alignment.assign(jnp.asarray(sim)))
        assert sorted(got.tolist()) == list(range(n))
        rows, cols = linear_sum_assignment(sim, maximize=True)
        assert sim[np.arange(n), got].sum() == sim[rows, cols].sum()
    zeros = np.asarray(alignment.assign(jnp.zeros((6, 6))))
    assert sorted(zeros.tolist()) == list(range(6))


def test_scipy_solver_agrees_with_the_in_graph_one_under_vmap():
    sim = jnp.asarray(np.random.default_rng(3).normal(size=(5, 30, 30)).astype(np.float32))
    a = jax.jit(jax.vmap(lambda s: alignment.assign(s, "hungarian")))(sim)
    b = jax.jit(jax.vmap(lambda s: alignment.assign(s, "scipy")))(sim)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("solver", ["hungarian", "scipy"])
def test_a_diverged_models_similarities_still_give_a_permutation(solver):
    """NaN / inf similarities (a diverged model) do not stop the run in the solver; finite
    entries keep their optimum."""
    sim = np.random.default_rng(4).normal(size=(8, 8)).astype(np.float32)
    _, best = linear_sum_assignment(sim, maximize=True)
    np.testing.assert_array_equal(np.asarray(alignment.assign(jnp.asarray(sim), solver)), best)
    bad = sim.copy()
    bad[2, :] = np.nan
    bad[5, 1], bad[6, 3] = np.inf, -np.inf
    for s in (bad, np.full((8, 8), np.nan, np.float32)):
        got = np.asarray(jax.jit(lambda x: alignment.assign(x, solver))(jnp.asarray(s)))
        assert sorted(got.tolist()) == list(range(8))


# ------------------------------------------------------------------- matching: oracles


def _shuffled(name, seed):
    """A model, its params, a batch, its spec, random permutations and the permuted params."""
    m, params, x = _model(name)
    spec = alignment.spec_for(m)
    perms = _random_perms(spec, seed)
    return m, params, x, spec, perms, alignment.permute(spec, perms, params)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_weight_matching_recovers_a_random_permutation(name):
    m, params, _, spec, perms, shuffled = _shuffled(name, 2)
    found, aligned = jax.jit(lambda a, b: alignment.weight_matching(spec, a, b, 2))(params,
                                                                                   shuffled)
    for f, p in zip(found, perms):
        np.testing.assert_array_equal(np.asarray(f), np.asarray(alignment.inverse(p)))
    _assert_trees_equal(aligned, params)
    # The merge of a model with its permuted copy is the model.
    mean = jax.tree.map(lambda a, b: (a + b) / 2, params, aligned)
    _assert_trees_equal(mean, params)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_activation_matching_recovers_a_random_permutation(name):
    m, params, x, spec, perms, shuffled = _shuffled(name, 3)
    found, aligned = jax.jit(lambda a, b, xb: alignment.activation_matching(
        spec, m, a, b, xb))(params, shuffled, x)
    # Units that never fire on the batch (or fire exactly like another) cannot be told
    # apart by their activations: the permutation is exact on every other unit (most of
    # them), and the aligned model is always the same function.
    live_total = 0
    for f, p, acts in zip(found, perms, alignment.activations(spec, m, params, x)):
        # A live unit is identifiable unless another unit fires in the same pattern.
        self_corr = np.asarray(alignment.correlation(acts, acts)) - np.eye(acts.shape[1])
        live = np.asarray(jnp.std(acts, axis=0) > 1e-4) & (np.max(self_corr, axis=1) < 0.999)
        live_total += live.sum()
        np.testing.assert_array_equal(np.asarray(f)[live], np.asarray(alignment.inverse(p))[live])
    assert live_total > 0.7 * sum(p.size for p in spec.perms)
    np.testing.assert_allclose(np.asarray(m.apply({"params": aligned}, x)),
                               np.asarray(m.apply({"params": params}, x)), atol=2e-5, rtol=0)
    if name == "mlp":  # every unit is live on this batch: the model itself comes back
        _assert_trees_equal(aligned, params)


@pytest.mark.parametrize("method", ["weight", "activation"])
def test_aligning_a_model_to_itself_is_the_identity(method):
    m, params, x = _model("lenet5", 4)
    aligner = alignment.make_aligner(m, method, sweeps=2)
    others = jax.tree.map(lambda v: v[None], params)
    out = jax.jit(aligner.align_many)(params, others, x)
    _assert_trees_equal(jax.tree.map(lambda v: v[0], out), params)


def test_weight_matching_of_independent_models_beats_the_identity():
    m, a, _ = _model("mlp", 0)
    _, b, _ = _model("mlp", 1)
    spec = alignment.spec_for(m)
    _, aligned = alignment.weight_matching(spec, a, b, 3)

    def score(x):  # Git Re-Basin's objective: sum of <A, B> over the permuted parameters
        return sum(float(jnp.vdot(x[k]["kernel"], a[k]["kernel"])) for k in a)

    assert score(aligned) > score(b) + 0.1 * abs(score(b))
    assert float(alignment.flat_correlation(a, aligned)) > float(alignment.flat_correlation(a, b))


def test_layers_select_a_subset_and_refuse_unknown_names():
    m, params, _, spec, perms, shuffled = _shuffled("lenet5", 5)
    aligner = alignment.make_aligner(m, "weight", sweeps=2, layers="Dense_0, Dense_1")
    assert aligner.spec.layers == ("Dense_0", "Dense_1")
    out = jax.tree.map(lambda v: v[0], aligner.align_many(
        params, jax.tree.map(lambda v: v[None], shuffled), None))
    # Conv channels stay shuffled, the dense layers are aligned as far as they can be.
    assert not np.array_equal(np.asarray(out["Conv_0"]["kernel"]),
                              np.asarray(params["Conv_0"]["kernel"]))
    with pytest.raises(ValueError, match="no permutable layer.*Dense_9"):
        alignment.make_aligner(m, "weight", layers="Dense_9")
    with pytest.raises(ValueError, match="unknown matching method"):
        alignment.make_aligner(m, "magic")
    with pytest.raises(TypeError, match="no permutation spec"):
        alignment.spec_for(object())


# ------------------------------------------------------------------------------ the rules


def test_buffered_align_aggregate_is_the_mean_of_aligned_held_messages():
    from vanish.algorithms import align

    m, own, _ = _model("mlp", 0)
    spec = alignment.spec_for(m)
    msgs = [alignment.permute(spec, _random_perms(spec, s), _model("mlp", s)[1])
            for s in (1, 2, 3)]
    buf = jax.tree.map(lambda *xs: jnp.stack(xs)[None], *msgs, *msgs[:1])  # [1, C=4, ...]
    aligner = alignment.make_aligner(m, "weight", sweeps=2)
    agg = jax.jit(lambda bf, o: align.align_aggregate(aligner, 8)(
        bf, jnp.asarray([3]), Receiver(o, jnp.asarray([0]), None, None)).model)(
        buf, jax.tree.map(lambda v: v[None], own))
    match = jax.jit(lambda a, b: alignment.weight_matching(spec, a, b, 2)[1])
    want = [match(own, x) for x in msgs]
    mean = jax.tree.map(lambda *xs: sum(xs) / 3, *want)
    _assert_trees_equal(jax.tree.map(lambda v: v[0], agg), mean, atol=1e-6)
    ident = alignment.make_aligner(m, "none")
    reduce = align.align_aggregate(ident, 8)(buf, jnp.asarray([3]),
                                             Receiver(None, None, None, None)).reduce
    v = jnp.asarray([[1.0, 2.0, 6.0, 100.0]])
    np.testing.assert_allclose(np.asarray(reduce(v)), [3.0])  # the 4th slot is not held


def _run(name, ticks=20, **knobs):
    cfg = tiny_config(**{"run.ticks": ticks})
    for k, v in knobs.items():
        cfg.algorithm_args[name][k] = v
    sim = make_sim(cfg, name)
    state = sim.run_ticks(sim.init_state(), 0, ticks)
    return sim, state


@pytest.mark.parametrize("dimat,dpsgd", [
    ("dimat", "dpsgd"), pytest.param("dimat_vc", "dpsgd_vc", marks=pytest.mark.slow)])
def test_dimat_without_alignment_reproduces_dpsgd(dimat, dpsgd):
    _, a = _run(dimat, method="none")
    _, b = _run(dpsgd)
    assert int(np.asarray(a.merges).sum()) == int(np.asarray(b.merges).sum()) > 0
    _assert_trees_equal(a.params, b.params, atol=1e-5)


def test_dimat_vc_keeps_the_variance_of_the_models_it_mixes():
    """One round's mix of independently initialised models, by hand: with the correction
    each node's kernel variance is its W row's mean of the pre-mix variances (an aligned
    model keeps its variance), what NumPy computes from W; without it, lower."""
    sim = make_sim(tiny_config(**{"run.ticks": 2}), "dimat_vc")
    params = sim.init_state().params
    tick = base.Tick(jnp.int32(0), jnp.bool_(True), jnp.bool_(True), jax.random.key(0))
    new, _, merged = sim.algo.end_of_tick(params, None, sim.consts, tick)
    plain, _, _ = make_sim(tiny_config(**{"run.ticks": 2}), "dimat").algo.end_of_tick(
        params, None, sim.consts, tick)
    assert np.asarray(merged).all()
    g = sim.consts.graph
    n = np.asarray(g.self_weight).shape[0]
    w = np.diag(np.asarray(g.self_weight, np.float64))  # W from the padded neighbour lists
    for i in range(n):
        for j, wij in zip(np.asarray(g.nbr)[i], np.asarray(g.nbr_weight)[i]):
            if j < n:
                w[i, j] += wij
    var = lambda t, layer: np.asarray(t[layer]["kernel"], np.float64).reshape(n, -1).var(  # noqa: E731
        axis=1, ddof=1)
    for layer in ("Dense_0", "Dense_1"):
        np.testing.assert_allclose(var(new, layer), w @ var(params, layer), rtol=1e-4)
        assert np.all(var(plain, layer) < 0.8 * var(new, layer))


@pytest.mark.parametrize("name,knobs", [
    pytest.param("gossip_align", dict(sweeps=1, solver="hungarian"),  # in the compiled step
                 marks=pytest.mark.slow),
    pytest.param("gossip_align_vc", dict(sweeps=1), marks=pytest.mark.slow),
    pytest.param("gossip_align", dict(method="activation", batch=16), marks=pytest.mark.slow),
    ("dimat", dict(batch=16))])  # solver auto: SciPy through a callback on the CPU
def test_rules_run_end_to_end(name, knobs):
    sim, state = _run(name, **knobs)
    assert int(np.asarray(state.merges).sum()) > 0
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
    _, metrics = sim.evaluate(state)
    assert 0.0 <= float(metrics["acc_mean"]) <= 1.0


def test_gossip_align_with_no_alignment_is_the_buffered_plain_mean():
    # method none: the buffered mean of the held messages equals gossip's accumulated mean.
    _, a = _run("gossip_align", method="none")
    _, b = _run("gossip")
    assert int(np.asarray(a.merges).sum()) == int(np.asarray(b.merges).sum()) > 0
    _assert_trees_equal(a.params, b.params, atol=1e-5)


def test_rules_are_listed_with_their_knobs_and_count_full_models():
    listing = build.listing()
    for name in ALIGN_RULES:
        assert name in listing
        knobs = algorithms.REGISTRY[name].knobs
        assert {"method", "sweeps", "batch", "layers", "solver"} <= set(knobs)
    assert algorithms.REGISTRY["dimat"].knobs["method"].default == "activation"
    algo = algorithms.make("dimat", model=models.make_model("mlp"))
    assert algo.wire.sends is False and algo.wire.rounds is not None
    assert algorithms.make("gossip_align", model=models.make_model("mlp")).wire is None
    assert base.FULL_MODEL.sizes({"w": jnp.zeros((3, 4))}, None) == (48,)


@pytest.mark.parametrize("field,value,match", [
    ("method", "magic", "method"), ("sweeps", 0, "sweeps"), ("batch", 0, "batch"),
    ("solver", "lp", "solver"), ("layers", "Dense 0", "layers")])
def test_bad_knobs_are_refused_in_one_line(field, value, match):
    cfg = tiny_config()
    cfg.algorithms = "gossip_align"
    cfg.algorithm_args.gossip_align[field] = value
    with pytest.raises(Exception, match=match) as err:
        build.experiment(cfg)
    assert "\n" not in str(err.value)
