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
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vanish import build, config, workdir as workdir_lib
from vanish.metrics import kernel_var_ratio

# Config fields that may differ within a group: the seed (the spread) and those that never
# change a run's trajectory, except the target, which sets the ticks to target.
_IGNORED = (config.RESULT_NEUTRAL - {"run.target_accuracy"}) | {"seed"}
METRICS = (("ticks_to_target", "ticks to target"), ("final_acc", "final acc"),
           ("final_global_acc", "global-model acc"), ("var_ratio", "var ratio"),
           ("bytes_to_target", "MB/node to target"), ("seconds_to_target", "sim s to target"))
# Baselines whose ticks to target are divided by gossip_vc's (per seed), each a column.
BASELINES = ("gossip", "fl", "gossip_classic")


class ResultsError(ValueError):
    """The workdirs cannot be tabulated (none found, unreadable, or mixed configs)."""


def find_runs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    runs: set[Path] = set()
    for p in map(Path, paths):
        if (p / "summary.json").is_file() and (p / "run_config.json").is_file():
            runs.add(p)
        elif p.is_dir():
            runs.update(s.parent for s in p.rglob("summary.json")
                        if (s.parent / "run_config.json").is_file())
    if not runs:
        raise ResultsError(f"no run workdirs (summary.json + run_config.json) under "
                           f"{[str(p) for p in paths]}")
    return sorted(runs)


