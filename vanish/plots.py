"""Figures and tables from the metrics files (host only, matplotlib's Agg backend).

    paths = plots.plot_run(workdir)  # workdir/metrics.jsonl -> accuracy.png, variance.png
    print(plots.summary_table({'gossip': {'final_acc': 0.91, 'ticks_to_target': 1200}}))
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use('Agg')  # no display on clusters / CI; must precede pyplot
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from vanish import metrics, tracking  # pylint: disable=wrong-import-position

PathLike = str | os.PathLike[str]
Records = Sequence[Mapping[str, Any]] | PathLike

VAR_RATIO_PREFIX = metrics.VAR_RATIO_PREFIX
# (header, candidate summary keys): the first key present is shown.
DEFAULT_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ('final acc', ('final_acc', 'final_accuracy', 'acc_mean')),
    ('ticks to target', ('ticks_to_target', 'time_to_accuracy')),
    ('var ratio', ('var_ratio', 'final_var_ratio', 'var_ratio_mean')),
)


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


def _colors(algorithms: Sequence[str]) -> dict[str, Any]:
    # Fixed by order of appearance, so an algorithm has one colour in every figure of a run.
    cycle = plt.rcParams['axes.prop_cycle'].by_key()['color']
    return {alg: cycle[i % len(cycle)] for i, alg in enumerate(algorithms)}


def _save(fig: Any, out_png: PathLike) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)  # long sweeps make many figures; pyplot keeps them alive otherwise
    return out


def plot_accuracy(records: Records, out_png: PathLike, target: float | None = None,
                  title: str | None = None) -> Path:
    """Mean node accuracy vs tick per algorithm, with a min-max band; optional target line."""
    series = series_by_algorithm(records)
    colors = _colors(list(series))
    fig, ax = plt.subplots(figsize=(7, 4.5), layout='constrained')
    for alg, s in series.items():
        if 'acc_mean' not in s:
            continue
        ax.plot(s['tick'], s['acc_mean'], color=colors[alg], label=alg)
        if 'acc_min' in s and 'acc_max' in s:
            ax.fill_between(s['tick'], s['acc_min'], s['acc_max'], color=colors[alg],
                            alpha=0.2, linewidth=0)
    if target is not None:
        ax.axhline(target, color='k', linestyle='--', linewidth=1, label=f'target {target:g}')
    ax.set_xlabel('tick')
    ax.set_ylabel('accuracy (mean, min-max band)')
    ax.set_title(title or 'node accuracy')
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return _save(fig, out_png)


def variance_layers(records: Records) -> list[str]:
    """Layer paths that have a 'var_ratio/<layer>' metric, sorted."""
    return sorted({k[len(VAR_RATIO_PREFIX):] for r in _load(records) for k in r
                   if k.startswith(VAR_RATIO_PREFIX)})


def plot_variance(records: Records, out_png: PathLike, title: str | None = None) -> Path:
    """Per-layer weight variance relative to its initial value vs tick; one panel per layer."""
    rows = _load(records)
    layers = variance_layers(rows)
    series = series_by_algorithm(rows)
    colors = _colors(list(series))
    ncols = min(3, max(1, len(layers)))
    nrows = max(1, math.ceil(len(layers) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False,
                             layout='constrained')
    for ax in axes.flat[len(layers):]:
        ax.set_axis_off()
    if not layers:
        axes[0, 0].text(0.5, 0.5, f"no '{VAR_RATIO_PREFIX}*' metrics recorded",
                        ha='center', va='center', transform=axes[0, 0].transAxes)
    for ax, layer in zip(axes.flat, layers):
        for alg, s in series.items():
            values = s.get(VAR_RATIO_PREFIX + layer)
            if values is None:
                continue
            # A log axis cannot show <= 0 (e.g. a collapsed layer); leave a gap there.
            ax.plot(s['tick'], np.where(values > 0, values, np.nan), color=colors[alg],
                    label=alg)
        ax.set_yscale('log')
        ax.set_title(layer, fontsize=9)
        ax.grid(alpha=0.3, which='both')
    if layers:
        fig.supxlabel('tick')
        fig.supylabel('variance / initial')
        axes[0, 0].legend(fontsize=8)
    fig.suptitle(title or 'per-layer weight variance (mean over nodes, relative to initial)')
    return _save(fig, out_png)


def plot_variance_shrink(k_values: Sequence[float], ratios_by_layer: Mapping[str, Sequence[float]],
                         out_png: PathLike,
                         corrected: Mapping[str, Sequence[float]] | None = None) -> Path:
    """Variance ratio after averaging k models vs k, against the 1/k law of independent models.

    Args:
        k_values: numbers of averaged models.
        ratios_by_layer: {layer: measured var(average) / var(single model), one per k}.
        out_png: output file.
        corrected: the same after variance correction (ideally 1 for every k).
    """
    k = np.asarray(k_values, dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 4.5), layout='constrained')
    colors = _colors(list(ratios_by_layer))
    k_dense = np.geomspace(k.min(), k.max(), 100)
    ax.plot(k_dense, 1.0 / k_dense, color='k', linestyle='--', linewidth=1, label='1/k',
            zorder=3)
    for layer, ratios in ratios_by_layer.items():
        ax.plot(k, ratios, marker='o', color=colors[layer], label=layer)
    for layer, ratios in (corrected or {}).items():
        ax.plot(k, ratios, marker='s', linestyle=':', mfc='none',
                color=colors.get(layer, 'gray'), label=f'{layer} (corrected)')
    if corrected:
        ax.axhline(1.0, color='gray', linewidth=0.8)
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xlabel('k (models averaged)')
    ax.set_ylabel('variance ratio (averaged / single)')
    ax.set_title('variance shrinkage by averaging')
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=8)
    return _save(fig, out_png)


def _cell(summary: Mapping[str, Any], keys: Sequence[str]) -> str:
    key = next((k for k in keys if k in summary), None)
    if key is None:
        return '-'
    value = summary[key]
    if value is None:  # how summaries say "target accuracy never reached"
        return 'never'
    if isinstance(value, float):
        return f'{value:.4f}' if abs(value) >= 1e-3 or value == 0 else f'{value:.3e}'
    return str(value)


def _with_mean_var_ratio(summary: Mapping[str, Any]) -> dict[str, Any]:
    # Summaries may carry only per-layer final ratios: the one definition (kernel mean).
    out = dict(summary)
    kernel = metrics.kernel_var_ratio(dict(summary))
    if kernel is not None:
        out.setdefault('var_ratio_mean', kernel)
    return out


def summary_table(summaries: Mapping[str, Mapping[str, Any]], *, markdown: bool = False,
                  columns: Sequence[tuple[str, Sequence[str]]] = DEFAULT_COLUMNS) -> str:
    """Algorithm -> final accuracy, ticks to target, variance ratio, as fixed-width or Markdown.

    Args:
        summaries: {algorithm: summary dict}.
        markdown: a GitHub Markdown table instead of aligned plain text.
        columns: (header, candidate keys) pairs; the first key present fills the cell, '-' if
            none is, 'never' if its value is None (a target that was not reached).
    """
    header = ['algorithm'] + [h for h, _ in columns]
    rows = [[alg] + [_cell(_with_mean_var_ratio(s), keys) for _, keys in columns]
            for alg, s in summaries.items()]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w)
                  for i, (c, w) in enumerate(zip(cells, widths))]
        return ('| ' + ' | '.join(padded) + ' |') if markdown else '  '.join(padded)

    if markdown:
        rule = '|' + '|'.join(('-' * (w + 1)) + (':' if i else '-')
                              for i, w in enumerate(widths)) + '|'
    else:
        rule = '  '.join('-' * w for w in widths)
    return '\n'.join([line(header), rule, *map(line, rows)])


def plot_run(workdir: PathLike, target: float | None = None) -> tuple[Path, Path]:
    """Reads `workdir/metrics.jsonl`; writes accuracy.png and variance.png next to it."""
    workdir = Path(workdir)
    rows = tracking.read_jsonl(workdir / tracking.METRICS_FILE)
    return (plot_accuracy(rows, workdir / 'accuracy.png', target=target),
            plot_variance(rows, workdir / 'variance.png'))
