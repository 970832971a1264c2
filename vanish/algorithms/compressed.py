"""Compressed gossip with error feedback (CHOCO-style): top-k or stochastic int8 messages.

    algo = compressed.make(compressor="topk", fraction=0.1)       # gossip_topk
    inbox = algo.init(params_N)       # Inbox(gossip=<plain gossip's accumulator>, public=x̂_N)

Each node i has a public copy x̂_i of its model: what its neighbours hold of it. It starts as
the node's initial params: receivers can regenerate every initial model from the shared seed,
so the start costs no bytes. After node i trains (its model is x_i), `encode` compresses the
residual r = x_i - x̂_i, moves x̂_i by what the message carries, and puts the NEW x̂_i on the
wire: what receivers merge is the sender's public copy, never its private model.

* `topk` (`gossip_topk`): per leaf, the k = max(1, round(fraction * numel)) coordinates of
  largest |r| (jax.lax.top_k of the flattened |r|); x̂_i is set EXACTLY to x_i there (so
  fraction = 1.0 makes x̂_i == x_i bit for bit: plain gossip). A message is the k values plus
  their positions: int32 indices or a bitmap, whichever is smaller
  (k * itemsize + min(4 k, ceil(numel / 8)) bytes per leaf).
* `int8` (`gossip_q8`): per leaf, scale s = max|r| / 127 (s == 0: the leaf does not change)
  and q = floor(r / s + u), u ~ U[0, 1) from fold_in(fold_in(key, SALT), leaf index) of the
  sender's (tick, node) key, clipped to [-127, 127]; x̂_i += q s. Unbiased (E[q s] = r), error
  below s per coordinate; numel + 4 bytes per leaf (int8 values, one float32 scale).

Error feedback is implicit and exact: what a message did not carry stays in x_i - x̂_i and is
part of the next residual (top-k sends every coordinate of a fixed model within
ceil(1 / fraction) messages). Receivers merge as plain gossip does (`gossip.emit`,
`gossip.end_of_tick`: averaging, or the variance correction for the `_vc` variants), on
`inbox.gossip`; the public copies ride along unchanged.

Only slots that send (`Sent.send`) move their public copy. Limitation: every receiver is
assumed to hold the sender's current public copy, even one whose message was lost to a fault
(exact per-edge copies would cost N x degree models); without faults the assumption holds.
Not shardable: the public copies of the senders are read and written by node id.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vanish import variance
from vanish.algorithms import base, gossip

PyTree = Any

COMPRESSORS = ("topk", "int8")
SALT = 0x51C0  # folded into a sender's key for its quantization noise (not its batch's)


class Inbox(NamedTuple):
    """Plain gossip's accumulator and every node's public copy x̂ (see the module docstring)."""

    gossip: gossip.Inbox  # plain gossip's accumulator of received (public) models
    public: PyTree  # x̂_N: every node's public copy (structure of params_N)


def init(params_N: PyTree) -> Inbox:
    """Empty gossip accumulators; each public copy starts as a copy of the node's params."""
    # A copy: the engine donates its state, so the public copies need buffers of their own.
    return Inbox(gossip=gossip.init(params_N),
                 public=jax.tree.map(lambda x: jnp.array(x, copy=True), params_N))


def top_k_count(numel: int, fraction: float) -> int:
    """Coordinates a top-k message carries of a leaf of `numel` elements."""
    return min(numel, max(1, round(fraction * numel)))


def topk_update(x_K: jax.Array, pub_K: jax.Array, fraction: float) -> jax.Array:
    """[K, ...] new public copies: x where |x - pub| is among each row's k largest, else pub."""
    shape = x_K.shape
    numel = math.prod(shape[1:])
    k = top_k_count(numel, fraction)
    if k >= numel:  # every coordinate: the model itself
        return x_K
    flat_x, flat_p = x_K.reshape(shape[0], numel), pub_K.reshape(shape[0], numel)
    _, idx = jax.lax.top_k(jnp.abs(flat_x - flat_p), k)
    kept = jnp.zeros(flat_x.shape, bool).at[jnp.arange(shape[0])[:, None], idx].set(True)
    return jnp.where(kept, flat_x, flat_p).reshape(shape)


