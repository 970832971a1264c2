"""The results grid on tiny synthetic workdirs: grouping, seed statistics, ratios
(vanish.results), its figures (vanish.plots) and the command line scripts/results_table.py."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from vanish import results


def _script(name):
    """scripts/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rt = _script("results_table")


def _workdir(root, n, seed, tta, acc=0.8, **cfg_extra):
    wd = root / f"n{n}" / f"seed{seed}"
    wd.mkdir(parents=True)
    cfg = dict(seed=seed, num_nodes=n, topology="random_regular", eval_every=50, **cfg_extra)
    (wd / "run_config.json").write_text(json.dumps(dict(config_hash="x", config=cfg)))
    summary = {algo: dict(ticks_to_target=t, final_acc=acc, final_global_acc=acc + 0.01,
                          var_ratio=1.0 if algo != "gossip" else 0.1)
               for algo, t in tta.items()}
    (wd / "summary.json").write_text(json.dumps(summary))
    return wd


def test_grid_statistics_and_ratios(tmp_path):
    _workdir(tmp_path, 50, 0, dict(fl=100, gossip=300, gossip_vc=100))
    _workdir(tmp_path, 50, 1, dict(fl=200, gossip=None, gossip_vc=200))
    _workdir(tmp_path, 50, 2, dict(fl=300, gossip=900, gossip_vc=300))
    _workdir(tmp_path, 100, 0, dict(fl=100, gossip=600, gossip_vc=150))
    rows = results.aggregate(results.find_runs([tmp_path]), ["num_nodes"])
    by = {(r["num_nodes"], r["algorithm"]): r for r in rows}
    assert by[(50, "gossip_vc")]["seeds"] == 3
    mean, sd = by[(50, "gossip_vc")]["ticks_to_target"]
    assert mean == 200 and math.isclose(sd, 100.0)  # sample sd of 100, 200, 300
    assert by[(50, "gossip")]["never"] == 1
    mean, sd = by[(50, "gossip")]["ticks_to_target"]  # of the two seeds that reached it
    assert mean == 600 and math.isclose(sd, 300 * math.sqrt(2))
    assert by[(50, "gossip")]["gossip_over_vc"] == (3.0, 0.0)  # seeds 0 and 2; seed 1 never
    assert by[(100, "gossip")]["gossip_over_vc"] == (4.0, 0.0)
    assert by[(50, "fl")]["fl_over_vc"] == (1.0, 0.0)
    table = results.markdown(rows, ["num_nodes"])
    assert "| 50 | gossip | 3 | 600 ± 424 (never: 1/3) |" in table
    assert table.count("\n") == 2 + len(rows)


def test_cli_writes_table_figure_and_json(tmp_path):
    for s in range(2):
        _workdir(tmp_path / "runs", 50, s, dict(fl=100 + s, gossip=400, gossip_vc=100))
    out, fig, js = tmp_path / "t.md", tmp_path / "f.png", tmp_path / "r.json"
    assert rt.main([str(tmp_path / "runs"), "--out", str(out), "--json", str(js),
                    "--figure", f"num_nodes:{fig}"]) == 0
    assert "gossip_vc" in out.read_text() and fig.stat().st_size > 1000
    assert len(json.loads(js.read_text())) == 3


def test_mixed_configs_in_one_group_are_refused(tmp_path, capsys):
    _workdir(tmp_path, 50, 0, dict(gossip_vc=100), partition="iid")
    _workdir(tmp_path, 50, 1, dict(gossip_vc=100), partition="dirichlet_weights")
    assert rt.main([str(tmp_path)]) == 1
    assert "differ in ['data.partition']" in capsys.readouterr().err
    with pytest.raises(results.ResultsError, match="no run workdirs"):
        results.find_runs([tmp_path / "nothing"])


