"""Figures from the metrics files (host only, matplotlib's Agg backend); it draws, tables are
vanish/results.py's.

    paths = plots.plot_run(workdir, target=0.75, setup={'dataset': 'fashion_mnist', 'seeds': [0]})
    plots.plot_seeds({'gossip_vc': [rows_seed0, rows_seed1]}, 'acc.png', setup=setup)
    plots.plot_ticks_to_target(results.aggregate(runs, ['num_nodes']), 'num_nodes', 'tta.png')

Every figure draws an algorithm with `style_for(name)`: one colour, dash pattern and marker
per name in every figure, whatever else is plotted. `setup` is a plain mapping (dataset, model,
num_nodes, topology, partition, seeds), formatted into the title by `format_setup`; this
module never reads a run config.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import matplotlib

matplotlib.use('Agg')  # no display on clusters / CI; must precede pyplot
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from matplotlib import ticker  # pylint: disable=wrong-import-position
from matplotlib.axes import Axes  # pylint: disable=wrong-import-position
from matplotlib.figure import Figure  # pylint: disable=wrong-import-position

from vanish import metrics, tracking  # pylint: disable=wrong-import-position

PathLike = str | os.PathLike[str]
Records = Sequence[Mapping[str, Any]] | PathLike
Spread = Literal['minmax', 'sd']

VAR_RATIO_PREFIX = metrics.VAR_RATIO_PREFIX
SPREAD_LABEL = {'minmax': 'band: min-max over seeds', 'sd': 'band: mean ± sd over seeds'}


# --- one look per algorithm -------------------------------------------------------------------

LineStyle = str | tuple[float, tuple[float, ...]]
_SOLID: LineStyle = '-'
_DASHED: LineStyle = (0, (5, 2))
_SHORT_DASH: LineStyle = (0, (2.5, 1.5))
_DASH_DOT: LineStyle = (0, (6, 1.5, 1.5, 1.5))
_DOTTED: LineStyle = (0, (1, 1.5))
_DASH_DOT_DOT: LineStyle = (0, (5, 1.5, 1.5, 1.5, 1.5, 1.5))


class Style(NamedTuple):
    """How one algorithm is drawn in every figure (see `style_for`)."""

    color: str
    linestyle: LineStyle
    marker: str
    zorder: float  # broken lines above solid ones, so a dashed line over a solid one shows both
    slot: int  # staggers the markers of lines that run on top of each other

    def line_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `Axes.plot`: colour, dashes, sparse markers, draw order."""
        step = 0.1  # a marker every tenth of the axes diagonal, whatever the tick density
        return dict(color=self.color, linestyle=self.linestyle, marker=self.marker,
                    zorder=self.zorder, markevery=(step * (self.slot % 5) / 5, step),
                    markersize=5, markeredgecolor='white', markeredgewidth=0.6, alpha=0.9,
                    linewidth=1.8 if self.linestyle == _SOLID else 1.5)


# The registered algorithms (vanish.algorithms.NAMES). A `_vc` variant keeps its family's hue
# and is solid; the uncorrected rule is broken. gossip / gossip_vc, the comparison every
# figure is about, get two hues. tab:red and the black/gray shades are left to the fallback.
_TABLE: dict[str, tuple[str, LineStyle, str]] = {
    'single': ('tab:gray', _DOTTED, 'x'),
    'fl': ('tab:blue', _DASHED, 'o'),
    'fl_sched': ('tab:blue', _DASH_DOT, 's'),
    'gossip': ('tab:orange', _SHORT_DASH, 'v'),
    'gossip_vc': ('tab:green', _SOLID, '^'),
    'gossip_classic': ('tab:red', _DASH_DOT, '8'),
    'gossip_part': ('tab:brown', _DASH_DOT_DOT, 'D'),
    'gossip_trim': ('tab:purple', _SHORT_DASH, 'P'),
    'gossip_trim_vc': ('tab:purple', _SOLID, 'p'),
    'gossip_median': ('tab:pink', _SHORT_DASH, 'X'),
    'gossip_median_vc': ('tab:pink', _SOLID, 'h'),
    'gossip_krum': ('tab:olive', _SHORT_DASH, '<'),
    'gossip_krum_vc': ('tab:olive', _SOLID, '>'),
    'dpsgd': ('tab:cyan', _SHORT_DASH, 'd'),
    'dpsgd_vc': ('tab:cyan', _SOLID, '*'),
    # Compressed gossip (after the rest: the slots above stay where they were). The filled
    # marker shapes are all taken: mathtext glyphs of a marker's size.
    'gossip_topk': ('navy', _SHORT_DASH, 'H'),
    'gossip_topk_vc': ('navy', _SOLID, r'$\blacksquare$'),
    'gossip_q8': ('darkgoldenrod', _SHORT_DASH, r'$\blacktriangledown$'),
    'gossip_q8_vc': ('darkgoldenrod', _SOLID, r'$\blacktriangleright$'),
    'modest': ('teal', _DASH_DOT_DOT, r'$\clubsuit$'),
    'gossip_flag': ('maroon', _SHORT_DASH, r'$\spadesuit$'),
    'gossip_flag_vc': ('maroon', _SOLID, r'$\heartsuit$'),
    'gossip_align': ('darkviolet', _SHORT_DASH, r'$\diamondsuit$'),
    'gossip_align_vc': ('darkviolet', _SOLID, r'$\bigstar$'),
    'dimat': ('slategray', _DASH_DOT, r'$\natural$'),
    'dimat_vc': ('slategray', _SOLID, r'$\oplus$'),
    'fl_async': ('cornflowerblue', _DOTTED, r'$\sharp$'),
    'fl_buff': ('midnightblue', _DASH_DOT_DOT, r'$\flat$'),
}
_FALLBACK_COLORS = ('tab:red', '#1a1a1a', '#7a5195', '#ef5675', '#003f5c', '#ffa600',
                    '#2f9e44', '#8c564b', '#4c6ef5', '#e8590c')
