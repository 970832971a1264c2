"""Engine benchmark: ticks/s of the packed tick engine vs full-N masked training, same run.

    python scripts/bench_sim.py [--nodes 50,200] [--ticks 200] [--out bench_sim.json]

The paper_iid configuration (LeNet-5, random 8-regular, intervals U{8..12}, batch 64,
gossip + variance correction) on Fashion-MNIST (synthetic data of the same shape when the
Debian files are absent). The baseline is the same engine with `masked_baseline=True`:
every busy tick trains all N nodes and masks out those not scheduled. Both skip the first
`--warmup` ticks (tick 0, where every node trains, and compilation).
Target (issue #3): >= 5x the masked baseline at intervals U{8..12}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from vanish import config as config_lib  # noqa: E402
from vanish import data as data_lib  # noqa: E402
from vanish import runtime  # noqa: E402
from vanish.simulation import Simulation  # noqa: E402


def measure(cfg: Any, dataset: Any, algorithm: str, warmup: int, ticks: int) -> dict[str, Any]:
    sim = Simulation(cfg, algorithm, dataset)
    state = sim.init_state()
    state = sim.run_ticks(state, 0, warmup)
    jax.block_until_ready(state.params)
    t = time.perf_counter()
    state = sim.run_ticks(state, warmup, warmup + ticks)
    jax.block_until_ready(state.params)
    wall = time.perf_counter() - t
    ev = sim.schedule.event_tick
    events = int(((ev >= warmup) & (ev < warmup + ticks)).sum())
    return dict(ticks_per_s=ticks / wall, node_steps_per_s=events / wall, wall_s=wall,
                slots=sim.work.slots, chunks=len(sim.work.between(warmup, warmup + ticks)),
                train_events=events, fuse=sim.fuse)


def main() -> None:
    runtime.reexec_with_tcmalloc()  # as the CLI does; VANISH_TCMALLOC=0 measures without
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="50,200")
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--baseline-ticks", type=int, default=40,
                    help="ticks timed for the (slow) masked baseline")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--algorithm", default="gossip_vc")
    ap.add_argument("--out", default="bench_sim.json")
    args = ap.parse_args()
    try:
        dataset = data_lib.load("fashion_mnist")
    except data_lib.DatasetUnavailableError:
        dataset = data_lib.load("synthetic", num_train=60000, num_test=1000)
    result: dict[str, Any] = dict(backend=jax.default_backend(), cpu_count=os.cpu_count(),
                                  machine=platform.machine(), dataset=dataset.name,
                                  tcmalloc=runtime.tcmalloc_active(),
                                  model=args.model, algorithm=args.algorithm, rows=[])
    print(f"{'N':>5} {'engine':10} {'K':>4} {'ticks/s':>9} {'node-steps/s':>13} {'speedup':>8}")
    for n in (int(v) for v in args.nodes.split(",")):
        cfg = config_lib.default_config()
        cfg.num_nodes, cfg.model, cfg.batch_size = n, args.model, 64
        cfg.ticks = args.warmup + max(args.ticks, args.baseline_ticks)
        packed = measure(cfg, dataset, args.algorithm, args.warmup, args.ticks)
        cfg.masked_baseline = True
        masked = measure(cfg, dataset, args.algorithm, args.warmup, args.baseline_ticks)
        speedup = packed["ticks_per_s"] / masked["ticks_per_s"]
        result["rows"].append(dict(n=n, packed=packed, masked=masked, speedup=speedup))
        for name, r in (("masked", masked), ("packed", packed)):
            print(f"{n:5d} {name:10} {r['slots']:4d} {r['ticks_per_s']:9.1f} "
                  f"{r['node_steps_per_s']:13.0f} "
                  f"{(speedup if name == 'packed' else 1.0):7.2f}x", flush=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
