"""Tests for vanish.plots: figures from synthetic records and the summary table."""

from __future__ import annotations

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


def assert_png(path, *line_colors: str) -> None:
    """A PNG whose pixels include each of `line_colors` (so those curves were drawn)."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    rgb = plt.imread(path)[..., :3]
    for color in line_colors:
        close = np.all(np.abs(rgb - np.array(mcolors.to_rgb(color))) < 0.03, axis=-1)
        assert close.sum() > 50, f'no curve in colour {color} in {path.name}'


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
    assert_png(acc, 'C0', 'C1', 'C2')  # one colour per algorithm, in order of appearance
    assert_png(var, 'C0', 'C1', 'C2')
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
    assert_png(out, 'C0', 'C1')


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
    assert_png(acc, 'C0', 'C1')
    assert_png(var, 'C0', 'C1')


def test_summary_table_text_and_markdown():
    summaries = {
        'fl': {'final_acc': 0.912345, 'ticks_to_target': 1200, 'var_ratio': 0.05},
        'gossip_vc': {'final_acc': 0.9, 'ticks_to_target': None,
                      'var_ratio/Dense_0/kernel': 0.5, 'var_ratio/Dense_1/kernel': 1.5},
        'gossip': {'final_acc': 0.5},
    }
    text = plots.summary_table(summaries)
    lines = text.splitlines()
    assert lines[0].split() == ['algorithm', 'final', 'acc', 'ticks', 'to', 'target', 'var',
                                'ratio']
    assert lines[2].split() == ['fl', '0.9123', '1200', '0.0500']
    # Per-layer ratios are averaged when no aggregate is given; None means "never reached".
    assert lines[3].split() == ['gossip_vc', '0.9000', 'never', '1.0000']
    assert lines[4].split() == ['gossip', '0.5000', '-', '-']
    assert len({len(line) for line in lines}) == 1  # fixed width

    md = plots.summary_table(summaries, markdown=True).splitlines()
    assert md[0].startswith('| algorithm') and md[0].endswith('|')
    assert set(md[1]) <= set('|-:') and md[1].count('|') == 5
    assert md[2].replace(' ', '') == '|fl|0.9123|1200|0.0500|'


@pytest.mark.parametrize('value,shown', [(0.0, '0.0000'), (1.5e-5, '1.500e-05'), (7, '7')])
def test_summary_table_number_formats(value, shown):
    table = plots.summary_table({'a': {'final_acc': value}})
    assert table.splitlines()[2].split()[1] == shown