def quantize(r: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Stochastic int8 quantization of one slot's leaf residual r: (q as float, scale s)."""
    s = jnp.max(jnp.abs(r)) / 127
    u = jax.random.uniform(key, r.shape, r.dtype)
    q = jnp.clip(jnp.floor(jnp.where(s > 0, r / jnp.where(s > 0, s, 1), 0) + u), -127, 127)
    return jnp.where(s > 0, q, 0), s


def int8_update(x_K: jax.Array, pub_K: jax.Array, keys_K: jax.Array, leaf: int) -> jax.Array:
    """[K, ...] new public copies pub + q s (q: `quantize` of x - pub with each slot's key)."""
    def one(x: jax.Array, p: jax.Array, key: jax.Array) -> jax.Array:
        key = jax.random.fold_in(jax.random.fold_in(key, SALT), leaf)
        q, s = quantize(x - p, key)
        return p + (q * s).astype(p.dtype)

    return jax.vmap(one)(x_K, pub_K, keys_K)


def encode(compressor: str, fraction: float, inbox: Inbox, sent: base.Sent,
           consts: base.Consts) -> tuple[Inbox, base.Sent]:
    """Moves the senders' public copies toward their trained models by one compressed message
    each; the message on the wire (`sent.params`) becomes the new public copy."""
    del consts
    pub_K = base.take(inbox.public, sent.node)
    leaves_x, tree = jax.tree.flatten(sent.params)
    leaves_p = jax.tree.leaves(pub_K)  # the same structure (params_N's)
    if compressor == "topk":
        new = [topk_update(x, p, fraction) for x, p in zip(leaves_x, leaves_p)]
    else:
        new = [int8_update(x, p, sent.key, i) for i, (x, p) in enumerate(zip(leaves_x, leaves_p))]
    new_K = jax.tree.unflatten(tree, new)
    n = base.num_nodes(inbox.public)
    rows = jnp.where(sent.send, sent.node, n)  # slots that do not send keep their copy
    public = base.put(inbox.public, rows, new_K)
    return inbox._replace(public=public), sent._replace(params=new_K)


def wire(compressor: str, fraction: float) -> base.Wire:
    """One message kind: its bytes from one node's params (see the module docstring)."""

    def sizes(template: PyTree, consts: base.Consts) -> tuple[int, ...]:
        del consts
        total = 0
        for x in jax.tree.leaves(template):
            numel = math.prod(x.shape)
            if compressor == "topk":
                k = top_k_count(numel, fraction)
                total += k * jnp.dtype(x.dtype).itemsize + min(4 * k, -(-numel // 8))
            else:
                total += numel + 4
        return (int(total),)

    return base.Wire(sizes=sizes)


def make(*, compressor: str, fraction: float = 0.1, corrected: bool = False,
         correction: variance.CorrectionConfig | None = None,
         merge_slots: int = 8) -> base.Algorithm:
    """Compressed gossip with error feedback (see the module docstring).

    Args:
      compressor: 'topk' (the `fraction` of each leaf's coordinates of largest residual) or
        'int8' (stochastic int8 quantization of the residual; `fraction` unused).
      fraction: top-k: the fraction of each leaf's coordinates a message carries, in (0, 1].
      corrected: merge with `correction` (the _vc variants); False is plain averaging.
      correction: the correction's settings (ignored unless corrected).
      merge_slots: rows per compacted merge group (the builder sets it).
    Returns:
      The Algorithm.
    """
    if compressor not in COMPRESSORS:
        raise ValueError(f"compressor must be one of {COMPRESSORS}, got {compressor!r}")
    if compressor == "topk" and not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    corr = base.correction_for(corrected, correction)
    stem = "gossip_topk" if compressor == "topk" else "gossip_q8"

    def emit(ib: Inbox, s: base.Sent, c: base.Consts) -> Inbox:
        return ib._replace(gossip=gossip.emit(corr, ib.gossip, s, c))

    def end_of_tick(p: PyTree, ib: Inbox, c: base.Consts,
                    t: base.Tick) -> tuple[PyTree, Inbox, jax.Array]:
        p, g, merged = gossip.end_of_tick(corr, merge_slots, p, ib.gossip, c, t)
        return p, ib._replace(gossip=g), merged

    return base.Algorithm(
        name=stem + ("_vc" if corrected else ""),
        init=init,
        emit=emit,
        end_of_tick=end_of_tick,
        encode=lambda ib, s, c: encode(compressor, fraction, ib, s, c),
        wire=wire(compressor, fraction),
    )
