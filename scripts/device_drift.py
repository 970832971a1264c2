"""How far a run split over several devices drifts from the one-device run, tick by tick.

    python scripts/device_drift.py --ticks 1000 --devices 8 --json drift.json

Runs one small config (16 nodes, MLP, synthetic data, gossip_vc on a random 3-regular graph)
for --ticks ticks twice in this process, on one device and with the node axis split over
--devices fake CPU devices, evaluating every --every ticks, and prints per evaluation the
largest absolute difference over every metric (accuracy, loss, per-layer variance,
consensus), then writes the series as JSON. Training counts and merge counts must agree
exactly; the values differ only by the order of float sums (all-reduces and psums), and
those differences feed back through training, so they grow with the ticks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ticks", type=int, default=1000)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--algorithm", default="gossip_vc")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    from vanish import build, config, data, train

    ds = data.load("synthetic", num_train=600, num_test=200, seed=0)

    def sim(shard: str) -> train.Simulation:
        cfg = config.default_config()
        cfg.algorithms = args.algorithm
        cfg.data.name, cfg.data.test_per_class = "synthetic", 5
        cfg.model.name, cfg.optim.batch_size = "mlp", 8
        cfg.topology.name, cfg.topology.num_nodes = "random_regular", 16
        cfg.topology_args.random_regular.degree = 3
        cfg.run.ticks, cfg.run.shard_nodes = args.ticks, shard
        return train.Simulation(build.experiment(cfg, dataset=ds), args.algorithm)

    rows = {}
    for shard in ("false", "true"):
        s = sim(shard)
        state, series = s.init_state(), []
        for t0 in range(0, args.ticks, args.every):
            state = s.run_ticks(state, t0, min(args.ticks, t0 + args.every))
            state, m = s.evaluate(state)
            series.append(m)
        rows[shard] = (s.engine.devices, series)
    (d1, one), (dn, many) = rows["false"], rows["true"]
    assert d1 == 1 and dn == args.devices, (d1, dn)
    out = []
    print(f"{'tick':>6} {'max |diff|':>11}  field")
    for i, (a, b) in enumerate(zip(one, many)):
        tick = min(args.ticks, (i + 1) * args.every)
        exact = all(a[k] == b[k] for k in ("training_events", "averaging_events"))
        diffs = {k: abs(float(a[k]) - float(b[k])) for k in a
                 if isinstance(a[k], (int, float)) and k not in ("ticks_per_s",)}
        worst = max(diffs, key=diffs.__getitem__)
        out.append(dict(tick=tick, max_abs_diff=diffs[worst], field=worst, counts_equal=exact,
                        acc_diff=diffs.get("acc_mean", 0.0), loss_diff=diffs.get("loss_mean", 0.0)))
        print(f"{tick:6d} {diffs[worst]:11.2e}  {worst}{'' if exact else '  (counts differ!)'}")
    result = dict(ticks=args.ticks, every=args.every, devices=args.devices,
                  algorithm=args.algorithm, series=out,
                  max_abs_diff=max(r["max_abs_diff"] for r in out),
                  counts_equal=all(r["counts_equal"] for r in out))
    print(f"max |diff| over {args.ticks} ticks: {result['max_abs_diff']:.2e}; counts equal: "
          f"{result['counts_equal']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if result["counts_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
