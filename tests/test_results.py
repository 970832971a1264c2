"""vanish.results on hand-built runs: statistics over seeds against numpy, seeds that never
reached the target, the grid's and a sweep's Markdown and CSV, loading stored records, and
one run's summary table."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from vanish import metrics, results, sweep


def _mean_sd(values):
    return float(np.mean(values)), float(np.std(values, ddof=1))


def test_stats_are_the_mean_and_the_sample_sd():
    values = [0.81, 0.84, 0.8, 0.77]
    mean, sd = results.stats(values)
    np.testing.assert_allclose((mean, sd), _mean_sd(values), rtol=1e-12)
    assert results.stats([250.0]) == (250.0, 0.0)  # one seed: no spread
    assert results.stats([]) is None


# ------------------------------------------------------------------ the grid (aggregate)


def _run(root, n, seed, summary, **fields):
    """A workdir as vanish writes it (schema 2: the config nested in sections)."""
    wd = root / f"n{n}" / f"seed{seed}"
    wd.mkdir(parents=True)
    cfg = {"seed": seed, "topology": {"num_nodes": n}, "run": {"target_accuracy": 0.75},
           **fields}
    (wd / "run_config.json").write_text(json.dumps({"schema": 2, "config": cfg}))
    (wd / "summary.json").write_text(json.dumps(summary))
    return wd


# Three seeds at N = 50: gossip misses the target in seed 1, fl in every seed.
TTA = {"gossip_vc": [100, 250, 400], "gossip": [300, None, 900], "fl": [None, None, None]}
FINAL = {"gossip_vc": [0.81, 0.84, 0.8], "gossip": [0.7, 0.6, 0.72], "fl": [0.5, 0.55, 0.6]}


@pytest.fixture
def grid(tmp_path):
    for seed in range(3):
        summary = {a: {"ticks_to_target": TTA[a][seed], "final_acc": FINAL[a][seed],
                       "final_global_acc": FINAL[a][seed] + 0.01, "var_ratio": 1.0 - 0.1 * seed,
                       "final_tick": 500} for a in TTA}
        _run(tmp_path, 50, seed, summary)
    _run(tmp_path, 100, 0, {"gossip_vc": {"ticks_to_target": 150, "final_acc": 0.9,
                                          "final_tick": 600}})
    return results.aggregate(results.find_runs([tmp_path]), ["num_nodes"])


def test_aggregate_means_and_sds_over_seeds_match_numpy(grid):
    by = {(r["num_nodes"], r["algorithm"]): r for r in grid}
    assert [(r["num_nodes"], r["algorithm"]) for r in grid] == [
        (50, "fl"), (50, "gossip"), (50, "gossip_vc"), (100, "gossip_vc")]
    vc = by[50, "gossip_vc"]
    assert (vc["seeds"], vc["never"], vc["horizon"]) == (3, 0, 500)
    np.testing.assert_allclose(vc["ticks_to_target"], _mean_sd(TTA["gossip_vc"]))
    np.testing.assert_allclose(vc["final_acc"], _mean_sd(FINAL["gossip_vc"]))
    np.testing.assert_allclose(vc["var_ratio"], _mean_sd([1.0, 0.9, 0.8]))
    assert vc["bytes_to_target"] is None  # no run counted bytes
    assert by[100, "gossip_vc"]["ticks_to_target"] == (150.0, 0.0)  # one seed


def test_a_seed_that_never_reached_the_target_is_counted_not_averaged(grid):
    by = {(r["num_nodes"], r["algorithm"]): r for r in grid}
    gossip = by[50, "gossip"]
    assert (gossip["seeds"], gossip["never"]) == (3, 1)
    np.testing.assert_allclose(gossip["ticks_to_target"], _mean_sd([300, 900]))  # not 0/inf
    np.testing.assert_allclose(gossip["final_acc"], _mean_sd(FINAL["gossip"]))  # all seeds
    # gossip / gossip_vc ticks, per seed where both got there: 300/100 and 900/400.
    np.testing.assert_allclose(gossip["gossip_over_vc"], _mean_sd([3.0, 2.25]))
    fl = by[50, "fl"]
    assert (fl["never"], fl["ticks_to_target"], fl["fl_over_vc"]) == (3, None, None)


def test_grid_markdown_rows(grid):
    text = results.markdown(grid, ["num_nodes"])
    lines = text.splitlines()
    assert lines[0] == ("| num_nodes | algorithm | seeds | ticks to target | final acc "
                        "| global-model acc | var ratio | gossip / vc ticks | fl / vc ticks |")
    assert lines[1] == "|" + "---|" * 9
    assert len(lines) == 2 + len(grid) and text.endswith("|\n")

    def cell(values, digits):
        m, s = _mean_sd(values)
        return f"{m:.{digits}f} ± {s:.{digits}f}"

    finals = FINAL["gossip"]
    assert lines[3] == (f"| 50 | gossip | 3 | {cell([300, 900], 0)} (never: 1/3) | "
                        f"{cell(finals, 3)} | {cell([f + 0.01 for f in finals], 3)} | "
                        f"{cell([1.0, 0.9, 0.8], 2)} | {cell([3.0, 2.25], 2)} | - |")
    assert lines[2].startswith("| 50 | fl | 3 | never | ")
    assert lines[5] == "| 100 | gossip_vc | 1 | 150 ± 0 | 0.900 ± 0.000 | - | - | - | - |"


def test_one_group_holds_each_seed_once(tmp_path):
    _run(tmp_path / "a", 50, 0, {"gossip": {"ticks_to_target": 1}})
    _run(tmp_path / "b", 50, 0, {"gossip": {"ticks_to_target": 2}})
    with pytest.raises(results.ResultsError, match=r"holds seed\(s\) twice: \[0, 0\]"):
        results.aggregate(results.find_runs([tmp_path]), ["num_nodes"])


# ------------------------------------------------------------------ stored records


def test_load_run_reads_todays_and_earlier_records(tmp_path):
    new = _run(tmp_path, 50, 3, {"fl": {}}, data={"alpha": 0.1})
    cfg, summary = results.load_run(new)
    alpha = "partition_args.dirichlet_weights.alpha"
    assert (cfg["seed"], cfg["topology.num_nodes"], cfg[alpha]) == (3, 50, 0.1)
    assert "optim.lr" in cfg and summary == {"fl": {}}  # a field it lacks: its default
    old = tmp_path / "old"
    old.mkdir()  # an earlier vanish: flat names, no schema; a hand-added field stays
    (old / "run_config.json").write_text(json.dumps({"config": {
        "seed": 1, "num_nodes": 200, "alpha": 5.0, "tag": "x"}}))
    (old / "summary.json").write_text("{}")
    cfg, _ = results.load_run(old)
    assert (cfg["topology.num_nodes"], cfg[alpha], cfg["tag"]) == (200, 5.0, "x")
    assert cfg["partition_args.dirichlet_split.alpha"] == 5.0  # an old field, both places
    assert "num_nodes" not in cfg
    (old / "summary.json").write_text("{not json")
    with pytest.raises(results.ResultsError, match="summary.json: cannot read it"):
        results.load_run(old)


def test_field_paths_and_the_fields_seeds_may_differ_in():
    assert results.field_path("num_nodes") == "topology.num_nodes"
    assert results.field_path("topology.degree") == "topology_args.random_regular.degree"
    path = "topology_args.watts_strogatz.k"
    assert results.field_path(path) == path
    a = {"seed": 0, "run.ticks": 100, "optim.lr": 0.1, "run.target_accuracy": 0.7}
    b = {"seed": 1, "run.ticks": 200, "optim.lr": 0.2, "run.target_accuracy": 0.8, "x": 1}
    assert results.differences(a, b) == ["optim.lr", "run.target_accuracy", "x"]
    assert results.differences(a, b, besides=["optim.lr", "x"]) == ["run.target_accuracy"]


def test_replace_section_only_between_the_markers(tmp_path):
    doc = tmp_path / "R.md"
    doc.write_text("a\n<!-- results:t -->\nold\n<!-- /results:t -->\nb\n")
    results.replace_section(doc, "t", "| new |\n")
    assert doc.read_text() == "a\n<!-- results:t -->\n| new |\n<!-- /results:t -->\nb\n"
    with pytest.raises(results.ResultsError, match="no section markers"):
        results.replace_section(doc, "other", "x\n")
    assert doc.read_text().count("| new |") == 1


# ------------------------------------------------------------- a sweep (combinations)


def _summary(tta, final, best, mb=None):
    return {"gossip": {"ticks_to_target": tta, "final_acc": final, "best_acc": best,
                       "target_accuracy": 0.75,
                       "bytes_to_target": None if mb is None else mb * 1e6}}


SWEEP = {"alpha=0.1": [_summary(100, 0.8, 0.82, 2.0), _summary(None, 0.7, 0.74),
                       _summary(400, 0.78, 0.8, 4.0)],
         "alpha=5": [_summary(None, 0.5, 0.6)]}


def test_combinations_average_the_reached_seeds_only():
    rows = results.combinations(SWEEP)
    first, never = rows
    assert (first["combination"], first["seeds"], first["reached"], first["target"]) == (
        "alpha=0.1", 3, 2, 0.75)
    np.testing.assert_allclose((first["ticks_to_target_mean"], first["ticks_to_target_sd"]),
                               _mean_sd([100, 400]))
    np.testing.assert_allclose((first["bytes_to_target_mean"], first["bytes_to_target_sd"]),
                               _mean_sd([2e6, 4e6]))
    np.testing.assert_allclose((first["final_acc_mean"], first["final_acc_sd"]),
                               _mean_sd([0.8, 0.7, 0.78]))
    assert (first["final_acc_min"], first["final_acc_max"]) == (0.7, 0.8)
    assert (never["reached"], never["ticks_to_target_mean"], never["ticks_to_target_sd"]) == (
        0, None, None)
    assert never["best_acc_mean"] == 0.6 and never["best_acc_sd"] == 0.0


def test_combinations_markdown_and_csv():
    rows = results.combinations(SWEEP)
    lines = results.combinations_markdown(rows).splitlines()
    assert lines[0] == ("| combination | algorithm | seeds | ticks to 0.75 (reached) | "
                        "MB/node to target | final acc | best acc |")
    assert lines[1] == "|---|---|---:|---:|---:|---:|---:|"
    m, s = _mean_sd([0.8, 0.7, 0.78])
    bm, bs = _mean_sd([0.82, 0.74, 0.8])
    tm, ts = _mean_sd([100, 400])
    assert lines[2] == (f"| alpha=0.1 | gossip | 3 | {tm:.0f} ± {ts:.0f} (2/3) | "
                        f"3.0 ± {math.sqrt(2):.1f} | {m:.3f} ± {s:.3f} | {bm:.3f} ± {bs:.3f} |")
    assert lines[3] == "| alpha=5 | gossip | 1 | never (0/1) | never | 0.500 ± 0.000 | " \
                       "0.600 ± 0.000 |"
    table = list(csv.DictReader(io.StringIO(results.to_csv(rows))))
    assert list(table[0]) == list(rows[0])  # every column, in the rows' order
    assert table[1]["ticks_to_target_mean"] == "" and table[1]["reached"] == "0"
    assert float(table[0]["ticks_to_target_mean"]) == pytest.approx(250.0)
    assert results.to_csv([]) == ""


def test_the_sweep_tabulates_its_jobs_through_results(tmp_path):
    """vanish.sweep reads each job's summary (a job without one is left out) and writes
    results.md and results.csv with this module's renderers."""
    jobs = []
    for name, summaries in SWEEP.items():
        for seed, summary in enumerate(summaries):
            wd = tmp_path / name / f"seed{seed}"
            wd.mkdir(parents=True)
            (wd / "summary.json").write_text(json.dumps(summary))
            jobs.append(sweep.Job(name, seed, "c.py", {}, wd))
    jobs.append(sweep.Job("alpha=5", 9, "c.py", {}, tmp_path / "unfinished"))
    assert sweep.table(jobs) == results.combinations(SWEEP)
    written = sweep.write_results(jobs, tmp_path / "out")
    assert written["md"].read_text() == results.combinations_markdown(sweep.table(jobs))
    assert written["csv"].read_bytes().decode() == results.to_csv(sweep.table(jobs))


