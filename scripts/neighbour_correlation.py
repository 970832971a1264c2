"""How alike neighbours' models are: the Pearson correlation of their kernels, as they are and
after aligning one to the other (Git Re-Basin weight matching), from a run's newest checkpoint.

    python scripts/neighbour_correlation.py runs/grid/align_iid_n50/seed0 --edges 64

For each algorithm of the workdir with a checkpoint, over `--edges` edges (i <- j) of its graph
drawn with a fixed seed: the mean and sd of corr(i, j) and of corr(i, align(j -> i)). Averaging
unaligned models mixes unrelated hidden units; a rule whose neighbours are already aligned
(correlation near the aligned value) merges like with like. Prints a table and writes JSON
(--out). Reads the checkpoint only; the workdir is not changed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np

from vanish import alignment, build, compat, train, workdir


def experiment_of(path: Path) -> build.Experiment:
    """The workdir's stored experiment (its record read through vanish.compat)."""
    stored = workdir.stored_config(path)
    if stored is None:
        raise SystemExit(f"{path}: no {workdir.CONFIG_FILE}")
    flat = compat.upgrade(stored.config if stored.version == 1
                          else workdir.flatten(stored.config))
    return build.experiment(ml_collections.ConfigDict(workdir.unflatten(flat)))


def correlations(sim: train.Simulation, state, edges: int, seed: int = 0) -> dict:
    """Mean and sd of neighbours' kernel correlation, raw and after weight matching."""
    graph = sim.topo.device_graph()
    senders, receivers = np.asarray(graph.senders), np.asarray(graph.receivers)
    rng = np.random.default_rng(seed)
    pick = rng.choice(senders.size, size=min(edges, senders.size), replace=False)
    spec = alignment.spec_for(sim.components.model)
    params = jax.device_get(state.params)
    row = lambda i: jax.tree.map(lambda x: x[i], params)  # noqa: E731
    raw, aligned = [], []
    for e in pick:
        a, b = row(int(receivers[e])), row(int(senders[e]))
        raw.append(float(alignment.flat_correlation(a, b)))
        _, b_aligned = alignment.weight_matching(spec, a, b, sweeps=3, solver="scipy")
        aligned.append(float(alignment.flat_correlation(a, b_aligned)))
    return dict(edges=len(pick), raw_mean=float(np.mean(raw)), raw_sd=float(np.std(raw)),
                aligned_mean=float(np.mean(aligned)), aligned_sd=float(np.std(aligned)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdir", type=Path)
    p.add_argument("--algorithms", default="", help="comma-separated (default: every one "
                   "with a checkpoint)")
    p.add_argument("--edges", type=int, default=64)
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: none)")
    args = p.parse_args(argv)
    exp = experiment_of(args.workdir)
    names = [a for a in (args.algorithms.split(",") if args.algorithms else exp.algorithms)
             if (args.workdir / a).is_dir()]
    if not names:
        print(f"{args.workdir}: no algorithm with a checkpoint", file=sys.stderr)
        return 1
    out = {}
    print(f"{'algorithm':18s} {'tick':>6s} {'edges':>5s} {'raw corr':>16s} {'aligned corr':>16s}")
    for name in names:
        sim = train.Simulation(exp, name)
        state, _, tick = sim.restore_latest(args.workdir / name)
        r = dict(correlations(sim, state, args.edges), tick=tick)
        out[name] = r
        print(f"{name:18s} {tick:6d} {r['edges']:5d} {r['raw_mean']:8.3f} ± {r['raw_sd']:.3f} "
              f"{r['aligned_mean']:8.3f} ± {r['aligned_sd']:.3f}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