_FALLBACK_DASHES = (_SOLID, _DASHED, _SHORT_DASH, _DASH_DOT, _DASH_DOT_DOT)
_FALLBACK_MARKERS = ('o', 's', '^', 'v', 'D', 'P', 'X', '*', 'h', '<', '>', 'p', 'd')


def style_for(name: str) -> Style:
    """The fixed look of algorithm `name`: from a table for the registered names, else
    derived from a CRC-32 of the name (stable across processes, unlike `hash`), never from
    the name's position among those plotted."""
    if name in _TABLE:
        color, dashes, marker = _TABLE[name]
        slot = list(_TABLE).index(name)
    else:
        h = zlib.crc32(name.encode())
        color = _FALLBACK_COLORS[h % len(_FALLBACK_COLORS)]
        dashes = _FALLBACK_DASHES[(h // 16) % len(_FALLBACK_DASHES)]
        marker = _FALLBACK_MARKERS[(h // 256) % len(_FALLBACK_MARKERS)]
        slot = h % 97
    return Style(color, dashes, marker, 2.0 if dashes == _SOLID else 2.5, slot)


def legend_order(names: Sequence[str]) -> list[str]:
    """Registered names in registry order, then the others by name: one order in every
    legend (and one draw order), whatever order `names` come in."""
    table = list(_TABLE)
    return sorted(names, key=lambda n: (table.index(n), '') if n in table else (len(table), n))


# --- titles: the setup, as given -------------------------------------------------------------

def format_setup(setup: Mapping[str, Any] | None) -> str:
    """One line naming the setup, e.g. 'fashion_mnist · lenet5 · N=50 · random_regular ·
    iid partition · 3 seeds (0, 1, 2)'; '' for None or {}.

    Args:
        setup: plain values under the keys dataset, model, num_nodes, topology, partition and
            seeds (a sequence of seeds, or one int); any other key is shown as key=value.
    """
    if not setup:
        return ''
    parts = []
    for key in ('dataset', 'model'):
        if setup.get(key) not in (None, ''):
            parts.append(str(setup[key]))
    if setup.get('num_nodes') is not None:
        parts.append(f"N={setup['num_nodes']}")
    if setup.get('topology') not in (None, ''):
        parts.append(f"{setup['topology']} topology")
    if setup.get('partition') not in (None, ''):
        parts.append(f"{setup['partition']} partition")
    seeds = setup.get('seeds', setup.get('seed'))
    if isinstance(seeds, (list, tuple)):
        parts.append(f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} "
                     f"({', '.join(map(str, seeds))})")
    elif seeds is not None:
        parts.append(f'seed {seeds}')
    known = {'dataset', 'model', 'num_nodes', 'topology', 'partition', 'seeds', 'seed'}
    parts += [f'{k}={v}' for k, v in setup.items() if k not in known]
    return ' · '.join(parts)


def title_with_setup(main: str, setup: Mapping[str, Any] | None) -> str:
    """`main`, and `format_setup(setup)` on a second line when there is a setup."""
    line = format_setup(setup)
    return f'{main}\n{line}' if line else main


# --- log axes --------------------------------------------------------------------------------

def _log_label(value: float, _pos: int | None = None) -> str:
    if value <= 0:
        return ''
    if 1e-3 <= value < 1e4:
        return f'{value:g}'
    exp = math.floor(math.log10(value) + 1e-9)
    coeff = value / 10.0 ** exp
    return f'$10^{{{exp}}}$' if abs(coeff - 1) < 1e-6 else f'${coeff:g}\\times10^{{{exp}}}$'


def log_axis(ax: Axes, axis: Literal['x', 'y'] = 'y', min_decades: float = 0.85) -> None:
    """Makes `axis` of `ax` logarithmic with labels a reader can use; call after plotting.

    Labels at every decade; also at 2 and 5 when the shown range (data and margins) is under
    2.5 decades, and at 2, 3 and 5 under one. A range narrower than `min_decades` is widened
    (geometrically about its centre): any 0.85 decades hold at least three of 1, 2, 3, 5.
    """
    scale = ax.set_yscale if axis == 'y' else ax.set_xscale
    get_lim, set_lim = (ax.get_ylim, ax.set_ylim) if axis == 'y' else (ax.get_xlim, ax.set_xlim)
    scale('log')
    lo, hi = get_lim()
    if not (lo > 0 and hi > lo and math.isfinite(hi)):
        return
    decades = math.log10(hi / lo)
    if decades < min_decades:
        mid = math.sqrt(lo * hi)
        lo, hi = mid / 10 ** (min_decades / 2), mid * 10 ** (min_decades / 2)
        set_lim(lo, hi)
        decades = min_decades
    # The shown range is the data's plus margins: 2 decades of data show as ~2.3.
    subs = (1.0,) if decades >= 2.5 else (1.0, 2.0, 5.0) if decades >= 1 else (1.0, 2.0, 3.0, 5.0)
    target = ax.yaxis if axis == 'y' else ax.xaxis
    target.set_major_locator(ticker.LogLocator(base=10, subs=subs, numticks=12))
    target.set_major_formatter(ticker.FuncFormatter(_log_label))
    target.set_minor_locator(ticker.LogLocator(base=10, subs=[float(s) for s in range(2, 10)],
                                               numticks=12))
    target.set_minor_formatter(ticker.NullFormatter())


def visible_tick_labels(ax: Axes, axis: Literal['x', 'y'] = 'y') -> list[str]:
    """The non-empty major tick labels inside the shown range of `axis` (draws the figure)."""
    ax.figure.canvas.draw()
    target = ax.yaxis if axis == 'y' else ax.xaxis
    lo, hi = sorted(ax.get_ylim() if axis == 'y' else ax.get_xlim())
    return [t.label1.get_text() for t in target.get_major_ticks()
            if lo <= t.get_loc() <= hi and t.label1.get_visible() and t.label1.get_text()]


# --- records ---------------------------------------------------------------------------------

def _load(records: Records) -> Sequence[Mapping[str, Any]]:
    if isinstance(records, (str, os.PathLike)):
        return tracking.read_jsonl(records)
    return list(records)


def series_by_algorithm(records: Records) -> dict[str, dict[str, np.ndarray]]:
    """{algorithm: {metric: values}} sorted by tick; a repeated tick keeps its last row.

    Keys missing in some rows are NaN there (matplotlib leaves a gap).
    """
    rows_by_alg: dict[str, dict[int, Mapping[str, Any]]] = {}
    for row in _load(records):
        if 'tick' in row:  # later rows win: a resumed run without truncation re-logs ticks
            rows_by_alg.setdefault(str(row.get('algorithm', '')), {})[int(row['tick'])] = row
    out: dict[str, dict[str, np.ndarray]] = {}
    for alg, by_tick in rows_by_alg.items():
        ticks = sorted(by_tick)
        keys = {k for r in by_tick.values() for k, v in r.items() if _is_number(v)}
        out[alg] = {k: np.array([_num(by_tick[t].get(k)) for t in ticks]) for k in keys}
        out[alg]['tick'] = np.array(ticks)
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _num(v: Any) -> float:
    return float(v) if _is_number(v) else math.nan


class SeedBand(NamedTuple):
    """One algorithm's metric over seeds, on the ticks every seed logged."""

    tick: np.ndarray
    mean: np.ndarray
    lo: np.ndarray  # per-tick min over seeds, or mean - sd
    hi: np.ndarray  # per-tick max over seeds, or mean + sd
    seeds: int


def seed_band(runs: Sequence[Records], algorithm: str, metric: str = 'acc_mean',
              spread: Spread = 'minmax') -> SeedBand | None:
    """Mean and spread of `metric` over the runs (one per seed) of `algorithm`.

    Args:
        runs: one record set (rows or a metrics.jsonl path) per seed; the rows of `algorithm`
            are used, or all rows if a set holds a single algorithm under another name.
        algorithm: the algorithm whose rows to take.
        metric: the metric to aggregate.
        spread: 'minmax' (band from the lowest to the highest seed) or 'sd' (mean ± sample
            standard deviation; zero width for one seed).
    Returns:
        The band on the ticks common to all seeds, or None if no run logged `metric`.
    """
    per_seed = []
    for records in runs:
        series = series_by_algorithm(records)
        s = series.get(algorithm, next(iter(series.values())) if len(series) == 1 else None)
        if s is not None and metric in s:
            per_seed.append(dict(zip(s['tick'].tolist(), s[metric].tolist())))
    if not per_seed:
        return None
    ticks = sorted(set.intersection(*(set(p) for p in per_seed)))
    values_SxT = np.array([[p[t] for t in ticks] for p in per_seed], dtype=float).reshape(
        len(per_seed), len(ticks))
    mean = values_SxT.mean(axis=0)
    if spread == 'minmax':
        lo, hi = values_SxT.min(axis=0), values_SxT.max(axis=0)
    elif spread == 'sd':
        sd = values_SxT.std(axis=0, ddof=1) if len(per_seed) > 1 else np.zeros_like(mean)
        lo, hi = mean - sd, mean + sd
    else:
        raise ValueError(f"spread must be 'minmax' or 'sd', not {spread!r}")
    return SeedBand(np.array(ticks), mean, lo, hi, len(per_seed))


# --- figures (the *_figure functions return the figure; plot_* save and close it) ------------

def _save(fig: Figure, out_png: PathLike, dpi: int = 110) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)  # long sweeps make many figures; pyplot keeps them alive otherwise
    return out


def _target_line(ax: Axes, target: float | None) -> None:
    if target is not None:
        ax.axhline(target, color='k', linestyle=(0, (1, 2)), linewidth=1, zorder=1.5,
                   label=f'target {target:g}')


def _legend(ax: Axes, **kwargs: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=8, framealpha=0.85, **kwargs)


def accuracy_figure(records: Records, target: float | None = None, title: str | None = None,
                    setup: Mapping[str, Any] | None = None) -> Figure:
    """Mean node accuracy vs tick per algorithm, shaded from the worst to the best node."""
    series = series_by_algorithm(records)
    fig, ax = plt.subplots(figsize=(7, 4.5), layout='constrained')
    for alg in legend_order(list(series)):
        s = series[alg]
        if 'acc_mean' not in s:
            continue
        style = style_for(alg)
        ax.plot(s['tick'], s['acc_mean'], label=alg, **style.line_kwargs())
        if 'acc_min' in s and 'acc_max' in s:
            ax.fill_between(s['tick'], s['acc_min'], s['acc_max'], color=style.color,
                            alpha=0.12, linewidth=0, zorder=1)
    _target_line(ax, target)
    ax.set_xlabel('tick')
    ax.set_ylabel('node accuracy (mean; band: min-max over nodes)')
    ax.set_title(title_with_setup(title or 'node accuracy', setup), fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, loc='lower right')
    return fig


def plot_accuracy(records: Records, out_png: PathLike, target: float | None = None,
                  title: str | None = None, setup: Mapping[str, Any] | None = None) -> Path:
    """Writes `accuracy_figure(records, target, title, setup)` to `out_png`."""
    return _save(accuracy_figure(records, target, title, setup), out_png)


def variance_layers(records: Records) -> list[str]:
    """Layer paths that have a 'var_ratio/<layer>' metric, sorted."""
    return sorted({k[len(VAR_RATIO_PREFIX):] for r in _load(records) for k in r
                   if k.startswith(VAR_RATIO_PREFIX)})


def variance_figure(records: Records, title: str | None = None,
                    setup: Mapping[str, Any] | None = None) -> Figure:
    """Per-layer weight variance relative to its initial value vs tick; a log panel per layer."""
    rows = _load(records)
    layers = variance_layers(rows)
    series = series_by_algorithm(rows)
    ncols = min(3, max(1, len(layers)))
    nrows = max(1, math.ceil(len(layers) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.2 * nrows + 0.6),
                             squeeze=False, layout='constrained')
    for ax in axes.flat[len(layers):]:
        ax.set_axis_off()
    if not layers:
        axes[0, 0].text(0.5, 0.5, f"no '{VAR_RATIO_PREFIX}*' metrics recorded",
                        ha='center', va='center', transform=axes[0, 0].transAxes)
    for ax, layer in zip(axes.flat, layers):
        for alg in legend_order(list(series)):
            values = series[alg].get(VAR_RATIO_PREFIX + layer)
            if values is None:
                continue
            # A log axis cannot show <= 0 (e.g. a collapsed layer); leave a gap there.
            ax.plot(series[alg]['tick'], np.where(values > 0, values, np.nan), label=alg,
                    **style_for(alg).line_kwargs())
        ax.axhline(1.0, color='gray', linewidth=0.8, zorder=1)  # the initial variance
        log_axis(ax, 'y')
        ax.set_title(layer, fontsize=9)
        ax.grid(alpha=0.3, which='major')
        ax.grid(alpha=0.12, which='minor')
    if layers:
        fig.supxlabel('tick', fontsize=10)
        fig.supylabel('variance / initial (log)', fontsize=10)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        spare = list(axes.flat[len(layers):])
        if spare:  # an empty panel holds the legend; else it goes right of the panels
            spare[0].legend(handles, labels, loc='center', fontsize=9, frameon=False)
        else:
            fig.legend(handles, labels, loc='outside right upper', fontsize=8, frameon=False)
    main = title or 'per-layer weight variance (mean over nodes, relative to initial)'
    fig.suptitle(title_with_setup(main, setup), fontsize=10)
    return fig


def plot_variance(records: Records, out_png: PathLike, title: str | None = None,
                  setup: Mapping[str, Any] | None = None) -> Path:
    """Writes `variance_figure(records, title, setup)` to `out_png`."""
    return _save(variance_figure(records, title, setup), out_png)


def seeds_figure(runs: Mapping[str, Sequence[Records]], metric: str = 'acc_mean',
                 spread: Spread = 'minmax', target: float | None = None,
                 title: str | None = None, setup: Mapping[str, Any] | None = None,
                 ylabel: str | None = None, log: bool = False) -> Figure:
    """`metric` vs tick per algorithm: the mean over seeds, and a band (`seed_band`).

    Args:
        runs: {algorithm: one record set per seed}.
        metric: the metric drawn.
        spread: 'minmax' or 'sd' (what the band spans; said in the legend title).
        target: a horizontal target line.
        title: the first title line (default: the metric); the setup is the second.
        setup: see `format_setup`.
        ylabel: the y label (default: the metric).
        log: a log y axis (see `log_axis`).
    """
    fig, ax = plt.subplots(figsize=(7, 4.5), layout='constrained')
    for alg in legend_order(list(runs)):
        band = seed_band(runs[alg], alg, metric, spread)
        if band is None:
            continue
        style = style_for(alg)
        mean, lo, hi = band.mean, band.lo, band.hi
        if log:
            mean, lo, hi = (np.where(v > 0, v, np.nan) for v in (mean, lo, hi))
        ax.fill_between(band.tick, lo, hi, color=style.color, alpha=0.18, linewidth=0,
                        zorder=1, label='_band')
        ax.plot(band.tick, mean, label=f'{alg} ({band.seeds} seed{"s" * (band.seeds != 1)})',
                **style.line_kwargs())
    _target_line(ax, target)
    if log:
        log_axis(ax, 'y')
    ax.set_xlabel('tick')
    ax.set_ylabel(ylabel or metric)
    main = title or f'{ylabel or metric}: mean over seeds'
    ax.set_title(title_with_setup(main, setup), fontsize=10)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=8, framealpha=0.85, title=SPREAD_LABEL[spread],
                  title_fontsize=8, loc='best')
    return fig


def plot_seeds(runs: Mapping[str, Sequence[Records]], out_png: PathLike,
               metric: str = 'acc_mean', spread: Spread = 'minmax',
               target: float | None = None, title: str | None = None,
               setup: Mapping[str, Any] | None = None, ylabel: str | None = None,
               log: bool = False) -> Path:
    """Writes `seeds_figure(runs, ...)` (mean and spread over seeds) to `out_png`."""
    return _save(seeds_figure(runs, metric, spread, target, title, setup, ylabel, log), out_png)


# --- results over seeds (rows of vanish.results.aggregate; curves grouped by it) ----------------

# The x axes of accuracy curves: metrics.jsonl key -> (axis label, scale of the values).
CURVE_X = {'tick': ('tick', 1.0), 'bytes_sent_mean': ('MB sent per node', 1e-6),
           'sim_seconds': ('simulated seconds', 1.0)}
# The y axes of curves: metrics.jsonl key -> (axis label, log scale, reference line, its label).
# var_ratio: the mean over conv/dense kernels of their variance / the initial one.
CURVE_Y: dict[str, tuple[str, bool, float | None, str]] = {
    'acc_mean': ('mean node accuracy', False, None, 'target'),
    'var_ratio': ('kernel variance / initial', True, 1.0, 'initial variance')}


def _titles(setup: Mapping[str, Any] | None) -> tuple[dict[str, Any], float | None]:
    shown = dict(setup or {})
    target = shown.pop('target_accuracy', None)
    return shown, (float(target) if target is not None else None)


def ticks_to_target_figure(rows: Sequence[Mapping[str, Any]], field: str,
                           by: Sequence[str] = (),
                           setup: Mapping[str, Any] | None = None) -> Figure:
    """Ticks to target vs `field`, one line per algorithm, error bars = sd over seeds.

    Args:
        rows: vanish.results.aggregate's rows (algorithm, seeds, never, horizon,
            ticks_to_target as (mean, sd) or None, and the `by` fields).
        field: the x axis: a `by` field, or 'group': one categorical point per group,
            labelled by all the `by` fields. A numeric field spanning more than a factor of 8
            (sizes 50 ... 1000) gets a log axis.
        by: the fields the rows are grouped by.
        setup: see `format_setup` (vanish.results.figure_setup); its target_accuracy names
            the y axis.
    """
    if field == 'group':
        rows = [dict(r, group=' '.join(str(r[f]) for f in by)) for r in rows]
    shown, target = _titles(setup)
    as_text = any(isinstance(r[field], str) for r in rows)
    values = [] if as_text else [float(r[field]) for r in rows]
    log_x = bool(values) and min(values) > 0 and max(values) / min(values) > 8
    fig, ax = plt.subplots(figsize=(9, 4.8) if as_text else (8, 4.4), layout='constrained')
    algos = legend_order(sorted({r['algorithm'] for r in rows}))
    # Algorithms side by side at one x (dodged), so that no error bar hides another: by a
    # fraction of a category, of a decade on a log axis, or of the range on a linear one.
    span = max(values) - min(values) if values else 0.0
    categories = list(dict.fromkeys(str(r[field]) for r in rows))  # in the groups' order
    most_seeds = max((r['seeds'] for r in rows), default=0)

    def x(value: Any, algo: str) -> float:
        shift = algos.index(algo) - (len(algos) - 1) / 2
        if as_text:
            return categories.index(str(value)) + 0.08 * shift
        if log_x:
            return float(value) * 10 ** (0.012 * shift)
        return float(value) + 0.012 * span * shift

    for algo in algos:
        mine = sorted((r for r in rows if r['algorithm'] == algo),
                      key=lambda r: (str(type(r[field])), r[field]))
        pts = [r for r in mine if r['ticks_to_target']]
        style = style_for(algo)
        color = style.color
        if pts:  # categories are not a scale: no line joins them
            ax.errorbar([x(r[field], algo) for r in pts],
                        [r['ticks_to_target'][0] for r in pts],
                        yerr=[r['ticks_to_target'][1] for r in pts], marker=style.marker,
                        capsize=3, label=algo, color=color, zorder=style.zorder, alpha=0.9,
                        ls='none' if as_text else style.linestyle, mec='white', mew=0.6)
            for r in pts:  # some seeds never got there: the mean is over the others
                if r['never']:
                    ax.annotate(f"{r['never']}/{r['seeds']} never",
                                (x(r[field], algo), r['ticks_to_target'][0]), fontsize=7,
                                xytext=(4, 4), textcoords='offset points', color=color)
                elif r['seeds'] < most_seeds:  # fewer seeds than the title's: say so
                    ax.annotate(f"{r['seeds']} seed{'s' if r['seeds'] != 1 else ''}",
                                (x(r[field], algo), r['ticks_to_target'][0]), fontsize=7,
                                xytext=(4, -10), textcoords='offset points', color=color)
        missed = [r for r in mine if not r['ticks_to_target'] and r['horizon']]
        if missed:  # no seed got there: a hollow marker at the horizon (a lower bound)
            ax.scatter([x(r[field], algo) for r in missed], [r['horizon'] for r in missed],
                       marker=style.marker, s=40, facecolors='none', edgecolors=color,
                       zorder=style.zorder, label=f'{algo}: never\n(drawn at the horizon)')
    if as_text:
        ax.set_xticks(range(len(categories)), categories)
        ax.tick_params(axis='x', labelsize=7, labelrotation=30)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    if log_x:
        log_axis(ax, 'x')
    if values and (log_x or len(set(values)) <= 8):  # ticks at the measured values only
        ax.xaxis.set_major_locator(ticker.FixedLocator(sorted(set(values))))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f'{v:g}'))
    ax.set_xlabel(field if field != 'group' else ', '.join(by))
    ax.set_ylabel(f'ticks to accuracy {target:g}' if target is not None
                  else 'ticks to target accuracy')
    main = 'ticks to target: mean over seeds, error bar ± sd'
    ax.set_title(title_with_setup(main, shown), fontsize=9)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # outside: inside, it would cover the points at the horizon or the top
        fig.legend(handles, labels, loc='outside right upper', fontsize=8, frameon=False)
    return fig


