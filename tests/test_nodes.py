"""Stacked nodes: the vectorized step equals a per-node loop; conv implementations agree."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vanish import models, nodes


def _batch(n, b=8, shape=(28, 28, 1), seed=1):
    kx, ky = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(kx, (n, b, *shape)), jax.random.randint(ky, (n, b), 0, 10)


@pytest.mark.parametrize("name", ["mlp", "lenet5",
                                  pytest.param("caffe_lenet", marks=pytest.mark.slow)])
def test_vectorized_step_equals_per_node_loop(name):
    model = models.make_model(name, conv_impl="banded")
    tx = nodes.make_optimizer(lr=0.05, momentum=0.9)
    params_N = nodes.init_params(model, jax.random.PRNGKey(0), 3, (28, 28, 1))
    opt_N = nodes.init_opt_state(tx, params_N)
    x, y = _batch(3)
    step = jax.jit(nodes.make_train_step(model, tx))
    for _ in range(2):  # two steps, so momentum is exercised
        vec = step(params_N, opt_N, x, y)
        params_N, opt_N = vec.params, vec.opt_state
    # Reference: a plain loop of single-node steps with the xla convolution.
    ref_model = models.make_model(name, conv_impl="xla")
    one = jax.jit(nodes.make_train_step(ref_model, tx))
    p0 = nodes.init_params(model, jax.random.PRNGKey(0), 3, (28, 28, 1))
    for i in range(3):
        p = jax.tree.map(lambda a, i=i: a[i : i + 1], p0)
        o = nodes.init_opt_state(tx, p)
        for _ in range(2):
            r = one(p, o, x[i : i + 1], y[i : i + 1])
            p, o = r.params, r.opt_state
        for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(params_N)):
            np.testing.assert_allclose(a[0], b[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.loss[0], vec.loss[i], rtol=1e-5)


@pytest.mark.parametrize("block", [None, 1, 2, 3, 4, 9, 100])
@pytest.mark.parametrize("kernel_shape", [(5, 5, 1, 6), (5, 3, 3, 7), (3, 3, 4, 2)])
def test_conv_banded_equals_lax_conv(block, kernel_shape):
    kx, kk = jax.random.split(jax.random.PRNGKey(3))
    x = jax.random.normal(kx, (4, 12, 11, kernel_shape[2]))
    k = jax.random.normal(kk, kernel_shape)
    np.testing.assert_allclose(
        models.conv_banded(x, k, block), models.conv_xla(x, k), rtol=1e-5, atol=1e-5)
    # And its gradient with respect to the kernel and the input.
    g1 = jax.grad(lambda k, x: jnp.sum(jnp.sin(models.conv_banded(x, k, block))), (0, 1))(k, x)
    g2 = jax.grad(lambda k, x: jnp.sum(jnp.sin(models.conv_xla(x, k))), (0, 1))(k, x)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_gossip_init_independent_fl_init_shared():
    model = models.make_model("lenet5")
    indep = nodes.init_params(model, jax.random.PRNGKey(0), 4, (28, 28, 1))
    shared = nodes.init_params(model, jax.random.PRNGKey(0), 4, (28, 28, 1), shared=True)
    k_indep = indep["Dense_0"]["kernel"]
    k_shared = shared["Dense_0"]["kernel"]
    assert not np.allclose(k_indep[0], k_indep[1])
    np.testing.assert_array_equal(k_shared[0], k_shared[3])
    # Glorot-uniform kernels, zero biases by default.
    fan_in, fan_out = k_indep.shape[1:]
    np.testing.assert_allclose(np.var(k_indep[0]), 2.0 / (fan_in + fan_out), rtol=0.05)
    assert np.all(indep["Dense_0"]["bias"] == 0)


def test_eval_step_matches_loop():
    model = models.make_model("lenet5")
    params_N = nodes.init_params(model, jax.random.PRNGKey(0), 3, (28, 28, 1))
    x, y = _batch(1, b=20)
    acc_N, loss_N = jax.jit(nodes.make_eval_step(model))(params_N, x[0], y[0])
    for i in range(3):
        p = jax.tree.map(lambda a, i=i: a[i], params_N)
        loss, acc = nodes.loss_and_accuracy(model, p, x[0], y[0])
        np.testing.assert_allclose(loss_N[i], loss, rtol=1e-5)
        np.testing.assert_allclose(acc_N[i], acc)


def test_train_step_does_not_retrace():
    model = models.make_model("mlp")
    tx = nodes.make_optimizer()
    params_N = nodes.init_params(model, jax.random.PRNGKey(0), 4, (28, 28, 1))
    opt_N = nodes.init_opt_state(tx, params_N)
    raw = nodes.make_train_step(model, tx)
    step = jax.jit(chex.assert_max_traces(lambda *a: raw(*a), n=1))
    x, y = _batch(4)
    out = step(params_N, opt_N, x, y)
    out = step(out.params, out.opt_state, x + 1.0, y)  # new values, same shapes: no retrace
    assert np.isfinite(np.asarray(out.loss)).all()


def test_inv_schedule_is_counted_per_node():
    sched = nodes.inv_schedule(0.01)
    np.testing.assert_allclose(sched(0), 0.01)
    np.testing.assert_allclose(sched(10000), 0.01 * 2.0 ** -0.75, rtol=1e-6)


def test_tree_put_drops_padding_even_on_duplicate_index():
    tree = {"w": jnp.zeros((4, 2))}
    new = {"w": jnp.stack([jnp.ones(2), 2 * jnp.ones(2)])}
    out = nodes.tree_put(tree, jnp.array([1, 1]), new, jnp.array([True, False]))
    np.testing.assert_array_equal(out["w"][1], [1, 1])
    np.testing.assert_array_equal(np.asarray(out["w"])[[0, 2, 3]], 0)


def test_bad_names_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        models.make_model("resnet")
    with pytest.raises(ValueError, match="unknown conv_impl"):
        models.make_model("lenet5", conv_impl="fft")
    with pytest.raises(ValueError, match="unknown optimizer"):
        nodes.make_optimizer("lbfgs")
    with pytest.raises(ValueError, match="unknown initializer"):
        models.make_model("mlp", init="ones")
