"""MoDeST: decentralized sampling, no server (de Vos et al., "MoDeST: Bridging the Gap between
Federated and Decentralized Learning with Decentralized Sampling").

    algo = algorithms.make("modest", round_ticks=10, client_fraction=0.2, local_steps=1,
                           aggregators=4)

Every node is a peer (the configured graph's nodes; its edges carry none of MoDeST's
messages). Time runs in rounds of R = `round_ticks` ticks, as in `fl`:

* trainers: the builder draws a `client_fraction` sample of the nodes per round
  (`schedule.fl_rounds`, from the seed); each trains E = `local_steps` steps from the model it
  holds, from the round's middle tick, and sends its model after the last step;
* aggregators: A = `aggregators` distinct nodes per round, drawn uniformly from a key derived
  from the run's seed and the round index (`fold_in(fold_in(PRNGKey(SALT), seed), r)`, the
  top A of uniform scores, in that order: the sample order). Every node can compute the
  sample of any round without asking anyone (decentralized sampling: the seed is shared
  knowledge, like the protocol); the nodes keep the current round index in their inbox
  (`Inbox.round`), so the sample is the same at every tick of the round. Seeds draw
  different samples (without faults that changes who pays which bytes, not the models;
  under churn it changes which aggregators are offline); A > N means all N nodes;
* a trainer's message goes to every aggregator of the round (`encode` sets `Sent.dest` to
  them, before the engine counts and delivers it); a trainer that is itself an aggregator
  adds its own model to its own accumulator without a message (not counted on the wire);
* each aggregator accumulates what it receives (`gossip.Inbox`-style sum and count,
  `mixing.push_to`);
* at the round's end the round's model is the mean held by the first aggregator, in sample
  order, that received something (without faults every aggregator holds the same mean: the
  mean of the round's trainers' models), and EVERY node adopts it (merged_N: all nodes). In
  the paper the aggregators send it to the next round's sample and a node keeps its model
  until it is sampled; adopting it everywhere is what FL's broadcast does and lets every
  node be evaluated on the current model. A round in which no aggregator received anything
  changes no model. The accumulators are cleared and the round index advanced.

Bytes (`Wire`, full models): uploads are the sent slots (the engine counts them: a sender
pays one message per aggregator other than itself, each aggregator receives one per such
message); downloads at a round's end (`Wire.rounds`): the adopted aggregator (the one whose mean
became the round's model: under loss or churn not always the first in sample order) sends the
round's model to every other adopting node (N - 1 messages without churn, all on that one
aggregator; each other adopting node receives one).

Faults and the clock apply to MoDeST's messages as to any other: a message to an aggregator
is lost with drop_prob, delayed (network.delay, the clock's link time) and lost at an
offline aggregator; under churn an offline node neither trains, sends nor adopts the round's
model, and a round whose aggregators all missed every message changes no model (robust to
churn: any one aggregator that received something carries the round). The aggregators are
drawn among all nodes (online or not); a message that arrives after its round's end is
dropped with the accumulators. Not written for node shards (`shardable=False`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from vanish import mixing, treeutil
from vanish.algorithms import base

PyTree = Any
SALT = 0x30DE57  # the aggregator samples' key stream: fold_in(fold_in(PRNGKey(SALT), seed), r)


class Inbox(NamedTuple):
    """Each node's accumulator of the models received this round, and the round index."""

    total: PyTree  # sum of the received models (structure of params_N)
    # [N] messages this round (a self-aggregating trainer counts its own model). Shadows
    # tuple.count, as gossip.Inbox does.
    count: jax.Array  # type: ignore[assignment]
    round: jax.Array  # [N] int32: the current round index, each node's own copy (all equal)


def aggregators(round_index: jax.Array, n: int, a: int, seed: Any = None) -> jax.Array:
    """[min(a, n)] int32: the distinct aggregators of round `round_index` among n nodes, in
    sample order (a function of the run's `seed`, None = 0, and the round index alone)."""
    key = jax.random.fold_in(jax.random.PRNGKey(SALT), 0 if seed is None else seed)
    key = jax.random.fold_in(key, round_index)
    return lax.top_k(jax.random.uniform(key, (n,)), min(a, n))[1].astype(jnp.int32)


def _seed(consts: base.Consts | None) -> Any:
    return None if consts is None else consts.seed


def init(params_N: PyTree) -> Inbox:
    """Empty accumulators and round index 0 for the N nodes of params_N."""
    n = base.num_nodes(params_N)
    # Separate arrays (the engine donates the inbox: one buffer may not appear twice).
    return Inbox(total=jax.tree.map(jnp.zeros_like, params_N),
                 count=jnp.zeros((n,), jnp.int32), round=jnp.zeros((n,), jnp.int32))


