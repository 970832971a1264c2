"""Runs the robustness experiment point by point, seed by seed; resumable.

    nohup taskset -c 1 python scripts/run_robustness.py > runs/robustness/robustness.log 2>&1 &
    python scripts/run_robustness.py --list           # points, their state, nothing run
    python scripts/run_robustness.py --only churn50,peer1 --seeds 0,1,2

One factor at a time from the fault-free point of experiments/robustness/config.py (its
docstring says what is measured): churn at an offline share of 20 / 50 / 80 % (churn_up =
80, churn_down = 20 / 80 / 320), message loss drop_prob = 0.1 / 0.3 / 0.5, and peer sampling
to k = 1 / 2 / 8 of the 8 neighbours (gossip and gossip_vc only: fl's star has no peers to
sample). `baseline` is churn 0 %, drop 0 and all neighbours at once, shared by the axes.
`modest_baseline` and `modest_churn20/50/80` run MoDeST (its default knobs: rounds of 10
ticks, a 20 % sample trains, 4 aggregators) at the baseline and churn points.
Each (point, seed) is one `python -m vanish.run` in runs/robustness/<point>/seed<s>
(checkpoints every 500 ticks, so a stopped run resumes where it was); a finished one (its
summary.json reports the planned final tick for every algorithm of the point) is skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NamedTuple

from vanish import sweep

ROOT = Path(__file__).resolve().parent.parent
CONFIG = "experiments/robustness/config.py"
ALGORITHMS = "fl,gossip,gossip_vc"  # the config's; peer-sampling points drop fl
GOSSIP_ONLY = "gossip,gossip_vc"
TICKS = 2000  # the config's ticks (tests check that they agree)


class Point(NamedTuple):
    name: str
    overrides: dict[str, Any]  # {dotted config path: value}
    algorithms: str


def _points() -> list[Point]:
    points = [Point("baseline", {}, ALGORITHMS)]
    # Offline share down / (up + down) with churn_up = 80 (set in the config).
    points += [Point(f"churn{share}", {"network.churn_down": down}, ALGORITHMS)
               for share, down in ((20, 20.0), (50, 80.0), (80, 320.0))]
    points += [Point(f"drop{p}", {"network.drop_prob": p}, ALGORITHMS) for p in (0.1, 0.3, 0.5)]
    points += [Point(f"peer{k}", {"network.peer_k": k, "network.peer_mode": "neighbors",
                                  "algorithms": GOSSIP_ONLY}, GOSSIP_ONLY) for k in (1, 2, 8)]
    # MoDeST (decentralized sampling) on the churn axis, beside fl and gossip_vc.
    points += [Point(f"modest_{pt.name}", {**pt.overrides, "algorithms": "modest"}, "modest")
               for pt in points if pt.name == "baseline" or pt.name.startswith("churn")]
    return points


POINTS = _points()


def job(point: Point, seed: int, workdir: Path) -> sweep.Job:
    return sweep.Job(point.name, seed, str(ROOT / CONFIG), point.overrides, workdir)


def done(workdir: Path, point: Point, ticks: int = TICKS) -> bool:
    ends = {a: ticks for a in point.algorithms.split(",")}
    return sweep.finished(job(point, 0, workdir), ends)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(ROOT / "runs" / "robustness"))
    p.add_argument("--only", default="", help="comma-separated point names (default: all)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--list", action="store_true", help="print points and their state only")
    args = p.parse_args(argv)
    names = [pt.name for pt in POINTS]
    only = [s for s in args.only.split(",") if s]
    unknown = sorted(set(only) - set(names))
    if unknown:
        p.error(f"unknown points {unknown}; known: {names}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    for point in POINTS:
        if only and point.name not in only:
            continue
        for seed in seeds:
            workdir = Path(args.root) / point.name / f"seed{seed}"
            state = "done" if done(workdir, point) else "todo"
            print(f"{point.name:10s} seed {seed}: {state}", flush=True)
            if args.list or state == "done":
                continue
            rc = sweep.run_jobs([job(point, seed, workdir)], processes=True)[workdir]
            print(f"{point.name:10s} seed {seed}: exit {rc} (log {workdir}.log)", flush=True)
            if rc:
                return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
