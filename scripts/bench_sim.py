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
A/B against an older revision (the CPU issue: LeNet-5 node-steps/s >= 2x at N = 50, 1000):

    python scripts/bench_sim.py --against b41a510 [--ab-sizes lenet5:50,lenet5:1000] [--reps 3]

checks REV out in a temporary `git worktree` and runs the engine's TRAINING (the schedule's
chunks of K nodes: gather their params and optimizer state, sample batches of 64 by index from
a 60,000-image array, one `nodes.make_train_step` step, scatter back; ~97% of a tick) of REV
and of this tree, interleaved ABAB (--reps each, fresh processes), through stable APIs only
(schedule, models, nodes); prints median node-steps/s, the ratio and the load average, and
writes JSON. `--sim` adds full-simulation rows (config-dependent: `_simulation`).
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


def _simulation(n: int, model: str, ticks: int) -> Any:
    """THE place that builds a run config and a simulation: adapt it when the config API moves.

    paper_iid with N nodes, `model`, `ticks` ticks, gossip_vc, Fashion-MNIST (synthetic
    when offline). Nested sections (cfg.topology, cfg.model.name, cfg.run) since the config
    redesign, flat fields before it (older revisions, measured with --against --sim). The
    facade is imported by name: its module moves with the redesign.
    """
    import importlib

    from vanish import config as config_lib
    from vanish import data as data_lib

    try:
        dataset = data_lib.load("fashion_mnist")
    except Exception:  # DatasetUnavailableError (data.py before the redesign, errors.py after)
        dataset = data_lib.load("synthetic", num_train=60000, num_test=1000)
    cfg = config_lib.paper_config()
    if "topology" not in cfg:  # flat config, vanish.simulation facade (before the redesign)
        cfg.num_nodes, cfg.model, cfg.ticks = n, model, ticks
        return importlib.import_module("vanish.simulation").Simulation(cfg, "gossip_vc", dataset)
    # Sectioned config: build.experiment reads it once, train.Simulation runs it.
    cfg.topology.num_nodes, cfg.model.name, cfg.run.ticks = n, model, ticks
    cfg.algorithms = "gossip_vc"
    build = importlib.import_module("vanish.build")
    train = importlib.import_module("vanish.train")
    return train.Simulation(build.experiment(cfg, dataset=dataset), "gossip_vc")


def _work_plan(n: int, ticks: int, seed: int = 0) -> tuple[Any, Any, Any, int]:
    """The chunks of paper_iid's training, drawn HERE (numpy only), so that an A/B run gives
    both trees the very same plan: node i trains at ticks 0, 0 + U{8..12}, ...; K minimises
    sum_t ceil(n_t / K) * (K + 2) (`schedule.choose_slots`); each tick's trainers fill
    ceil(n_t / K) chunks of K slots (padding invalid). Returns node [C, K], valid [C, K],
    tick [C] and K."""
    import numpy as np

    gaps = np.random.default_rng(seed).integers(8, 13, size=(n, ticks // 8 + 2))
    times = np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(gaps, 1)], 1)
    node_E = np.broadcast_to(np.arange(n)[:, None], times.shape)[times < ticks]
    tick_E = times[times < ticks]
    order = np.lexsort((node_E, tick_E))
    tick_E, node_E = tick_E[order], node_E[order]
    counts = np.bincount(tick_E, minlength=ticks)
    busy = counts[counts > 0]
    ks = np.arange(1, busy.max() + 1)
    slots = int(ks[np.argmin((np.ceil(busy[None] / ks[:, None]) * (ks[:, None] + 2)).sum(1))])
    node_C, valid_C, tick_C = [], [], []
    for t in np.flatnonzero(counts):
        who = node_E[tick_E == t]
        for c in range(0, len(who), slots):
            part = who[c : c + slots]
            node_C.append(np.pad(part, (0, slots - len(part)), constant_values=part[0]))
            valid_C.append(np.arange(slots) < len(part))
            tick_C.append(t)
    return (np.array(node_C, np.int32), np.array(valid_C), np.array(tick_C, np.int32), slots)


