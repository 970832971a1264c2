"""Align, then average: gossip and DIMAT merges that permute each received model's hidden
units to match the receiver's own before averaging (vanish/alignment.py).

* `gossip_align` / `gossip_align_vc`: gossip on message buffers (the trimmed mean's inbox:
  a node holds the received models themselves). At a merge each held model is aligned to
  the receiver's current model, the aligned models are averaged and mixed
  `beta * own + (1 - beta) * mean`; `_vc` then rescales each correctable kernel to the mean
  of the held models' per-layer variances (a permutation leaves a layer's variance as it is).
* `dimat` (Saadati et al., CVPR 2024): synchronous rounds over the mixing matrix, like
  `dpsgd`. At each round's end every node aligns every in-neighbour's model to its own and
  takes its mixing-matrix row of the aligned models: x_i <- W_ii x_i + sum_j W_ij P_ij(x_j);
  then every node trains `local_steps` ticks. DIMAT's code matches activations over the
  node's whole training set; here a batch of `batch` samples of the node's own data, drawn
  each round (the same sampler as training, its own key).

Activation matching reads a batch of the receiver's data: `batch` samples drawn from its
own partition by (tick, node) keys. With `method="none"` no alignment happens: `dimat` is
then D-PSGD's mixing and `gossip_align` the buffered plain average. Messages are full models
and nothing else travels (alignment is receiver-side).
Cost: every merge aligns every buffer slot (held or not: shapes are static), so a merge
costs capacity x (one alignment); `dimat` aligns N x max-degree pairs per round.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vanish import alignment, mixing, nodes, partition, variance
from vanish.algorithms import base, dpsgd
from vanish.algorithms.trimmed_mean import (Aggregate, AggregateFn, Receiver, buffered_merge,
                                            emit, make_init)

PyTree = Any
_SALT = 0x616C6E  # "aln": the alignment batch's keys differ from the training batches'


def own_batches(consts: base.Consts, tick: base.Tick, node_M: jax.Array,
                batch: int) -> jax.Array:
    """[M, batch, ...] samples of each listed node's own data (padding rows: the last
    node's), drawn by fold_in(fold_in(tick key, salt), node)."""
    n = consts.threshold.shape[0]
    node_M = jnp.minimum(node_M, n - 1)
    key = jax.random.fold_in(tick.key, _SALT)
    keys_M = jax.vmap(lambda i: jax.random.fold_in(key, i))(node_M)
    idx_MB = partition.sample_indices_for_keys(keys_M, consts.part, node_M, batch)
    return consts.x_train[idx_MB]


def align_aggregate(aligner: alignment.Aligner, batch: int) -> AggregateFn:
    """The mean of the held messages, each aligned to the receiver's own model; the `_vc`
    target is the mean of the held messages' variances."""

    def aggregate(buf_MC: PyTree, count_M: jax.Array, rx: Receiver) -> Aggregate:
        x_MB = own_batches(rx.consts, rx.tick, rx.node, batch) if aligner.needs_data else None
        aligned = jax.vmap(aligner.align_many)(rx.params, buf_MC, x_MB)
        cap = jax.tree.leaves(buf_MC)[0].shape[1]
        held_MC = jnp.arange(cap)[None] < count_M[:, None]
        denom = jnp.maximum(count_M, 1)

        def mean(v_MC: jax.Array) -> jax.Array:
            held = held_MC.reshape(held_MC.shape + (1,) * (v_MC.ndim - 2))
            total = jnp.sum(jnp.where(held, v_MC, 0), axis=1)
            return total / nodes.per_node(denom, total.ndim).astype(total.dtype)

        return Aggregate(jax.tree.map(mean, aligned), mean)

    return aggregate


