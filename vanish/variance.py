"""Variance-corrected model averaging: per-layer stats, targets and rescale.

Device side, jitted; trees are stacked (leading node axis N) unless a docstring says otherwise.

    cfg = CorrectionConfig(target='others')
    out_N = mix_and_correct(params_N, sum_N, count_N, var_sum_N, 0.5, cfg)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from vanish import treeutil

PyTree = Any
Array = jax.Array

TARGETS: tuple[str, ...] = ('others', 'self', 'blend', 'none')
# Normalisation statistics / affine norm parameters are never rescaled, whatever else is set.
_NORM_COLLECTIONS: tuple[str, ...] = ('batch_stats',)
_NORM_NAMES: tuple[str, ...] = ('scale', 'mean', 'var', 'variance', 'moving_mean', 'moving_var')
# First-stage chunk length of the two-stage reductions (see `_moment_sums`).
_CHUNK_MIN, _CHUNK_MAX = 64, 512


@dataclasses.dataclass(frozen=True)
class CorrectionConfig:
    """How received models are merged and which layers are rescaled afterwards.

    Frozen and hashable, so it can be a static argument of `jax.jit`.

    Attributes:
        target: 'others' (mean variance of the received models, the paper's default),
            'self' (the node's own variance before mixing), 'blend'
            (`blend * self + (1 - blend) * others`) or 'none' (plain averaging).
        blend: c in [0, 1] for target='blend'; c = 0 equals 'others', c = 1 equals 'self'.
        eps: added to target and current variance inside the square root (>= 0).
        ddof: delta degrees of freedom of every variance (0 = population, 1 = unbiased).
        strength: r in [0, 1]; scale = 1 + r * (sqrt((t + eps) / (var + eps)) - 1).
        skip: name patterns; a leaf whose '/'-joined path contains any is never rescaled.
        correct_biases: also rescale leaves named 'bias' (with more than one element).
    """

    target: str = 'others'
    blend: float = 0.0
    eps: float = 0.0
    ddof: int = 0
    strength: float = 1.0
    skip: tuple[str, ...] = ()
    correct_biases: bool = False

    def __post_init__(self) -> None:
        # Lists / NumPy scalars would break hashing, hence use as a static jit argument.
        skip = (self.skip,) if isinstance(self.skip, str) else tuple(self.skip)
        object.__setattr__(self, 'skip', skip)
        if self.target not in TARGETS:
            valid = ', '.join(repr(t) for t in TARGETS)
            raise ValueError(f'CorrectionConfig.target={self.target!r} is unknown; '
                             f'valid targets are {valid}.')
        for field, label in (('blend', 'blend (c)'), ('strength', 'strength (r)')):
            value = getattr(self, field)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f'CorrectionConfig.{label} must lie in [0, 1], got {value!r}.')
            object.__setattr__(self, field, float(value))
        if not (math.isfinite(float(self.eps)) and float(self.eps) >= 0.0):
            raise ValueError(f'CorrectionConfig.eps must be finite and non-negative, '
                             f'got {self.eps!r}.')
        object.__setattr__(self, 'eps', float(self.eps))
        if (isinstance(self.ddof, bool) or not isinstance(self.ddof, numbers.Integral)
                or self.ddof < 0):
            raise ValueError(f'CorrectionConfig.ddof must be an int >= 0 (0 = population, '
                             f'1 = unbiased variance), got {self.ddof!r}.')
        object.__setattr__(self, 'ddof', int(self.ddof))
        for pattern in skip:
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f'CorrectionConfig.skip entries must be non-empty strings '
                                 f'(an empty pattern matches every leaf), got {pattern!r}.')

    @classmethod
    def reference(cls, **overrides: Any) -> CorrectionConfig:
        """The authors' PyTorch simulator: unbiased variance (ddof=1) and eps=1e-4.

        Args:
            **overrides: any other field, e.g. `target='self'`.

        Returns:
            A `CorrectionConfig` with ddof=1 and eps=1e-4 unless overridden.
        """
        return cls(**{'ddof': 1, 'eps': 1e-4, **overrides})


# --- which leaves are correctable (static: depends on names and shapes only) -----------------


def is_correctable(path: Any, leaf: Any, config: CorrectionConfig, *,
                   stacked: bool = False) -> bool:
    """Whether a leaf is rescaled after averaging.

    Default: conv / dense kernels only: the leaf name (last path key) is 'kernel' and the
    tensor has >= 2 dims and > 1 element (node axis excluded). `correct_biases` adds leaves
    named 'bias' with > 1 element. Normalisation statistics ('batch_stats' collections, names
    like 'scale', 'mean', 'var') never are; `config.skip` removes more.

    Args:
        path: a JAX key path (from `jax.tree_util.tree_map_with_path`) or a '/'-joined string.
        leaf: the array; only its shape is read.
        config: the correction config.
        stacked: whether `leaf` has a leading node axis (not counted in the dims / size).

    Returns:
        True iff the leaf is corrected.
    """
    names = treeutil.path_names(path)
    shape = tuple(jnp.shape(leaf))[1 if stacked else 0:]
    if (not names or names[-1] in _NORM_NAMES or any(n in _NORM_COLLECTIONS for n in names)
            or any(pattern in '/'.join(names) for pattern in config.skip)):
        return False
    name = names[-1]
    if name == 'kernel':
        return len(shape) >= 2 and math.prod(shape) > 1
    return bool(config.correct_biases and name == 'bias' and math.prod(shape) > 1)


def correctable_mask(tree: PyTree, config: CorrectionConfig, *,
                     stacked: bool = False) -> PyTree:
    """`is_correctable` for every leaf: a pytree of Python bools (host side, static).

    Args:
        tree: a params pytree; only shapes are read, so tracers and ShapeDtypeStructs work.
        config: the correction config.
        stacked: whether leaves have a leading node axis.

    Returns:
        A pytree of bools with the structure of `tree`.
    """
    return jax.tree_util.tree_map_with_path(
        lambda p, x: is_correctable(p, x, config, stacked=stacked), tree)


# --- per-node statistics -----------------------------------------------------------------------


def _node_bcast(v_N: Array, ndim: int) -> Array:
    """[N] -> [N, 1, ..., 1], to broadcast against a stacked leaf of rank ndim."""
    return jnp.reshape(v_N, v_N.shape + (1,) * (ndim - 1))


def _chunk_plan(inner: tuple[int, ...]) -> tuple[int, int]:
    """(K, pad): view a node's `prod(inner)` elements as [B, K] after `pad` trailing zeros.

    A sequential float32 sum over ~5e4 elements is off by ~1e-5 relative; summing chunks of
    K <= _CHUNK_MAX elements first, then the B partial sums, keeps it ~1e-7. Prefers K = a
    product of trailing axes, then any divisor (both free reshapes), then pads.
    """
    size = math.prod(inner)
    if size <= _CHUNK_MAX:
        return size, 0
    k = 1
    for dim in reversed(inner):
        k *= dim
        if k >= _CHUNK_MIN:
            break
    if k <= _CHUNK_MAX:
        return k, 0
    k = next((d for d in range(_CHUNK_MAX, _CHUNK_MIN - 1, -1) if size % d == 0), 0)
    return (k, 0) if k else (256, -size % 256)


def _moment_sums(xs_N: Sequence[Array]) -> list[tuple[Array, Array, Array]]:
    """(shift, sum(d), sum(d*d)) per array, d = x - shift, all arrays read in ONE pass.

    One variadic `lax.reduce` over all (d, d*d): XLA:CPU emits a single loop fusion that
    computes its inputs (e.g. the mix) on the fly, where separate `jnp.sum`s would each
    materialise their input and read it again. The shift (mean of each node's first chunk)
    is within ~std/sqrt(K) of the mean, so `sum(d*d) - sum(d)^2 / n` does not cancel.
    """
    shifts, operands = [], []
    k, pad = _chunk_plan(xs_N[0].shape[1:])
    for x in xs_N:
        flat = jnp.reshape(x, (x.shape[0], -1))
        shift = jnp.mean(flat[:, :k], axis=1)
        d = flat - shift[:, None]
        if pad:  # zeros add nothing to the sums of centred values
            d = jnp.pad(d, ((0, 0), (0, pad)))
        d = jnp.reshape(d, (x.shape[0], -1, k))
        shifts.append(shift)
        operands += [d, d * d]
    zeros = tuple(jnp.zeros((), op.dtype) for op in operands)

    def add(a: tuple[Array, ...], b: tuple[Array, ...]) -> tuple[Array, ...]:
        return tuple(u + v for u, v in zip(a, b))

    partial = lax.reduce(tuple(operands), zeros, add, (2,))
    if partial[0].shape[1] <= _CHUNK_MAX:
        totals = lax.reduce(tuple(partial), zeros, add, (1,))
    else:  # many partial sums: jnp.sum adds them pairwise, hence accurately
        totals = [jnp.sum(p, axis=1) for p in partial]
    return [(s, totals[2 * i], totals[2 * i + 1]) for i, s in enumerate(shifts)]


def _mean_vars(xs_N: Sequence[Array], ddof: int) -> list[tuple[Array, Array]]:
    """Per-node (mean, var) of same-shape stacked arrays (float32 or wider), in one pass."""
    xs_N = [x.astype(jnp.promote_types(x.dtype, jnp.float32)) for x in xs_N]
    x0 = xs_N[0]
    size = math.prod(x0.shape[1:])
    if size <= 1:  # one element per node (or none): it is the mean, nothing varies
        var = jnp.full(x0.shape[:1], 0.0 if size > ddof else jnp.nan, x0.dtype)
        means = [jnp.reshape(x, x.shape[:1]) if size else jnp.full_like(var, jnp.nan)
                 for x in xs_N]
        return [(m, var) for m in means]
    stats = []
    for shift, s1, s2 in _moment_sums(xs_N):
        mean_d = s1 / size
        # Rounding can push a (near-)constant tensor's variance slightly below zero.
        var = (jnp.maximum(s2 - s1 * mean_d, 0.0) / (size - ddof) if size > ddof
               else jnp.full_like(s1, jnp.nan))
        stats.append((shift + mean_d, var))
    return stats


@functools.partial(jax.jit, static_argnames=('ddof',))
def layer_variance(tree_N: PyTree, ddof: int = 0) -> PyTree:
    """Per-node, per-leaf element variance of a stacked pytree (any leaf).

    Args:
        tree_N: pytree whose leaves have a leading node axis N.
        ddof: delta degrees of freedom (0 = population variance, 1 = unbiased).

    Returns:
        Pytree of [N] arrays (NaN where a leaf has <= ddof elements per node).
    """
    return jax.tree.map(lambda x: _mean_vars([x], ddof)[0][1], tree_N)


@jax.jit
def layer_mean(tree_N: PyTree) -> PyTree:
    """Per-node, per-leaf element mean of a stacked pytree (any leaf).

    Args:
        tree_N: pytree whose leaves have a leading node axis N.

    Returns:
        Pytree of [N] arrays.
    """
    return jax.tree.map(lambda x: _mean_vars([x], 0)[0][0], tree_N)


@functools.partial(jax.jit, static_argnames=('config',))
def correctable_variance(tree_N: PyTree, config: CorrectionConfig) -> PyTree:
    """What a sent model adds to a receiver's variance accumulator (`received_var_sum_N`).

    Args:
        tree_N: stacked models being sent (leading node axis N).
        config: decides which leaves are correctable, and the ddof.

    Returns:
        Pytree of [N] arrays: the `config.ddof` variance of correctable leaves, zeros (not
        computed) for the others.
    """
    def leaf_var(correct: bool, x: Array) -> Array:
        if correct:
            return _mean_vars([x], config.ddof)[0][1]
        return jnp.zeros(x.shape[:1], jnp.promote_types(x.dtype, jnp.float32))

    return jax.tree.map(leaf_var, correctable_mask(tree_N, config, stacked=True), tree_N)


# --- rescale -----------------------------------------------------------------------------------


def _rescale_stacked(x_N: Array, mean_N: Array, var_N: Array, target_N: Array,
                     config: CorrectionConfig) -> Array:
    """Mean-preserving rescale of each node's tensor to its target variance, guarded."""
    target = jnp.asarray(target_N, mean_N.dtype)
    ratio = (target + config.eps) / (var_N + config.eps)
    # These cases keep the tensor as is: a constant tensor has no direction to scale, and a
    # negative / non-finite target or ratio would produce NaN or Inf.
    valid = (var_N > 0) & (target >= 0) & jnp.isfinite(target) & jnp.isfinite(ratio)
    scale = jnp.sqrt(jnp.where(valid, ratio, 1.0))
    if config.strength != 1.0:
        scale = 1.0 + config.strength * (scale - 1.0)
    valid = valid & jnp.isfinite(scale)
    x = x_N.astype(mean_N.dtype)
    mean_b = _node_bcast(mean_N, x.ndim)
    y = ((x - mean_b) * _node_bcast(scale, x.ndim) + mean_b).astype(x_N.dtype)
    return jnp.where(_node_bcast(valid, x.ndim), y, x_N)


@functools.partial(jax.jit, static_argnames=('config',))
def rescale(x: Array, target_var: Array | float,
            config: CorrectionConfig = CorrectionConfig()) -> Array:
    """Rescale one (unstacked) tensor about its own mean to variance `target_var`.

    `y = (x - mean) * s + mean`, `s = 1 + r * (sqrt((t + eps) / (var + eps)) - 1)` with
    r = `config.strength` and var using `config.ddof`. Mean and the direction of the centred
    tensor are preserved. If var(x) == 0, or the target is negative or not finite, x is
    returned unchanged (never NaN/Inf). `config.target` is not read.

    Args:
        x: the tensor (any shape).
        target_var: scalar target variance t.
        config: eps, ddof and strength.

    Returns:
        The rescaled tensor, same shape and dtype as x.
    """
    x_1 = jnp.reshape(x, (1, -1))
    mean, var = _mean_vars([x_1], config.ddof)[0]
    target = jnp.reshape(jnp.asarray(target_var), (1,))
    return jnp.reshape(_rescale_stacked(x_1, mean, var, target, config), jnp.shape(x))


# --- averaging + correction --------------------------------------------------------------------


def _mix(x_self: Array, x_sum: Array, count_b: Array, beta_b: Array) -> Array:
    """beta * x_self + (1 - beta) * sum / count: the plain average, every leaf uses this."""
    return beta_b * x_self + (1 - beta_b) * (x_sum / count_b)


def _corrected_leaf(x_self: Array, x_sum: Array, count_b: Array, beta_b: Array,
                    others: Array | None, config: CorrectionConfig) -> Array:
    """Mix one correctable stacked leaf and rescale it to its target variance."""
    c = float(config.blend) if config.target == 'blend' else None
    needs_self = config.target == 'self' or (c is not None and c > 0.0)
    needs_others = config.target == 'others' or (c is not None and c < 1.0)
    if needs_others and others is None:
        raise ValueError(f'target={config.target!r} needs received_var_sum_N, got None.')
    # XLA would otherwise write the mix to memory once and read it back twice (stats, then
    # rescale). Behind the barrier the stats pass recomputes the mix from the inputs, in the
    # same fusion as the reduction; the bits are the same, the memory traffic lower.
    self_b, sum_b = lax.optimization_barrier((x_self, x_sum))
    to_stats = [_mix(self_b, sum_b, count_b, beta_b)]
    if needs_self:  # own variance BEFORE mixing, read in the same pass
        to_stats.append(self_b)
    stats = _mean_vars(to_stats, config.ddof)
    mean, var = stats[0]
    if not needs_self:
        assert others is not None  # needs_others here (target != 'none'), checked above
        target = others
    elif not needs_others:
        target = stats[1][1]
    else:
        assert c is not None and others is not None  # both: target='blend', checked above
        target = c * stats[1][1] + (1.0 - c) * others
    x_mix = _mix(x_self, x_sum, count_b, beta_b)
    return _rescale_stacked(x_mix, mean, var, target, config)


@functools.partial(jax.jit, static_argnames=('config',))
def mix_and_correct(self_N: PyTree, received_sum_N: PyTree, received_count_N: Array,
                    received_var_sum_N: PyTree | None, beta: Array | float,
                    config: CorrectionConfig = CorrectionConfig(),
                    active_N: Array | None = None) -> PyTree:
    """Variance-corrected averaging of all nodes at once, from fixed-shape receive accumulators.

    For node i with count_i >= 1 received models:
        x_mix = beta * x_self + (1 - beta) * (sum_i / count_i)     (every leaf, biases too)
    then each correctable leaf of x_mix is rescaled about its own mean to the target variance
        'others': var_sum_i / count_i (mean variance of the received models; paper default),
        'self':   var(x_self) taken BEFORE mixing. The authors' reference code takes it after
                  mixing, which makes the correction a no-op; that bug is not copied here.
        'blend':  c * var(x_self) + (1 - c) * others, c = `config.blend`,
        'none':   no rescale (plain averaging).
    Other leaves are the plain mix, bit for bit (the same expression as target='none'; a
    separately compiled formula may differ by an ulp, as XLA:CPU rewrites `/ count` to
    `* (1 / count)` and may fuse `b * x + y` into an FMA). Nodes with count == 0, or with
    active_N False, get x_self back bit-identically.

    Args:
        self_N: stacked own models (leading node axis N).
        received_sum_N: sums of the received models (structure and shapes of self_N).
        received_count_N: [N] number of models received (int or float).
        received_var_sum_N: pytree like self_N with [N] leaves: sums of the received models'
            per-leaf variances with `config.ddof` (see `correctable_variance`); read only for
            correctable leaves. May be None for targets 'self' and 'none'.
        beta: weight of the own model, scalar or [N]; traced, so changing it never recompiles.
        config: static correction config.
        active_N: optional [N] bool mask; inactive nodes return x_self unchanged.

    Returns:
        The merged stacked pytree (structure, shapes and dtypes of self_N).
    """
    count = jnp.asarray(received_count_N)
    active = count > 0
    if active_N is not None:
        active = active & jnp.asarray(active_N, bool)
    # Dead lanes divide by 1, not 0, so no NaN is ever computed (it would poison gradients).
    safe_count = jnp.where(active, count, 1)
    beta = jnp.asarray(beta)

    # flatten_up_to also checks that each tree has self_N's structure. (jaxlib ships no type
    # stubs for its C++ PyTreeDef, so mypy sees an unresolved type without this method.)
    leaves, treedef = jax.tree.flatten(self_N)
    sums = treedef.flatten_up_to(received_sum_N)  # type: ignore[attr-defined]
    var_sums = (treedef.flatten_up_to(received_var_sum_N)  # type: ignore[attr-defined]
                if received_var_sum_N is not None else [None] * len(leaves))
    mask = treedef.flatten_up_to(  # type: ignore[attr-defined]
        correctable_mask(self_N, config, stacked=True))

    out = []
    for x_self, x_sum, v_sum, correct in zip(leaves, sums, var_sums, mask):
        nd = x_self.ndim
        b = (_node_bcast(beta, nd) if beta.ndim == 1 else beta).astype(x_self.dtype)
        count_b = _node_bcast(safe_count, nd).astype(x_self.dtype)
        if correct and config.target != 'none':
            others = None if v_sum is None else v_sum / safe_count.astype(v_sum.dtype)
            x_new = _corrected_leaf(x_self, x_sum, count_b, b, others, config)
        else:
            x_new = _mix(x_self, x_sum, count_b, b)
        out.append(jnp.where(_node_bcast(active, nd), x_new, x_self))
    return jax.tree.unflatten(treedef, out)


@functools.partial(jax.jit, static_argnames=('config',))
def average_and_correct(self_tree: PyTree, received_trees_M: PyTree, beta: Array | float,
                        config: CorrectionConfig = CorrectionConfig()) -> PyTree:
    """The paper's algorithm for one node: mix with m received models, then correct.

    Readable reference API; it is `mix_and_correct` with N = 1 (vmap it over nodes).

    Args:
        self_tree: the node's own (unstacked) model.
        received_trees_M: the m received models stacked on axis 0 (m = 0 returns self_tree).
        beta: weight of the own model (paper: 0.5; 0 = replace by the received mean).
        config: static correction config.

    Returns:
        The merged model, structure of self_tree.
    """
    m = jax.tree.leaves(received_trees_M)[0].shape[0]
    sum_1 = jax.tree.map(lambda r: jnp.sum(r, axis=0, keepdims=True), received_trees_M)
    var_sum_1 = jax.tree.map(lambda v: jnp.sum(v, axis=0, keepdims=True),
                             correctable_variance(received_trees_M, config))
    self_1 = jax.tree.map(lambda x: x[None], self_tree)
    count_1 = jnp.full((1,), m, jnp.int32)
    out_1 = mix_and_correct(self_1, sum_1, count_1, var_sum_1, beta, config)
    return jax.tree.map(lambda x: x[0], out_1)

