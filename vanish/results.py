"""Results over seeds: runs grouped by config fields, mean ± sd, as Markdown and CSV.

    runs = results.find_runs(["docs/grid/mlp_n50", "docs/grid/mlp_n100"])
    rows = results.aggregate(runs, ["num_nodes"])    # per group and algorithm, over seeds
    results.replace_section("docs/RESULTS.md", "size_mlp", results.markdown(rows, ["num_nodes"]))
    results.curves_figure(runs, ["num_nodes"], "acc.png")   # vanish.plots draws it

    rows = results.combinations({"alpha=0.1": [summary_seed0, summary_seed1]})  # a sweep's
    print(results.combinations_markdown(rows), results.to_csv(rows))
    print(results.summary_table(summaries))          # one run: its algorithms side by side

A run is a workdir, live or archived (docs/grid/<cell>/seed<s>), holding run_config.json
and summary.json; `load_run` reads its config as {dotted path: value} (a record of an earlier
vanish in today's sections). Every statistic is `stats`: the mean and the sample standard
deviation over seeds (0 for one seed). A seed that never reached the target accuracy has no
ticks to target: it is counted ('never' in `aggregate`'s rows, 'reached' in those of
`combinations`) and left out of the mean and sd of the ticks (and of the bytes and simulated
seconds to target), which are over the seeds that reached it.

The grid tables of docs/RESULTS.md (scripts/run_grid.py --tables, scripts/results_table.py)
and a sweep's results.md and results.csv (vanish.sweep) are both rendered here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from vanish import compat, config
from vanish import workdir as workdir_lib
from vanish.errors import ResultsError as ResultsError  # re-exported: this module's error

PathLike = str | os.PathLike[str]
Stat = tuple[float, float]  # (mean, sample sd) over seeds
# A summary's key: the evaluation tick at which a run's loss went non-finite (absent: it did
# not diverge); its summary's other fields are those of its last finite row. Defined here,
# not in vanish.metrics with the other summary names, because this module imports no JAX.
DIVERGED_AT = "diverged_at"

# Config fields that may differ within a group: the seed (the spread) and those that never
# change a run's trajectory, except the target, which sets the ticks to target.
_IGNORED = (config.RESULT_NEUTRAL - {"run.target_accuracy"}) | {"seed"}
# The columns of `aggregate`'s rows: summary key, Markdown header.
METRICS = (("ticks_to_target", "ticks to target"), ("final_acc", "final acc"),
           ("final_global_acc", "global-model acc"), ("var_ratio", "var ratio"),
           ("bytes_to_target", "MB/node to target"), ("seconds_to_target", "sim s to target"),
           ("mean_staleness", "mean staleness"))
# Baselines whose ticks to target are divided by gossip_vc's (per seed), each a column.
BASELINES = ("gossip", "fl", "gossip_classic")
# The config fields named in figure titles (vanish.plots.format_setup formats them).
SETUP_FIELDS = ("dataset", "model", "num_nodes", "topology", "partition")


def stats(values: Sequence[float]) -> Stat | None:
    """(mean, sample standard deviation) of `values`; sd 0 for one value, None for none."""
    if not values:
        return None
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


# ----------------------------------------------------------------------------- the runs


def find_runs(paths: Iterable[PathLike]) -> list[Path]:
    """Every workdir (summary.json and run_config.json) at or below `paths`, sorted;
    ResultsError if there is none."""
    paths = list(paths)
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


def load_run(workdir: PathLike) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """({dotted config path: value}, summaries) of a workdir, live or archived; a config
    stored with the flat field names of an earlier vanish is read in today's sections (every
    field present). ResultsError if either file cannot be read."""
    workdir = Path(workdir)
    out = []
    for name in ("run_config.json", "summary.json"):
        try:
            out.append(json.loads((workdir / name).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ResultsError(f"{workdir / name}: cannot read it ({e})") from None
    stored = out[0]
    # Fields vanish does not know (added by hand, or since removed) stay, to group by.
    flat = stored["config"] if stored.get("schema", 1) == 1 else workdir_lib.flatten(
        stored["config"])
    return compat.upgrade(flat, keep_unknown=True), out[1]


def field_path(name: str) -> str:
    """A field name as a dotted config path: 'topology.num_nodes', or its short (earlier)
    name 'num_nodes'."""
    return compat.field_path(name)


def differences(a: Mapping[str, Any], b: Mapping[str, Any],
                besides: Iterable[str] = ()) -> list[str]:
    """The config paths (sorted) in which runs `a` and `b` differ, other than the seed, the
    fields that never change a trajectory (but the target) and `besides`: runs that differ
    in none are seeds of one experiment."""
    besides = set(besides) | (config.idle_knobs(a) & config.idle_knobs(b))
    return sorted(k for k in set(a) | set(b) if k not in _IGNORED and k not in besides
                  and a.get(k) != b.get(k))


def load_curves(workdir: PathLike, x: str = "tick",
                y: str = "acc_mean") -> dict[str, list[tuple[Any, ...]]]:
    """{algorithm: [(tick, y value), ...]} from a run's metrics.jsonl, y the mean node
    accuracy or the kernels' variance ratio (var_ratio: archived rows carry it, a workdir's
    rows give it from their per-layer keys); x other than 'tick': [(tick, y value, x
    value)], rows without x or y left out."""
    from vanish import metrics

    curves: dict[str, list[Any]] = defaultdict(list)
    path = Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        raise ResultsError(f"{path}: missing (the curves need it)")
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if y == "var_ratio" and "var_ratio" not in r:
                ratio = metrics.kernel_var_ratio(r)
                if ratio is not None:
                    r["var_ratio"] = ratio
            if y in r and x == "tick":
                curves[r["algorithm"]].append((int(r["tick"]), float(r[y])))
            elif y in r and x in r:
                curves[r["algorithm"]].append((int(r["tick"]), float(r[y]), float(r[x])))
    return dict(curves)


def _group_order(key: tuple[Any, ...]) -> tuple[tuple[int, float, str], ...]:
    """Groups in order: numbers by value (50 before 100), then text."""
    return tuple((0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool)
                 else (1, 0.0, str(v)) for v in key)


# ------------------------------------------------------------- the grid: groups by fields


def aggregate(runs: Sequence[PathLike], by: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (group, algorithm), groups in `by`-value order (numbers by value): the
    `by` values ('-' for a knob of a component the run does not choose, or of another rule),
    algorithm, seeds (that ran it), diverged (the seeds whose loss went non-finite; they
    count as never, and stay out of the other metrics), horizon (the last final tick), a
    `stats` (mean, sd) or None per METRICS key, never (the seeds that did not reach the
    target; ticks to target is over the others), and <base>_over_vc per BASELINES: the base's
    ticks to target / gossip_vc's, per seed where both reached it, on the base's row.

    Runs of one group must agree in every field but the seed and the result-neutral ones,
    and hold each seed once (else ResultsError)."""
    groups: dict[tuple[Any, ...], list[tuple[dict[str, Any], dict[str, Any], Path]]] = (
        defaultdict(list))
    paths = [field_path(f) for f in by]
    for wd in map(Path, runs):
        cfg, summary = load_run(wd)  # every field (a field added later: its default)
        missing = [f for f, p in zip(by, paths) if p not in cfg]
        if missing:
            raise ResultsError(f"{wd}: config has no field(s) {missing}")
        idle = config.idle_knobs(cfg)  # knobs of components the run does not choose: '-'
        groups[tuple(IDLE if p in idle else cfg[p] for p in paths)].append((cfg, summary, wd))
    rows = []
    for key in sorted(groups, key=_group_order):
        members = groups[key]
        ref_cfg, _, ref_wd = members[0]
        for cfg, _, wd in members[1:]:
            differ = differences(cfg, ref_cfg, besides=paths)
            if differ:
                raise ResultsError(f"{wd} and {ref_wd} are in one group ({dict(zip(by, key))}) "
                                   f"but differ in {differ}; add them to --by")
        seeds = sorted(cfg["seed"] for cfg, _, _ in members)
        if len(set(seeds)) != len(seeds):
            raise ResultsError(f"group {dict(zip(by, key))} holds seed(s) twice: {seeds}")
        algos = sorted({a for _, s, _ in members for a in s})
        for algo in algos:
            have = sum(algo in s for _, s, _ in members)  # an unfinished workdir may lack it
            row: dict[str, Any] = dict(zip(by, (_for_rule(p, v, algo) for p, v in zip(paths, key))),
                                       algorithm=algo, seeds=have)
            got = [s[algo] for _, s, _ in members if algo in s]
            done = [r for r in got if r.get(DIVERGED_AT) is None]
            row["diverged"] = len(got) - len(done)
            ends = [r.get("final_tick") for r in done]
            row["horizon"] = max((int(t) for t in ends if t is not None), default=None)
            for metric, _ in METRICS:
                # A diverged seed never reaches the target; its other values (those of its
                # last finite row, before the horizon) stay out of the means.
                vals = [r.get(metric) for r in (got if metric == "ticks_to_target" else done)]
                row[metric] = stats([float(v) for v in vals if v is not None])
                if metric == "ticks_to_target":
                    row["never"] = sum(v is None for v in vals)
            for base in BASELINES:
                ratios = []
                for _, s, _ in members:
                    mine = s.get("gossip_vc", {}).get("ticks_to_target")
                    other = s.get(base, {}).get("ticks_to_target")
                    if algo == base and mine and other:
                        ratios.append(other / mine)
                row[f"{base}_over_vc"] = stats(ratios)
            rows.append(row)
    return rows


