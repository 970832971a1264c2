"""Tests for vanish.plots: figures from synthetic records (the tables: tests/test_results.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib import colors as mcolors

from vanish import plots, tracking

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
LAYERS = ['Conv_0/kernel', 'Dense_0/kernel', 'Dense_1/kernel', 'Dense_1/bias']


def synthetic_records() -> list[dict]:
    rows = []
    for i, alg in enumerate(['fl', 'gossip', 'gossip_vc']):
        for tick in range(0, 1000, 100):
            acc = 0.1 + 0.8 * (1 - np.exp(-tick / (200 + 100 * i)))
            row = {'algorithm': alg, 'tick': tick, 'acc_mean': acc, 'acc_min': acc - 0.05,
                   'acc_max': acc + 0.05, 'acc_std': 0.02, 'consensus': 1.0 / (tick + 1)}
            for j, layer in enumerate(LAYERS):
                shrink = 1.0 / (1 + tick * (j + 1) * (i + 1) / 100)
                ratio = 1.0 if alg == 'gossip_vc' else shrink
                row[f'var/{layer}'] = 0.01 * ratio
                row[f'var_ratio/{layer}'] = ratio
            rows.append(row)
    return rows


def assert_png(path, *algorithms: str) -> None:
    """A PNG whose pixels include each algorithm's line colour (so those curves were drawn)."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    rgb = plt.imread(path)[..., :3]
    for alg in algorithms:
        style = plots.style_for(alg)
        alpha = style.line_kwargs()['alpha']  # drawn over white
        drawn = alpha * np.array(mcolors.to_rgb(style.color)) + (1 - alpha)
        close = np.all(np.abs(rgb - drawn) < 0.03, axis=-1)
        assert close.sum() > 50, f'no curve in colour {style.color} ({alg}) in {path.name}'


def test_series_by_algorithm_sorts_ticks_and_keeps_last_duplicate():
    rows = [{'algorithm': 'a', 'tick': 20, 'acc_mean': 0.2},
            {'algorithm': 'a', 'tick': 10, 'acc_mean': 0.1},
            {'algorithm': 'a', 'tick': 20, 'acc_mean': 0.3},
            {'algorithm': 'b', 'tick': 10, 'acc_mean': 0.5, 'consensus': 1.0},
            {'algorithm': 'b', 'tick': 20, 'acc_mean': 0.6}]
    series = plots.series_by_algorithm(rows)
    assert list(series) == ['a', 'b']
    np.testing.assert_array_equal(series['a']['tick'], [10, 20])
    np.testing.assert_array_equal(series['a']['acc_mean'], [0.1, 0.3])
    np.testing.assert_array_equal(series['b']['consensus'], [1.0, np.nan])


def test_plot_accuracy_and_variance_write_pngs(tmp_path):
    rows = synthetic_records()
    acc = plots.plot_accuracy(rows, tmp_path / 'acc.png', target=0.8, title='synthetic')
    var = plots.plot_variance(rows, tmp_path / 'sub' / 'var.png')
    assert acc == tmp_path / 'acc.png' and var == tmp_path / 'sub' / 'var.png'
    assert_png(acc, 'fl', 'gossip', 'gossip_vc')
    assert_png(var, 'fl', 'gossip', 'gossip_vc')
    assert plots.variance_layers(rows) == sorted(LAYERS)


def test_plot_variance_without_variance_metrics_still_writes_a_figure(tmp_path):
    rows = [{'algorithm': 'fl', 'tick': t, 'acc_mean': 0.1 * t} for t in range(5)]
    out = plots.plot_variance(rows, tmp_path / 'var.png')
    assert_png(out)


def test_plot_variance_shrink(tmp_path):
    k = [1, 2, 4, 8, 16]
    measured = {'Dense_0/kernel': [1 / x * 1.1 for x in k], 'Dense_1/kernel': [1 / x for x in k]}
    corrected = {name: [1.0] * len(k) for name in measured}
    out = plots.plot_variance_shrink(k, measured, tmp_path / 'shrink.png', corrected=corrected)
    assert_png(out)
    rgb = plt.imread(out)[..., :3]
    for color in ('C0', 'C1'):  # one colour per layer
        assert np.all(np.abs(rgb - mcolors.to_rgb(color)) < 0.03, axis=-1).sum() > 50


