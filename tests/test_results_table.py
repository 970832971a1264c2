"""scripts/results_table.py on tiny synthetic workdirs: grouping, seed statistics, ratios."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "results_table", Path(__file__).parents[1] / "scripts" / "results_table.py")
rt = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(rt)


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
    rows = rt.aggregate(rt.find_runs([tmp_path]), ["num_nodes"])
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
    table = rt.markdown(rows, ["num_nodes"])
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
    assert "differ in ['partition']" in capsys.readouterr().err
    with pytest.raises(rt.ResultsError, match="no run workdirs"):
        rt.find_runs([tmp_path / "nothing"])


def _curves(wd, algos, final):
    rows = [dict(algorithm=a, tick=t, acc_mean=0.1 + (final[a] - 0.1) * t / 100)
            for a in algos for t in (0, 50, 100)]
    (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_curves_figure_and_marked_section(tmp_path):
    for s in range(2):
        wd = _workdir(tmp_path / "runs", 50, s, dict(fl=100, gossip_vc=100))
        _curves(wd, ("fl", "gossip_vc"), dict(fl=0.8, gossip_vc=0.7 + s / 10))
    got = rt.load_curves(wd)["gossip_vc"]
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
    spec = importlib.util.spec_from_file_location(
        "run_grid", Path(__file__).parents[1] / "scripts" / "run_grid.py")
    rg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rg)
    archive = tmp_path / "docs" / "grid"
    for n in (50, 100):  # two archived cells of the MLP size table, two seeds each
        for s in range(2):
            wd = _workdir(archive / f"mlp_n{n}", n, s, dict(fl=100, gossip=None, gossip_vc=150))
            _curves(wd, ("fl", "gossip", "gossip_vc"), dict(fl=0.8, gossip=0.3, gossip_vc=0.8))
    for n in (50, 100):  # _workdir nests them as <cell>/n<N>/seed<s>: flatten to <cell>/seed<s>
        for wd in (archive / f"mlp_n{n}" / f"n{n}").iterdir():
            wd.rename(archive / f"mlp_n{n}" / wd.name)
    doc = tmp_path / "RESULTS.md"
    doc.write_text("".join(f"<!-- results:{t.name} -->\n<!-- /results:{t.name} -->\n"
                           for t in rg.TABLES))
    assert rg.tables(archive, doc, tmp_path / "figures") == 0
    text = doc.read_text()
    assert "| 100 | gossip | 2 | never |" in text and "| 50 | gossip_vc | 2 | 150 ± 0 |" in text
    assert "<!-- results:noniid -->\n<!-- /results:noniid -->" in text  # no cell: untouched
    assert (tmp_path / "figures" / "grid_acc_size_mlp.png").stat().st_size > 1000
    assert (tmp_path / "docs" / "results_size_mlp.json").is_file()


def test_groups_are_ordered_by_number_not_by_text(tmp_path):
    for n in (1000, 50, 200):
        _workdir(tmp_path, n, 0, dict(gossip_vc=100))
    rows = rt.aggregate(rt.find_runs([tmp_path]), ["num_nodes"])
    assert [r["num_nodes"] for r in rows] == [50, 200, 1000]