IDLE = "-"  # a `by` value that does not apply: a knob of an unchosen component or another rule


def _for_rule(path: str, value: Any, algorithm: str) -> Any:
    """`value` of a `by` field on `algorithm`'s row: another rule's knob does not apply."""
    parts = path.split(".")
    if len(parts) > 2 and parts[0] == "algorithm_args" and parts[1] != algorithm:
        return IDLE
    return value


def format_stat(stat: Stat | None, digits: int) -> str:
    """'mean ± sd' of a `stats` result with `digits` decimals; '-' for None."""
    if stat is None:
        return "-"
    mean, sd = stat
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown(rows: Sequence[Mapping[str, Any]], by: Sequence[str]) -> str:
    """`aggregate`'s rows as a Markdown table: 'mean ± sd' per metric, '-' where no seed
    has a value, ticks to target 'never' when no seed reached it ('... (never: k/n)' when
    some did not; '; diverged: k/n' when k seeds' loss went non-finite); the MB and
    simulated-seconds columns only when some run counted bytes / ran the clock, the
    staleness column only when an asynchronous rule ran, the classic-gossip ratio only when
    classic gossip ran."""
    mb = any(r.get("bytes_to_target") is not None for r in rows)
    sec = any(r.get("seconds_to_target") is not None for r in rows)
    stale = any(r.get("mean_staleness") is not None for r in rows)
    bases = [b for b in BASELINES if b != "gossip_classic" or any(
        r["algorithm"] == b for r in rows)]
    names = {"gossip": "gossip", "fl": "fl", "gossip_classic": "classic"}
    shown = {"bytes_to_target": mb, "seconds_to_target": sec, "mean_staleness": stale}
    head = [*by, "algorithm", "seeds", *(label for key, label in METRICS
                                         if shown.get(key, True)),
            *(f"{names[b]} / vc ticks" for b in bases)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        tta = format_stat(r["ticks_to_target"], 0)
        if r["never"]:
            tta = f"{tta} (never: {r['never']}/{r['seeds']})" if r["ticks_to_target"] else "never"
        if r.get("diverged"):
            tta = f"{tta}; diverged: {r['diverged']}/{r['seeds']}"
        cells = [*(str(r[f]) for f in by), r["algorithm"], str(r["seeds"]), tta,
                 format_stat(r["final_acc"], 3), format_stat(r["final_global_acc"], 3),
                 format_stat(r["var_ratio"], 2)]
        if mb:
            b = r.get("bytes_to_target")
            cells.append("-" if b is None else format_stat((b[0] / 1e6, b[1] / 1e6), 1))
        if sec:
            cells.append(format_stat(r.get("seconds_to_target"), 1))
        if stale:
            cells.append(format_stat(r.get("mean_staleness"), 2))
        cells += [format_stat(r[f"{b}_over_vc"], 2) for b in bases]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def replace_section(path: PathLike, name: str, text: str) -> None:
    """Puts `text` between the markers <!-- results:NAME --> and <!-- /results:NAME --> of
    a markdown file (the rest of the file is untouched); ResultsError, the file unchanged,
    if it lacks them."""
    path = Path(path)
    begin, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    doc = path.read_text() if path.is_file() else ""
    i, j = doc.find(begin), doc.find(end)
    if i < 0 or j < i:
        raise ResultsError(f"{path}: no section markers {begin} ... {end}")
    path.write_text(doc[:i + len(begin)] + "\n" + text + doc[j:])


# ------------------------------------------------------- figures of the grid (plots draws)


def figure_setup(runs: Sequence[PathLike], by: Sequence[str] = ()) -> dict[str, Any]:
    """What the runs share, for figure titles: every SETUP_FIELDS value that is one value
    across the runs and not a `by` field (those are on the axis or in the panel titles),
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


def curves_figure(runs: Sequence[PathLike], by: Sequence[str], path: PathLike,
                  x: str = "tick", y: str = "acc_mean") -> Path:
    """One panel per group of `runs` (by the `by` fields; their runs' metrics.jsonl):
    accuracy (or y = 'var_ratio', the kernels' variance / initial) vs tick (or vs x, a
    vanish.plots.CURVE_X key), drawn by `plots.plot_group_curves`; returns the file."""
    from vanish import plots  # matplotlib (Agg): only when a figure is asked for

    groups: dict[tuple[Any, ...], list[Path]] = defaultdict(list)
    targets: dict[tuple[Any, ...], float] = {}
    for wd in map(Path, runs):
        cfg, _ = load_run(wd)
        key = tuple(cfg.get(field_path(f)) for f in by)
        groups[key].append(wd)
        targets[key] = float(cfg.get("run.target_accuracy", 0.0))
    panels = []
    for key in sorted(groups, key=_group_order):
        per_algo: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
        for wd in groups[key]:
            for algo, pts in load_curves(wd, x, y).items():
                per_algo[algo].append([dict(algorithm=algo, tick=p[0], y=p[1],
                                            x=p[2] if len(p) > 2 else p[0]) for p in pts])
        panels.append(plots.CurvePanel(", ".join(f"{f}={v}" for f, v in zip(by, key)),
                                       dict(per_algo), len(groups[key]), targets[key]))
    return plots.plot_group_curves(panels, path, x, y, setup=figure_setup(runs, by))


# ------------------------------------------------------ a sweep: groups by combination name


def combinations(groups: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per combination and algorithm over the seeds' summaries ({combination:
    [summary.json of each seed that has one]}): seeds (that ran the algorithm), reached
    (seeds that reached the target), diverged (seeds whose loss went non-finite), the target
    (if one), ticks / bytes / simulated seconds to target (mean, sd over the seeds that
    reached it), final accuracy (mean, sd, min, max over the seeds that did not diverge) and
    best accuracy (mean, sd); a missing value is None."""
    rows = []
    for name, summaries in groups.items():
        algorithms = list(dict.fromkeys(a for s in summaries for a in s))
        for algo in algorithms:
            got = [s[algo] for s in summaries if isinstance(s.get(algo), dict)]
            reached = [float(g["ticks_to_target"]) for g in got
                       if g.get("ticks_to_target") is not None]
            diverged = sum(g.get(DIVERGED_AT) is not None for g in got)
            final = [float(g["final_acc"]) for g in got if g.get("final_acc") is not None
                     and g.get(DIVERGED_AT) is None]  # a diverged seed has no final value
            # The cost of reaching the target beyond ticks (runs that count bytes / run a
            # simulated clock), over the seeds that reached it.
            cost = {key: [float(g[key]) for g in got if g.get(key) is not None]
                    for key in ("bytes_to_target", "seconds_to_target")}
            best = [float(g["best_acc"]) for g in got if g.get("best_acc") is not None]
            targets = {g.get("target_accuracy") for g in got}
            row: dict[str, Any] = dict(combination=name, algorithm=algo, seeds=len(got),
                                       reached=len(reached), diverged=diverged,
                                       target=targets.pop() if len(targets) == 1 else None)
            for key, values in (("ticks_to_target", reached), ("final_acc", final),
                                ("best_acc", best), *cost.items()):
                stat = stats(values)
                row[f"{key}_mean"], row[f"{key}_sd"] = stat if stat else (None, None)
            row["final_acc_min"] = min(final) if final else None
            row["final_acc_max"] = max(final) if final else None
            rows.append(row)
    return rows


def _num(v: Any, digits: int) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def combinations_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """`combinations`' rows as Markdown: time to target as 'mean ± sd (k/n)', 'never
    (0/n)' when no seed reached it; the target named in the header."""
    targets = {r["target"] for r in rows if r["target"] is not None}
    target = f" {targets.pop():g}" if len(targets) == 1 else ""
    mb = any(r.get("bytes_to_target_mean") is not None for r in rows)
    sec = any(r.get("seconds_to_target_mean") is not None for r in rows)
    extra = ("MB/node to target | " if mb else "") + ("sim s to target | " if sec else "")
    lines = [f"| combination | algorithm | seeds | ticks to{target} (reached) | {extra}final acc "
             "| best acc |", "|---|---|---:|---:|" + "---:|" * (2 + mb + sec)]
    for r in rows:
        if r["reached"]:
            tta = (f"{r['ticks_to_target_mean']:.0f} ± {r['ticks_to_target_sd']:.0f} "
                   f"({r['reached']}/{r['seeds']})")
        else:
            tta = f"never (0/{r['seeds']})"
        if r.get("diverged"):
            tta += f"; diverged {r['diverged']}/{r['seeds']}"
        final = (f"{_num(r['final_acc_mean'], 3)} ± {_num(r['final_acc_sd'], 3)}"
                 if r["final_acc_mean"] is not None else "")
        best = (f"{_num(r['best_acc_mean'], 3)} ± {_num(r['best_acc_sd'], 3)}"
                if r["best_acc_mean"] is not None else "")
        cost = ""
        for on, key, scale, digits in ((mb, "bytes_to_target", 1e6, 1),
                                       (sec, "seconds_to_target", 1.0, 1)):
            if on:
                m, sd = r.get(f"{key}_mean"), r.get(f"{key}_sd")
                cost += ("never | " if m is None else
                         f"{m / scale:.{digits}f} ± {(sd or 0.0) / scale:.{digits}f} | ")
        lines.append(f"| {r['combination']} | {r['algorithm']} | {r['seeds']} | {tta} | "
                     f"{cost}{final} | {best} |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of flat values (`combinations`') as CSV: every column of the first row, empty
    where a value is None."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return out.getvalue()


# ------------------------------------------------------------- one run: its algorithms

TICKS_HEADER = "ticks to target"
# (header, candidate summary keys): the first key present is shown.
DEFAULT_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("final acc", ("final_acc", "final_accuracy", "acc_mean")),
    (TICKS_HEADER, ("ticks_to_target", "time_to_accuracy")),
    ("var ratio", ("var_ratio", "final_var_ratio", "var_ratio_mean")),
)
# Shown when some summary has them: the cost of reaching the target beyond ticks.
COST_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("MB/node to target", ("mb_to_target",)),
    ("sim s to target", ("seconds_to_target",)),
)
_TICKS_KEYS = frozenset(DEFAULT_COLUMNS[1][1])


def _summary_cell(summary: Mapping[str, Any], keys: Sequence[str]) -> str:
    key = next((k for k in keys if k in summary), None)
    if key is None:
        return "-"
    value = summary[key]
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if key in _TICKS_KEYS:  # None / NaN is how summaries say "target never reached"
        if missing and summary.get(DIVERGED_AT) is not None:
            return f"diverged @ {summary[DIVERGED_AT]}"
        if missing:
            return "never"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
    if value is None:
        return "never"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return str(value)


def _with_mean_var_ratio(summary: Mapping[str, Any]) -> dict[str, Any]:
    # Summaries may carry only per-layer final ratios: the one definition (kernel mean).
    from vanish import metrics

    out = dict(summary)
    kernel = metrics.kernel_var_ratio(dict(summary))
    if kernel is not None:
        out.setdefault("var_ratio_mean", kernel)
    if metrics.BYTES_TO_TARGET in summary:  # in MB (None: never reached)
        b = summary[metrics.BYTES_TO_TARGET]
        out["mb_to_target"] = None if b is None else round(float(b) / 1e6, 1)
    return out


def _common_target(summaries: Mapping[str, Mapping[str, Any]]) -> float | None:
    targets = {s.get("target_accuracy") for s in summaries.values()}
    only = targets.pop() if len(targets) == 1 else None
    return float(only) if isinstance(only, (int, float)) and not isinstance(only, bool) else None


def summary_table(summaries: Mapping[str, Mapping[str, Any]], *, markdown: bool = False,
                  columns: Sequence[tuple[str, Sequence[str]]] = DEFAULT_COLUMNS,
                  target: float | None = None) -> str:
    """One run's algorithms -> final accuracy, ticks to target, variance ratio (and, when
    the summaries have them, MB a node sent and simulated seconds until the target), as
    fixed-width text or Markdown.

    Args:
        summaries: {algorithm: summary dict}.
        markdown: a GitHub Markdown table instead of aligned plain text.
        columns: (header, candidate keys) pairs; the first key present fills the cell, '-' if
            none is. A ticks-to-target cell that is None or NaN (not reached) shows 'never',
            or 'diverged @ T' for a run whose loss went non-finite at tick T.
        target: the accuracy target, named in the header ('ticks to 0.75'); by default the
            summaries' common 'target_accuracy', if they have one.
    """
    if target is None:
        target = _common_target(summaries)
    if columns is DEFAULT_COLUMNS:
        columns = [*columns, *(c for c in COST_COLUMNS if any(
            k in _with_mean_var_ratio(s) for s in summaries.values() for k in c[1]))]
    header = ["algorithm"] + [f"ticks to {target:g}" if h == TICKS_HEADER and target is not None
                              else h for h, _ in columns]
    rows = [[alg] + [_summary_cell(_with_mean_var_ratio(s), keys) for _, keys in columns]
            for alg, s in summaries.items()]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w)
                  for i, (c, w) in enumerate(zip(cells, widths))]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded)

    if markdown:
        rule = "|" + "|".join(("-" * (w + 1)) + (":" if i else "-")
                              for i, w in enumerate(widths)) + "|"
    else:
        rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *map(line, rows)])