def plot_ticks_to_target(rows: Sequence[Mapping[str, Any]], field: str, out_png: PathLike,
                         by: Sequence[str] = (),
                         setup: Mapping[str, Any] | None = None) -> Path:
    """Writes `ticks_to_target_figure(rows, field, by, setup)` to `out_png`."""
    return _save(ticks_to_target_figure(rows, field, by, setup), out_png, dpi=120)


def speedup_figure(rows: Sequence[Mapping[str, Any]], baselines: Sequence[str],
                   reference: str = 'gossip_vc', claim: float | None = 6.0) -> Figure:
    """Baseline ticks to target / the reference's vs N (log x), one line per baseline and
    model (vanish.results.speedup_rows' rows). Measured ratios: filled markers with error
    bars (sd over seeds); lower bounds (the baseline never arrived within the horizon):
    open markers with an upward arrow. The paper's claim is a dotted line."""
    fig, ax = plt.subplots(figsize=(8, 4.6), layout='constrained')
    models = sorted({str(r['model']) for r in rows})
    for b in baselines:
        st = style_for(b)
        for mi, model in enumerate(models):
            pts = sorted((int(r['num_nodes']), r[b]) for r in rows
                         if str(r['model']) == model and b in r)
            dash = (st.linestyle, (0, (1, 1)), (0, (4, 1, 1, 1)), (0, (6, 2)))[mi % 4]
            xs, ys = [], []
            for n, sp in pts:
                if sp['ratios']:
                    m = float(np.mean(sp['ratios']))
                    sd = float(np.std(sp['ratios'], ddof=1)) if len(sp['ratios']) > 1 else 0.0
                    ax.errorbar([n], [m], yerr=[sd], color=st.color, marker=st.marker, ms=7,
                                capsize=3, lw=0)
                    xs.append(n)
                    ys.append(m)
                if sp['bounds']:
                    lb = float(np.mean(sp['bounds']))
                    ax.plot([n], [lb], color=st.color, marker=st.marker, ms=8,
                            markerfacecolor='none', lw=0)
                    ax.annotate('', xy=(n, lb * 1.35), xytext=(n, lb),
                                arrowprops=dict(arrowstyle='->', color=st.color))
                    if not sp['ratios']:
                        xs.append(n)
                        ys.append(lb)
            if xs:
                ax.plot(xs, ys, color=st.color, linestyle=dash, lw=1.5,
                        label=f'{b} ({model})')
    if claim:
        ax.axhline(claim, color='0.4', ls=':', lw=1.2, label=f'paper: up to {claim:g}x')
    ax.axhline(1.0, color='0.7', lw=0.8)
    ax.set_xscale('log')
    ax.set_xlabel('nodes N')
    ax.set_ylabel(f'baseline ticks to target / {reference}\'s')
    ax.set_title('speed-up of variance-corrected gossip (open marker + arrow: lower bound, '
                 'the baseline never arrived)', fontsize=9)
    ax.legend(fontsize=8)
    return fig


