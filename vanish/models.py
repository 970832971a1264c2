"""Flax models for the experiments, with a convolution that batches well across nodes.

    model = models.make_model("lenet5", num_classes=10, conv_impl="auto")
    params = model.init(key, jnp.zeros((1, 28, 28, 1)))["params"]

A plain `jax.vmap` of `lax.conv` over stacked nodes becomes a grouped convolution, which
XLA:CPU runs 2-4x slower than a loop of single-node convolutions (see BENCHMARKS.md). The
`Conv` here keeps flax's parameter layout (HWIO kernel, bias) but can compute the
convolution as one matmul against a banded matrix built from the kernel ("banded"), which
vmaps into a batched matmul.
Both implementations compute the same function; which one runs is a per-backend choice
(`conv_impl="auto"`), so checkpoints and results are interchangeable across backends up to
float rounding.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from vanish import registry

Initializer = Callable[..., jax.Array]

# Kernel initializers (vanish/registry.py's shape): factory = the flax initializer.
INITIALIZERS: dict[str, registry.Component] = {
    name: registry.Component(getattr(nn.initializers, name)(), f"flax's {name}")
    for name in ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal",
                 "lecun_uniform")
}

CONV_IMPLS = ("xla", "banded")


def default_conv_impl(backend: str | None = None) -> str:
    """The convolution implementation that is fastest when vmapped over nodes on `backend`.

    Measured (scripts/bench_kernels.py, BENCHMARKS.md): on XLA:CPU the vmapped grouped
    convolution is the slowest formulation and the banded matmul the fastest; on GPU the
    grouped convolution maps to cuDNN.
    """
    backend = backend or jax.default_backend()
    return "banded" if backend == "cpu" else "xla"


def get_initializer(name: str) -> Initializer:
    """The flax initializer named `name` (a key of INITIALIZERS); ValueError if unknown."""
    try:
        return INITIALIZERS[name].factory
    except KeyError:
        raise ValueError(
            f"unknown initializer {name!r}; choose one of {sorted(INITIALIZERS)}"
        ) from None


def banded_block(out_width: int, features: int, target: int = 96) -> int:
    """Output-column block width q of `conv_banded`: blocks wide enough that the matmul's
    output dimension q * features is about `target` (efficient), narrow enough that little
    of the band is zeros (the matmul does (q + kw - 1) / kw times the useful work)."""
    blocks = max(1, round(out_width * features / target))
    return -(-out_width // blocks)


def conv_banded(x_BHWC: jax.Array, kernel_HWIO: jax.Array, block: int | None = None) -> jax.Array:
    """VALID, stride-1 convolution as ONE matmul against a banded matrix built from the kernel.

    Output columns are cut into blocks of q; every block sees an input window of
    q + kw - 1 columns on kh consecutive rows, and the same banded matrix
    T[(i, p, c), (j, o)] = kernel[i, p - j, c, o] (zero outside the band) maps any window to its
    q output columns. So the convolution is rows_[B*Ho*blocks, kh*win*C] @ T: a well-shaped
    matmul (a batched matmul under `vmap`) instead of a grouped convolution, and its input
    is built from kh*blocks contiguous slices instead of kh*kw*C im2col copies. q = 1 is
    im2col; q = Wo is one full Toeplitz band. Gradients flow through T to the kernel.
    """
    kh, kw, cin, cout = kernel_HWIO.shape
    b, h, w, _ = x_BHWC.shape
    ho, wo = h - kh + 1, w - kw + 1
    q = banded_block(wo, cout) if block is None else max(1, min(block, wo))
    blocks = -(-wo // q)
    win = q + kw - 1
    need = (blocks - 1) * q + win
    if need > w:  # the last block reads past the edge; its extra outputs are cut below
        x_BHWC = jnp.pad(x_BHWC, ((0, 0), (0, 0), (0, need - w), (0, 0)))
    band = (np.arange(win)[:, None, None] - np.arange(q)[None, :, None]
            == np.arange(kw)[None, None, :]).astype(np.float32)  # [win, q, kw] constant
    t = jnp.einsum("pqj,ijco->ipcqo", band, kernel_HWIO).reshape(kh * win * cin, q * cout)
    # One stack of the blocks*kh windows (s major, i minor): [B, Ho, blocks*kh, win, C] is
    # the row layout [(b, h, s), (i, p, c)] of the matmul, built in one copy.
    cols = jnp.stack([x_BHWC[:, i : i + ho, s * q : s * q + win]
                      for s in range(blocks) for i in range(kh)], axis=2)
    out = cols.reshape(b * ho * blocks, kh * win * cin) @ t
    return out.reshape(b, ho, blocks * q, cout)[:, :, :wo]


def conv_xla(x_BHWC: jax.Array, kernel_HWIO: jax.Array) -> jax.Array:
    """VALID, stride-1 convolution by `lax.conv_general_dilated`.

    Args:
      x_BHWC: [B, H, W, C] input.
      kernel_HWIO: [kh, kw, C, O] kernel.
    Returns:
      [B, H - kh + 1, W - kw + 1, O].
    """
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
    def __call__(self, x: jax.Array, *, pool: bool = False, relu: bool = False) -> jax.Array:
        """conv(x) + bias, then optionally `relu` and a 2x2 max `pool`, in the cheap order.

        The pool runs first, on the raw convolution, and the bias and the ReLU on the 4x
        smaller pooled map. The same function: max(z_i) + b == max(z_i + b) and
        relu(max(z_i)) == max(relu(z_i)) exactly in floating point (rounding is monotone),
        and the gradients agree (ties aside, where both split evenly); only the bias
        gradient's summation order changes.
        """
        if self.impl not in CONV_IMPLS:
            raise ValueError(f"unknown conv impl {self.impl!r}; choose one of {CONV_IMPLS}")
        kernel = self.param(
            "kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features)
        )
        bias = self.param("bias", self.bias_init, (self.features,))
        if self.padding:
            p = self.padding
            x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        conv = conv_banded if self.impl == "banded" else conv_xla
        z = conv(x, kernel)
        z = max_pool_2x2(z) + bias if pool else z + bias
        return nn.relu(z) if relu else z


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pool with stride 2: [B, H, W, C] -> [B, H // 2, W // 2, C].

    An odd last row or column is dropped.
    """
    # A reshape-max is exact for even sizes and vmaps to plain reductions (no reduce_window).
    # (A custom VJP on the four strided corners measured 20% slower per step: not kept.)
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