def test_plot_run_reads_metrics_file(tmp_path):
    for alg in ['fl', 'gossip']:
        with tracking.JsonlWriter(tmp_path / tracking.METRICS_FILE, alg) as w:
            for row in synthetic_records():
                if row['algorithm'] == alg:
                    w.write_scalars(row['tick'], {k: v for k, v in row.items()
                                                  if k not in ('algorithm', 'tick')})
    acc, var = plots.plot_run(tmp_path)
    assert (acc.name, var.name) == ('accuracy.png', 'variance.png')
    assert acc.parent == tmp_path and var.parent == tmp_path
    assert_png(acc, 'fl', 'gossip')
    assert_png(var, 'fl', 'gossip')


# --- one style per algorithm -------------------------------------------------------------------

SETUP = {'dataset': 'fashion_mnist', 'model': 'lenet5', 'num_nodes': 50, 'topology': 'ring',
         'partition': 'dirichlet_weights', 'seeds': [0, 1, 2]}


def drawn_styles(fig) -> dict[str, tuple]:
    """{algorithm: (rgba, dash pattern, marker)} of every labelled line in `fig`'s axes
    (a seed figure's label 'fl (3 seeds)' counts as 'fl')."""
    out = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            label = line.get_label().split(' (')[0]
            if not label.startswith('_') and not label.startswith('target'):
                got = (mcolors.to_rgba(line.get_color()), line.get_linestyle(),
                       line.get_marker())
                assert out.setdefault(label, got) == got, f'{label} drawn two ways in one figure'
    return out


def expected(name: str) -> tuple:
    style = plots.style_for(name)
    probe = plt.Line2D([], [], **style.line_kwargs())  # how matplotlib reports that style
    return (mcolors.to_rgba(style.color), probe.get_linestyle(), style.marker)


def test_registered_algorithms_have_distinct_fixed_styles():
    from vanish.algorithms import NAMES  # names only: imports no algorithm module, no JAX

    styles = {name: plots.style_for(name) for name in NAMES}
    looks = {(s.color, str(s.linestyle), s.marker) for s in styles.values()}
    assert len(looks) == len(NAMES) == 28  # every registered name looks different
    assert len({s.marker for s in styles.values()}) == len(NAMES)
    assert styles['fl'].color == 'tab:blue' and styles['gossip_vc'].color == 'tab:green'
    for family in ('gossip_trim', 'gossip_median', 'gossip_krum', 'gossip_topk', 'gossip_q8',
                   'dpsgd', 'gossip_flag', 'gossip_align'):
        base, vc = styles[family], styles[family + '_vc']
        assert vc.color == base.color and vc.linestyle == '-' != base.linestyle
        assert vc.zorder < base.zorder  # the broken line is drawn over the solid one
    # A name not in the table: the same look in another process with another hash salt.
    probe = 'import vanish.plots as p; print(tuple(p.style_for("my_new_rule")))'
    outs = {subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True,
                           check=True, env={**os.environ, 'PYTHONHASHSEED': seed}).stdout
            for seed in ('1', '2')}
    assert outs == {str(tuple(plots.style_for('my_new_rule'))) + '\n'}
    assert plots.style_for('my_new_rule').color not in {s.color for s in styles.values()}


def test_an_algorithm_keeps_its_style_across_figures_and_orders():
    rows = synthetic_records()  # fl, gossip, gossip_vc in that order
    reordered = ([r for r in rows if r['algorithm'] == 'gossip_vc']
                 + [dict(r, algorithm='my_new_rule') for r in rows if r['algorithm'] == 'fl'])
    only_gossip = [r for r in rows if r['algorithm'] == 'gossip']  # one algorithm: any name
    seeds = {'dpsgd': [only_gossip], 'gossip_vc': [rows, rows], 'fl': [rows]}
    figs = [plots.accuracy_figure(rows), plots.variance_figure(reordered),
            plots.seeds_figure(seeds), plots.accuracy_figure(reordered)]
    try:
        drawn = [drawn_styles(f) for f in figs]
    finally:
        for f in figs:
            plt.close(f)
    assert set(drawn[0]) == {'fl', 'gossip', 'gossip_vc'}
    assert set(drawn[1]) == {'gossip_vc', 'my_new_rule'}
    assert set(drawn[2]) == {'dpsgd', 'gossip_vc', 'fl'}
    assert drawn[3] == drawn[1]  # the same runs in another kind of figure
    for d in drawn:
        for name, got in d.items():
            assert got == expected(name), name
    # gossip_vc is first in one figure and last in another, and looks the same in all three.
    assert drawn[0]['gossip_vc'] == drawn[1]['gossip_vc'] == drawn[2]['gossip_vc'] == (
        drawn[3]['gossip_vc'])
    assert drawn[0]['fl'][0] != drawn[0]['gossip_vc'][0]