def named_curves_figure(curves: Mapping[str, Sequence[tuple[float, float]]],
                        ylabel: str) -> Figure:
    """One line per algorithm of {algorithm: [(tick, value), ...]}, in the fixed styles."""
    fig, ax = plt.subplots(figsize=(8, 4.4), layout='constrained')
    for name in legend_order(list(curves)):
        st = style_for(name)
        xs, ys = zip(*curves[name]) if curves[name] else ((), ())
        ax.plot(xs, ys, color=st.color, linestyle=st.linestyle, lw=2, zorder=st.zorder,
                label=name)
    ax.set_xlabel('tick')
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return fig


def plot_named_curves(curves: Mapping[str, Sequence[tuple[float, float]]], out_png: PathLike,
                      ylabel: str) -> Path:
    """Writes `named_curves_figure(curves, ylabel)` to `out_png`."""
    return _save(named_curves_figure(curves, ylabel), out_png)


def plot_speedup(rows: Sequence[Mapping[str, Any]], baselines: Sequence[str],
                 out_png: PathLike, **kwargs: Any) -> Path:
    """Writes `speedup_figure(rows, baselines, **kwargs)` to `out_png`."""
    return _save(speedup_figure(rows, baselines, **kwargs), out_png, dpi=120)


class CurvePanel(NamedTuple):
    """One group of runs (one per seed) in `group_curves_figure`."""

    title: str  # the group, e.g. 'num_nodes=50'
    runs: Mapping[str, Sequence[Records]]  # {algorithm: one record set per seed}; rows
    # hold 'algorithm', 'tick', 'y' (the value drawn) and 'x' (its position)
    seeds: int  # the group's runs
    target: float | None  # the target accuracy (the reference line of accuracy panels)