# ------------------------------------------------------------- speed-ups at a horizon


class Plateau(NamedTuple):
    """Where a run's plateau ends: the first evaluated tick whose mean node accuracy exceeds
    `chance` (None: never), the tick it reaches the target (None: never within `horizon`),
    and the kernels' variance relative to initial at the requested ticks (None: not
    evaluated there)."""

    leaves_chance: int | None
    reaches_target: int | None
    horizon: int
    var_ratio: dict[int, float | None]
    diverged_at: int | None = None  # the tick its loss went non-finite (None: it did not)


def plateau(workdir: PathLike, algorithm: str, *, chance: float = 0.2,
            at: Sequence[int] = (1000, 3000, 10000)) -> Plateau:
    """`Plateau` of one algorithm's run in `workdir` (archived or live: its curves and its
    summary's target)."""
    acc = load_curves(workdir).get(algorithm, [])
    var = dict(load_curves(workdir, y="var_ratio").get(algorithm, []))
    if not acc:
        raise ResultsError(f"{workdir}: no curve of {algorithm}")
    _, summaries = load_run(workdir)
    s = summaries[algorithm]
    first = next((t for t, a in acc if a > chance), None)
    return Plateau(first, s.get("ticks_to_target"), int(s.get("final_tick", acc[-1][0])),
                   {t: var.get(t) for t in at}, s.get(DIVERGED_AT))


