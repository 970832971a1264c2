"""Aggregation rules: FL client sampling, message masks, optimizer reset on merge."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import make_sim, small_config
from vanish import config, data
from vanish.algorithms import fedavg, partitioned


@pytest.mark.parametrize("fraction,expected", [(1.0, 8), (0.5, 4), (0.3, 2), (0.01, 1)])
def test_client_weights_sample_round_fraction_of_clients_never_the_server(fraction, expected):
    is_client = jnp.array([False] + [True] * 8)
    seen = np.zeros(9)
    for r in range(40):
        w = np.asarray(fedavg.client_weights(jax.random.PRNGKey(r), is_client, fraction))
        assert w.sum() == expected and w[0] == 0 and set(np.unique(w)) <= {0.0, 1.0}
        seen += w
    if expected < 8:  # different rounds pick different clients, all of them eventually
        assert np.all(seen[1:] > 0) and seen[1:].std() > 0


def test_fedavg_round_is_the_mean_of_the_sampled_clients():
    params = {"w": jnp.arange(12.0).reshape(4, 3)}
    weight = jnp.array([0.0, 1.0, 0.0, 1.0])
    out = fedavg.fedavg_round(params, weight)
    np.testing.assert_allclose(out["w"], np.tile((params["w"][1] + params["w"][3]) / 2, (4, 1)))


def test_subsampled_messages_carry_the_requested_fraction_with_fresh_masks():
    part_ids = {"k": jnp.zeros((100, 50), jnp.int8)}
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    masks = np.asarray(partitioned.message_masks(part_ids, jnp.arange(3), keys, 4, 0.3)["k"])
    assert masks.shape == (3, 100, 50)
    np.testing.assert_allclose(masks.mean(axis=(1, 2)), 0.3, atol=0.02)
    assert not np.array_equal(masks[0], masks[1])


def test_partition_masks_round_robin_cover_every_coordinate_once():
    ids = partitioned.partition_ids({"k": jnp.zeros((1, 40, 30))}, 4, seed=0)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    masks = np.asarray(partitioned.message_masks(ids, jnp.arange(4), keys, 4, 0.0)["k"])
    np.testing.assert_array_equal(masks.sum(0), 1.0)  # events 0..3 carry disjoint partitions
    assert np.all(masks.mean(axis=(1, 2)) > 0.15)


def _opt_after_tick0(reset: bool):
    cfg = config.default_config()
    cfg.data.name, cfg.model.name, cfg.optim.batch_size = "synthetic", "mlp", 8
    cfg.dataset_args.synthetic.num_train = 600
    cfg.dataset_args.synthetic.num_test = 200
    cfg.data.test_per_class = 5
    cfg.topology.num_nodes, cfg.topology.name, cfg.run.ticks = 4, "complete", 5
    cfg.optim.reset_on_merge = reset
    ds = data.load("synthetic", num_train=600, num_test=200)
    sim = make_sim(cfg, "gossip", ds)
    state = sim.run_ticks(sim.init_state(), 0, 1)  # all train at tick 0, send, and merge
    assert np.all(np.asarray(state.merges) == 1)
    return jax.tree.leaves(state.opt_state)


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_optimizer_state_is_kept_across_merges_unless_reset():
    kept = _opt_after_tick0(False)
    reset = _opt_after_tick0(True)
    momentum_kept = [x for x in kept if x.ndim >= 2]
    momentum_reset = [x for x in reset if x.ndim >= 2]
    assert any(np.abs(np.asarray(x)).max() > 0 for x in momentum_kept)
    assert all(np.abs(np.asarray(x)).max() == 0 for x in momentum_reset)


# --------------------------------------------------- registry contract, trimmed mean, guards

from jax_cache import compile_cache  # noqa: E402
from vanish import algorithms, build  # noqa: E402
from vanish.algorithms import base, trimmed_mean  # noqa: E402


_tiny_cfg = small_config  # tests/helpers.py


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    with compile_cache(tmp_path_factory.getbasetemp() / "jax_cache_algorithms"):
        yield data.load("synthetic", num_train=400, num_test=100, seed=0)


# The _vc twins of the compressed and robust rules (same machinery as their plain form, which
# runs in the default suite) run with -m slow: the default suite's time.
_TWINS = {"gossip_q8_vc", "gossip_topk_vc", "gossip_median_vc", "gossip_trim_vc",
          "gossip_krum_vc", "gossip_flag_vc", "dimat_vc"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _TWINS else n
                                  for n in algorithms.NAMES])
def test_every_registered_algorithm_runs_without_host_transfers_or_recompiles(name, tiny_data):
    cfg = _tiny_cfg()
    if "subspace" in algorithms.REGISTRY[name].knobs:  # the Flag rules: a node holds <= 5 here
        cfg.algorithm_args[name].subspace = 2
    if "K" in algorithms.REGISTRY[name].knobs:  # FedBuff: a buffer of at most the 6 clients
        cfg.algorithm_args[name].K = 3
    sim = make_sim(cfg, name, tiny_data)
    assert isinstance(sim.algo, base.Algorithm) and sim.algo.name == name
    state = sim.run_ticks(sim.init_state(), 0, 10)
    state, m = sim.evaluate(state)
    assert np.isfinite(m["loss_mean"]) and np.isfinite(m["global_acc"])
    assert m["training_events"] > 0
    if name != "single":
        assert m["averaging_events"] > 0, name
    cache = sim.engine._step._cache_size()
    # The work plan lives on the device: running ticks moves nothing host -> device implicitly.
    with jax.transfer_guard("disallow"):
        state = sim.run_ticks(state, 10, 20)
        jax.block_until_ready(state)
    assert sim.engine._step._cache_size() == cache
    assert int(state.tick) == 20


def test_trimmed_mean_equals_numpy_on_explicit_buffers():
    rng = np.random.default_rng(0)
    buf = rng.normal(size=(4, 7, 3, 2)).astype(np.float32)  # 4 nodes, capacity 7
    count = np.array([7, 5, 1, 3])
    got = np.asarray(trimmed_mean.trimmed_mean(jnp.asarray(buf), jnp.asarray(count), 0.2))
    for i, m in enumerate(count):
        t = int(np.floor(0.2 * m))
        vals = np.sort(buf[i, :m], axis=0)
        np.testing.assert_allclose(got[i], vals[t:m - t].mean(0), rtol=1e-6, atol=1e-6)


def test_trimmed_mean_inbox_holds_exactly_the_sent_models(tiny_data):
    sim = make_sim(_tiny_cfg(ticks=1, first_tick="0"), "gossip_trim", tiny_data)
    state = sim.init_state()
    sent_params = jax.tree.map(lambda x: x + 1.0, state.params)  # any distinct models
    k = sim.n
    sent = base.Sent(sent_params, jnp.arange(k, dtype=jnp.int32), jnp.ones(k, bool),
                     jax.random.split(jax.random.PRNGKey(0), k), jnp.zeros(k, jnp.int32))
    inbox = sim.algo.emit(state.inbox, sent, sim.consts)
    snd, rcv = np.asarray(sim.topo.senders), np.asarray(sim.topo.receivers)
    leaf = np.asarray(jax.tree.leaves(inbox.buf)[0])
    src = np.asarray(jax.tree.leaves(sent_params)[0])
    np.testing.assert_array_equal(np.asarray(inbox.count), np.bincount(rcv, minlength=k))
    for r in range(k):
        held = sorted(tuple(leaf[r, j].ravel()[:4]) for j in range(int(inbox.count[r])))
        want = sorted(tuple(src[s].ravel()[:4]) for s in snd[rcv == r])
        assert held == want, r


def test_trimmed_mean_rule_is_one_file_plus_one_registry_line():
    assert algorithms.factory("gossip_trim") is trimmed_mean.make
    assert algorithms.REGISTRY["gossip_trim"].factory == "trimmed_mean:make"  # its file
    assert "gossip_trim" in config.default_config().algorithm_args  # its knobs: a section
    algo = algorithms.make("gossip_trim_vc", fraction=0.1)
    assert algo.name == "gossip_trim_vc" and algo.caps.message_buffers and algo.caps.corrected


def test_every_registry_line_declares_the_knobs_its_factory_takes():
    import inspect

    for name, entry in algorithms.REGISTRY.items():
        params = inspect.signature(algorithms.factory(name)).parameters
        for knob, spec in entry.knobs.items():
            assert knob in params, (name, knob)
            assert params[knob].default == spec.default, (name, knob)  # one default
        assert set(entry.fixed) <= set(params), name


def test_reference_mode_corrects_biases_like_dfl_torch():
    def correction(cfg):
        return build.experiment(cfg, dataset=data.load("synthetic", num_train=400,
                                                       num_test=100)).correction

    corr = correction(_tiny_cfg(vc_reference=True))
    assert (corr.ddof, corr.eps, corr.correct_biases) == (1, 1e-4, True)
    assert not correction(_tiny_cfg()).correct_biases
    assert correction(_tiny_cfg(correct_biases=True)).correct_biases
    from vanish import variance

    m = variance.correctable_mask({"Dense_0": {"kernel": jnp.zeros((1, 4, 3)),
                                               "bias": jnp.zeros((1, 3))}}, corr, stacked=True)
    assert m == {"Dense_0": {"kernel": True, "bias": True}}


def test_classic_gossip_merges_each_arrival_weighted_by_age_as_numpy():
    """3 nodes; node 0 (age 2 after this event) and node 1 (age 1) send, both to node 2 (age
    4, never trained here): node 2 becomes (4 x2 + 2 x0 + 1 x1) / 7, age max(4, 2) = 4; the
    senders' own models and ages are theirs. Equal weights: the plain mean of the three."""
    from vanish.topology import complete

    rng = np.random.default_rng(0)
    params = {"Dense_0": {"kernel": jnp.asarray(rng.normal(size=(3, 4, 2)), jnp.float32)}}
    graph = complete(3).device_graph()
    consts = base.Consts(graph=graph, x_train=None, y_train=None, part=None,
                         threshold=jnp.full(3, 5, jnp.int32), beta=jnp.float32(0.5),
                         is_client=jnp.ones(3, bool), round_ticks=jnp.int32(1), part_ids=None)
    tick = base.Tick(tick=jnp.int32(0), last=jnp.bool_(True), round_end=jnp.bool_(False),
                     key=jax.random.PRNGKey(0))
    sent = base.Sent(params=jax.tree.map(lambda x: x[:2], params),
                     node=jnp.array([0, 1], jnp.int32), send=jnp.ones(2, bool),
                     key=jax.random.split(jax.random.PRNGKey(1), 2),
                     event_ord=jnp.zeros(2, jnp.int32),
                     dest=jnp.array([[2, 3], [3, 2]], jnp.int32))  # 3 = N: no delivery
    x = np.asarray(params["Dense_0"]["kernel"])
    for weighted, want in ((True, (4 * x[2] + 2 * x[0] + 1 * x[1]) / 7),
                           (False, (x[0] + x[1] + x[2]) / 3)):
        algo = algorithms.make("gossip_classic", age_weighted=weighted, merge_slots=2)
        inbox = algo.init(params)._replace(age=jnp.array([1.0, 0.0, 4.0]))
        inbox = algo.emit(inbox, sent, consts)
        np.testing.assert_array_equal(np.asarray(inbox.count), [0, 0, 2])
        out, inbox, merged = algo.end_of_tick(params, inbox, consts, tick)
        np.testing.assert_array_equal(np.asarray(merged), [False, False, True])
        got = np.asarray(out["Dense_0"]["kernel"])
        np.testing.assert_allclose(got[2], want, rtol=1e-6)
        np.testing.assert_array_equal(got[:2], x[:2])
        np.testing.assert_array_equal(np.asarray(inbox.age), [2.0, 1.0, 4.0])
        assert int(inbox.count.sum()) == 0 and float(inbox.weight.sum()) == 0.0


def test_classic_gossip_sends_each_message_to_one_neighbour_uniformly():
    from vanish.algorithms import classic
    from vanish.topology import random_regular

    graph = random_regular(16, 4, seed=0).device_graph()
    k = 4000
    sent = base.Sent(params=None, node=jnp.zeros(k, jnp.int32), send=jnp.ones(k, bool),
                     key=jax.random.split(jax.random.PRNGKey(2), k),
                     event_ord=jnp.zeros(k, jnp.int32))
    dest = np.asarray(classic.one_peer(sent, graph))[:, 0]
    nbrs = np.asarray(graph.out_nbr[0])[np.asarray(graph.out_valid[0])]
    assert set(dest) == set(nbrs.tolist())  # only neighbours, each of them
    counts = np.bincount(dest, minlength=16)[nbrs]
    assert np.all(np.abs(counts / k - 0.25) < 0.03), counts  # uniform over the 4
