"""The robust merges' cost: order statistics by pairwise ranks against a sort along the slot
axis, and every robust aggregate per merge group against the plain mean.

    python scripts/bench_robust.py [--slots 15] [--nodes 8] [--repeats 5] [--out robust.json]

Times one merge group (M nodes x C held messages of the MLP's parameters, every leaf) of the
coordinate-wise trimmed mean and median, computed by `trimmed_mean.slot_ranks` (what the rules
use up to `RANK_SLOTS` slots) and by a sort (the baseline, measured in the same run), checks
that they agree; then the cost of one merge group of each robust aggregate (trimmed mean,
median, Krum f = 1, the Flag Aggregator m = 8) against the plain mean of the held messages.
Prints two tables and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp

from vanish import models
from vanish.algorithms import flag, robust, trimmed_mean


def _time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    t = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - t) / repeats * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slots", type=int, default=15, help="C: threshold - 1 + degree (8-regular)")
    p.add_argument("--nodes", type=int, default=8, help="M: nodes merging in one group")
    p.add_argument("--model", default="mlp")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="")
    a = p.parse_args(argv)
    model = models.make_model(a.model, conv_impl="xla")
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               jnp.zeros((1, 28, 28, 1)))["params"])
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 64))
    buf = jax.tree.map(lambda s: jax.random.normal(next(keys), (a.nodes, a.slots, *s.shape)),
                       shapes)
    count = jnp.arange(a.nodes) % (a.slots + 1)  # every fill level, empty rows included
    rows = []
    saved = trimmed_mean.RANK_SLOTS
    try:
        rows = _measure(a, buf, count)
    finally:
        trimmed_mean.RANK_SLOTS = robust.RANK_SLOTS = saved
    print(f"{'rule':18s} {'sort ms':>9s} {'ranks ms':>9s} {'speed-up':>9s} {'max |diff|':>11s}")
    for r in rows:
        print(f"{r['rule']:18s} {r['sort_ms']:9.1f} {r['ranks_ms']:9.1f} {r['speedup']:8.1f}x "
              f"{r['max_abs_diff']:11.2e}")
    own = jax.tree.map(lambda b: b[:, 0] * 0.5, buf)
    count = jnp.full((a.nodes,), a.slots)  # full buffers: every message held
    costs = {}
    for name, agg in (("mean", None), ("trimmed mean 0.2", trimmed_mean.trimmed_aggregate(0.2)),
                      ("median", robust.median_aggregate), ("krum f=1", robust.krum_aggregate(1)),
                      ("flag m=8", flag.flag_aggregate(min(8, a.slots)))):
        if agg is None:
            g = jax.jit(lambda b, c, o: jax.tree.map(lambda x: jnp.mean(x, axis=1), b))
        else:
            g = jax.jit(lambda b, c, o, agg=agg: agg(b, c, o).model)
        costs[name] = _time(g, buf, count, own, repeats=a.repeats)
    print(f"\n{'aggregate':18s} {'ms / merge group':>17s} {'x mean':>7s}")
    for name, ms in costs.items():
        print(f"{name:18s} {ms:17.1f} {ms / costs['mean']:7.1f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(device=jax.devices()[0].device_kind, rows=rows, aggregates=costs),
                      f, indent=1)
    return 0


def _measure(a: argparse.Namespace, buf, count) -> list[dict]:
    """Both rules, sort then ranks (the module limit switched for each), same inputs."""
    rows = []
    for rule, fn in (("trimmed mean 0.2", lambda b, c: trimmed_mean.trimmed_mean(b, c, 0.2)),
                     ("median", robust.median)):
        out = {}
        for how, limit in (("sort", 0), ("ranks", a.slots)):
            trimmed_mean.RANK_SLOTS = robust.RANK_SLOTS = limit
            g = jax.jit(lambda b, c, fn=fn: jax.tree.map(lambda leaf, c=c: fn(leaf, c), b))
            out[how] = (_time(g, buf, count, repeats=a.repeats), g(buf, count))
        diff = max(float(jnp.abs(x - y).max()) for x, y in
                   zip(jax.tree.leaves(out["sort"][1]), jax.tree.leaves(out["ranks"][1])))
        rows.append(dict(rule=rule, model=a.model, nodes=a.nodes, slots=a.slots,
                         sort_ms=out["sort"][0], ranks_ms=out["ranks"][0],
                         speedup=out["sort"][0] / out["ranks"][0], max_abs_diff=diff))
    return rows


if __name__ == "__main__":
    sys.exit(main())
