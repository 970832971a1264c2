"""Scale-out benchmark: what crosses devices per tick, against what the topology needs.

    python scripts/bench_scale.py [--devices 1,2,4,8] [--n 64] [--weak 16] [--ticks 30]
                                  [--model lenet5] [--out docs/bench_scale.json]

Each device count D runs in its own subprocess with D fake XLA:CPU devices
(`--xla_force_host_platform_device_count`; on a machine with D real devices they are used),
the node axis split over them (`shard_nodes`). Cases: strong scaling (N fixed) for
gossip_vc on a random 8-regular graph and on a ring, and FL on a star (N - 1 clients + the
server); weak scaling (N = weak x D) for gossip_vc on the random regular graph.

Per case it compiles the sharded chunk step and reads its HLO: every collective (kind,
shapes, bytes) and the per-device training batch (the leading dim of the 3-D dots). Bytes
moved per tick = the collectives' bytes received by all devices in one chunk step (an
all-gather of B bytes: (D - 1) / D x B per device; an all-reduce: 2 (D - 1) / D x B, ring)
x the work plan's chunks per tick. The baseline, computed in the same run from the work
plan and the graph: the bytes the topology implies, i.e. every sent model to each other
device that holds at least one of its receivers, once, under the engine's contiguous
placement (node i on device i // (N / D)) and under a balanced graph partition (recursive
Kernighan-Lin bisection, networkx), the placement a halo exchange could use. Ratio > 1 means
the engine moves more than needed (all-gather sends every model to every device, padding
slots included).

The D devices of one CPU share its cores, so ticks/s is reported but is not a speed-up;
the collectives, the per-device batch and the per-device compiled memory are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

COLLECTIVES = ("all-gather", "all-reduce", "collective-permute", "all-to-all", "reduce-scatter")
_DTYPE_BYTES = {"f64": 8, "f32": 4, "s32": 4, "u32": 4, "f16": 2, "bf16": 2, "s8": 1, "u8": 1,
                "pred": 1, "s64": 8, "u64": 8, "s16": 2, "u16": 2}
_OP = re.compile(r"= (.*?) (" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
_SHAPE = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_DOT = re.compile(r"= \w+\[(\d+),\d+,\d+\]\S* dot\(")


def hlo_collectives(text: str) -> list[dict[str, Any]]:
    """Every collective of a compiled HLO module: kind and output bytes (tuples summed)."""
    out = []
    for line in text.splitlines():
        m = _OP.search(line)
        if not m:
            continue
        nbytes = 0
        for dtype, dims in _SHAPE.findall(m.group(1)):
            size = 1
            for d in filter(None, dims.split(",")):
                size *= int(d)
            nbytes += size * _DTYPE_BYTES.get(dtype, 4)
        out.append(dict(kind=m.group(2), bytes=nbytes))
    return out


def received_bytes(collectives: list[dict[str, Any]], devices: int) -> float:
    """Bytes all devices together receive in one execution of these collectives."""
    d = devices
    if d == 1:
        return 0.0
    per = {"all-gather": (d - 1) / d, "all-reduce": 2 * (d - 1) / d,
           "reduce-scatter": (d - 1) / d, "all-to-all": (d - 1) / d, "collective-permute": 1.0}
    return float(sum(c["bytes"] * per[c["kind"]] for c in collectives)) * d


def placements(senders: Any, receivers: Any, n: int, devices: int, seed: int = 0) -> dict:
    """Node -> device maps: 'contiguous' (the engine's) and 'partition' (balanced min-cut)."""
    import networkx as nx
    import numpy as np

    contiguous = np.arange(n) // (n // devices)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(zip(senders.tolist(), receivers.tolist()))
    parts = [list(range(n))]
    while len(parts) < devices:  # recursive bisection: D a power of two
        parts = [half for p in parts for half in
                 map(sorted, nx.algorithms.community.kernighan_lin_bisection(
                     g.subgraph(p), seed=seed))]
    part = np.empty(n, np.int64)
    for d, p in enumerate(parts):
        part[p] = d
    return dict(contiguous=contiguous, partition=part)


def needed_bytes(work: Any, senders: Any, receivers: Any, place: Any, row_bytes: int) -> int:
    """Bytes the sends of a work plan must move: each model to each other device holding
    one of its receivers, once."""
    import numpy as np

    n = place.shape[0]
    remote = np.zeros((n, int(place.max()) + 1), bool)
    remote[senders, place[receivers]] = True
    remote[np.arange(n), place] = False
    fanout = remote.sum(1)  # other devices a node's model must reach
    sent = work.node[work.valid & work.send]
    return int(fanout[sent].sum()) * row_bytes


def one(case: str, n: int, model: str, ticks: int, warmup: int) -> dict[str, Any]:
    import jax
    import numpy as np

    from vanish import build, train
    from vanish import config as config_lib
    from vanish import data as data_lib

    algo, topo = case.split("@")
    dataset = data_lib.load("synthetic", num_train=6000, num_test=200)
    cfg = config_lib.paper_config()
    cfg.topology.num_nodes = n - 1 if algo == "fl" else n
    cfg.model.name, cfg.run.ticks, cfg.data.test_per_class = model, warmup + ticks, 10
    cfg.topology.name = topo
    d = jax.device_count()
    cfg.run.shard_nodes = "true" if d > 1 else "false"
    cfg.algorithms = algo
    sim = train.Simulation(build.experiment(cfg, dataset=dataset), algo)
    e = sim.engine
    state = sim.init_state()
    compiled = e._step.lower(state, e.consts, e.plan).compile()
    text = compiled.as_text()
    colls = hlo_collectives(text)
    batches = sorted({int(b) for b in _DOT.findall(text)})
    mem = compiled.memory_analysis()
    work = sim.work
    chunks_per_tick = len(work) / int(cfg.run.ticks)
    leaves = jax.tree.leaves(state.params)
    row_bytes = int(sum(x.nbytes for x in leaves)) // sim.n
    topo_ = sim.topo
    per_tick = {}
    for name, place in placements(topo_.senders, topo_.receivers, sim.n, d).items():
        per_tick[name] = needed_bytes(work, topo_.senders, topo_.receivers, place,
                                      row_bytes) / int(cfg.run.ticks)
    moved = received_bytes(colls, d) * chunks_per_tick
    state = jax.block_until_ready(e.run_ticks(state, 0, warmup))
    t = time.perf_counter()
    state = jax.block_until_ready(e.run_ticks(state, warmup, warmup + ticks))
    secs = time.perf_counter() - t
    kinds: dict[str, dict[str, int]] = {}
    for c in colls:
        k = kinds.setdefault(c["kind"], dict(count=0, bytes=0))
        k["count"] += 1
        k["bytes"] += c["bytes"]
    return dict(
        case=case, algorithm=algo, topology=topo, n=sim.n, model=model, devices=d,
        slots=work.slots, slots_per_device=work.slots // d, dot_batches=batches,
        halo=None if e.halo is None else list(e.halo),
        collectives=kinds, chunks_per_tick=chunks_per_tick, row_bytes=row_bytes,
        moved_bytes_per_tick=moved, needed_bytes_per_tick=per_tick["contiguous"],
        needed_bytes_per_tick_partitioned=per_tick["partition"],
        moved_over_needed=(moved / per_tick["contiguous"] if per_tick["contiguous"] else None),
        ticks_per_s=ticks / secs,
        device_argument_bytes=int(mem.argument_size_in_bytes),
        device_temp_bytes=int(mem.temp_size_in_bytes),
        state_bytes_per_device=int(sum(x.addressable_shards[0].data.nbytes
                                       for x in jax.tree.leaves(state))),
        merges=int(np.asarray(e.fetch(state.merges)).sum()))


def scale_checks(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Targets read from the rows: no replicated training, flat per-device state (weak)."""
    ok = [r for r in rows if "error" not in r]
    checks: dict[str, Any] = {}
    for r in ok:  # no replicated training: each device's batch is its share of the slots
        if r["devices"] > 1:  # (one slot per device: XLA drops the batch dim, no 3-D dots)
            key = f"{r['case']}_N{r['n']}_D{r['devices']}_dot_batch_is_K_over_D"
            k = r["slots_per_device"]
            checks[key] = r["dot_batches"] == ([] if k == 1 else [k])
    weak = sorted((r for r in ok if r["scaling"] == "weak"), key=lambda r: r["devices"])
    if len(weak) >= 2:  # per-device memory stays flat as N and D grow together
        checks["weak_state_bytes_per_device_ratio_maxD_vs_minD"] = (
            weak[-1]["state_bytes_per_device"] / weak[0]["state_bytes_per_device"])
    return checks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="1,2,4,8")
    ap.add_argument("--n", type=int, default=64, help="strong scaling: nodes (FL: with server)")
    ap.add_argument("--weak", type=int, default=16, help="weak scaling: nodes per device")
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--ticks", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--cases", default="gossip_vc@random_regular,gossip_vc@ring,fl@star",
                    help="strong-scaling cases, algorithm@topology")
    ap.add_argument("--no-weak", action="store_true", help="skip the weak-scaling runs")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # child: "case,n"
    ap.add_argument("--out", default="bench_scale.json")
    args = ap.parse_args()
    if args.one:
        case, n = args.one.split(",")
        print("ROW " + json.dumps(one(case, int(n), args.model, args.ticks, args.warmup)))
        return
    strong = tuple(c for c in args.cases.split(",") if c)
    result: dict[str, Any] = dict(cpu_count=os.cpu_count(), machine=platform.machine(),
                                  model=args.model, rows=[])
    print(f"{'scaling':7} {'case':26} {'N':>5} {'D':>2} {'K/D':>4} {'dot batch':>9} "
          f"{'collectives':28} {'MB/tick':>8} {'need':>7} {'need*':>7} {'ratio':>6} "
          f"{'ticks/s':>7} {'dev MB':>7}")
    for d in (int(v) for v in args.devices.split(",")):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={d}",
                   JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        runs = [("strong", c, args.n) for c in strong]
        if not args.no_weak:
            runs.append(("weak", "gossip_vc@random_regular", args.weak * d))
        for scaling, case, n in runs:
            if scaling == "weak" and n == args.n:  # the same run as the strong one
                row = next(r for r in result["rows"] if r.get("case") == case
                           and r.get("devices") == d and r.get("n") == n)
                result["rows"].append(dict(row, scaling="weak"))
                continue
            cmd = [sys.executable, os.path.abspath(__file__), "--one", f"{case},{n}",
                   "--model", args.model, "--ticks", str(args.ticks),
                   "--warmup", str(args.warmup)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
            if proc.returncode or not lines:
                row = dict(scaling=scaling, case=case, n=n, devices=d,
                           error=(proc.stderr or proc.stdout)[-600:])
                print(f"{scaling:7} {case:26} {n:5d} {d:2d} FAILED: {row['error'][-300:]}",
                      flush=True)
            else:
                row = dict(json.loads(lines[0][4:]), scaling=scaling)
                m = 2.0**20
                colls = " ".join(f"{k}x{v['count']}" for k, v in row["collectives"].items())
                ratio = row["moved_over_needed"]
                print(f"{scaling:7} {case:26} {row['n']:5d} {d:2d} {row['slots_per_device']:4d} "
                      f"{','.join(map(str, row['dot_batches'])):>9} {colls or '-':28} "
                      f"{row['moved_bytes_per_tick'] / m:8.2f} "
                      f"{row['needed_bytes_per_tick'] / m:7.2f} "
                      f"{row['needed_bytes_per_tick_partitioned'] / m:7.2f} "
                      f"{'-' if ratio is None else f'{ratio:.1f}':>6} {row['ticks_per_s']:7.1f} "
                      f"{(row['device_argument_bytes'] + row['device_temp_bytes']) / m:7.1f}",
                      flush=True)
            result["rows"].append(row)
    checks = scale_checks(result["rows"])
    result["checks"] = checks
    print("MB/tick: received by all devices together; need: the topology's minimum under the "
          "engine's placement; need*: under a min-cut partition; dev MB: compiled arguments + "
          "temporaries per device")
    for k, v in checks.items():
        print(f"{k}: {v}")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