def _curves(wd, algos, final):
    rows = [dict(algorithm=a, tick=t, acc_mean=0.1 + (final[a] - 0.1) * t / 100)
            for a in algos for t in (0, 50, 100)]
    (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_curves_figure_and_marked_section(tmp_path):
    for s in range(2):
        wd = _workdir(tmp_path / "runs", 50, s, dict(fl=100, gossip_vc=100))
        _curves(wd, ("fl", "gossip_vc"), dict(fl=0.8, gossip_vc=0.7 + s / 10))
    got = results.load_curves(wd)["gossip_vc"]
    assert [t for t, _ in got] == [0, 50, 100]
    assert [round(a, 6) for _, a in got] == [0.1, 0.45, 0.8]
    doc = tmp_path / "RESULTS.md"
    doc.write_text("# R\nbefore\n<!-- results:size -->\nold table\n<!-- /results:size -->\nafter\n")
    fig = tmp_path / "curves.png"
    assert rt.main([str(tmp_path / "runs"), "--curves", str(fig),
                    "--into", f"{doc}:size"]) == 0
    assert fig.stat().st_size > 1000
    text = doc.read_text()
    assert "old table" not in text and text.startswith("# R\nbefore\n<!-- results:size -->\n| ")
    assert text.endswith("|\n<!-- /results:size -->\nafter\n")
    assert "| 50 | gossip_vc | 2 | 100 ± 0 |" in text
    # A file without the markers is refused, and left as it was.
    doc.write_text("no markers\n")
    assert rt.main([str(tmp_path / "runs"), "--into", f"{doc}:size"]) == 1
    assert doc.read_text() == "no markers\n"


def test_run_grid_tables_fill_every_section_with_archived_cells(tmp_path):
    rg = _script("run_grid")
    archive = tmp_path / "docs" / "grid"
    for n in (50, 100):  # two archived cells of the MLP size table, two seeds each
        for s in range(2):
            wd = _workdir(archive / f"mlp_n{n}", n, s, dict(fl=100, gossip=None, gossip_vc=150))
            _curves(wd, ("fl", "gossip", "gossip_vc"), dict(fl=0.8, gossip=0.3, gossip_vc=0.8))
    for n in (50, 100):  # _workdir nests them as <cell>/n<N>/seed<s>: flatten to <cell>/seed<s>
        for wd in (archive / f"mlp_n{n}" / f"n{n}").iterdir():
            wd.rename(archive / f"mlp_n{n}" / wd.name)
    doc = tmp_path / "RESULTS.md"
    doc.write_text("".join(f"<!-- results:{name} -->\n<!-- /results:{name} -->\n"
                           for name in rg.SECTIONS))
    assert rg.tables(archive, doc, tmp_path / "figures") == 0
    text = doc.read_text()
    # The headline's 3000-tick rows: gossip never arrived, so a bound (horizon unknown in these
    # summaries: no bound, no ratio).
    assert "| mlp | 50 | 150 ± 0 | - | not run | not run | up to 6x |" in text
    assert "| 100 | gossip | 2 | never |" in text and "| 50 | gossip_vc | 2 | 150 ± 0 |" in text
    assert "<!-- results:noniid -->\n<!-- /results:noniid -->" in text  # no cell: untouched
    assert (tmp_path / "figures" / "grid_acc_size_mlp.png").stat().st_size > 1000
    assert (tmp_path / "docs" / "results_size_mlp.json").is_file()


def test_align_table_is_mean_and_sd_over_the_archived_seeds(tmp_path):
    rg = _script("run_grid")
    archive = tmp_path / "grid"
    cell = archive / "dimat_iid_n50"
    for s, (tta, acc) in enumerate(((900, 0.8), (None, 0.6), (700, 0.7))):
        wd = cell / f"seed{s}"
        wd.mkdir(parents=True)
        (wd / "run_config.json").write_text(json.dumps(dict(config_hash="x", config={})))
        (wd / "summary.json").write_text(json.dumps(dict(
            dimat=dict(ticks_to_target=tta, final_tick=1000),
            dpsgd=dict(ticks_to_target=None, final_tick=1000))))
        rows = [dict(algorithm=a, tick=t, acc_mean=acc if a == "dimat" else 0.1,
                     var_ratio=0.5) for a in ("dimat", "dpsgd") for t in (500, 1000)]
        (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = tmp_path / "RESULTS.md"
    doc.write_text("<!-- results:align -->\n<!-- /results:align -->\n")
    rg.align_snapshot(archive, doc, tmp_path / "figures")
    text = doc.read_text()
    # accuracy: mean 0.7, sample sd 0.1; ticks to target over the two seeds that arrived
    # a 1000-tick cell has nothing at 3000: '-'
    assert ("| iid | dimat | dimat_iid_n50 | 3 | 0.700 ± 0.100 | 0.700 ± 0.100 | - "
            "| 0.5000 ± 0.0000 | 0.5000 ± 0.0000 | - | 800 ± 141 (2/3) | 1000 |") in text
    assert "| iid | dpsgd | dimat_iid_n50 | 3 | 0.100 ± 0.000 |" in text
    assert "never (0/3) | 1000 |" in text
    assert (tmp_path / "figures" / "grid_acc_align.png").is_file()
    # A rule whose loss went non-finite in a seed: named with the tick, out of the horizon.
    wd = cell / "seed1"
    summary = json.loads((wd / "summary.json").read_text())
    summary["dpsgd"].update(final_tick=50, diverged_at=100)
    (wd / "summary.json").write_text(json.dumps(summary))
    rg.align_snapshot(archive, doc, tmp_path / "figures")
    assert "| never (0/3); diverged 1/3, at tick 100 | 1000 |" in doc.read_text()


def test_align_table_pools_a_rules_seeds_over_the_cells_that_ran_it(tmp_path):
    """gossip_align ran to 3000 ticks in align_iid_n50 (seed 0) and to 1000 in
    align1k_iid_n50 (seeds 0-1): one row over seeds 0 and 1, seed 0 from the longer run."""
    rg = _script("run_grid")
    archive = tmp_path / "grid"
    for cell, seeds, ticks, acc in (("align_iid_n50", (0,), 3000, 0.3),
                                    ("align1k_iid_n50", (0, 1), 1000, 0.1)):
        for seed in seeds:
            wd = archive / cell / f"seed{seed}"
            wd.mkdir(parents=True)
            (wd / "run_config.json").write_text(json.dumps(dict(config_hash="x", config={})))
            (wd / "summary.json").write_text(json.dumps(dict(
                gossip_align=dict(ticks_to_target=None, final_tick=ticks))))
            rows = [dict(algorithm="gossip_align", tick=t, acc_mean=acc, var_ratio=0.001)
                    for t in (500, 1000, 3000) if t <= ticks]
            (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = tmp_path / "RESULTS.md"
    doc.write_text("<!-- results:align -->\n<!-- /results:align -->\n")
    rg.align_snapshot(archive, doc, tmp_path / "figures")
    rows = [line for line in doc.read_text().splitlines() if "| gossip_align |" in line]
    # accuracy: seed 0 from align_iid_n50 (0.3), seed 1 from align1k (0.1): mean 0.2; at
    # tick 3000 only seed 0 (the longer run) is there
    assert rows == ["| iid | gossip_align | align_iid_n50 + align1k_iid_n50 | 2 | 0.200 ± 0.141 "
                    "| 0.200 ± 0.141 | 0.300 ± 0.000 | 0.0010 ± 0.0000 | 0.0010 ± 0.0000 "
                    "| 0.0010 ± 0.0000 | never (0/2) | 1000, 3000 |"]


def test_groups_are_ordered_by_number_not_by_text(tmp_path):
    for n in (1000, 50, 200):
        _workdir(tmp_path, n, 0, dict(gossip_vc=100))
    rows = results.aggregate(results.find_runs([tmp_path]), ["num_nodes"])
    assert [r["num_nodes"] for r in rows] == [50, 200, 1000]


def _captured_figures(monkeypatch):
    """The figures the script saves, kept for inspection (closing a figure keeps its artists)."""
    from matplotlib.figure import Figure

    saved = {}
    real = Figure.savefig

    def savefig(fig, path, *args, **kwargs):
        saved[Path(path).name] = fig
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def test_figures_use_the_fixed_styles_and_name_the_setup(tmp_path, monkeypatch):
    import numpy as np
    from matplotlib import colors as mcolors

    from vanish import plots

    def look(name):
        return mcolors.to_rgba(plots.style_for(name).color)

    setup = dict(dataset="fashion_mnist", model="mlp", partition="iid", target_accuracy=0.75)
    final = {}
    for n in (50, 1000):
        for s in range(2):
            final[n, s] = dict(fl=0.8, gossip_vc=0.6 + 0.2 * s)
            wd = _workdir(tmp_path / "runs", n, s, dict(gossip_vc=100 + 50 * s, fl=80),
                          **setup)
            _curves(wd, ("gossip_vc", "fl"), final[n, s])  # gossip_vc first in the files
    saved = _captured_figures(monkeypatch)
    assert rt.main([str(tmp_path / "runs"), "--figure", f"num_nodes:{tmp_path / 'tta.png'}",
                    "--curves", str(tmp_path / "acc.png"), "--out", str(tmp_path / "t.md")]) == 0
    setup_line = ("fashion_mnist · mlp · random_regular topology · iid partition · "
                  "2 seeds (0, 1)")  # num_nodes is on the x axis, so not in the title

    tta = saved["tta.png"].axes[0]
    assert tta.get_title().split("\n")[1] == setup_line
    assert tta.get_ylabel() == "ticks to accuracy 0.75"
    assert tta.get_xscale() == "log"  # 50 ... 1000, labelled where measured
    assert plots.visible_tick_labels(tta, "x") == ["50", "1000"]
    bars = {c.get_label(): c.lines[0] for c in tta.containers}
    assert set(bars) == {"fl", "gossip_vc"}
    for name, line in bars.items():
        assert mcolors.to_rgba(line.get_color()) == look(name)
        assert line.get_marker() == plots.style_for(name).marker
    np.testing.assert_allclose(np.asarray(bars["gossip_vc"].get_ydata(), float), [125, 125])

    curves = saved["acc.png"]
    assert curves.get_suptitle() == f"node accuracy\n{setup_line}"
    for ax, n in zip(curves.axes, (50, 1000)):
        assert ax.get_title() == f"num_nodes={n}\ntarget 0.75, 2 seeds"
        lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
        assert list(lines) == ["fl", "gossip_vc"]  # legend order, not file order
        for name, line in lines.items():
            assert mcolors.to_rgba(line.get_color()) == look(name)
        # The gossip_vc band spans the two seeds' curves: 0.1 -> 0.6 and 0.1 -> 0.8.
        (band,) = [c for c in ax.collections
                   if np.allclose(c.get_facecolor()[0][:3], look("gossip_vc")[:3])]
        verts = band.get_paths()[0].vertices
        for tick, lo, hi in ((0, 0.1, 0.1), (50, 0.35, 0.45), (100, 0.6, 0.8)):
            ys = verts[np.isclose(verts[:, 0], tick), 1]
            np.testing.assert_allclose([ys.min(), ys.max()], [lo, hi])
        np.testing.assert_allclose(lines["gossip_vc"].get_ydata(), [0.1, 0.4, 0.7])


def test_categorical_figure_dodges_the_algorithms(tmp_path, monkeypatch):
    from vanish import plots

    for topo in ("ring", "random_regular"):
        for s in range(2):
            _workdir(tmp_path / topo, 50, s, dict(fl=100, gossip_vc=200), topology_=topo)
    saved = _captured_figures(monkeypatch)
    rows = results.aggregate(results.find_runs([tmp_path]), ["topology_"])
    plots.plot_ticks_to_target(rows, "group", tmp_path / "g.png", ["topology_"])
    ax = saved["g.png"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["random_regular", "ring"]
    bars = {c.get_label(): c.lines[0] for c in ax.containers}
    assert list(bars["fl"].get_xdata()) == [-0.04, 0.96]  # side by side, not on top
    assert list(bars["gossip_vc"].get_xdata()) == [0.04, 1.04]
    assert bars["fl"].get_linestyle() == "None"  # categories are not joined by a line
    assert ax.get_title() == "ticks to target: mean over seeds, error bar ± sd"  # no setup
    assert plots.style_for("fl").marker == bars["fl"].get_marker()


def test_cost_columns_and_curves_against_bytes_and_simulated_time(tmp_path, monkeypatch):
    """Runs that count bytes and run a clock: the MB column, the classic-gossip ratio, and
    accuracy curves whose x is the seeds' mean MB sent (or simulated seconds) per tick."""
    for s in range(2):
        wd = _workdir(tmp_path / "runs", 100, s, dict(gossip_vc=100, gossip_classic=300))
        summary = json.loads((wd / "summary.json").read_text())
        summary["gossip_vc"]["bytes_to_target"] = 2e6 * (1 + s)
        summary["gossip_vc"]["seconds_to_target"] = 10.0
        (wd / "summary.json").write_text(json.dumps(summary))
        rows = [dict(algorithm=a, tick=t, acc_mean=0.1 + t / 200, bytes_sent_mean=1e6 * t * (
            1 + s) * (2 if a == "gossip_classic" else 1), sim_seconds=0.1 * t)
                for a in ("gossip_vc", "gossip_classic") for t in (0, 50, 100)]
        (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = results.markdown(
        results.aggregate(results.find_runs([tmp_path / "runs"]), ["num_nodes"]), ["num_nodes"])
    assert "MB/node to target" in table and "classic / vc ticks" in table
    assert "| 100 | gossip_classic | 2 | 300 ± 0 |" in table and "| 3.00 ± 0.00 |" in table
    assert "| 3.0 ± 1.4 | 10.0 ± 0.0 |" in table  # gossip_vc: 2 and 4 MB, 10 s
    assert "sim s to target" in table
    saved = _captured_figures(monkeypatch)
    assert rt.main([str(tmp_path / "runs"), "--out", str(tmp_path / "t.md"),
                    "--curves-x", f"bytes_sent_mean:{tmp_path / 'mb.png'}",
                    "--curves-x", f"sim_seconds:{tmp_path / 's.png'}"]) == 0
    ax = saved["mb.png"].axes[0]
    assert ax.get_xlabel() == "MB sent per node"
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    # seeds send 1x and 2x: the mean MB at tick 100 is 150 (gossip_vc), 300 (classic)
    assert list(lines["gossip_vc"].get_xdata()) == [0.0, 75.0, 150.0]
    assert list(lines["gossip_classic"].get_xdata()) == [0.0, 150.0, 300.0]
    assert saved["s.png"].axes[0].get_xlabel() == "simulated seconds"
    assert rt.main([str(tmp_path / "runs"), "--curves-x", f"bytes:{tmp_path / 'x.png'}"]) == 1


def test_run_grid_archive_merges_further_algorithms_of_the_same_experiment(tmp_path):
    rg = _script("run_grid")
    first = _workdir(tmp_path / "a", 50, 0, dict(fl=100, gossip=None), algorithms="fl,gossip")
    _curves(first, ("fl", "gossip"), dict(fl=0.8, gossip=0.1))
    later = _workdir(tmp_path / "b", 50, 0, dict(gossip_classic=400), algorithms="gossip_classic")
    _curves(later, ("gossip_classic",), dict(gossip_classic=0.5))
    dest = tmp_path / "archive"
    rg.archive(first, dest)
    rg.archive(later, dest)
    summary = json.loads((dest / "summary.json").read_text())
    assert list(summary) == ["fl", "gossip", "gossip_classic"]
    stored = json.loads((dest / "run_config.json").read_text())
    assert stored["config"]["algorithms"] == "fl,gossip,gossip_classic"
    algos = [json.loads(line)["algorithm"] for line in (dest / "metrics.jsonl").open()]
    assert algos.count("gossip_classic") == 3 and algos.count("fl") == 3
    other = _workdir(tmp_path / "c", 50, 1, dict(gossip_classic=400), algorithms="gossip_classic")
    _curves(other, ("gossip_classic",), dict(gossip_classic=0.5))
    with pytest.raises(ValueError, match="a different experiment"):
        rg.archive(other, dest)  # another seed


def test_variance_curves_from_archived_rows_and_from_per_layer_keys(tmp_path):
    """--variance plots the kernels' variance ratio: archived rows carry `var_ratio`, a
    workdir's rows give it as the mean of their per-layer kernel ratios (biases left out)."""
    wd = _workdir(tmp_path / "runs", 50, 0, dict(gossip=100, gossip_vc=100))
    rows = [dict(algorithm="gossip", tick=t, acc_mean=0.1, var_ratio=1.0 / (1 + t))
            for t in (0, 50, 100)]
    rows += [{"algorithm": "gossip_vc", "tick": t, "acc_mean": 0.5,
              "var_ratio/Dense_0/kernel": 1.0 + t / 100, "var_ratio/Dense_1/kernel": 1.0,
              "var_ratio/Dense_0/bias": 99.0} for t in (0, 50, 100)]
    rows.append(dict(algorithm="gossip_vc", tick=100, loss_mean=1.0))  # no variance: skipped
    (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = results.load_curves(wd, y="var_ratio")
    assert got["gossip"] == [(0, 1.0), (50, 1 / 51), (100, 1 / 101)]
    assert got["gossip_vc"] == [(0, 1.0), (50, 1.25), (100, 1.5)]
    fig = tmp_path / "var.png"
    assert rt.main([str(tmp_path / "runs"), "--variance", str(fig),
                    "--out", str(tmp_path / "t.md")]) == 0
    assert fig.stat().st_size > 1000


def test_results_md_has_every_section_the_grid_fills():
    rg = _script("run_grid")
    doc = (Path(__file__).parents[1] / "docs" / "RESULTS.md").read_text()
    for name in rg.SECTIONS:
        assert f"<!-- results:{name} -->" in doc and f"<!-- /results:{name} -->" in doc, name


def test_run_grid_runs_cells_in_the_order_only_names_them(tmp_path, capsys):
    rg = _script("run_grid")
    roots = ["--root", str(tmp_path / "runs"), "--archive-root", str(tmp_path / "archive")]
    first, second = rg.CELLS[-1].name, rg.CELLS[0].name  # against the grid's own order
    assert rg.main([*roots, "--list", "--seeds", "0", "--only", f"{first},{second}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [first, second]
    assert all(line.endswith("todo: " + cell.algorithms) for line, cell
               in zip(lines, (rg.CELLS[-1], rg.CELLS[0])))
    with pytest.raises(SystemExit):
        rg.main([*roots, "--list", "--only", second, "--algorithms", "gossip_nope"])
    assert "--algorithms ['gossip_nope'] is in none of the chosen cells" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "archive").exists()


def test_run_grid_prune_deletes_only_checkpoints_of_finished_archived_runs(tmp_path, capsys):
    rg = _script("run_grid")
    cell = rg.CELLS[0]
    algos = cell.algorithms.split(",")
    roots = ["--root", str(tmp_path / "runs"), "--archive-root", str(tmp_path / "archive")]
    for seed, final in ((0, cell.ticks), (1, cell.ticks - 50)):  # seed 1 stopped short
        wd = tmp_path / "runs" / cell.name / f"seed{seed}"
        for a in algos:
            (wd / a / "checkpoints" / "250").mkdir(parents=True)
            (wd / a / "checkpoints" / "250" / "state").write_bytes(b"x" * 1000)
        cfg = dict(seed=seed, num_nodes=50, algorithms=cell.algorithms)
        (wd / "run_config.json").write_text(json.dumps(dict(config_hash="x", config=cfg)))
        (wd / "summary.json").write_text(json.dumps(
            {a: dict(final_tick=final, ticks_to_target=None, final_acc=0.1) for a in algos}))
        (wd / "metrics.jsonl").write_text(json.dumps(dict(tick=0, algorithm=algos[0])) + "\n")
    assert rg.main([*roots, "--archive", "--only", cell.name, "--seeds", "0,1"]) == 0
    assert (tmp_path / "archive" / cell.name / "seed0" / "summary.json").is_file()
    assert not (tmp_path / "archive" / cell.name / "seed1").exists()
    assert rg.main([*roots, "--prune", "--only", cell.name, "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert out.count("pruned") == len(algos)
    for a in algos:
        assert not (tmp_path / "runs" / cell.name / "seed0" / a / "checkpoints").exists()
        assert (tmp_path / "runs" / cell.name / "seed0" / "summary.json").is_file()
        assert (tmp_path / "runs" / cell.name / "seed1" / a / "checkpoints" / "250").is_dir()
