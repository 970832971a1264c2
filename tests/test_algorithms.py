"""Aggregation rules: FL client sampling, message masks, optimizer reset on merge."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vanish import config, data
from vanish.algorithms import fedavg, partitioned
from vanish.simulation import Simulation


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
    cfg.dataset, cfg.model, cfg.batch_size = "synthetic", "mlp", 8
    cfg.synthetic_train, cfg.synthetic_test, cfg.test_per_class = 600, 200, 5
    cfg.num_nodes, cfg.topology, cfg.ticks = 4, "complete", 5
    cfg.reset_opt_on_merge = reset
    ds = data.load("synthetic", num_train=600, num_test=200)
    sim = Simulation(cfg, "gossip", ds)
    state = sim.run_ticks(sim.init_state(), 0, 1)  # all train at tick 0, send, and merge
    assert np.all(np.asarray(state.merges) == 1)
    return jax.tree.leaves(state.opt_state)


def test_optimizer_state_is_kept_across_merges_unless_reset():
    kept = _opt_after_tick0(False)
    reset = _opt_after_tick0(True)
    momentum_kept = [x for x in kept if x.ndim >= 2]
    momentum_reset = [x for x in reset if x.ndim >= 2]
    assert any(np.abs(np.asarray(x)).max() > 0 for x in momentum_kept)
    assert all(np.abs(np.asarray(x)).max() == 0 for x in momentum_reset)
