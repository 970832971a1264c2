"""Flax models for the experiments, with a convolution that batches well across nodes.

    model = models.make_model("lenet5", num_classes=10, conv_impl="auto")
    params = model.init(key, jnp.zeros((1, 28, 28, 1)))["params"]

A plain `jax.vmap` of `lax.conv` over stacked nodes becomes a grouped convolution, which
XLA:CPU runs 2-4x slower than a loop of single-node convolutions (see BENCHMARKS.md). The
`Conv` here keeps flax's parameter layout (HWIO kernel, bias) but can compute the
convolution as explicit patches + one matmul ("patches"), which vmaps into a batched matmul.
Both implementations compute the same function; which one runs is a per-backend choice
(`conv_impl="auto"`), so checkpoints and results are interchangeable across backends up to
float rounding.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Initializer = Callable[..., jax.Array]

INITIALIZERS: dict[str, Initializer] = {
    "glorot_uniform": nn.initializers.glorot_uniform(),
    "glorot_normal": nn.initializers.glorot_normal(),
    "he_uniform": nn.initializers.he_uniform(),
    "he_normal": nn.initializers.he_normal(),
    "lecun_normal": nn.initializers.lecun_normal(),
    "lecun_uniform": nn.initializers.lecun_uniform(),
}

CONV_IMPLS = ("xla", "patches")


def default_conv_impl(backend: str | None = None) -> str:
    """The convolution implementation that is fastest when vmapped over nodes on `backend`.

    Measured (scripts/bench_kernels.py): on XLA:CPU the vmapped grouped convolution is the
    slowest formulation, the channels-first patches + batched matmul the fastest; on GPU the
    grouped convolution maps to cuDNN and wins.
    """
    backend = backend or jax.default_backend()
    return "patches" if backend == "cpu" else "xla"


def get_initializer(name: str) -> Initializer:
    try:
        return INITIALIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown initializer {name!r}; choose one of {sorted(INITIALIZERS)}"
        ) from None


def conv_patches(x_BHWC: jax.Array, kernel_HWIO: jax.Array) -> jax.Array:
    """VALID, stride-1 convolution as channels-first patches and one matmul.

    The patches are stacked on a leading axis of a channels-first copy of the input, so
    every copy moves whole image rows (W contiguous floats) instead of C floats; under
    `vmap` the matmul becomes a batched matmul with the node axis as its batch dimension.
    """
    kh, kw, cin, cout = kernel_HWIO.shape
    b, h, w, _ = x_BHWC.shape
    ho, wo = h - kh + 1, w - kw + 1
    x_CBHW = jnp.transpose(x_BHWC, (3, 0, 1, 2))
    patches = jnp.stack(
        [x_CBHW[:, :, i : i + ho, j : j + wo] for i in range(kh) for j in range(kw)], axis=0
    )  # [kh*kw, C, B, Ho, Wo]: row order (i, j, c) matches the HWIO kernel's reshape
    patches_KR = patches.reshape(kh * kw * cin, b * ho * wo)
    out_OR = jnp.einsum("ko,kr->or", kernel_HWIO.reshape(kh * kw * cin, cout), patches_KR)
    return jnp.transpose(out_OR.reshape(cout, b, ho, wo), (1, 2, 3, 0))


def conv_xla(x_BHWC: jax.Array, kernel_HWIO: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(
        x_BHWC, kernel_HWIO, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


class Conv(nn.Module):
    """Stride-1 2-D convolution with flax's parameter names and a selectable implementation."""

    features: int
    kernel_size: tuple[int, int] = (5, 5)
    padding: int = 0
    impl: str = "xla"
    kernel_init: Initializer = nn.initializers.glorot_uniform()
    bias_init: Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.impl not in CONV_IMPLS:
            raise ValueError(f"unknown conv impl {self.impl!r}; choose one of {CONV_IMPLS}")
        kernel = self.param(
            "kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features)
        )
        bias = self.param("bias", self.bias_init, (self.features,))
        if self.padding:
            p = self.padding
            x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        conv = conv_patches if self.impl == "patches" else conv_xla
        return conv(x, kernel) + bias


def max_pool_2x2(x: jax.Array) -> jax.Array:
    # A reshape-max is exact for even sizes and vmaps to plain reductions (no reduce_window).
    b, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class MLP(nn.Module):
    """Multi-layer perceptron on flattened inputs (default 784-128-64-10 on MNIST)."""

    hidden: Sequence[int] = (128, 64)
    num_classes: int = 10
    kernel_init: Initializer = nn.initializers.glorot_uniform()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width, kernel_init=self.kernel_init)(x))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init)(x)


class LeNet5(nn.Module):
    """PyTorch-style LeNet-5: conv 6@5x5 pad 2, pool, conv 16@5x5, pool, dense 120-84-classes."""

    num_classes: int = 10
    conv_impl: str = "xla"
    kernel_init: Initializer = nn.initializers.glorot_uniform()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = dict(impl=self.conv_impl, kernel_init=self.kernel_init)
        x = max_pool_2x2(nn.relu(Conv(6, padding=2, **conv)(x)))
        x = max_pool_2x2(nn.relu(Conv(16, **conv)(x)))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(120, kernel_init=self.kernel_init)(x))
        x = nn.relu(nn.Dense(84, kernel_init=self.kernel_init)(x))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init)(x)


class CaffeLeNet(nn.Module):
    """The Caffe LeNet: conv 20@5x5, pool, conv 50@5x5, pool, dense 500, classes."""

    num_classes: int = 10
    conv_impl: str = "xla"
    kernel_init: Initializer = nn.initializers.glorot_uniform()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = dict(impl=self.conv_impl, kernel_init=self.kernel_init)
        x = max_pool_2x2(Conv(20, **conv)(x))
        x = max_pool_2x2(Conv(50, **conv)(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(500, kernel_init=self.kernel_init)(x))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init)(x)


class CifarCNN(nn.Module):
    """Small CIFAR-10 CNN: conv 32, pool, conv 64, pool, conv 64, dense 64, classes."""

    num_classes: int = 10
    conv_impl: str = "xla"
    kernel_init: Initializer = nn.initializers.glorot_uniform()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = dict(impl=self.conv_impl, kernel_init=self.kernel_init, kernel_size=(3, 3))
        x = max_pool_2x2(nn.relu(Conv(32, padding=1, **conv)(x)))
        x = max_pool_2x2(nn.relu(Conv(64, padding=1, **conv)(x)))
        x = nn.relu(Conv(64, padding=1, **conv)(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(64, kernel_init=self.kernel_init)(x))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init)(x)


MODELS: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "lenet5": LeNet5,
    "caffe_lenet": CaffeLeNet,
    "cifar_cnn": CifarCNN,
}


def make_model(
    name: str,
    *,
    num_classes: int = 10,
    conv_impl: str = "auto",
    init: str = "glorot_uniform",
    **kwargs: Any,
) -> nn.Module:
    """Builds a model by name; `conv_impl="auto"` picks the fastest per backend."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    cls = MODELS[name]
    kwargs = dict(num_classes=num_classes, kernel_init=get_initializer(init), **kwargs)
    if cls is not MLP:
        impl = default_conv_impl() if conv_impl == "auto" else conv_impl
        if impl not in CONV_IMPLS:
            raise ValueError(f"unknown conv_impl {conv_impl!r}; choose 'auto' or one of {CONV_IMPLS}")
        kwargs["conv_impl"] = impl
    return cls(**kwargs)