# ------------------------------------------------------------- one run (summary_table)


def test_summary_table_text_and_markdown():
    summaries = {
        'fl': {'final_acc': 0.912345, 'ticks_to_target': 1200, 'var_ratio': 0.05},
        'gossip_vc': {'final_acc': 0.9, 'ticks_to_target': None,
                      'var_ratio/Dense_0/kernel': 0.5, 'var_ratio/Dense_1/kernel': 1.5},
        'gossip': {'final_acc': 0.5},
    }
    text = results.summary_table(summaries)
    lines = text.splitlines()
    assert lines[0].split() == ['algorithm', 'final', 'acc', 'ticks', 'to', 'target', 'var',
                                'ratio']
    assert lines[2].split() == ['fl', '0.9123', '1200', '0.0500']
    # Per-layer ratios are averaged when no aggregate is given; None means "never reached".
    assert lines[3].split() == ['gossip_vc', '0.9000', 'never', '1.0000']
    assert lines[4].split() == ['gossip', '0.5000', '-', '-']
    assert len({len(line) for line in lines}) == 1  # fixed width

    md = results.summary_table(summaries, markdown=True).splitlines()
    assert md[0].startswith('| algorithm') and md[0].endswith('|')
    assert set(md[1]) <= set('|-:') and md[1].count('|') == 5
    assert md[2].replace(' ', '') == '|fl|0.9123|1200|0.0500|'