def test_no_line_hides_another():
    fig = plots.accuracy_figure(synthetic_records())
    try:
        lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
        fl, vc = lines['fl'], lines['gossip_vc']
        assert fl.get_zorder() > vc.get_zorder()  # the dashed baseline over the solid line
        assert fl.get_linestyle() == '--' and vc.get_linestyle() == '-'
        assert 0.5 < fl.get_alpha() < 1
        assert fl.get_markevery() != vc.get_markevery()  # markers staggered, and sparse:
        start, step = vc.get_markevery()
        assert 0 < step <= 0.2 and 0 <= start < step
    finally:
        plt.close(fig)


# --- titles ------------------------------------------------------------------------------------

def test_format_setup():
    assert plots.format_setup(SETUP) == ('fashion_mnist · lenet5 · N=50 · ring topology · '
                                         'dirichlet_weights partition · 3 seeds (0, 1, 2)')
    assert plots.format_setup({'num_nodes': 8, 'seeds': 4, 'alpha': 0.1}) == (
        'N=8 · seed 4 · alpha=0.1')
    assert plots.format_setup(None) == plots.format_setup({}) == ''


def test_titles_carry_the_setup(tmp_path):
    rows = synthetic_records()
    setup_line = plots.format_setup(SETUP)
    figs = [plots.accuracy_figure(rows, setup=SETUP, title='synthetic'),
            plots.seeds_figure({'fl': [rows]}, setup=SETUP)]
    variance = plots.variance_figure(rows, setup=SETUP)
    try:
        for fig in figs:
            assert fig.axes[0].get_title().split('\n')[1] == setup_line
        assert figs[0].axes[0].get_title() == f'synthetic\n{setup_line}'
        assert variance.get_suptitle().endswith('\n' + setup_line)
        assert 'N=50' in setup_line and 'fashion_mnist' in setup_line
    finally:
        for f in [*figs, variance]:
            plt.close(f)
    bare = plots.accuracy_figure(rows)  # no setup: one title line
    assert bare.axes[0].get_title() == 'node accuracy'
    plt.close(bare)


# --- log axes ----------------------------------------------------------------------------------

def _log_labels(lo: float, hi: float) -> list[str]:
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [hi, np.sqrt(lo * hi), lo])
    plots.log_axis(ax, 'y')
    labels = plots.visible_tick_labels(ax, 'y')
    plt.close(fig)
    return labels


def test_log_axis_labels_every_decade_and_2_5_within_short_ranges():
    assert _log_labels(0.1, 1.0) == ['0.1', '0.2', '0.5', '1']  # one decade: 4 labels
    assert _log_labels(0.01, 1.0) == ['0.01', '0.02', '0.05', '0.1', '0.2', '0.5', '1']
    assert _log_labels(1e-4, 1.0) == ['$10^{-4}$', '0.001', '0.01', '0.1', '1']  # decades only
    assert _log_labels(0.3, 2.0) == ['0.3', '0.5', '1', '2']  # under a decade: also 3


def test_log_axis_widens_a_narrow_range():
    labels = _log_labels(0.97, 1.05)  # variance-corrected ratios hover around 1
    assert len(labels) >= 3 and '1' in labels


