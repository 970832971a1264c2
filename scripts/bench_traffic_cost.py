"""What counting bytes costs the compiled chunk step: XLA's cost analysis of the step with
and without the message counters (SimState.traffic), same config, same shapes.

    python scripts/bench_traffic_cost.py [--json docs/bench_traffic_cost.json]

A static measure (the compiled program's FLOPs and bytes accessed), so it is meaningful on a
loaded machine, where wall-clock A/B timings are not.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vanish import build, config, train


def case_config(model: str, n: int) -> Any:
    """A small synthetic config (600 training images, batch 8) of `model` on `n` nodes."""
    cfg = config.default_config()
    cfg.data.name = "synthetic"
    cfg.dataset_args.synthetic.num_train = 600
    cfg.dataset_args.synthetic.num_test = 200
    cfg.data.test_per_class = 5
    cfg.model.name, cfg.optim.batch_size, cfg.optim.lr = model, 8, 0.05
    cfg.topology.num_nodes, cfg.topology_args.random_regular.degree = n, min(8, n - 1)
    cfg.run.ticks, cfg.run.eval_every = 200, 10
    cfg.schedule.interval_lo, cfg.schedule.interval_hi = 8, 12
    return cfg


def simulation(cfg: Any, name: str, count: bool = True) -> train.Simulation:
    """Algorithm `name`'s Simulation of `cfg` (built as an experiment of it alone), with or
    without the message counters."""
    cfg = cfg.copy_and_resolve_references()
    cfg.algorithms = name
    return train.Simulation(build.experiment(cfg), name, count_traffic=count)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default="")
    ap.add_argument("--tiny", action="store_true", help="one MLP case of 8 nodes (a test)")
    args = ap.parse_args(argv)
    cases = [("mlp", 8)] if args.tiny else [("lenet5", 200), ("mlp", 1000)]
    out = {}
    print(f"{'case':28s} {'GFLOP off':>10s} {'GFLOP on':>10s} {'+%':>7s} {'GB off':>8s} "
          f"{'GB on':>8s} {'+%':>7s}")
    for model, n in cases:
        for name in ("gossip_vc", "fl"):
            cfg = case_config(model, n)
            row = {}
            for count in (False, True):
                sim = simulation(cfg, name, count)
                e = sim.engine
                c = e._step.lower(e.init_state(), e.consts, e.plan).compile().cost_analysis()
                c = c[0] if isinstance(c, list) else c
                row["on" if count else "off"] = dict(flops=c.get("flops"),
                                                     bytes=c.get("bytes accessed"))
            key = f"{model} N={n} {name}"
            out[key] = row
            f0, f1 = row["off"]["flops"], row["on"]["flops"]
            b0, b1 = row["off"]["bytes"], row["on"]["bytes"]
            print(f"{key:28s} {f0 / 1e9:10.4f} {f1 / 1e9:10.4f} {(f1 / f0 - 1) * 100:7.3f} "
                  f"{b0 / 1e9:8.3f} {b1 / 1e9:8.3f} {(b1 / b0 - 1) * 100:7.3f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
