"""The Flag Aggregator (Almasi, Mishra, Vamanan, Ravi, ICLR 2024) as a gossip merge.

`gossip_flag` and `gossip_flag_vc` reuse the trimmed mean's message buffers
(`trimmed_mean.Inbox`, `make_init`, `emit`) and its merge (`trimmed_mean.buffered_merge`,
which hands the aggregate the receivers' own models): a node holding m > 0 messages
x_1..x_m mixes `beta * own + (1 - beta) * (own + g)`, g the Flag aggregate below.

Updates. The paper aggregates workers' gradients at a server; gossip has no server and no
gradient, so the updates are the received models minus the receiver's own, d_i = x_i - own
(all leaves flattened into one vector of P coordinates). They are the directions in which
the neighbours disagree with the receiver: the subspace is fitted to that disagreement (not
to the models, whose common part dominates every received model alike), and a Byzantine
model far from the receiver is a long update pointing away from the honest ones.

The aggregate, with u_i = d_i / ||d_i|| (u_i = 0 when d_i = 0), as the authors' code
(hamidralmasi/FlagAggregator, aggregators/flag.py and center_algorithms_torch.py) runs it:

1. FlagIRLS, `iterations` rounds. From the current subspace Y (P x `subspace`, orthonormal)
   each update gets the weight w_i = (|1 - ||Y^T u_i||^2| + eps)^(-1/4) and, with lam > 0,
   each ordered pair i != j the weight a_ij = lam / (m (m - 1)) *
   (|1 - ||Y^T (u_i - u_j)||^2| + eps)^(-1/4) (the pair difference is not normalised, as in
   the authors' code); the new Y is the top-`subspace` left singular vectors of the weighted
   matrix [w_i u_i ..., a_ij (u_i - u_j) ...]. The first round starts from a Y orthogonal to
   every update (so w_i = (1 + eps)^(-1/4) ~ 1, the paper's w = 1; the authors' random start
   in P >> m dimensions gives the same up to O(subspace / P)), and the authors' fall-back to
   the previous iterate when the sine objective did not decrease is not taken. eps defaults
   to 1e-6 (the authors' 1e-7 is at float32's noise in 1 - ||Y^T u_i||^2 for an update the
   subspace keeps whole, where the weight peaks at eps^(-1/4)).
2. The output: g = rho * (1/m) * sum_i Y Y^T u_i, the mean of the projected UNIT updates
   rescaled by rho = the median of the held update norms ||d_i||. The authors return
   sum_i Y Y^T u_i / subspace, a direction their server multiplies by a learning rate; a
   gossip merge needs a model, so the sum is divided by m (identical updates d give
   g = d: one message, or several equal ones, are adopted as they are) and scaled by a
   norm a minority cannot move arbitrarily far. Projecting the raw updates instead
   (Y Y^T mean(d_i)) would not be robust: a sign-flipped model -s x has the update
   -(s + 1) own - s (x - own), whose component along the honest direction grows with s and
   survives the projection; normalised, one message moves g by at most rho / m.
   With subspace >= m every update is kept whole and g = rho * mean(u_i): plain averaging
   of the updates when their norms are equal (then g = mean(d_i) exactly).

Batched over the M merging nodes and computed in the m x m space of the updates, never
P x P: the Gram matrix K = [u_i . u_j] comes from one [M, C, C] contraction of the updates
(C = inbox_capacity slots; slots not held are zero rows and columns). The weighted matrix is
A = U B (B: the weights as coefficients), and A A^T = (U L)(U L)^T for L the Cholesky factor
of S = B B^T = diag(w^2) + the a^2-weighted Laplacian of the pairs (S = diag(w^2), L =
diag(w) when lam = 0). So Y = U L V Lambda^(-1/2) for the top eigenpairs (Lambda, V) of the
C x C matrix L^T K L, eigenvalues below 10 C eps_f32 of the largest are dropped (numerically
zero directions); Y^T u_i = Lambda^(-1/2) V^T L^T K e_i, and the aggregate is own +
sum_j coef_j d_j with coef from these C x C quantities, one weighted sum over the buffer.

`gossip_flag_vc` rescales each correctable kernel of the mix (`variance.correctable_mask`,
`variance.rescale`) to the MEDIAN of the held messages' per-layer variances: the rule that
sets the aggregate's magnitude (rho, the median update norm), applied to the variances.
A mean weighted by the Flag weights w_i is not robust, and was measured so: the weights are
bounded ((1 + eps)^(-1/4) <= w_i <= eps^(-1/4)) and a lone attacker's direction, isolated
from the honest ones, takes a dimension of the subspace of its own and so the LARGEST weight
(fit ~ 1). With 5 honest models and one sending -100 x (tests/test_flag.py's sign-flip set-up)
that target was 790x (subspace 1) to 6100x (subspace 3) the honest variance; the median
stays at the honest one.

Memory: N * capacity models (the trimmed mean's buffers), plus the merge group's updates
[M, C, P] and a few [M, C, C] matrices per merge.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from vanish import nodes, variance
from vanish.errors import ConfigError
from vanish.algorithms import base
from vanish.algorithms.robust import median
from vanish.algorithms.trimmed_mean import (Aggregate, AggregateFn, Receiver, buffered_merge,
                                            emit, make_init)

PyTree = Any
_HI = lax.Precision.HIGHEST  # f32 products (TF32 on GPUs would cost the Gram its accuracy)


class FlagFit(NamedTuple):
    """The Flag fit of M rows of held updates (C slots each; 0 for slots not held)."""

    coef: jax.Array  # [M, C] the aggregate is own + sum_j coef_j d_j
    weights: jax.Array  # [M, C] Flag weights w_i of the final subspace
    fit: jax.Array  # [M, C] ||Y^T u_i||^2: how much of unit update i the subspace keeps


def held_mask(count_M: jax.Array, cap: int) -> jax.Array:
    """[M, C] bool: slots [0, count) of each row."""
    return jnp.arange(cap)[None] < count_M[:, None]


def updates(buf_MC: PyTree, own_M: PyTree, count_M: jax.Array) -> PyTree:
    """d = held message - own model per leaf ([M, C, ...], at least f32; 0 in slots not held)."""
    def leaf(b: jax.Array, x: jax.Array) -> jax.Array:
        dt = jnp.promote_types(b.dtype, jnp.float32)
        keep = nodes.per_node(held_mask(count_M, b.shape[1]), b.ndim - 1)
        return jnp.where(keep, b.astype(dt) - x.astype(dt)[:, None], 0.0)

    return jax.tree.map(leaf, buf_MC, own_M)


def gram(d_MC: PyTree) -> jax.Array:
    """[M, C, C] inner products d_i . d_j over all leaves."""
    total = None
    for d in jax.tree.leaves(d_MC):
        x = d.reshape(d.shape[:2] + (-1,))
        g = jnp.einsum("mcp,mdp->mcd", x, x, precision=_HI)
        total = g if total is None else total + g
    assert total is not None
    return total


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, precision=_HI)


def _t(a: jax.Array) -> jax.Array:
    return jnp.swapaxes(a, -1, -2)


def flag_fit(gram_MCC: jax.Array, count_M: jax.Array, *, subspace: int, lam: float = 0.0,
             iterations: int = 1, eps: float = 1e-6) -> FlagFit:
    """FlagIRLS on the held updates of M rows, from their Gram matrix (see the module doc).

    Args:
      gram_MCC: [M, C, C] d_i . d_j of the C slots (read for the held slots only).
      count_M: [M] slots held, [0, count).
      subspace: the subspace's dimension (at most `subspace` directions are kept).
      lam: weight of the pairwise-difference columns (0: none).
      iterations: IRLS rounds (>= 1).
      eps: the weights' floor term.
    Returns:
      FlagFit; rows with count 0 give coef 0 (the aggregate is the own model).
    """
    _, cap, _ = gram_MCC.shape
    dt = jnp.promote_types(gram_MCC.dtype, jnp.float32)
    held = held_mask(count_M, cap)
    both = held[:, :, None] & held[:, None, :]
    g = jnp.where(both, gram_MCC.astype(dt), 0.0)
    g = (g + _t(g)) / 2
    norm2 = jnp.maximum(jnp.diagonal(g, axis1=1, axis2=2), 0.0)
    nonzero = held & (norm2 > 0)
    inv = jnp.where(nonzero, lax.rsqrt(jnp.where(nonzero, norm2, 1.0)), 0.0)
    k = g * inv[:, :, None] * inv[:, None, :]  # u_i . u_j
    m = count_M.astype(dt)
    eye = jnp.eye(cap, dtype=dt)
    top = jnp.arange(cap) >= cap - subspace  # eigh sorts ascending
    rtol = 10 * cap * float(jnp.finfo(dt).eps)

    def weights(proj: jax.Array) -> tuple[jax.Array, jax.Array]:
        fit = jnp.sum(jnp.square(proj), axis=1)  # [M, C]: ||Y^T u_i||^2
        return jnp.where(held, (jnp.abs(1 - fit) + eps) ** -0.25, 0.0), fit

    def factor(proj: jax.Array) -> jax.Array:
        """L with L L^T = S, the weights' coefficient Gram matrix."""
        w, fit = weights(proj)
        if lam == 0:
            return eye * jnp.where(held, w, 1.0)[:, None, :]
        cross = _mm(_t(proj), proj)  # [M, C, C] (Y^T u_i) . (Y^T u_j)
        pair_fit = fit[:, :, None] + fit[:, None, :] - 2 * cross  # ||Y^T (u_i - u_j)||^2
        scale = lam / jnp.maximum(m * (m - 1), 1.0)[:, None, None]
        # Ordered pairs (i, j) and (j, i) are +-the same column: 2 a_ij^2 in the Gram.
        a2 = jnp.where(both & (eye == 0), 2 * scale ** 2 * (jnp.abs(1 - pair_fit) + eps) ** -0.5,
                       0.0)
        s = eye * (jnp.where(held, w ** 2, 1.0) + jnp.sum(a2, axis=2))[:, None, :] - a2
        return jnp.linalg.cholesky(s)

    def step(_: Any, state: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        proj = state[0]
        low = factor(proj)
        h = _mm(_mm(_t(low), k), low)
        evals, v = jnp.linalg.eigh((h + _t(h)) / 2)
        sel = top[None] & (evals > rtol * evals[:, -1:])
        scale = jnp.where(sel, lax.rsqrt(jnp.where(sel, evals, 1.0)), 0.0)  # [M, C]
        proj = scale[:, :, None] * _mm(_t(v), _mm(_t(low), k))  # [M, k, i] = Y^T u_i
        return proj, low, v, scale

    zero = jnp.zeros(g.shape, dt)
    init = (zero, zero, zero, jnp.zeros(held.shape, dt))
    proj, low, v, scale = lax.fori_loop(0, iterations, step, init)
    w, fit = weights(proj)
    # sum_i Y Y^T u_i = U L V (scale * sum_i Y^T u_i): its coefficients on the u_i.
    on_u = _mm(low, _mm(v, (scale * jnp.sum(proj, axis=2))[:, :, None]))[:, :, 0]
    rho = median(jnp.sqrt(norm2), count_M)
    coef = (rho / jnp.maximum(m, 1.0))[:, None] * on_u * inv
    return FlagFit(coef, w, fit)


def flag(buf_MC: PyTree, own_M: PyTree, count_M: jax.Array, *, subspace: int,
         lam: float = 0.0, iterations: int = 1, eps: float = 1e-6) -> tuple[PyTree, FlagFit]:
    """The Flag aggregate of M rows: own + g per leaf ([M, ...]), and the fit."""
    d = updates(buf_MC, own_M, count_M)
    fit = flag_fit(gram(d), count_M, subspace=subspace, lam=lam, iterations=iterations,
                   eps=eps)

    def leaf(x: jax.Array, dd: jax.Array) -> jax.Array:
        step = jnp.einsum("mc,mc...->m...", fit.coef.astype(dd.dtype), dd, precision=_HI)
        return (x.astype(dd.dtype) + step).astype(x.dtype)

    return jax.tree.map(leaf, own_M, d), fit


def flag_aggregate(subspace: int, lam: float = 0.0, iterations: int = 1,
                   eps: float = 1e-6) -> AggregateFn:
    """The Flag aggregate of the held messages, and the median of per-message values (the
    `_vc` target).

    The third argument is the receivers (`trimmed_mean.Receiver`, whose `params` are their own
    models) or their own models themselves ([M, ...] per leaf); the aggregate needs them.
    """

    def aggregate(buf_MC: PyTree, count_M: jax.Array, own_M: Any = None) -> Aggregate:
        own = own_M.params if isinstance(own_M, Receiver) else own_M
        if own is None:
            raise ValueError("the Flag aggregate takes updates relative to the receiver's own "
                             "model: pass the receivers (or their params) as third argument")
        model, _ = flag(buf_MC, own, count_M, subspace=subspace, lam=lam,
                        iterations=iterations, eps=eps)
        return Aggregate(model, lambda v_MC: median(v_MC, count_M))

    return aggregate


def make(*, corrected: bool = False, subspace: int = 8, lam: float = 0.0, iterations: int = 1,
         eps: float = 1e-6, correction: variance.CorrectionConfig | None = None,
         merge_slots: int = 8, inbox_capacity: int = 16) -> base.Algorithm:
    """gossip_flag[_vc]: the Flag Aggregator on the trimmed mean's message buffers.

    Args:
      corrected: rescale kernels to the median of the held messages' variances.
      subspace: dimension of the fitted subspace (the paper's m; <= inbox_capacity).
      lam: weight of the pairwise-difference term (the paper's lambda).
      iterations: FlagIRLS rounds.
      eps: the IRLS weights' floor term.
      correction: the correction's settings (ignored unless corrected).
      merge_slots, inbox_capacity: sizes the builder derives.
    Raises:
      ConfigError: a knob out of range, or a subspace larger than the messages a node can hold
        (a user error: the command line prints it as one line).
    """
    name = "gossip_flag_vc" if corrected else "gossip_flag"
    if subspace < 1 or iterations < 1 or not lam >= 0 or not eps > 0:
        raise ConfigError(f"algorithm_args.{name}: needs subspace >= 1, iterations >= 1, "
                          f"lam >= 0 and eps > 0 (got {subspace}, {iterations}, {lam}, {eps})")
    if subspace > inbox_capacity:
        raise ConfigError(f"algorithm_args.{name}.subspace = {subspace} exceeds the "
                          f"{inbox_capacity} messages a node can hold (threshold - 1 + "
                          f"in-degree); choose subspace <= {inbox_capacity}")
    corr = base.correction_for(corrected, correction)
    aggregate = flag_aggregate(subspace, float(lam), iterations, float(eps))
    merge = functools.partial(buffered_merge, merge_slots, corr, aggregate)
    return base.Algorithm(
        name=name, init=make_init(inbox_capacity), emit=emit, end_of_tick=merge)
