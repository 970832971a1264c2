"""Engine benchmark: cost and memory per tick vs N, split into train / deliver / merge / eval.

    python scripts/bench_sim.py [--lenet 50,200,1000,5000] [--mlp 1000,5000,20000]
                                [--ticks 40] [--out docs/bench_sim.json]

The paper_iid configuration (random 8-regular, intervals U{8..12}, batch 64, threshold =
degree, gossip + variance correction, 100 class-balanced test images per node) with LeNet-5
and with the MLP. Every size runs in a fresh subprocess, so its peak RSS (ru_maxrss) is its
own; the state's bytes are summed from the state pytree. Phases are timed as three engines
over the same work plan: train only (emit and end-of-tick replaced by no-ops), train +
deliver, and the full step; deliver and merge are the differences. Ticks [warmup, warmup +
ticks) are timed, after tick 0 (where every node trains) and compilation; one evaluation
is timed separately and amortised over eval_every = 100 ticks.
Targets (issue #7): node-steps/s at N = 1000 >= 95% of N = 50's (same model, same run);
peak-RSS growth 50 -> 1000 <= 1.5x the state's growth; N = 5000 LeNet-5 runs; paper_iid at
50 and 200 nodes >= 27 and >= 6.8 ticks/s (5x the authors' simulator on this machine type).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

AUTHORS_TICKS_PER_S = {50: 5.4, 200: 1.35}  # DFL_torch, 1 thread, measured on this machine type


def _state_bytes(state: Any) -> int:
    import jax

    return int(sum(x.nbytes for x in jax.tree.leaves(state)))


def one(n: int, model: str, ticks: int, warmup: int, phases: bool) -> dict[str, Any]:
    import jax

    from vanish import config as config_lib
    from vanish import data as data_lib
    from vanish import engine
    from vanish.algorithms import base, single
    from vanish.simulation import Simulation

    try:
        dataset = data_lib.load("fashion_mnist")
    except data_lib.DatasetUnavailableError:
        dataset = data_lib.load("synthetic", num_train=60000, num_test=1000)
    cfg = config_lib.paper_config()
    cfg.num_nodes, cfg.model, cfg.ticks = n, model, warmup + ticks
    sim = Simulation(cfg, "gossip_vc", dataset)
    ev = sim.schedule.event_tick
    events = int(((ev >= warmup) & (ev < warmup + ticks)).sum())

    def timed(eng: engine.Engine) -> tuple[float, Any]:
        state = eng.run_ticks(eng.init_state(), 0, warmup)
        jax.block_until_ready(state)
        t = time.perf_counter()
        state = eng.run_ticks(state, warmup, warmup + ticks)
        jax.block_until_ready(state)
        return time.perf_counter() - t, state

    full_s, state = timed(sim.engine)
    row: dict[str, Any] = dict(
        n=n, model=model, ticks=ticks, train_events=events, slots=sim.work.slots,
        ticks_per_s=ticks / full_s, node_steps_per_s=events / full_s,
        ms_per_tick=1e3 * full_s / ticks, state_bytes=_state_bytes(state))
    t = time.perf_counter()
    state, _ = sim.evaluate(state)
    eval_s = time.perf_counter() - t  # includes compilation: timed again below
    t = time.perf_counter()
    state, _ = sim.evaluate(state)
    eval_s = time.perf_counter() - t
    row["ms_eval_per_tick"] = 1e3 * eval_s / 100
    row["eval_s"] = eval_s
    # Peak memory of the real run (one engine, its evaluation), before the phase engines.
    row["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if phases:
        c = sim.components
        parts = {}
        for label, algo in (
                ("train", c.algorithm._replace(emit=base.no_emit, end_of_tick=single.end_of_tick)),
                ("train+deliver", c.algorithm._replace(end_of_tick=single.end_of_tick))):
            from vanish import nodes
            import functools

            init = functools.partial(nodes.init_params, c.model, c.keys["init"], sim.n,
                                     c.input_shape, shared=False)
            eng = engine.Engine(algo, nodes.make_train_step(c.model, c.tx), c.tx, init, c.work,
                                c.consts, batch_size=c.batch_size, train_key=c.keys["train"],
                                merge_slots=c.merge_slots)
            parts[label] = timed(eng)[0]
            del eng
        row["ms_train"] = 1e3 * parts["train"] / ticks
        row["ms_deliver"] = 1e3 * (parts["train+deliver"] - parts["train"]) / ticks
        row["ms_merge"] = 1e3 * (full_s - parts["train+deliver"]) / ticks
    return row


def main() -> None:
    from vanish import runtime

    runtime.reexec_with_tcmalloc()  # as the CLI does; VANISH_TCMALLOC=0 measures without
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lenet", default="50,200,1000,5000")
    ap.add_argument("--mlp", default="1000,5000,20000")
    ap.add_argument("--ticks", type=int, default=40)
    ap.add_argument("--big-ticks", type=int, default=10, help="ticks timed at N >= 5000")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--big-warmup", type=int, default=3, help="warm-up ticks at N >= 5000")
    ap.add_argument("--no-phases", action="store_true")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # child: "n,model"
    ap.add_argument("--out", default="bench_sim.json")
    args = ap.parse_args()
    if args.one:
        n, model = args.one.split(",")
        big = int(n) >= 5000
        ticks, warmup = (args.big_ticks, args.big_warmup) if big else (args.ticks, args.warmup)
        print("ROW " + json.dumps(one(int(n), model, ticks, warmup, not args.no_phases)))
        return
    import jax

    result: dict[str, Any] = dict(backend=jax.default_backend(), cpu_count=os.cpu_count(),
                                  machine=platform.machine(), tcmalloc=runtime.tcmalloc_active(),
                                  algorithm="gossip_vc", rows=[])
    print(f"{'model':6} {'N':>6} {'ticks/s':>8} {'steps/s':>8} {'train':>8} {'deliver':>8} "
          f"{'merge':>8} {'eval':>7} {'peak GB':>8} {'state GB':>9}  (ms per tick)")
    for model, sizes in (("lenet5", args.lenet), ("mlp", args.mlp)):
        for n in (int(v) for v in sizes.split(",") if v):
            cmd = [sys.executable, os.path.abspath(__file__), "--one", f"{n},{model}",
                   "--ticks", str(args.ticks), "--big-ticks", str(args.big_ticks),
                   "--warmup", str(args.warmup), "--big-warmup", str(args.big_warmup)]
            cmd += ["--no-phases"] if args.no_phases else []
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
            if proc.returncode or not lines:
                row = dict(n=n, model=model, error=(proc.stderr or proc.stdout)[-400:])
                print(f"{model:6} {n:6d} FAILED: {row['error'][-200:]}", flush=True)
            else:
                row = json.loads(lines[0][4:])
                g = 2.0**30
                print(f"{model:6} {n:6d} {row['ticks_per_s']:8.2f} {row['node_steps_per_s']:8.0f} "
                      f"{row.get('ms_train', float('nan')):8.1f} "
                      f"{row.get('ms_deliver', float('nan')):8.1f} "
                      f"{row.get('ms_merge', float('nan')):8.1f} {row['ms_eval_per_tick']:7.1f} "
                      f"{row['peak_rss_bytes'] / g:8.2f} {row['state_bytes'] / g:9.3f}",
                      flush=True)
            result["rows"].append(row)
    rows = {(r["model"], r["n"]): r for r in result["rows"] if "error" not in r}
    checks: dict[str, Any] = {}
    for model in ("lenet5", "mlp"):
        ns = sorted(n for m, n in rows if m == model)
        if len(ns) >= 2:
            # The targets compare N = 1000 with the smallest N; without a larger N <= 1000
            # (the MLP sizes), the largest N against the smallest.
            top = max(n for n in ns if n <= 1000)
            lo, hi = rows[(model, ns[0])], rows[(model, top if top > ns[0] else ns[-1])]
            checks[f"{model}_rate_ratio_{hi['n']}_vs_{lo['n']}"] = (
                hi["node_steps_per_s"] / lo["node_steps_per_s"])
            d_state = hi["state_bytes"] - lo["state_bytes"]
            if d_state > 0:
                checks[f"{model}_rss_growth_over_state_growth_{lo['n']}_{hi['n']}"] = (
                    (hi["peak_rss_bytes"] - lo["peak_rss_bytes"]) / d_state)
    for n, ref in AUTHORS_TICKS_PER_S.items():
        if ("lenet5", n) in rows:
            checks[f"lenet5_N{n}_vs_authors_simulator"] = rows[("lenet5", n)]["ticks_per_s"] / ref
    result["checks"] = checks
    for k, v in checks.items():
        print(f"{k}: {v:.2f}")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