@pytest.mark.parametrize('value,shown', [(0.0, '0.0000'), (1.5e-5, '1.500e-05'), (7, '7')])
def test_summary_table_number_formats(value, shown):
    table = results.summary_table({'a': {'final_acc': value}})
    assert table.splitlines()[2].split()[1] == shown


def test_summary_table_names_the_target_and_says_never():
    summaries = {'fl': {'final_acc': 0.9, 'ticks_to_target': 1200.0, 'target_accuracy': 0.75},
                 'gossip': {'final_acc': 0.1, 'ticks_to_target': None, 'target_accuracy': 0.75},
                 'gossip_vc': {'final_acc': 0.8, 'ticks_to_target': float('nan'),
                               'target_accuracy': 0.75}}
    lines = results.summary_table(summaries).splitlines()  # the target from the summaries
    assert lines[0].split() == ['algorithm', 'final', 'acc', 'ticks', 'to', '0.75', 'var',
                                'ratio']
    assert [ln.split()[2] for ln in lines[2:]] == ['1200', 'never', 'never']
    md = results.summary_table(summaries, markdown=True, target=0.8).splitlines()
    assert md[0].replace(' ', '') == '|algorithm|finalacc|ticksto0.8|varratio|'
    assert 'None' not in '\n'.join(md) and 'nan' not in '\n'.join(md)
    mixed = {**summaries, 'fl': {**summaries['fl'], 'target_accuracy': 0.8}}
    assert 'ticks to target' in results.summary_table(mixed)  # no one target to name