class Speedup(NamedTuple):
    """A baseline's ticks to target over the reference's, per seed: the seeds where both
    arrived give ratios; a seed where only the reference arrived gives a lower bound
    (horizon / reference ticks). The two are never mixed in one mean."""

    ratios: list[float]
    bounds: list[float]
    missing: int  # seeds where the reference never arrived (no ratio, no bound)

    def cell(self) -> str:
        """'4.2 ± 0.3 (3)', '> 5.6 (3)' (the bounds' mean: the mean ratio exceeds it), or
        both when the seeds split; '-' without data."""
        parts = []
        r, b = stats(self.ratios), stats(self.bounds)
        if r is not None:
            parts.append(f"{r[0]:.2f} ± {r[1]:.2f} ({len(self.ratios)})")
        if b is not None:
            parts.append(f"> {b[0]:.2f} ({len(self.bounds)})")
        return "; ".join(parts) or "-"


def speedup(baseline: Sequence[tuple[int | None, int | None]],
            reference: Sequence[int | None]) -> Speedup:
    """Per seed, (baseline ticks to target or None, its horizon) against the reference's
    ticks to target (None: never); a seed without either arrival or horizon is missing."""
    ratios, bounds, missing = [], [], 0
    for (b, horizon), ref in zip(baseline, reference):
        if ref is None or ref <= 0:
            missing += 1
        elif b is not None:
            ratios.append(b / ref)
        elif horizon:
            bounds.append(horizon / ref)
        else:  # never arrived, horizon unknown: no bound
            missing += 1
    return Speedup(ratios, bounds, missing)


