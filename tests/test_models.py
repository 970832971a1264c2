"""models.Conv's fused order (conv -> 2x2 pool -> bias -> ReLU) is the textbook function
(conv + bias -> ReLU -> pool): the same forward values exactly, the same gradients, also on
tied windows (blank image regions, where jnp.max splits the gradient evenly)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vanish import models


def _textbook(params, x, impl, relu):
    """conv + bias, ReLU, 2x2 max pool: the order of the papers and of PyTorch's LeNet-5."""
    conv = models.conv_banded if impl == "banded" else models.conv_xla
    z = conv(jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))), params["kernel"]) + params["bias"]
    z = jax.nn.relu(z) if relu else z
    return models.max_pool_2x2(z)


@pytest.mark.parametrize("impl", models.CONV_IMPLS)
@pytest.mark.parametrize("relu", [True, False])
def test_fused_conv_pool_bias_relu_is_the_textbook_function(impl, relu):
    kx, kk, kb = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (3, 12, 12, 2))
    x = x.at[0, :8, :8].set(0.0)  # a blank region: every window there is a 4-way tie
    x = x.at[1, :, :6].set(0.25)  # a constant region: ties at a nonzero value
    conv = models.Conv(4, (5, 5), padding=2, impl=impl)
    params = conv.init(kk, x, pool=True, relu=relu)["params"]
    params["bias"] = jax.random.normal(kb, (4,))  # nonzero: ReLU passes the tied windows

    def fused(p, x):
        return conv.apply({"params": p}, x, pool=True, relu=relu)

    got, want = fused(params, x), _textbook(params, x, impl, relu)
    np.testing.assert_array_equal(got, want)  # max(z) + b == max(z + b): exact, not close
    g = jax.random.normal(jax.random.PRNGKey(5), want.shape)
    d_got = jax.grad(lambda p, x: jnp.sum(fused(p, x) * g), (0, 1))(params, x)
    d_want = jax.grad(lambda p, x: jnp.sum(_textbook(p, x, impl, relu) * g), (0, 1))(params, x)
    for a, b in zip(jax.tree.leaves(d_got), jax.tree.leaves(d_want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_lenet5_parameter_layout_is_unchanged():
    model = models.make_model("lenet5", conv_impl="xla")
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]
    shapes = jax.tree.map(lambda a: a.shape, params)
    assert shapes == {
        "Conv_0": {"kernel": (5, 5, 1, 6), "bias": (6,)},
        "Conv_1": {"kernel": (5, 5, 6, 16), "bias": (16,)},
        "Dense_0": {"kernel": (400, 120), "bias": (120,)},
        "Dense_1": {"kernel": (120, 84), "bias": (84,)},
        "Dense_2": {"kernel": (84, 10), "bias": (10,)},
    }