def test_summary_table_adds_the_cost_columns_when_a_run_counted_them():
    summaries = {'gossip_vc': {'final_acc': 0.8, 'ticks_to_target': 300,
                               'bytes_to_target': 2_345_678, 'seconds_to_target': 12.5},
                 'gossip': {'final_acc': 0.6, 'ticks_to_target': None,
                            'bytes_to_target': None}}
    lines = results.summary_table(summaries).splitlines()
    assert 'MB/node to target' in lines[0] and 'sim s to target' in lines[0]
    assert lines[2].split()[-2:] == ['2.3000', '12.5000']  # 2.345678 MB, rounded to 0.1
    assert lines[3].split()[-2:] == ['never', '-']


# ------------------------------------------------------------- speed-ups at a horizon


def test_speedup_keeps_ratios_and_lower_bounds_apart():
    # Seeds: both arrive (300 / 100), the baseline never does within 1000 (> 1000 / 250),
    # the reference never does (no entry), both arrive (900 / 300).
    sp = results.speedup([(300, 1000), (None, 1000), (500, 1000), (900, 1000)],
                         [100, 250, None, 300])
    assert sp.ratios == [3.0, 3.0] and sp.bounds == [4.0] and sp.missing == 1
    assert sp.cell() == "3.00 ± 0.00 (2); > 4.00 (1)"
    none_arrived = results.speedup([(None, 10000), (None, 10000)], [2500, 2000])
    assert none_arrived.ratios == [] and none_arrived.cell() == f"> {(4 + 5) / 2:.2f} (2)"
    assert results.speedup([], []).cell() == "-"