def group_curves_figure(panels: Sequence[CurvePanel], x: str = 'tick', y: str = 'acc_mean',
                        setup: Mapping[str, Any] | None = None) -> Figure:
    """Accuracy vs tick (or vs `x`, a CURVE_X key: MB sent per node, simulated seconds; or
    `y` = 'var_ratio': the kernels' variance / initial, log scale), one panel per group:
    the mean over seeds, shaded from the lowest to the highest seed, one fixed style per
    algorithm; the dotted line is the group's target (for the variance: the initial
    variance, 1); the title names what all groups share (`setup`). Off the tick axis a point
    is the seeds' mean at one evaluation tick, placed at the seeds' mean x."""
    shown, _ = _titles(setup)
    y_label, log_y, ref_y, ref_label = CURVE_Y[y]
    cols = min(4, len(panels))
    rows_ = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(3.6 * cols + 1.4, 2.8 * rows_ + 0.5),
                             squeeze=False, sharey=True, layout='constrained')
    legend: dict[str, Any] = {}
    for ax, panel in zip(axes.flat, panels):
        label, scale = CURVE_X[x]
        for algo in legend_order(list(panel.runs)):
            band = seed_band(panel.runs[algo], algo, 'y', 'minmax')
            at = seed_band(panel.runs[algo], algo, 'x', 'minmax')
            if band is None or at is None:
                continue
            xs = np.asarray(at.mean) * scale
            style = style_for(algo)
            ax.fill_between(xs, band.lo, band.hi, color=style.color, alpha=0.18, lw=0,
                            zorder=1)
            line, = ax.plot(xs, band.mean, label=algo, **style.line_kwargs())
            legend.setdefault(algo, line)
        title = panel.title
        ref = panel.target if y == 'acc_mean' else ref_y
        if ref:
            legend[ref_label] = ax.axhline(ref, color='k', ls=(0, (1, 2)), lw=0.9, zorder=1.5)
            title += (f'\ntarget {ref:g}, ' if y == 'acc_mean' else '\n')
            title += f'{panel.seeds} seeds'
        if log_y:
            ax.set_yscale('log')
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.axis('off')
    axes[0][0].set_ylabel(y_label, fontsize=8)
    fig.legend(list(legend.values()), list(legend), loc='outside right upper', fontsize=8,
               title='mean over seeds;\nband: min-max\nover seeds', title_fontsize=7,
               frameon=False)
    fig.suptitle(title_with_setup('node accuracy' if y == 'acc_mean' else y_label, shown),
                 fontsize=9)
    return fig