def load_run(workdir: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """({dotted config path: value}, summaries) of a workdir; a config stored with the flat
    field names of an earlier vanish is read in today's sections (every field present)."""
    out = []
    for name in ("run_config.json", "summary.json"):
        try:
            out.append(json.loads((workdir / name).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ResultsError(f"{workdir / name}: cannot read it ({e})") from None
    stored = out[0]
    if stored.get("schema", 1) == 1:
        cfg = build.upgrade(stored["config"])
        # Fields vanish does not know (added by hand, or since removed) stay, to group by.
        cfg.update({k: v for k, v in stored["config"].items()
                    if k not in config.OLD_NAMES and k not in cfg})
    else:
        cfg = {**build.upgrade({}), **workdir_lib.flatten(stored["config"])}
    return cfg, out[1]


def field_path(name: str) -> str:
    """A --by name as a dotted config path: 'topology.num_nodes', or its short (earlier)
    name 'num_nodes'."""
    return config.OLD_NAMES.get(name, (name,))[0]


def _stats(values: Sequence[float]) -> tuple[float, float] | None:
    if not values:
        return None
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def _group_order(key: tuple[Any, ...]) -> tuple[tuple[int, float, str], ...]:
    """Groups in order: numbers by value (50 before 100), then text."""
    return tuple((0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool)
                 else (1, 0.0, str(v)) for v in key)


def aggregate(runs: Sequence[Path], by: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (group, algorithm): seeds, stats of every metric, speed-up ratios."""
    groups: dict[tuple[Any, ...], list[tuple[dict[str, Any], dict[str, Any], Path]]] = (
        defaultdict(list))
    paths = [field_path(f) for f in by]
    for wd in runs:
        cfg, summary = load_run(wd)  # every field (a field added later: its default)
        missing = [f for f, p in zip(by, paths) if p not in cfg]
        if missing:
            raise ResultsError(f"{wd}: config has no field(s) {missing}")
        groups[tuple(cfg[p] for p in paths)].append((cfg, summary, wd))
    rows = []
    for key in sorted(groups, key=_group_order):
        members = groups[key]
        ref_cfg, _, ref_wd = members[0]
        for cfg, _, wd in members[1:]:
            differ = sorted(k for k in set(cfg) | set(ref_cfg) if k not in _IGNORED
                            and k not in paths and cfg.get(k) != ref_cfg.get(k))
            if differ:
                raise ResultsError(f"{wd} and {ref_wd} are in one group ({dict(zip(by, key))}) "
                                   f"but differ in {differ}; add them to --by")
        seeds = sorted(cfg["seed"] for cfg, _, _ in members)
        if len(set(seeds)) != len(seeds):
            raise ResultsError(f"group {dict(zip(by, key))} holds seed(s) twice: {seeds}")
        algos = sorted({a for _, s, _ in members for a in s})
        for algo in algos:
            have = sum(algo in s for _, s, _ in members)  # an unfinished workdir may lack it
            row: dict[str, Any] = dict(zip(by, key), algorithm=algo, seeds=have)
            ends = [s[algo].get("final_tick") for _, s, _ in members if algo in s]
            row["horizon"] = max((int(t) for t in ends if t is not None), default=None)
            for metric, _ in METRICS:
                vals = [s[algo].get(metric) for _, s, _ in members if algo in s]
                row[metric] = _stats([float(v) for v in vals if v is not None])
                if metric == "ticks_to_target":
                    row["never"] = sum(v is None for v in vals)
            for base in BASELINES:
                ratios = []
                for _, s, _ in members:
                    mine = s.get("gossip_vc", {}).get("ticks_to_target")
                    other = s.get(base, {}).get("ticks_to_target")
                    if algo == base and mine and other:
                        ratios.append(other / mine)
                row[f"{base}_over_vc"] = _stats(ratios)
            rows.append(row)
    return rows


def _cell(stat: tuple[float, float] | None, digits: int) -> str:
    if stat is None:
        return "-"
    mean, sd = stat
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown(rows: Sequence[dict[str, Any]], by: Sequence[str]) -> str:
    """The table; the MB and simulated-seconds columns only when some run counted bytes /
    ran the clock, the classic-gossip ratio only when classic gossip ran."""
    mb = any(r.get("bytes_to_target") is not None for r in rows)
    sec = any(r.get("seconds_to_target") is not None for r in rows)
    bases = [b for b in BASELINES if b != "gossip_classic" or any(
        r["algorithm"] == b for r in rows)]
    names = {"gossip": "gossip", "fl": "fl", "gossip_classic": "classic"}
    shown = {"bytes_to_target": mb, "seconds_to_target": sec}
    head = [*by, "algorithm", "seeds", *(label for key, label in METRICS
                                         if shown.get(key, True)),
            *(f"{names[b]} / vc ticks" for b in bases)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        tta = _cell(r["ticks_to_target"], 0)
        if r["never"]:
            tta = f"{tta} (never: {r['never']}/{r['seeds']})" if r["ticks_to_target"] else "never"
        cells = [*(str(r[f]) for f in by), r["algorithm"], str(r["seeds"]), tta,
                 _cell(r["final_acc"], 3), _cell(r["final_global_acc"], 3),
                 _cell(r["var_ratio"], 2)]
        if mb:
            b = r.get("bytes_to_target")
            cells.append("-" if b is None else _cell((b[0] / 1e6, b[1] / 1e6), 1))
        if sec:
            cells.append(_cell(r.get("seconds_to_target"), 1))
        cells += [_cell(r[f"{b}_over_vc"], 2) for b in bases]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# The config fields named in figure titles (vanish.plots.format_setup formats them).
SETUP_FIELDS = ("dataset", "model", "num_nodes", "topology", "partition")


def figure_setup(runs: Sequence[Path], by: Sequence[str] = ()) -> dict[str, Any]:
    """What the runs share, for figure titles: every SETUP_FIELDS value that is one value
    across the runs and not a `--by` field (those are on the axis or in the panel titles),
    the seeds, and the target accuracy when it is one (key target_accuracy)."""
    cfgs = [load_run(wd)[0] for wd in runs]
    setup: dict[str, Any] = {}
    paths = {field_path(f) for f in by}
    for f in (*SETUP_FIELDS, "target_accuracy"):
        path = field_path(f)
        values = {json.dumps(c.get(path)) for c in cfgs}
        if path not in paths and len(values) == 1 and cfgs and cfgs[0].get(path) not in (None, ""):
            setup[f] = cfgs[0][path]
    setup["seeds"] = sorted({c["seed"] for c in cfgs if "seed" in c})
    return setup


def _titles(setup: dict[str, Any] | None) -> tuple[dict[str, Any], float | None]:
    shown = dict(setup or {})
    target = shown.pop("target_accuracy", None)
    return shown, (float(target) if target is not None else None)


def figure(rows: Sequence[dict[str, Any]], field: str, path: str,
           by: Sequence[str] = (), setup: dict[str, Any] | None = None) -> None:
    """Ticks to target vs `field`, one line per algorithm, error bars = sd over seeds.

    field 'group': one categorical point per group, labelled by all the `by` fields. A
    numeric field spanning more than a factor of 8 (sizes 50 ... 1000) gets a log axis.
    `setup` (see figure_setup) goes into the title."""
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    from vanish import plots  # matplotlib (Agg): only when a figure is asked for

    if field == "group":
        rows = [dict(r, group=" ".join(str(r[f]) for f in by)) for r in rows]
    shown, target = _titles(setup)
    as_text = any(isinstance(r[field], str) for r in rows)
    values = [] if as_text else [float(r[field]) for r in rows]
    log_x = bool(values) and min(values) > 0 and max(values) / min(values) > 8
    fig, ax = plt.subplots(figsize=(9, 4.8) if as_text else (8, 4.4), layout="constrained")
    algos = plots.legend_order(sorted({r["algorithm"] for r in rows}))
    # Algorithms side by side at one x (dodged), so that no error bar hides another: by a
    # fraction of a category, of a decade on a log axis, or of the range on a linear one.
    span = max(values) - min(values) if values else 0.0
    categories = list(dict.fromkeys(str(r[field]) for r in rows))  # in the groups' order
    most_seeds = max((r["seeds"] for r in rows), default=0)

    def x(value: Any, algo: str) -> float:
        shift = algos.index(algo) - (len(algos) - 1) / 2
        if as_text:
            return categories.index(str(value)) + 0.08 * shift
        if log_x:
            return float(value) * 10 ** (0.012 * shift)
        return float(value) + 0.012 * span * shift

    for algo in algos:
        mine = sorted((r for r in rows if r["algorithm"] == algo),
                      key=lambda r: (str(type(r[field])), r[field]))
        pts = [r for r in mine if r["ticks_to_target"]]
        style = plots.style_for(algo)
        color = style.color
        if pts:  # categories are not a scale: no line joins them
            ax.errorbar([x(r[field], algo) for r in pts],
                        [r["ticks_to_target"][0] for r in pts],
                        yerr=[r["ticks_to_target"][1] for r in pts], marker=style.marker,
                        capsize=3, label=algo, color=color, zorder=style.zorder, alpha=0.9,
                        ls="none" if as_text else style.linestyle, mec="white", mew=0.6)
            for r in pts:  # some seeds never got there: the mean is over the others
                if r["never"]:
                    ax.annotate(f"{r['never']}/{r['seeds']} never",
                                (x(r[field], algo), r["ticks_to_target"][0]), fontsize=7,
                                xytext=(4, 4), textcoords="offset points", color=color)
                elif r["seeds"] < most_seeds:  # fewer seeds than the title's: say so
                    ax.annotate(f"{r['seeds']} seed{'s' if r['seeds'] != 1 else ''}",
                                (x(r[field], algo), r["ticks_to_target"][0]), fontsize=7,
                                xytext=(4, -10), textcoords="offset points", color=color)
        missed = [r for r in mine if not r["ticks_to_target"] and r["horizon"]]
        if missed:  # no seed got there: a hollow marker at the horizon (a lower bound)
            ax.scatter([x(r[field], algo) for r in missed], [r["horizon"] for r in missed],
                       marker=style.marker, s=40, facecolors="none", edgecolors=color,
                       zorder=style.zorder, label=f"{algo}: never\n(drawn at the horizon)")
    if as_text:
        ax.set_xticks(range(len(categories)), categories)
        ax.tick_params(axis="x", labelsize=7, labelrotation=30)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    if log_x:
        plots.log_axis(ax, "x")
    if values and (log_x or len(set(values)) <= 8):  # ticks at the measured values only
        ax.xaxis.set_major_locator(ticker.FixedLocator(sorted(set(values))))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(field if field != "group" else ", ".join(by))
    ax.set_ylabel(f"ticks to accuracy {target:g}" if target is not None
                  else "ticks to target accuracy")
    main = "ticks to target: mean over seeds, error bar ± sd"
    ax.set_title(plots.title_with_setup(main, shown), fontsize=9)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # outside: inside, it would cover the points at the horizon or the top
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# The x axes of accuracy curves: metrics.jsonl key -> (axis label, scale of the values).
CURVE_X = {"tick": ("tick", 1.0), "bytes_sent_mean": ("MB sent per node", 1e-6),
           "sim_seconds": ("simulated seconds", 1.0)}


# The y axes of curves: metrics.jsonl key -> (axis label, log scale, reference line, its label).
# var_ratio: the mean over conv/dense kernels of their variance / the initial one (archived
# rows carry it; a workdir's rows give it from their per-layer keys).
CURVE_Y = {"acc_mean": ("mean node accuracy", False, None, "target"),
           "var_ratio": ("kernel variance / initial", True, 1.0, "initial variance")}


def load_curves(workdir: Path, x: str = "tick",
                y: str = "acc_mean") -> dict[str, list[tuple[int, float]]]:
    """{algorithm: [(tick, y value), ...]} from a run's metrics.jsonl, y the mean node
    accuracy or the kernels' variance ratio (a CURVE_Y key); x other than 'tick':
    [(tick, y value, x value)], rows without x or y left out."""
    curves: dict[str, list[Any]] = defaultdict(list)
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        raise ResultsError(f"{path}: missing (the curves need it)")
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if y == "var_ratio" and "var_ratio" not in r:
                ratio = kernel_var_ratio(r)
                if ratio is not None:
                    r["var_ratio"] = ratio
            if y in r and x == "tick":
                curves[r["algorithm"]].append((int(r["tick"]), float(r[y])))
            elif y in r and x in r:
                curves[r["algorithm"]].append((int(r["tick"]), float(r[y]), float(r[x])))
    return dict(curves)


def curves_figure(runs: Sequence[Path], by: Sequence[str], path: str, x: str = "tick",
                  y: str = "acc_mean") -> None:
    """Accuracy vs tick (or vs `x`, a CURVE_X key: MB sent per node, simulated seconds; or
    `y` = 'var_ratio': the kernels' variance / initial, log scale), one panel per group:
    the mean over seeds, shaded from the lowest to the highest seed, one fixed style per
    algorithm (vanish.plots.style_for); the dotted line is the group's target (for the
    variance: the initial variance, 1); the title names what all groups share. Off the tick
    axis a point is the seeds' mean at one evaluation tick, placed at the seeds' mean x."""
    import matplotlib.pyplot as plt

    from vanish import plots  # matplotlib (Agg): only when a figure is asked for
    groups: dict[tuple[Any, ...], list[Path]] = defaultdict(list)
    targets: dict[tuple[Any, ...], float] = {}
    for wd in runs:
        cfg, _ = load_run(wd)
        key = tuple(cfg.get(field_path(f)) for f in by)
        groups[key].append(wd)
        targets[key] = float(cfg.get("run.target_accuracy", 0.0))
    shown, _ = _titles(figure_setup(runs, by))
    y_label, log_y, ref_y, ref_label = CURVE_Y[y]
    keys = sorted(groups, key=_group_order)
    cols = min(4, len(keys))
    rows_ = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(3.6 * cols + 1.4, 2.8 * rows_ + 0.5),
                             squeeze=False, sharey=True, layout="constrained")
    legend: dict[str, Any] = {}
    for ax, key in zip(axes.flat, keys):
        per_algo: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
        for wd in groups[key]:
            for algo, pts in load_curves(wd, x, y).items():
                per_algo[algo].append([dict(algorithm=algo, tick=p[0], y=p[1],
                                            x=p[2] if len(p) > 2 else p[0]) for p in pts])
        label, scale = CURVE_X[x]
        for algo in plots.legend_order(list(per_algo)):
            band = plots.seed_band(per_algo[algo], algo, "y", "minmax")
            at = plots.seed_band(per_algo[algo], algo, "x", "minmax")
            if band is None or at is None:
                continue
            xs = np.asarray(at.mean) * scale
            style = plots.style_for(algo)
            ax.fill_between(xs, band.lo, band.hi, color=style.color, alpha=0.18, lw=0,
                            zorder=1)
            line, = ax.plot(xs, band.mean, label=algo, **style.line_kwargs())
            legend.setdefault(algo, line)
        title = ", ".join(f"{f}={v}" for f, v in zip(by, key))
        ref = targets[key] if y == "acc_mean" else ref_y
        if ref:
            legend[ref_label] = ax.axhline(ref, color="k", ls=(0, (1, 2)), lw=0.9, zorder=1.5)
            title += (f"\ntarget {ref:g}, " if y == "acc_mean" else "\n")
            title += f"{len(groups[key])} seeds"
        if log_y:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    axes[0][0].set_ylabel(y_label, fontsize=8)
    fig.legend(list(legend.values()), list(legend), loc="outside right upper", fontsize=8,
               title="mean over seeds;\nband: min-max\nover seeds", title_fontsize=7,
               frameon=False)
    fig.suptitle(plots.title_with_setup("node accuracy" if y == "acc_mean" else y_label,
                                        shown), fontsize=9)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replace_section(path: Path, name: str, text: str) -> None:
    """Puts `text` between the markers <!-- results:NAME --> and <!-- /results:NAME --> of
    a markdown file (the rest of the file is untouched)."""
    begin, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    doc = path.read_text() if path.is_file() else ""
    i, j = doc.find(begin), doc.find(end)
    if i < 0 or j < i:
        raise ResultsError(f"{path}: no section markers {begin} ... {end}")
    path.write_text(doc[:i + len(begin)] + "\n" + text + doc[j:])


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
        runs = find_runs(args.paths)
        rows = aggregate(runs, by)
        for spec in args.figure:
            field, _, path = spec.partition(":")
            if not path or field not in [*by, "group"]:
                raise ResultsError(f"--figure {spec!r}: use FIELD:PATH with FIELD one of "
                                   f"{by} or 'group'")
            figure(rows, field, path, by, setup=figure_setup(runs, by))
        if args.curves:
            curves_figure(runs, by, args.curves)
        for spec in args.curves_x:
            x, _, path = spec.partition(":")
            if x not in CURVE_X or not path:
                raise ResultsError(f"--curves-x {spec!r}: use X:PATH with X one of "
                                   f"{sorted(CURVE_X)}")
            curves_figure(runs, by, path, x)
        if args.variance:
            curves_figure(runs, by, args.variance, y="var_ratio")
        table = markdown(rows, by)
        if args.into:
            file, _, name = args.into.rpartition(":")
            if not file or not name:
                raise ResultsError(f"--into {args.into!r}: use FILE:NAME")
            replace_section(Path(file), name, table)
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