def speedup_rows(pairs: Sequence[tuple[str, int, PathLike, PathLike]],
                 baselines: Sequence[str], reference: str = "gossip_vc"
                 ) -> list[dict[str, Any]]:
    """One row per (model, N) pair of cells: (model, N, baseline cell, reference cell), the
    cells holding seed folders. Seeds present in both cells are paired; each baseline's
    `Speedup` against `reference` (taken from the reference cell, or from the baseline cell
    when it ran there too)."""
    rows = []
    for model, n, base_cell, ref_cell in pairs:
        seeds = sorted(p.name for p in Path(base_cell).glob("seed*")
                       if (Path(ref_cell) / p.name / "summary.json").is_file()
                       and (p / "summary.json").is_file())
        row: dict[str, Any] = {"model": model, "num_nodes": n, "seeds": len(seeds)}
        refs, summaries = [], {}
        for s in seeds:
            _, summaries[s] = load_run(Path(base_cell) / s)
            _, ref_s = load_run(Path(ref_cell) / s)
            refs.append((summaries[s].get(reference) or ref_s[reference])["ticks_to_target"])
        row["reference_ticks"] = stats([r for r in refs if r is not None])
        for b in baselines:
            have = [(s, r) for s, r in zip(seeds, refs) if b in summaries[s]]
            if not have:
                continue
            # A diverged baseline gives no bound: its last finite tick is not a horizon.
            sp = speedup([(summaries[s][b]["ticks_to_target"],
                           None if summaries[s][b].get(DIVERGED_AT) is not None
                           else summaries[s][b].get("final_tick"))
                          for s, _ in have], [r for _, r in have])
            row[b] = sp._asdict()
            row[f"{b}_cell"] = sp.cell()
        rows.append(row)
    return rows


