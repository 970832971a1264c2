"""Align, then average: permute one model's hidden units to match another's, in-graph.

    spec = alignment.spec_for(model)                      # model: models.make_model(...)
    perms, aligned_b = alignment.weight_matching(spec, params_a, params_b, sweeps=3)
    perms, aligned_b = alignment.activation_matching(spec, model, params_a, params_b, x_B)

Two networks of one architecture compute the same function under any permutation of each
hidden layer's units (dense units, conv channels), so a coordinate-wise mean of two
independently trained models mixes unrelated features. Git Re-Basin (Ainsworth et al., ICLR
2023) finds the permutation of B that best matches A from the weights alone ("weight
matching": coordinate descent over layers, each step a linear assignment); DIMAT (Saadati et
al., CVPR 2024) from the correlation of post-ReLU activations on a batch ("activation
matching": one assignment per layer). Both are jittable and vmap over (A, B) pairs; the
assignment is optax's in-graph Hungarian solver (`solver="hungarian"`), or SciPy's on the
host through a callback (`solver="scipy"`, for comparison; BENCHMARKS.md measures both).

A model declares its permutation spec (`spec_for`): for every hidden layer, each (parameter,
axis) its unit permutation acts on. The input and the output layer are never permuted. An
axis longer than the layer's width holds blocks of its units, unit fastest: the flatten from
the last convolution's [H, W, C] map into the first dense layer.
Convention: `aligned = permute(spec, perms, b)` puts B's unit perms[p][i] at position i.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
SOLVERS = ("hungarian", "scipy")
SOLVER_CHOICES = ("auto",) + SOLVERS
METHODS = ("weight", "activation")


class Axis(NamedTuple):
    """One axis of one parameter that a unit permutation acts on."""

    path: tuple[str, ...]  # e.g. ("Dense_0", "kernel")
    axis: int


class Perm(NamedTuple):
    """One hidden layer's unit permutation: its width and every axis it moves."""

    layer: str  # the layer whose output units it permutes (its activation's name)
    size: int
    axes: tuple[Axis, ...]
    relu: bool  # the layer's activation is relu(output) (DIMAT matches post-ReLU activations)


class PermSpec(NamedTuple):
    """A model's permutation spec: its hidden layers' permutations, input to output."""

    perms: tuple[Perm, ...]

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(p.layer for p in self.perms)

    def select(self, layers: Sequence[str]) -> PermSpec:
        """The spec of `layers` only (the others stay unpermuted); ValueError naming any
        unknown layer."""
        unknown = [name for name in layers if name not in self.layers]
        if unknown:
            raise ValueError(f"no permutable layer(s) {unknown}; this model's: "
                             f"{', '.join(self.layers)}")
        return PermSpec(tuple(p for p in self.perms if p.layer in layers))


def _chain(layers: Sequence[tuple[str, int, bool, int]], output: str) -> PermSpec:
    """The spec of a feed-forward chain: (name, width, relu, kernel's output axis) per hidden
    layer, then the output layer. Each permutes its kernel's output axis and its bias, and
    the next layer's kernel input axis (output axis - 1: HWIO conv kernels, [in, out] dense)."""
    perms = []
    names = [name for name, *_ in layers] + [output]
    out_axes = [ax for *_, ax in layers] + [1]
    for i, (name, width, relu, out_axis) in enumerate(layers):
        nxt, nxt_in = names[i + 1], out_axes[i + 1] - 1
        perms.append(Perm(name, width, (Axis((name, "kernel"), out_axis), Axis((name, "bias"), 0),
                                        Axis((nxt, "kernel"), nxt_in)), relu))
    return PermSpec(tuple(perms))


def spec_for(model: Any) -> PermSpec:
    """The permutation spec of a vanish model (`models.MLP` or `models.ConvNet`: mlp, lenet5,
    caffe_lenet, cifar_cnn). Conv layers are Conv_i (HWIO kernels), dense layers Dense_i."""
    from vanish import models

    if isinstance(model, models.MLP):
        hidden = [(f"Dense_{i}", w, True, 1) for i, w in enumerate(model.hidden)]
        return _chain(hidden, f"Dense_{len(hidden)}")
    if isinstance(model, models.ConvNet):
        convs = [(f"Conv_{i}", c.features, c.relu, 3) for i, c in enumerate(model.convs)]
        dense = [(f"Dense_{i}", w, True, 1) for i, w in enumerate(model.dense)]
        return _chain(convs + dense, f"Dense_{len(dense)}")
    raise TypeError(f"no permutation spec for {type(model).__name__}: alignment knows "
                    "models.MLP and models.ConvNet")


def _get(tree: PyTree, path: tuple[str, ...]) -> jax.Array:
    for k in path:
        tree = tree[k]
    return tree


def _set(tree: PyTree, path: tuple[str, ...], value: jax.Array) -> PyTree:
    if not path:
        return value
    return {**tree, path[0]: _set(tree[path[0]], path[1:], value)}