def encode(a: int, inbox: Inbox, sent: base.Sent,
           consts: base.Consts | None) -> tuple[Inbox, base.Sent]:
    """Addresses each sending slot to the round's aggregators ([K, A]; itself and
    non-sending slots: N), before the engine counts and delivers the messages."""
    n = inbox.count.shape[0]
    ids_A = aggregators(inbox.round[0], n, a, _seed(consts))
    to = sent.send[:, None] & (ids_A[None, :] != sent.node[:, None])
    return inbox, sent._replace(dest=jnp.where(to, ids_A[None, :], n).astype(jnp.int32))


def emit(a: int, inbox: Inbox, sent: base.Sent, consts: base.Consts | None) -> Inbox:
    """Accumulates each message at its aggregators, and a sending aggregator's own model at
    itself (no message)."""
    assert sent.dest is not None, "modest's encode addresses every message"
    n = inbox.count.shape[0]
    ids_A = aggregators(inbox.round[0], n, a, _seed(consts))
    own = sent.send & jnp.any(ids_A[None, :] == sent.node[:, None], axis=1)
    dest = jnp.concatenate([sent.dest, jnp.where(own, sent.node, n)[:, None]], axis=1)
    (total,), count = mixing.push_to((inbox.total,), inbox.count, (sent.params,), dest)
    return Inbox(total, count, inbox.round)


def adopted(a: int, inbox: Inbox, consts: base.Consts | None) -> tuple[jax.Array, jax.Array]:
    """(g, received): the round's first aggregator, in sample order, that received anything
    (its mean is the round's model), and whether any did ([] int32, [] bool)."""
    ids_A = aggregators(inbox.round[0], inbox.count.shape[0], a, _seed(consts))
    got_A = inbox.count[ids_A] > 0
    return ids_A[jnp.argmax(got_A)], jnp.any(got_A)


def end_of_tick(a: int, params_N: PyTree, inbox: Inbox, consts: base.Consts,
                tick: base.Tick) -> tuple[PyTree, Inbox, jax.Array]:
    """At a round's end every node adopts the round's model (see the module docstring).

    The model is the mean held by the round's first aggregator, in sample order, that received
    anything (none did: no model changes); under churn only online nodes adopt it. The
    accumulators are cleared and the round index advanced. Other ticks change nothing.

    Returns:
      (params_N, inbox, merged_N): merged_N [N] bool, the nodes that adopted the model.
    """
    assert tick.axis is None, "modest is not written for node shards (shardable=False)"
    n = base.num_nodes(params_N)
    g, received = adopted(a, inbox, consts)

    def finish(args: tuple[PyTree, Inbox]) -> tuple[PyTree, Inbox]:
        p, ib = args
        cnt = jnp.maximum(ib.count[g], 1)
        mean = jax.tree.map(lambda t: t[g] / cnt.astype(t.dtype), ib.total)
        take = received if tick.online is None else received & tick.online  # [] or [N]
        p = jax.tree.map(lambda old, x: jnp.where(treeutil.per_node(
            jnp.broadcast_to(take, (n,)), old.ndim), x.astype(old.dtype), old), p,
            mixing.broadcast(mean, n))
        nxt = (tick.tick + 1) // consts.round_ticks
        return p, Inbox(base.zeros(ib.total), jnp.zeros_like(ib.count),
                        jnp.full_like(ib.round, nxt))

    params_N, inbox = lax.cond(tick.round_end, finish, lambda x: x, (params_N, inbox))
    merged = jnp.broadcast_to(tick.round_end & received, (n,))
    return params_N, inbox, merged if tick.online is None else merged & tick.online


def traffic(a: int, merged_N: jax.Array, inbox: Inbox, consts: base.Consts,
            tick: base.Tick) -> tuple[jax.Array, jax.Array]:
    """A round's download: the adopted aggregator (`adopted`, from the round's inbox before
    its end) sends the model to every other adopting node. (Uploads are the trainers' sent
    slots, counted by the engine.) Without faults it is the round's first aggregator in
    sample order; under loss or churn, the first that received anything."""
    n = merged_N.shape[0]
    g, _ = adopted(a, inbox, consts)
    is_g = jnp.arange(n) == g
    down = (merged_N & ~is_g).astype(jnp.int32)
    sent = jnp.where(is_g, jnp.sum(down), 0)
    return sent[:, None], down[:, None]


def make(*, round_ticks: int = 10, client_fraction: float = 0.2, local_steps: int = 1,
         aggregators: int = 4) -> base.Algorithm:
    """MoDeST. The trainers' knobs shape the plan (`schedule.fl_rounds`, drawn by the
    builder), not these functions; `aggregators` is A, the aggregators per round."""
    del round_ticks, client_fraction, local_steps
    a = int(aggregators)
    return base.Algorithm(
        name="modest", init=init,
        emit=lambda ib, s, c: emit(a, ib, s, c),
        end_of_tick=lambda p, ib, c, t: end_of_tick(a, p, ib, c, t),
        encode=lambda ib, s, c: encode(a, ib, s, c),
        wire=base.FULL_MODEL._replace(rounds=lambda m, ib, c, t: traffic(a, m, ib, c, t),
                                      dest_width=a))