def speedup_markdown(rows: Sequence[Mapping[str, Any]], baselines: Sequence[str],
                     reference: str = "gossip_vc", claim: str = "up to 6x") -> str:
    """The headline table: per model and N, each baseline's ticks to target / the
    reference's, mean ± sd (seeds), lower bounds marked '>'; the paper's claim beside it."""
    head = ["model", "N", f"{reference} ticks to target"] + [f"{b} / {reference}"
                                                             for b in baselines] + ["paper"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ref = r["reference_ticks"]
        cells = [str(r["model"]), str(r["num_nodes"]),
                 "-" if ref is None else f"{ref[0]:.0f} ± {ref[1]:.0f}"]
        cells += [r.get(f"{b}_cell", "not run") for b in baselines]
        lines.append("| " + " | ".join(cells + [claim]) + " |")
    return "\n".join(lines)


def plateau_markdown(rows: Sequence[Mapping[str, Any]], at: Sequence[int]) -> str:
    """The plateau-end table: one row per (model, N, algorithm, seed)."""
    head = ["model", "N", "algorithm", "seed", "leaves chance (> 0.2)", "reaches target"] + [
        f"var ratio @ {t}" for t in at]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        p: Plateau = r["plateau"]
        cells = [str(r["model"]), str(r["num_nodes"]), r["algorithm"], str(r["seed"]),
                 "never" if p.leaves_chance is None else str(p.leaves_chance),
                 str(p.reaches_target) if p.reaches_target is not None
                 else f"never (diverged at {p.diverged_at})" if p.diverged_at is not None
                 else f"never within {p.horizon}"]
        cells += ["-" if p.var_ratio.get(t) is None else f"{p.var_ratio[t]:.4f}" for t in at]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