def plot_group_curves(panels: Sequence[CurvePanel], out_png: PathLike, x: str = 'tick',
                      y: str = 'acc_mean', setup: Mapping[str, Any] | None = None) -> Path:
    """Writes `group_curves_figure(panels, x, y, setup)` to `out_png`."""
    return _save(group_curves_figure(panels, x, y, setup), out_png)


def variance_shrink_figure(k_values: Sequence[float],
                           ratios_by_layer: Mapping[str, Sequence[float]],
                           corrected: Mapping[str, Sequence[float]] | None = None,
                           setup: Mapping[str, Any] | None = None) -> Figure:
    """See `plot_variance_shrink`."""
    k = np.asarray(k_values, dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 4.5), layout='constrained')
    # Layers are not algorithms: their own fixed order of colours, one per layer name.
    palette = plt.rcParams['axes.prop_cycle'].by_key()['color']
    colors = {layer: palette[i % len(palette)] for i, layer in enumerate(ratios_by_layer)}
    k_dense = np.geomspace(k.min(), k.max(), 100)
    ax.plot(k_dense, 1.0 / k_dense, color='k', linestyle='--', linewidth=1, label='1/k',
            zorder=3)
    for layer, ratios in ratios_by_layer.items():
        ax.plot(k, ratios, marker='o', color=colors[layer], label=layer, alpha=0.9)
    for layer, ratios in (corrected or {}).items():
        ax.plot(k, ratios, marker='s', linestyle=':', mfc='none',
                color=colors.get(layer, 'gray'), label=f'{layer} (corrected)')
    if corrected:
        ax.axhline(1.0, color='gray', linewidth=0.8)
    ax.set_xscale('log', base=2)
    ax.xaxis.set_major_locator(ticker.FixedLocator(k.tolist()))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f'{v:g}'))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    log_axis(ax, 'y')
    ax.set_xlabel('k (models averaged)')
    ax.set_ylabel('variance ratio (averaged / single)')
    ax.set_title(title_with_setup('variance shrinkage by averaging', setup), fontsize=10)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=8)
    return fig