def _curves(wd, rows):
    (wd / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_speedup_rows_pair_seeds_and_take_the_reference_from_its_cell(tmp_path):
    base, ref = tmp_path / "h10k", tmp_path / "h3k"
    for seed, (g, vc) in enumerate(((None, 2500), (6000, 2000))):
        for root, summary in ((base, {"gossip": {"ticks_to_target": g, "final_tick": 10000}}),
                              (ref, {"gossip_vc": {"ticks_to_target": vc, "final_tick": 3000}})):
            wd = root / f"seed{seed}"
            wd.mkdir(parents=True)
            (wd / "run_config.json").write_text(json.dumps({"schema": 2, "config": {
                "seed": seed}}))
            (wd / "summary.json").write_text(json.dumps(summary))
    (base / "seed7").mkdir()  # a seed the reference cell lacks is left out
    rows = results.speedup_rows([("lenet5", 50, base, ref)], ["gossip", "gossip_classic"])
    (row,) = rows
    assert row["seeds"] == 2 and row["reference_ticks"] == (2250.0, pytest.approx(353.553, 1e-4))
    assert row["gossip"]["ratios"] == [3.0] and row["gossip"]["bounds"] == [4.0]
    assert "gossip_classic" not in row
    table = results.speedup_markdown(rows, ["gossip", "gossip_classic"])
    assert "| lenet5 | 50 | 2250 ± 354 | 3.00 ± 0.00 (1); > 4.00 (1) | not run | up to 6x |" \
        in table


def test_plateau_reads_where_a_run_leaves_chance_and_its_variance(tmp_path):
    wd = tmp_path / "run"
    wd.mkdir()
    (wd / "run_config.json").write_text(json.dumps({"schema": 2, "config": {"seed": 0}}))
    (wd / "summary.json").write_text(json.dumps({"gossip": {"ticks_to_target": None,
                                                            "final_tick": 3000}}))
    _curves(wd, [{"algorithm": "gossip", "tick": t, "acc_mean": a, "var_ratio": v}
                 for t, a, v in ((0, 0.1, 1.0), (1000, 0.15, 0.02), (2000, 0.35, 0.05),
                                 (3000, 0.6, 0.2))])
    p = results.plateau(wd, "gossip", at=(1000, 3000, 10000))
    assert p.leaves_chance == 2000 and p.reaches_target is None and p.horizon == 3000
    assert p.var_ratio == {1000: 0.02, 3000: 0.2, 10000: None}
    row = results.plateau_markdown([{"model": "mlp", "num_nodes": 9, "algorithm": "gossip",
                                     "seed": 0, "plateau": p}], (1000, 3000, 10000))
    assert row.splitlines()[-1] == ("| mlp | 9 | gossip | 0 | 2000 | never within 3000 | "
                                    "0.0200 | 0.2000 | - |")
    with pytest.raises(results.ResultsError, match="no curve of fl"):
        results.plateau(wd, "fl")


def test_asynchronous_runs_summarise_their_staleness_and_the_table_shows_it(tmp_path):
    rows = [{"tick": t, "acc_mean": 0.5, "acc_min": 0.5, "averaging_events": t,
             "staleness_mean": s} for t, s in ((0, -1.0), (50, 2.0), (100, 4.0))]
    summary = metrics.summarize(rows, 0.8)
    assert summary["mean_staleness"] == 3.0  # the rows before the first update left out
    assert "mean_staleness" not in metrics.summarize([dict(rows[0], staleness_mean=-1.0)], 0.8)
    row = {"num_nodes": 50, "algorithm": "fl_async", "seeds": 2, "never": 2,
           **{m: None for m, _ in results.METRICS}, "mean_staleness": (3.0, 1.0),
           **{f"{b}_over_vc": None for b in results.BASELINES}}
    head, _, line = results.markdown([row], ["num_nodes"]).splitlines()
    assert head.split(" | ")[-3] == "mean staleness" and line.split(" | ")[-3] == "3.00 ± 1.00"


def test_a_by_field_that_does_not_apply_to_a_row_is_a_dash(tmp_path):
    """An IID run's Dirichlet alpha (a knob of a partition it does not choose) and another
    rule's knob are '-', and IID runs that differ only in that idle alpha are one group."""
    s = {"fl": {"final_acc": 0.8, "final_tick": 10}, "gossip_vc": {"final_acc": 0.7}}
    for seed, alpha in ((0, 0.5), (1, 2.0)):
        _run(tmp_path / "iid", 50, seed, s, data={"partition": "iid"},
             partition_args={"dirichlet_weights": {"alpha": alpha}},
             algorithm_args={"fl": {"round_ticks": 0}})
    _run(tmp_path / "skew", 50, 0, s, data={"partition": "dirichlet_weights"},
         partition_args={"dirichlet_weights": {"alpha": 0.5}},
         algorithm_args={"fl": {"round_ticks": 0}})
    rows = results.aggregate(results.find_runs([tmp_path]),
                             ["partition", "alpha", "algorithm_args.fl.round_ticks"])
    got = {(r["partition"], r["alpha"], r["algorithm_args.fl.round_ticks"], r["algorithm"]):
           r["seeds"] for r in rows}
    assert got == {("dirichlet_weights", 0.5, 0, "fl"): 1, ("dirichlet_weights", 0.5, "-",
                                                           "gossip_vc"): 1,
                   ("iid", "-", 0, "fl"): 2, ("iid", "-", "-", "gossip_vc"): 2}


def test_a_diverged_seed_is_never_and_stays_out_of_the_other_means(tmp_path):
    """A seed whose loss went non-finite (summary diverged_at) counts as never reaching the
    target, is named in the tables, and its last finite values (before the horizon) stay
    out of the final-accuracy means, the horizon and the speed-up's lower bounds."""
    for seed, s in enumerate(({"final_acc": 0.7, "final_tick": 500, "ticks_to_target": 300},
                              {"final_acc": 0.1, "final_tick": 100, "ticks_to_target": None,
                               results.DIVERGED_AT: 150})):
        _run(tmp_path, 50, seed, {"dimat_vc": s})
    (row,) = results.aggregate(results.find_runs([tmp_path]), ["num_nodes"])
    assert (row["seeds"], row["never"], row["diverged"], row["horizon"]) == (2, 1, 1, 500)
    assert row["final_acc"] == (0.7, 0.0) and row["ticks_to_target"] == (300.0, 0.0)
    assert "| 300 ± 0 (never: 1/2); diverged: 1/2 | 0.700 ± 0.000 |" in results.markdown(
        [row], ["num_nodes"])
    sweep_rows = results.combinations({"lr=1e6": [
        {"gossip": {"final_acc": 0.1, "best_acc": 0.2, "ticks_to_target": None,
                    results.DIVERGED_AT: 40}},
        {"gossip": {"final_acc": 0.5, "best_acc": 0.5, "ticks_to_target": None}}]})
    assert sweep_rows[0]["diverged"] == 1 and sweep_rows[0]["final_acc_mean"] == 0.5
    assert "never (0/2); diverged 1/2" in results.combinations_markdown(sweep_rows)
    # A diverged baseline gives no lower bound on the speed-up; the plateau table names it.
    assert results.speedup([(None, None)], [100]).missing == 1
    wd = tmp_path / "n50" / "seed1"
    _curves(wd, [{"algorithm": "dimat_vc", "tick": t, "acc_mean": 0.1, "var_ratio": 3.0}
                 for t in (0, 50, 100)])
    p = results.plateau(wd, "dimat_vc", at=(100,))
    assert p.diverged_at == 150 and p.reaches_target is None
    assert "| never | never (diverged at 150) | 3.0000 |" in results.plateau_markdown(
        [{"model": "lenet5", "num_nodes": 50, "algorithm": "dimat_vc", "seed": 1,
          "plateau": p}], (100,))