class ConvLayer(NamedTuple):
    """One convolution of a ConvNet: features, square kernel size, padding, ReLU, pool."""

    features: int
    kernel: int
    padding: int = 0
    relu: bool = True
    pool: bool = True  # 2x2 max pool after the (activated) convolution


class ConvNet(nn.Module):
    """Convolutions (each optionally ReLU + 2x2 max pool), flatten, ReLU dense layers, logits.

    Parameter names are flax's defaults (Conv_0.., Dense_0..), so every architecture below
    has the same layout whatever `conv_impl` computes its convolutions.
    """

    convs: tuple[ConvLayer, ...]
    dense: tuple[int, ...]
    num_classes: int = 10
    conv_impl: str = "xla"
    kernel_init: Initializer = nn.initializers.glorot_uniform()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.convs:
            k = (layer.kernel, layer.kernel)
            x = Conv(layer.features, k, layer.padding, self.conv_impl, self.kernel_init)(
                x, pool=layer.pool, relu=layer.relu)
        x = x.reshape(x.shape[0], -1)
        for width in self.dense:
            x = nn.relu(nn.Dense(width, kernel_init=self.kernel_init)(x))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init)(x)


# PyTorch-style LeNet-5: conv 6@5x5 pad 2, pool, conv 16@5x5, pool, dense 120-84-classes.
LeNet5 = functools.partial(ConvNet, (ConvLayer(6, 5, 2), ConvLayer(16, 5)), (120, 84))
# The Caffe LeNet: conv 20@5x5, pool, conv 50@5x5, pool (no ReLU on the convs), dense 500.
CaffeLeNet = functools.partial(
    ConvNet, (ConvLayer(20, 5, relu=False), ConvLayer(50, 5, relu=False)), (500,))
# Small CIFAR-10 CNN: 3x3 same-padded convs 32, pool, 64, pool, 64; dense 64.
CifarCNN = functools.partial(
    ConvNet, (ConvLayer(32, 3, 1), ConvLayer(64, 3, 1), ConvLayer(64, 3, 1, pool=False)), (64,))


def _conv_line(net: Any) -> str:
    convs, dense = net.args  # a functools.partial of ConvNet
    layers = [f"conv {c.features}@{c.kernel}x{c.kernel}" for c in convs]
    return "convolutional net: " + ", ".join(layers + [f"dense {d}" for d in dense])


# The models (vanish/registry.py's shape): factory(num_classes, kernel_init[, conv_impl]) ->
# a flax module; capability `conv`: it has convolutions (config.model.conv_impl applies).
REGISTRY: dict[str, registry.Component] = {
    "mlp": registry.Component(MLP, "multi-layer perceptron on flattened inputs (784-128-64-10 "
                              "on MNIST)", caps=dict(conv=False)),
    "lenet5": registry.Component(LeNet5, _conv_line(LeNet5), caps=dict(conv=True)),
    "caffe_lenet": registry.Component(CaffeLeNet, _conv_line(CaffeLeNet), caps=dict(conv=True)),
    "cifar_cnn": registry.Component(CifarCNN, _conv_line(CifarCNN), caps=dict(conv=True)),
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
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(REGISTRY)}")
    line = REGISTRY[name]
    cls = line.factory
    kwargs = dict(num_classes=num_classes, kernel_init=get_initializer(init), **kwargs)
    if line.caps.get("conv"):
        impl = default_conv_impl() if conv_impl == "auto" else conv_impl
        if impl not in CONV_IMPLS:
            raise ValueError(
                f"unknown conv_impl {conv_impl!r}; choose 'auto' or one of {CONV_IMPLS}")
        kwargs["conv_impl"] = impl
    return cls(**kwargs)
