"""Benchmark: what aligning before averaging costs per merge, against gossip_vc's merge.

One tick of LeNet-5 gossip at N nodes has ~N/10 merges (the U{8..12} schedule), each of a
node holding C received models. Timed, all jitted, for M = N/10 merging nodes:
  * gossip_vc's merge (mean of the held models, mix, variance correction): the baseline;
  * the aligned merge (gossip_align): every held model aligned to the receiver by weight
    matching (`--sweeps`) or activation matching (a batch of `--batch`), then averaged,
    with the assignment in the graph (optax's Hungarian) or on the host (SciPy, a callback).
Prints a table (ms per tick, ms per merge, x the baseline) and XLA's cost analysis of one
merge (FLOPs, bytes accessed), and writes JSON.

    python scripts/bench_align.py --n 50,1000 --out docs/bench_align.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vanish import alignment, models, variance  # noqa: E402


def _time_ms(fn: Callable[..., Any], args: tuple, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _cost(fn: Any, args: tuple) -> dict[str, float]:
    analysis = fn.lower(*args).compile().cost_analysis()
    if isinstance(analysis, list):
        analysis = analysis[0]
    return {k: float(analysis.get(k, 0.0)) for k in ("flops", "bytes accessed")}


def cases(model: Any, m: int, c: int, sweeps: int, batch: int) -> list[tuple[str, Any, tuple]]:
    """(name, jitted fn, args) per merge kind, for m merging nodes holding c models each."""
    x = jax.random.normal(jax.random.PRNGKey(1), (m, batch, 28, 28, 1))
    init = lambda k: model.init(k, x[0, :1])["params"]  # noqa: E731
    own = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(0), m))
    buf = jax.vmap(jax.vmap(init))(jax.random.split(jax.random.PRNGKey(2), (m, c)))
    corr = variance.CorrectionConfig()

    def vc(own_M: Any, buf_MC: Any) -> Any:
        total = jax.tree.map(lambda b: jnp.sum(b, axis=1), buf_MC)
        var_MC = jax.vmap(lambda b: variance.correctable_variance(b, corr))(buf_MC)
        var_total = jax.tree.map(lambda v: jnp.sum(v, axis=1), var_MC)
        count = jnp.full((m,), c, jnp.float32)
        return variance.mix_and_correct(own_M, total, count, var_total, 0.5, corr)

    out = [("gossip_vc merge", jax.jit(vc), (own, buf))]
    for method in ("weight", "activation"):
        for solver in alignment.SOLVERS:
            al = alignment.make_aligner(model, method, sweeps, "", solver)

            def aligned(own_M: Any, buf_MC: Any, x_MB: Any, al: Any = al) -> Any:
                a = jax.vmap(al.align_many)(own_M, buf_MC, x_MB if al.needs_data else None)
                return jax.tree.map(lambda o, b: 0.5 * o + 0.5 * jnp.mean(b, axis=1), own_M, a)

            out.append((f"align {method} {solver}", jax.jit(aligned), (own, buf, x)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", default="50,1000", help="network sizes (merges per tick = N / 10)")
    p.add_argument("--held", type=int, default=8, help="models a merging node holds")
    p.add_argument("--sweeps", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    model = models.make_model("lenet5")
    rows = []
    for n in (int(v) for v in args.n.split(",")):
        m = max(1, n // 10)
        timed = cases(model, m, args.held, args.sweeps, args.batch)
        base_ms = None
        for name, fn, fargs in timed:
            ms = _time_ms(fn, fargs, args.repeats)
            base_ms = ms if base_ms is None else base_ms
            one = _cost(jax.jit(lambda *a, fn=fn: fn(*a)), jax.tree.map(lambda v: v[:1], fargs)) \
                if n == min(int(v) for v in args.n.split(",")) else {}
            rows.append({"n": n, "merges_per_tick": m, "held": args.held, "case": name,
                         "ms_per_tick": ms, "ms_per_merge": ms / m, "x_gossip_vc": ms / base_ms,
                         **({"merge_gflops": one["flops"] / 1e9,
                             "merge_mb_accessed": one["bytes accessed"] / 1e6} if one else {})})
    print(f"{'N':>5} {'case':28s} {'ms/tick':>10} {'ms/merge':>9} {'x vc':>7} {'GFLOP/merge':>11}")
    for r in rows:
        print(f"{r['n']:5d} {r['case']:28s} {r['ms_per_tick']:10.1f} {r['ms_per_merge']:9.2f} "
              f"{r['x_gossip_vc']:7.1f} {r.get('merge_gflops', float('nan')):11.4f}")
    meta = {"backend": jax.default_backend(), "devices": str(jax.devices()[0]),
            "cpus": os.cpu_count(), "sweeps": args.sweeps, "batch": args.batch}
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