def train_rate(n: int, model: str, ticks: int, warmup: int, batch: int = 64) -> dict[str, Any]:
    """node-steps/s of the engine's training work at N nodes, through stable APIs only.

    paper_iid's training plan (`_work_plan`: U{8..12}, chunks of K nodes, the same for
    every tree); each chunk gathers its K nodes, samples their batches by index from a 60,000-image
    array, takes one vmapped step (SGD lr 0.01, momentum 0.9) and scatters them back, jitted
    once and donating the stacks, as engine._chunk_step's step 1 does. Ticks [warmup,
    warmup + ticks) are timed after tick 0 and compilation.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vanish import models, nodes

    node_C, valid_C, tick_C, slots = _work_plan(n, warmup + ticks)
    net = models.make_model(model)
    tx = nodes.make_optimizer(lr=0.01, momentum=0.9)
    params = nodes.init_params(net, jax.random.PRNGKey(0), n, (28, 28, 1))
    opt = nodes.init_opt_state(tx, params)
    kx, ky = jax.random.split(jax.random.PRNGKey(1))
    x_train = jax.random.normal(kx, (60000, 28, 28, 1))
    y_train = jax.random.randint(ky, (60000,), 0, 10)
    step = nodes.make_train_step(net, tx)

    def chunk(params: Any, opt: Any, node_K: Any, valid_K: Any, key: Any, x: Any,
              y: Any) -> Any:
        idx_KB = jax.random.randint(key, (node_K.shape[0], batch), 0, x.shape[0])
        out = step(nodes.tree_take(params, node_K), nodes.tree_take(opt, node_K), x[idx_KB],
                   y[idx_KB])
        return (nodes.tree_put(params, node_K, out.params, valid_K),
                nodes.tree_put(opt, node_K, out.opt_state, valid_K), out.loss.sum())

    run = jax.jit(chunk, donate_argnums=(0, 1))
    keys = jax.random.split(jax.random.PRNGKey(2), len(tick_C))
    c0, c1 = (int(c) for c in np.searchsorted(tick_C, [warmup, warmup + ticks]))
    steps = int(valid_C[c0:c1].sum())
    node_C, valid_C = jnp.asarray(node_C), jnp.asarray(valid_C)
    for c in range(c0):
        params, opt, _ = run(params, opt, node_C[c], valid_C[c], keys[c], x_train, y_train)
    jax.block_until_ready(params)
    t, cpu = time.perf_counter(), time.process_time()
    for c in range(c0, c1):
        params, opt, _ = run(params, opt, node_C[c], valid_C[c], keys[c], x_train, y_train)
    jax.block_until_ready(params)
    s, cpu = time.perf_counter() - t, time.process_time() - cpu
    if steps == 0:
        raise ValueError(f"no training in ticks [{warmup}, {warmup + ticks}): time more ticks")
    # CPU seconds of all threads: less sensitive than wall time to other processes' load.
    return dict(n=n, model=model, slots=slots, chunks=c1 - c0, node_steps=steps, seconds=s,
                node_steps_per_s=steps / s, cpu_seconds=cpu, node_steps_per_cpu_s=steps / cpu,
                vanish=os.path.dirname(models.__file__))


def _load() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def against(rev: str, sizes: list[tuple[str, int]], reps: int, ticks: int, warmup: int,
            sim: bool, torch_nodes: int = 0) -> dict[str, Any]:
    """REV (in a temporary git worktree) and this tree, interleaved ABAB, fresh processes."""
    import shutil
    import statistics
    import tempfile

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tmp = tempfile.mkdtemp(prefix="vanish_ab_")
    old_tree = os.path.join(tmp, "tree")
    subprocess.run(["git", "-C", here, "worktree", "add", "--detach", old_tree, rev],
                   check=True, capture_output=True)
    sha = subprocess.run(["git", "-C", old_tree, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    # The child runs THIS script from inside each tree (its own root goes first on sys.path).
    shutil.copy(os.path.abspath(__file__), os.path.join(old_tree, "scripts", "_bench_sim_ab.py"))
    scripts = {"old": os.path.join(old_tree, "scripts", "_bench_sim_ab.py"),
               "new": os.path.abspath(__file__)}
    trees = {"old": old_tree, "new": here}
    modes = ["--train"] + (["--sim-one"] if sim else [])
    samples: dict[tuple[str, str, str, int], list[float]] = {}
    loads: list[float] = []
    try:
        for rep in range(reps):
            for model, n in sizes:
                for mode in modes:
                    for side in ("old", "new"):  # ABAB: each pair back to back
                        env = dict(os.environ, PYTHONPATH=trees[side])
                        cmd = [sys.executable, scripts[side], mode, f"{n},{model}",
                               "--ticks", str(ticks), "--warmup", str(warmup), "--no-phases"]
                        loads.append(_load())
                        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                              cwd=trees[side])
                        rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
                        if proc.returncode or not rows:
                            err = (proc.stderr or proc.stdout)[-300:]
                            print(f"{side} {mode} {model} {n} FAILED: {err}", flush=True)
                            continue
                        got = json.loads(rows[0][4:])
                        assert got["vanish"].startswith(trees[side]), (side, got["vanish"])
                        rate = got["node_steps_per_s"]
                        samples.setdefault((mode, side, model, n), []).append(rate)
                        per_cpu = got.get("node_steps_per_cpu_s")
                        if per_cpu:
                            samples.setdefault(("cpu-time", side, model, n), []).append(per_cpu)
                        print(f"rep {rep} {mode[2:]:8} {side:3} {model:6} N={n:5d} "
                              f"{rate:8.1f} node-steps/s ({per_cpu or 0:.1f} per CPU-second)"
                              f"  load {loads[-1]:.2f}", flush=True)
            if torch_nodes:  # the plain PyTorch loop (scripts/bench_torch.py), 1 and all threads
                loads.append(_load())
                cmd = [sys.executable, os.path.join(os.path.dirname(__file__), "bench_torch.py"),
                       "--nodes", str(torch_nodes), "--rounds", "3", "--threads", "1,0", "--row"]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                got = [json.loads(ln[4:]) for ln in proc.stdout.splitlines()
                       if ln.startswith("ROW ")]
                if proc.returncode or not got:
                    print(f"torch FAILED: {(proc.stderr or proc.stdout)[-300:]}", flush=True)
                for row in got:
                    key = ("torch", f"{row['threads']}t", "lenet5", torch_nodes)
                    samples.setdefault(key, []).append(row["node_steps_per_s"])
                    print(f"rep {rep} torch    {row['threads']} thread(s) N={torch_nodes:5d} "
                          f"{row['node_steps_per_s']:8.1f} node-steps/s  load {loads[-1]:.2f}",
                          flush=True)
    finally:
        subprocess.run(["git", "-C", here, "worktree", "remove", "--force", old_tree],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    table = []
    head = f"{rev} ({sha})"
    print(f"\nwhat     model       N {head:>22} {'this tree':>10}  ratio"
          f"   (median node-steps/s of {reps})")
    for mode in modes + ["cpu-time"]:  # cpu-time: node-steps per CPU-second of --train
        for model, n in sizes:
            a, b = samples.get((mode, "old", model, n)), samples.get((mode, "new", model, n))
            if not a or not b:
                continue
            ma, mb = statistics.median(a), statistics.median(b)
            table.append(dict(what=mode.lstrip("-"), model=model, n=n, old=ma, new=mb,
                              ratio=mb / ma,
                              old_samples=a, new_samples=b))
            print(f"{mode.lstrip('-'):8} {model:6} {n:6d} {ma:22.1f} {mb:10.1f} {mb / ma:5.2f}x")
    new_n = {n: statistics.median(v) for (m, side, model, n), v in samples.items()
             if m == "--train" and side == "new" and model == "lenet5"}
    for (m, side, model, n), v in sorted(samples.items()):
        if m != "torch":
            continue
        ref = new_n.get(n) or (new_n[min(new_n)] if new_n else float("nan"))
        mt = statistics.median(v)
        table.append(dict(what=f"torch {side}", model=model, n=n, torch=mt, new=ref,
                          ratio=ref / mt, torch_samples=v))
        print(f"torch {side:3} {model:6} {n:6d} {mt:22.1f} {ref:10.1f} {ref / mt:5.2f}x"
              f"   (PyTorch loop; ratio = this tree's training / it)")
    lo, med, hi = min(loads), statistics.median(loads), max(loads)
    print(f"load average (1 min) at the starts of the runs: min {lo:.2f}, median {med:.2f}, "
          f"max {hi:.2f}")
    return dict(against=rev, against_sha=sha, reps=reps, rows=table,
                loadavg=dict(min=lo, median=med, max=hi))


def one(n: int, model: str, ticks: int, warmup: int, phases: bool) -> dict[str, Any]:
    import jax

    from vanish import engine
    from vanish.algorithms import base, single

    sim = _simulation(n, model, warmup + ticks)
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

            # The built components (build.Components): the flax module, its optimizer, sizes.
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
    ap.add_argument("--one", "--sim-one", default="", help=argparse.SUPPRESS)  # "n,model"
    ap.add_argument("--train", default="", help=argparse.SUPPRESS)  # child: "n,model"
    ap.add_argument("--against", default="", metavar="REV",
                    help="A/B: training node-steps/s of git revision REV vs this tree")
    ap.add_argument("--ab-sizes", default="lenet5:50,lenet5:1000",
                    help="model:N list for --against")
    ap.add_argument("--reps", type=int, default=3, help="runs per side for --against")
    ap.add_argument("--sim", action="store_true", help="--against: full-simulation rows too")
    ap.add_argument("--torch", type=int, default=0, metavar="N",
                    help="--against: also a PyTorch loop over N LeNet-5 models (needs torch)")
    ap.add_argument("--out", default="bench_sim.json")
    args = ap.parse_args()
    if args.train:
        n, model = args.train.split(",")
        print("ROW " + json.dumps(train_rate(int(n), model, args.ticks, args.warmup)))
        return
    if args.against:
        import jax

        sizes = [(m, int(v)) for m, v in (s.split(":") for s in args.ab_sizes.split(",") if s)]
        res = against(args.against, sizes, args.reps, args.ticks, args.warmup, args.sim,
                      args.torch)
        res.update(backend=jax.default_backend(), cpu_count=os.cpu_count(),
                   machine=platform.machine(), processor=platform.processor(),
                   tcmalloc=runtime.tcmalloc_active(), time=time.strftime("%Y-%m-%d %H:%M:%S"))
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
        print(f"wrote {args.out}")
        return
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
                row: dict[str, Any] = dict(n=n, model=model,
                                           error=(proc.stderr or proc.stdout)[-400:])
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