def test_variance_panels_have_readable_log_ticks():
    rows = synthetic_records()
    fig = plots.variance_figure(rows)
    try:
        for ax in fig.axes[:len(LAYERS)]:
            lo, hi = ax.get_ylim()
            assert ax.get_yscale() == 'log' and np.log10(hi / lo) < 2.5
            labels = plots.visible_tick_labels(ax, 'y')
            assert len(labels) >= 4 and {'1', '0.5', '0.2', '0.1'} <= set(labels), labels
    finally:
        plt.close(fig)


# --- seeds -------------------------------------------------------------------------------------

def _seed_rows(values: dict[int, float], alg: str = 'gossip_vc') -> list[dict]:
    return [{'algorithm': alg, 'tick': t, 'acc_mean': v} for t, v in values.items()]


SEED_RUNS = [_seed_rows({0: 0.1, 50: 0.5, 100: 0.7, 150: 0.8}),
             _seed_rows({0: 0.1, 50: 0.3, 100: 0.9}),  # stopped early: tick 150 is dropped
             _seed_rows({0: 0.1, 50: 0.4, 100: 0.5, 150: 0.6})]


def test_seed_band_min_max_and_sd():
    band = plots.seed_band(SEED_RUNS, 'gossip_vc')
    np.testing.assert_array_equal(band.tick, [0, 50, 100])
    np.testing.assert_allclose(band.mean, [0.1, 0.4, 0.7])
    np.testing.assert_allclose(band.lo, [0.1, 0.3, 0.5])
    np.testing.assert_allclose(band.hi, [0.1, 0.5, 0.9])
    assert band.seeds == 3
    sd = plots.seed_band(SEED_RUNS, 'gossip_vc', spread='sd')
    np.testing.assert_allclose(sd.hi - sd.mean, [0.0, 0.1, 0.2], atol=1e-12)  # sample sd
    np.testing.assert_allclose(sd.mean - sd.lo, [0.0, 0.1, 0.2], atol=1e-12)
    assert plots.seed_band(SEED_RUNS, 'gossip_vc', metric='consensus') is None
    with pytest.raises(ValueError, match='spread'):
        plots.seed_band(SEED_RUNS, 'gossip_vc', spread='iqr')


@pytest.mark.parametrize('spread', ['minmax', 'sd'])
def test_seeds_figure_draws_the_band_of_the_inputs(tmp_path, spread):
    runs = {'gossip_vc': SEED_RUNS, 'fl': [_seed_rows({0: 0.2, 50: 0.6, 100: 0.8}, 'fl')]}
    fig = plots.seeds_figure(runs, spread=spread, target=0.75)
    try:
        ax = fig.axes[0]
        ref = plots.seed_band(SEED_RUNS, 'gossip_vc', spread=spread)
        green = mcolors.to_rgba('tab:green', 0.18)
        (band,) = [c for c in ax.collections if np.allclose(c.get_facecolor()[0], green)]
        verts = band.get_paths()[0].vertices
        for tick, lo, hi in zip(ref.tick, ref.lo, ref.hi):
            ys = verts[np.isclose(verts[:, 0], tick), 1]
            np.testing.assert_allclose([ys.min(), ys.max()], [lo, hi])
        line = next(ln for ln in ax.get_lines() if ln.get_label() == 'gossip_vc (3 seeds)')
        np.testing.assert_allclose(line.get_ydata(), [0.1, 0.4, 0.7])
        legend = ax.get_legend()
        assert legend.get_title().get_text() == plots.SPREAD_LABEL[spread]
        assert [t.get_text() for t in legend.get_texts()] == [
            'fl (1 seed)', 'gossip_vc (3 seeds)', 'target 0.75']
    finally:
        plt.close(fig)
    out = plots.plot_seeds(runs, tmp_path / 'seeds.png', spread=spread)
    assert_png(out, 'gossip_vc', 'fl')


def test_seed_runs_from_metrics_files(tmp_path):
    paths = []
    for seed, run in enumerate(SEED_RUNS):
        with tracking.JsonlWriter(tmp_path / f's{seed}.jsonl', 'gossip_vc') as w:
            for row in run:
                w.write_scalars(row['tick'], {'acc_mean': row['acc_mean']})
        paths.append(tmp_path / f's{seed}.jsonl')
    band = plots.seed_band(paths, 'gossip_vc')
    np.testing.assert_allclose(band.hi, [0.1, 0.5, 0.9])