def _permute_axis(x: jax.Array, perm: jax.Array, axis: int) -> jax.Array:
    """x with the units of `axis` reordered by perm (blocks of len(perm) units, unit fastest)."""
    n = perm.shape[0]
    blocked = x.reshape(x.shape[:axis] + (x.shape[axis] // n, n) + x.shape[axis + 1:])
    return jnp.take(blocked, perm, axis=axis + 1).reshape(x.shape)


def _units(x: jax.Array, axis: int, n: int) -> jax.Array:
    """[n, rest]: each of the n units of `axis` (all its blocks) as one row."""
    blocked = x.reshape(x.shape[:axis] + (x.shape[axis] // n, n) + x.shape[axis + 1:])
    return jnp.moveaxis(blocked, axis + 1, 0).reshape(n, -1)


def permute(spec: PermSpec, perms: Sequence[jax.Array], params: PyTree,
            skip: int | None = None) -> PyTree:
    """params with every permutation of the spec applied (all but perms[skip] if given)."""
    for i, (p, perm) in enumerate(zip(spec.perms, perms)):
        if i == skip:
            continue
        for a in p.axes:
            params = _set(params, a.path, _permute_axis(_get(params, a.path), perm, a.axis))
    return params


def identity(spec: PermSpec) -> list[jax.Array]:
    """The identity permutation of every layer."""
    return [jnp.arange(p.size, dtype=jnp.int32) for p in spec.perms]


def inverse(perm: jax.Array) -> jax.Array:
    """The inverse permutation: inverse(p)[p[i]] = i."""
    return jnp.zeros_like(perm).at[perm].set(jnp.arange(perm.shape[0], dtype=perm.dtype))


def _scipy_host(similarity: np.ndarray) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]

    s = np.asarray(similarity)
    flat = s.reshape(-1, *s.shape[-2:])
    out = np.stack([linear_sum_assignment(m, maximize=True)[1] for m in flat])
    return out.reshape(s.shape[:-1]).astype(np.int32)


def default_solver(backend: str | None = None) -> str:
    """The assignment solver that is faster on `backend`: SciPy's on the CPU (5.8x optax's
    vmapped Hungarian per LeNet-5 merge, scripts/bench_align.py, BENCHMARKS.md), the in-graph
    one elsewhere (no device-host round trip; the only one on TPU)."""
    return "scipy" if (backend or jax.default_backend()) == "cpu" else "hungarian"


def assign(similarity: jax.Array, solver: str = "hungarian") -> jax.Array:
    """[n] int32: the permutation perm maximizing sum_i similarity[i, perm[i]].

    "hungarian": optax's jittable solver, in the compiled program; "scipy": SciPy's
    `linear_sum_assignment` on the host through `jax.pure_callback` (CPU/GPU only, a
    device-host round trip per call). Entries that are not finite (a diverged model) count
    as 0 (NaN) or +-1e30, so a diverged run goes on to its end like any other instead of
    stopping in the solver."""
    n = similarity.shape[-1]
    similarity = jnp.nan_to_num(similarity, nan=0.0, posinf=1e30, neginf=-1e30)
    if solver == "hungarian":
        from optax import assignment

        rows, cols = assignment.hungarian_algorithm(-similarity)
        return jnp.zeros((n,), jnp.int32).at[rows].set(cols.astype(jnp.int32))
    if solver == "scipy":
        out = jax.ShapeDtypeStruct(similarity.shape[:-1], jnp.int32)
        return jax.pure_callback(_scipy_host, out, similarity, vmap_method="expand_dims")
    raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")


def weight_matching(spec: PermSpec, params_a: PyTree, params_b: PyTree, sweeps: int = 3,
                    solver: str = "hungarian") -> tuple[list[jax.Array], PyTree]:
    """Git Re-Basin's weight matching: the permutation of B's hidden units closest to A.

    Coordinate descent: starting from the identity, each sweep visits the layers in order and
    sets layer l's permutation to the assignment maximizing sum over its axes of
    <A's unit i, B's unit perm[i]> (B's other axes permuted by the current permutations),
    a fixed `sweeps` times (Git Re-Basin visits layers in random order until no change; a
    fixed order and count keeps the program static and deterministic).

    Returns:
      (perms, aligned_b): one [size] int32 permutation per layer of the spec, and B permuted.
    """
    perms = identity(spec)
    for _ in range(sweeps):
        for i, p in enumerate(spec.perms):
            b_other = permute(spec, perms, params_b, skip=i)
            sims = [_units(_get(params_a, a.path), a.axis, p.size).astype(jnp.float32)
                    @ _units(_get(b_other, a.path), a.axis, p.size).astype(jnp.float32).T
                    for a in p.axes]
            perms[i] = assign(functools.reduce(jnp.add, sims), solver)
    return perms, permute(spec, perms, params_b)


def activations(spec: PermSpec, model: Any, params: PyTree, x_B: jax.Array) -> list[jax.Array]:
    """[rows, size] per layer of the spec: its (post-ReLU where it has one) activations on
    x_B, every spatial position of a conv map a row (flax's captured intermediates)."""
    _, state = model.apply({"params": params}, x_B, capture_intermediates=True,
                           mutable=["intermediates"])
    inter = state["intermediates"]
    out = []
    for p in spec.perms:
        act = inter[p.layer]["__call__"][0]
        # Conv modules return their activation already (relu inside); Dense return z.
        if p.relu and p.layer.startswith("Dense"):
            act = jax.nn.relu(act)
        out.append(act.reshape(-1, p.size).astype(jnp.float32))
    return out


def correlation(acts_a: jax.Array, acts_b: jax.Array, eps: float = 1e-12) -> jax.Array:
    """[n, n] Pearson correlation of A's units (rows of the result) with B's units."""
    a = acts_a - jnp.mean(acts_a, axis=0)
    b = acts_b - jnp.mean(acts_b, axis=0)
    cov = a.T @ b / acts_a.shape[0]
    std_a = jnp.sqrt(jnp.mean(a * a, axis=0))
    std_b = jnp.sqrt(jnp.mean(b * b, axis=0))
    return cov / (std_a[:, None] * std_b[None, :] + eps)


def activation_matching(spec: PermSpec, model: Any, params_a: PyTree, params_b: PyTree,
                        x_B: jax.Array, solver: str = "hungarian",
                        acts_a: Sequence[jax.Array] | None = None
                        ) -> tuple[list[jax.Array], PyTree]:
    """DIMAT's activation matching: per layer, the assignment maximizing the correlation of
    A's and B's activations on the batch x_B. A unit's activation does not depend on how the
    other layers are permuted, so every layer is solved at once from the unpermuted models.
    `acts_a`: A's activations if already computed (one receiver aligning many senders).

    Returns:
      (perms, aligned_b) as `weight_matching`.
    """
    if acts_a is None:
        acts_a = activations(spec, model, params_a, x_B)
    acts_b = activations(spec, model, params_b, x_B)
    perms = [assign(correlation(a, b), solver) for a, b in zip(acts_a, acts_b)]
    return perms, permute(spec, perms, params_b)


class Aligner(NamedTuple):
    """One configured alignment of many models to one.

    align_many(own, others_C, x_B) -> others_C aligned to own: own one model, others_C a
    stack of C models (leading axis), x_B a batch of the receiver's data for activation
    matching (None for weight matching: `needs_data` False).
    """

    align_many: Callable[[PyTree, PyTree, Any], PyTree]
    needs_data: bool
    spec: PermSpec


def make_aligner(model: Any, method: str = "weight", sweeps: int = 3, layers: str = "",
                 solver: str = "auto") -> Aligner:
    """An `Aligner` for `model`: `method` in METHODS ("none": the identity), `layers` a
    comma-separated subset of the spec's layer names ("" = all hidden layers), `solver` in
    SOLVER_CHOICES ("auto": `default_solver()`, chosen by backend). ValueError
    naming the problem for an unknown method, solver or layer."""
    if method == "none":
        return Aligner(lambda own, others, x: others, False, PermSpec(()))
    if method not in METHODS:
        raise ValueError(f"unknown matching method {method!r}; choose one of "
                         f"{', '.join(METHODS)} or none")
    if solver == "auto":
        solver = default_solver()
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVER_CHOICES)}")
    spec = spec_for(model)
    names = [s.strip() for s in layers.split(",") if s.strip()]
    if names:
        spec = spec.select(names)
    if method == "weight":
        def by_weights(own: PyTree, others: PyTree, x_B: Any) -> PyTree:
            del x_B
            return jax.vmap(lambda o: weight_matching(spec, own, o, sweeps, solver)[1])(others)

        return Aligner(by_weights, False, spec)

    def by_activations(own: PyTree, others: PyTree, x_B: Any) -> PyTree:
        acts_own = activations(spec, model, own, x_B)  # once per receiver, not per message
        return jax.vmap(lambda o: activation_matching(spec, model, own, o, x_B, solver,
                                                      acts_own)[1])(others)

    return Aligner(by_activations, True, spec)


def flat_correlation(a: PyTree, b: PyTree) -> jax.Array:
    """Pearson correlation of two models' kernels, all kernels flattened into one vector
    (how alike two nodes' models are after alignment)."""
    ka = jnp.concatenate([x.reshape(-1) for path, x in _kernels(a)])
    kb = jnp.concatenate([x.reshape(-1) for path, x in _kernels(b)])
    ka, kb = ka - ka.mean(), kb - kb.mean()
    return jnp.sum(ka * kb) / (jnp.sqrt(jnp.sum(ka * ka) * jnp.sum(kb * kb)) + 1e-12)


def _kernels(tree: PyTree) -> list[tuple[Any, jax.Array]]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return [(path, x) for path, x in leaves if "kernel" in jax.tree_util.keystr(path)]


__all__ = ["Axis", "Perm", "PermSpec", "spec_for", "permute", "identity", "inverse", "assign",
           "weight_matching", "activations", "correlation", "activation_matching", "Aligner",
           "make_aligner", "flat_correlation", "default_solver", "SOLVERS", "SOLVER_CHOICES",
           "METHODS"]