def plot_variance_shrink(k_values: Sequence[float], ratios_by_layer: Mapping[str, Sequence[float]],
                         out_png: PathLike,
                         corrected: Mapping[str, Sequence[float]] | None = None,
                         setup: Mapping[str, Any] | None = None) -> Path:
    """Variance ratio after averaging k models vs k, against the 1/k law of independent models.

    Args:
        k_values: numbers of averaged models.
        ratios_by_layer: {layer: measured var(average) / var(single model), one per k}.
        out_png: output file.
        corrected: the same after variance correction (ideally 1 for every k).
        setup: see `format_setup`.
    """
    return _save(variance_shrink_figure(k_values, ratios_by_layer, corrected, setup), out_png)


def plot_run(workdir: PathLike, target: float | None = None,
             setup: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Reads `workdir/metrics.jsonl`; writes accuracy.png and variance.png next to it.

    Args:
        workdir: a run's workdir.
        target: the accuracy target, drawn as a line.
        setup: see `format_setup`; titles say only what the figure shows without it.
    """
    workdir = Path(workdir)
    rows = tracking.read_jsonl(workdir / tracking.METRICS_FILE)
    return (plot_accuracy(rows, workdir / 'accuracy.png', target=target, setup=setup),
            plot_variance(rows, workdir / 'variance.png', setup=setup))