def dimat_end_of_tick(aligner: alignment.Aligner, batch: int, slots: int,
                      corr: variance.CorrectionConfig, params_N: PyTree, inbox: None,
                      consts: base.Consts, tick: base.Tick) -> tuple[PyTree, None, jax.Array]:
    """At a round's end every node takes its mixing-matrix row of its in-neighbours' models,
    each aligned to its own (all from the pre-round models), `slots` nodes at a time; with
    `corr`, each correctable kernel of the result is then rescaled to the row's W-weighted
    mean of the pre-round variances (`dpsgd_vc`'s target: a permutation keeps a layer's
    variance)."""
    n = base.num_nodes(params_N)
    g = consts.graph

    def mix(old_N: PyTree) -> PyTree:
        var_N = (None if corr.target == "none"
                 else mixing.mix(variance.correctable_variance(old_N, corr), g))

        def body(out: PyTree, idx_M: jax.Array, valid_M: jax.Array) -> PyTree:
            row_M = jnp.minimum(idx_M, n - 1)
            own = base.take(old_N, row_M)
            others = base.take(old_N, g.nbr[row_M])  # [M, D, ...]
            x_MB = own_batches(consts, tick, row_M, batch) if aligner.needs_data else None
            aligned = jax.vmap(aligner.align_many)(own, others, x_MB)
            w_MD, self_M = g.nbr_weight[row_M], g.self_weight[row_M]

            def row(x: jax.Array, a: jax.Array) -> jax.Array:
                w = w_MD.reshape(w_MD.shape + (1,) * (a.ndim - 2)).astype(a.dtype)
                mixed = nodes.per_node(self_M, x.ndim).astype(x.dtype) * x + jnp.sum(w * a, 1)
                return mixed.astype(x.dtype)

            new = jax.tree.map(row, own, aligned)
            if var_N is not None:
                new = dpsgd.corrected(new, base.take(var_N, row_M), corr)
            return base.put(out, jnp.where(valid_M, idx_M, n), new)

        return base.for_selected(jnp.ones((n,), bool), slots, body, old_N)

    params_N = jax.lax.cond(tick.round_end, mix, lambda p: p, params_N)
    return params_N, inbox, jnp.broadcast_to(tick.round_end, (n,))


def _aligner(model: Any, method: str, sweeps: int, layers: str,
             solver: str) -> alignment.Aligner:
    if model is None and method != "none":
        raise TypeError("alignment rules need the model (the builder argument model=)")
    return alignment.make_aligner(model, method, sweeps, layers, solver)


def make(*, corrected: bool = False, method: str = "weight", sweeps: int = 3, batch: int = 64,
         layers: str = "", solver: str = "auto",
         correction: variance.CorrectionConfig | None = None, merge_slots: int = 8,
         inbox_capacity: int = 16, model: Any = None) -> base.Algorithm:
    """gossip_align[_vc]: buffered gossip whose merge aligns every held model to the receiver.

    Args:
      corrected: rescale merged kernels to the mean of the held messages' variances.
      method: 'weight' (Git Re-Basin weight matching), 'activation' (DIMAT's, on `batch`
        samples of the receiver's own data) or 'none' (no alignment).
      sweeps: weight matching's coordinate-descent sweeps over the layers.
      batch: samples per activation-matching batch.
      layers: comma-separated hidden layers to align ('' = all).
      solver: 'hungarian' (optax, in-graph), 'scipy' (host callback) or 'auto' (by backend).
      correction, merge_slots, inbox_capacity, model: what the builder supplies.
    """
    aligner = _aligner(model, method, sweeps, layers, solver)
    corr = base.correction_for(corrected, correction)
    aggregate = align_aggregate(aligner, batch)
    return base.Algorithm(
        name="gossip_align_vc" if corrected else "gossip_align",
        init=make_init(inbox_capacity), emit=emit,
        end_of_tick=lambda p, ib, c, t: buffered_merge(merge_slots, corr, aggregate, p, ib, c,
                                                       t))


def make_dimat(*, corrected: bool = False, method: str = "activation", sweeps: int = 3,
               batch: int = 64, layers: str = "", solver: str = "auto", local_steps: int = 1,
               correction: variance.CorrectionConfig | None = None, merge_slots: int = 8,
               model: Any = None) -> base.Algorithm:
    """DIMAT: synchronous rounds of align-then-mix over the mixing matrix (`local_steps`
    ticks a round: a plan value); `corrected`: the mix variance corrected (`dimat_vc`).
    Knobs as `make`; `merge_slots` nodes are merged at once."""
    del local_steps
    aligner = _aligner(model, method, sweeps, layers, solver)
    corr = base.correction_for(corrected, correction)
    return base.Algorithm(
        name="dimat_vc" if corrected else "dimat", init=base.no_inbox, emit=base.no_emit,
        end_of_tick=lambda p, ib, c, t: dimat_end_of_tick(aligner, batch, merge_slots, corr, p,
                                                          ib, c, t),
        wire=base.FULL_MODEL._replace(rounds=dpsgd.mixing_traffic, sends=False))
