"""The results grid from run workdirs: mean and spread over seeds, as markdown and figures.

    python scripts/results_table.py runs/grid/*/ --by num_nodes --out docs/results_grid.md \
        --figure num_nodes:docs/figures/tta_vs_n.png --curves docs/figures/acc_vs_n.png \
        --into docs/RESULTS.md:size

Every workdir below the given paths that holds summary.json and run_config.json is one run
(one seed). Runs are grouped by the `--by` config fields (all other fields but the seed must
agree within a group, else the script says which differ); per group and algorithm it reports
the mean +- standard deviation over seeds of ticks to the target accuracy (a run that never
reached it is counted and shown as "never"), final mean node accuracy, final accuracy of the
global average model and the kernel variance ratio, and gossip's and fl's ticks to target
divided by gossip_vc's (per seed, then averaged). Numbers are read, never typed: the table
is regenerated from the summaries, and `--into` writes it into a marked section of a
markdown file. `--curves` draws accuracy vs tick per group from the runs' metrics.jsonl,
`--variance` the kernels' variance (relative to the initial one) vs tick.

The command line of vanish.results (the tables; scripts/run_grid.py --tables calls it too)
and vanish.plots (the figures).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from vanish import plots, results
from vanish.plots import CURVE_X
from vanish.results import ResultsError

# TEMPORARY: scripts/run_grid.py processes started before vanish.results existed load this
# file by path for their archive merge (rt.load_run, rt._IGNORED); delete once they are done.
from vanish.results import _IGNORED, load_run  # noqa: F401


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="workdirs or folders holding workdirs")
    ap.add_argument("--by", default="num_nodes", help="comma-separated config fields")
    ap.add_argument("--out", default="", help="write the markdown table here (else stdout)")
    ap.add_argument("--json", default="", help="also write the aggregated rows as JSON")
    ap.add_argument("--figure", action="append", default=[],
                    help="FIELD:PATH, ticks to target vs FIELD, or vs 'group' (every --by "
                         "field; categorical) (repeatable)")
    ap.add_argument("--curves", default="",
                    help="PATH: accuracy vs tick, one panel per group (needs metrics.jsonl)")
    ap.add_argument("--curves-x", action="append", default=[],
                    help=f"X:PATH: accuracy vs X, one of {sorted(CURVE_X)} (repeatable)")
    ap.add_argument("--variance", default="",
                    help="PATH: kernel variance / initial vs tick (log scale), one panel per "
                         "group (needs metrics.jsonl)")
    ap.add_argument("--into", default="",
                    help="FILE:NAME: also put the table between <!-- results:NAME --> and "
                         "<!-- /results:NAME --> in FILE (e.g. docs/RESULTS.md)")
    args = ap.parse_args(argv)
    by = [f.strip() for f in args.by.split(",") if f.strip()]
    try:
        runs = results.find_runs(args.paths)
        rows = results.aggregate(runs, by)
        for spec in args.figure:
            field, _, path = spec.partition(":")
            if not path or field not in [*by, "group"]:
                raise ResultsError(f"--figure {spec!r}: use FIELD:PATH with FIELD one of "
                                   f"{by} or 'group'")
            plots.plot_ticks_to_target(rows, field, path, by,
                                       setup=results.figure_setup(runs, by))
        if args.curves:
            results.curves_figure(runs, by, args.curves)
        for spec in args.curves_x:
            x, _, path = spec.partition(":")
            if x not in CURVE_X or not path:
                raise ResultsError(f"--curves-x {spec!r}: use X:PATH with X one of "
                                   f"{sorted(CURVE_X)}")
            results.curves_figure(runs, by, path, x)
        if args.variance:
            results.curves_figure(runs, by, args.variance, y="var_ratio")
        table = results.markdown(rows, by)
        if args.into:
            file, _, name = args.into.rpartition(":")
            if not file or not name:
                raise ResultsError(f"--into {args.into!r}: use FILE:NAME")
            results.replace_section(Path(file), name, table)
    except ResultsError as e:
        print(f"results_table: error: {e}", file=sys.stderr)
        return 1
    if args.out:
        Path(args.out).write_text(table)
    elif not args.into:
        sys.stdout.write(table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
