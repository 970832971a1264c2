"""Runs the results grid cell by cell, seed by seed; resumable.

    nohup taskset -c 1 python scripts/run_grid.py > runs/grid/grid.log 2>&1 &
    python scripts/run_grid.py --list            # cells, their state, nothing run
    python scripts/run_grid.py --only alpha0.1_n50 --seeds 0

Each (cell, seed) is one job of vanish.sweep (`python -m vanish.run` in a process of its own,
its output in runs/grid/<cell>/seed<s>.log) in runs/grid/<cell>/seed<s> (checkpoints
every 1000 ticks, so a stopped run resumes where it was); a finished one (its summary.json
reports the planned final tick for every algorithm) is skipped. The tables and figures are
built from the workdirs by vanish.results and vanish.plots (as scripts/results_table.py
does), never from this script's output.
Cells run in the order below (the cheap N = 50 cells first, then the sizes), or in the
order --only names them.

Workdirs (checkpoints, full metrics) stay out of git and may not outlive the machine, so each
finished run is archived into docs/grid/<cell>/seed<s>/ (run_config.json, summary.json and a
metrics.jsonl cut to the curves' keys, ~20 KB): that folder is committed, --tables
reads it, and a run already archived counts as done.

    python scripts/run_grid.py --archive         # archive finished workdirs, nothing run
    python scripts/run_grid.py --tables          # docs/RESULTS.md grid sections + figures
    python scripts/run_grid.py --prune           # free the disk: delete the checkpoints of
                                                 # finished, archived runs
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any, NamedTuple

from vanish import results, sweep
from vanish.metrics import kernel_var_ratio

ALPHA = "partition_args.dirichlet_weights.alpha"  # the non-IID runs' concentration
DEGREE = "topology_args.random_regular.degree"  # paper_topology derives the others from it

ROOT = Path(__file__).resolve().parent.parent
ALGORITHMS = "fl,gossip,gossip_vc"
# With LeNet-5 the "existing gossip learning" baseline runs too (classic gossip learning).
WITH_CLASSIC = ALGORITHMS + ",gossip_classic"
COST_ALGORITHMS = ("fl,gossip,gossip_vc,gossip_part,gossip_topk,gossip_topk_vc,gossip_q8,"
                   "gossip_q8_vc,modest,fl_async,fl_buff")
# The paper's horizon cells: the baselines first, then the reference rules.
HORIZON = "gossip,gossip_classic,gossip_part,gossip_vc,fl"
ALIGN = "gossip_align_vc,gossip_align,dimat,dpsgd"
BYZANTINE = ("gossip_flag,gossip_median,gossip_trim,gossip_krum,gossip_flag_vc,gossip_vc,"
             "gossip")
ARCHIVE = ROOT / "docs" / "grid"
# The metrics.jsonl keys kept in the archive: enough for accuracy-vs-tick figures.
CURVE_KEYS = ("algorithm", "tick", "acc_mean", "acc_min", "acc_max", "global_acc", "var_ratio",
              "bytes_sent_mean", "sim_seconds")


class Cell(NamedTuple):
    name: str
    config: str  # experiments/<name>/config.py
    overrides: dict[str, Any]  # {dotted config path: value}
    ticks: int
    algorithms: str = ALGORITHMS


def _cells() -> list[Cell]:
    iid, noniid = "experiments/paper_iid/config.py", "experiments/paper_noniid/config.py"
    topo, scale = "experiments/paper_topology/config.py", "experiments/paper_scale/config.py"
    cells = [Cell("iid_n50", iid, {}, 3000, WITH_CLASSIC)]
    cells += [Cell(f"alpha{a}_n50", noniid, {ALPHA: a}, 3000) for a in (0.1, 0.5, 5.0)]
    cells += [Cell(f"rr{d}_n50", topo, {"topology.name": "random_regular", DEGREE: d},
                   3000) for d in (3, 16)]
    cells += [Cell(f"{t}_n50", topo, {"topology.name": t, DEGREE: 8}, 3000)
              for t in ("ring", "erdos_renyi", "barabasi_albert", "watts_strogatz")]
    # Sizes: LeNet-5 where this CPU affords 3 seeds, the MLP beyond (said in RESULTS.md).
    cells += [Cell(f"lenet_n{n}", scale, {"topology.num_nodes": n}, 3000, WITH_CLASSIC)
              for n in (100, 200)]
    # N = 1000 costs ~30 min per algorithm and seed on 2 cores: the comparison the paper's
    # claim is about first, so a stopped run has it.
    cells += [Cell("lenet_n1000", scale, {"topology.num_nodes": 1000}, 3000,
                   "gossip_vc,gossip_classic,gossip,fl")]
    cells += [Cell(f"mlp_n{n}", scale, {"topology.num_nodes": n, "model.name": "mlp"}, 3000)
              for n in (50, 100, 200, 500, 1000)]
    # Cost beyond ticks: bytes and simulated time (experiments/cost_study, the MLP, N = 100).
    cost = "experiments/cost_study/config.py"
    cells += [Cell(f"cost_{name}_n100", cost, fields, 1500, COST_ALGORITHMS)
              for name, fields in (("iid", {"data.partition": "iid"}),
                                   ("alpha0.5", {"data.partition": "dirichlet_weights",
                                                 "partition_args.dirichlet_weights.alpha": 0.5}))]
    # The paper's horizon (10,000 ticks): where the baselines' plateaus end. The three forms
    # of "existing gossip learning" first, gossip_vc and fl on the same seeds after them.
    cells += [Cell("lenet_n50_h10k", iid, {}, 10000, HORIZON)]
    cells += [Cell("lenet_n200_h10k", scale, {"topology.num_nodes": 200}, 10000, HORIZON)]
    cells += [Cell(f"mlp_n{n}_h10k", scale, {"topology.num_nodes": n, "model.name": "mlp"},
                   10000, "gossip") for n in (500, 1000)]
    # A fair baseline: the learning rate of each rule at N = 50 (0.01, the paper's, is iid_n50).
    cells += [Cell(f"lr{lr}_n50", iid, {"optim.lr": lr}, 3000, "gossip,gossip_classic,gossip_vc")
              for lr in (0.005, 0.02, 0.05)]
    # Align, then average (the alignment study): the new rules beside the iid_n50 and
    # alpha0.5_n50 cells' fl, gossip and gossip_vc on the same seeds. D-PSGD and DIMAT mix
    # every 10 ticks (every node trains every tick: 10 steps per round).
    sync = {"algorithm_args.dimat.local_steps": 10, "algorithm_args.dpsgd.local_steps": 10}
    # Asynchronous FL beside fl, gossip_vc and modest on the cost study's clock (MLP, N = 100,
    # IID): compute times lognormal with sigma 0.5 (the cost cells, where fl_async and fl_buff
    # run beside the others) and 1.0 (more stragglers).
    cells += [Cell("async_iid_s1.0_n100", cost, {"data.partition": "iid",
                                                 "clock.compute": "lognormal:0.2:1.0"}, 1500,
                   "fl_async,fl_buff,fl,gossip_vc,modest")]
    cells += [Cell("async_alpha0.5_s1.0_n100", cost,
                   {"data.partition": "dirichlet_weights", ALPHA: 0.5,
                    "clock.compute": "lognormal:0.2:1.0"}, 1500,
                   "fl_async,fl_buff,fl,gossip_vc,modest")]
    # What staleness costs: the staleness exponent a of both asynchronous rules (0: no
    # discount; 0.5, the default, is async_iid_s1.0_n100) at sigma 1.0.
    cells += [Cell(f"async_a{a}_iid_s1.0_n100", cost,
                   {"data.partition": "iid", "clock.compute": "lognormal:0.2:1.0",
                    "algorithm_args.fl_async.a": a, "algorithm_args.fl_buff.a": a}, 1500,
                   "fl_async,fl_buff") for a in (0.0, 1.0)]
    # Synchronous FL without a deadline (fl's round_ticks 0): every round waits for its
    # slowest client, where the cells above give fl's rounds a 10-tick deadline.
    cells += [Cell(f"async_wait_{name}_s{sigma}_n100", cost,
                   {**fields, "clock.compute": f"lognormal:0.2:{sigma}",
                    "algorithm_args.fl.round_ticks": 0}, 1500, "fl")
              for name, fields in (("iid", {"data.partition": "iid"}),
                                   ("alpha0.5", {"data.partition": "dirichlet_weights",
                                                 ALPHA: 0.5}))
              for sigma in (0.5, 1.0)]
    # What this CPU affords: the two aligned gossip rules for 1000 ticks (seed 0 also ran
    # 3000 in align_iid_n50), IID and under label skew.
    cells += [Cell("align1k_iid_n50", iid, {}, 1000, "gossip_align,gossip_align_vc"),
              Cell("align1k_alpha0.5_n50", noniid, {ALPHA: 0.5}, 1000,
                   "gossip_align,gossip_align_vc")]
    # ... and the corrected one, whose accuracy still moves at tick 1000, to the study's 3000
    # (IID seeds 1-2; seed 0 is align_iid_n50's). A larger run.ticks extends a finished run on
    # the same trajectory, so these may start from a copy of align1k's workdir (its config
    # files, gossip_align_vc's checkpoints and its metric rows): the result equals a run from
    # tick 0, which is what a fresh grid computes.
    cells += [Cell("alignvc_iid_n50", iid, {}, 3000, "gossip_align_vc"),
              Cell("alignvc_alpha0.5_n50", noniid, {ALPHA: 0.5}, 3000, "gossip_align_vc")]
    cells += [Cell("align_iid_n50", iid, sync, 3000, ALIGN),
              Cell("align_alpha0.5_n50", noniid, {ALPHA: 0.5, **sync}, 3000, ALIGN)]
    # DIMAT and D-PSGD train every node every tick (10x the gossip rules' steps per tick):
    # 1000 ticks are what this CPU affords first.
    cells += [Cell("dimat_iid_n50", iid, sync, 1000, "dimat,dpsgd"),
              Cell("dimat_alpha0.5_n50", noniid, {ALPHA: 0.5, **sync}, 1000, "dimat,dpsgd")]
    # ... and both with the correction (does it still add something after alignment?).
    sync_vc = {"algorithm_args.dimat_vc.local_steps": 10,
               "algorithm_args.dpsgd_vc.local_steps": 10}
    cells += [Cell("dimat_vc_iid_n50", iid, sync_vc, 1000, "dimat_vc,dpsgd_vc"),
              Cell("dimat_vc_alpha0.5_n50", noniid, {ALPHA: 0.5, **sync_vc}, 1000,
                   "dimat_vc,dpsgd_vc")]
    # The two rules that reach the target first at N = 50 (the corrected mix, and alignment),
    # at N = 200 (beside lenet_n200's gossip, gossip_vc and fl on the same seed).
    cells += [Cell("dimat_iid_n200", scale, {"topology.num_nodes": 200, **sync, **sync_vc},
                   1000, "dpsgd_vc,dimat")]
    # Byzantine nodes (the robust rules and the Flag Aggregator beside plain and corrected
    # gossip): the MLP at N = 50, a fifth or a tenth of the nodes sending sign-flipped or
    # noise models, and a clean reference.
    byz = {"topology.num_nodes": 50, "model.name": "mlp"}
    cells += [Cell("byz_none_n50", scale, byz, 1500, BYZANTINE)]
    cells += [Cell(f"byz_{attack}{f}_n50", scale,
                   {**byz, "network.byzantine": f, "network.byzantine_attack": attack}, 1500,
                   BYZANTINE) for attack in ("sign_flip", "noise") for f in (0.2, 0.1)]
    # The Flag Aggregator with a subspace of half the ~8 models a merge holds (the authors'
    # ratio: m = 8 for 15 workers); with m = 8 it keeps every update whole (plain averaging
    # of the normalised updates).
    flag4 = {**byz, "algorithm_args.gossip_flag.subspace": 4,
             "algorithm_args.gossip_flag_vc.subspace": 4}
    cells += [Cell("byz_none_m4_n50", scale, flag4, 1500, "gossip_flag,gossip_flag_vc")]
    cells += [Cell(f"byz_{attack}{f}_m4_n50", scale,
                   {**flag4, "network.byzantine": f, "network.byzantine_attack": attack}, 1500,
                   "gossip_flag,gossip_flag_vc")
              for attack in ("sign_flip", "noise") for f in (0.2, 0.1)]
    return cells


CELLS = _cells()


class Table(NamedTuple):
    """A section of docs/RESULTS.md, built from archived cells by vanish.results."""

    name: str  # the section markers <!-- results:NAME --> in docs/RESULTS.md
    cells: tuple[str, ...]
    by: str  # the fields the runs are grouped by, comma-separated (results_table --by)
    figure: str  # ticks to target vs this field, or 'group' (results_table --figure)
    curves_x: tuple[str, ...] = ()  # more accuracy-curve figures: vs these x (plots.CURVE_X)
    variance: bool = False  # also the kernel-variance curves (results_table --variance)


TABLES = (
    Table("noniid", ("iid_n50", "alpha0.1_n50", "alpha0.5_n50", "alpha5.0_n50"),
          "partition,alpha", "group"),
    Table("topology", ("iid_n50", "rr3_n50", "rr16_n50", "ring_n50", "erdos_renyi_n50",
                       "barabasi_albert_n50", "watts_strogatz_n50"), "topology,degree", "group"),
    Table("size_lenet", ("iid_n50", "lenet_n100", "lenet_n200", "lenet_n1000"), "num_nodes",
          "num_nodes", variance=True),
    Table("size_mlp", tuple(f"mlp_n{n}" for n in (50, 100, 200, 500, 1000)), "num_nodes",
          "num_nodes"),
    Table("cost", ("cost_iid_n100", "cost_alpha0.5_n100"), "partition,alpha", "group",
          ("bytes_sent_mean", "sim_seconds")),
    Table("async", ("cost_iid_n100", "async_iid_s1.0_n100", "async_wait_iid_s0.5_n100",
                    "async_wait_iid_s1.0_n100", "cost_alpha0.5_n100", "async_alpha0.5_s1.0_n100",
                    "async_wait_alpha0.5_s0.5_n100", "async_wait_alpha0.5_s1.0_n100"),
          "partition,alpha,clock.compute,algorithm_args.fl.round_ticks", "group",
          ("sim_seconds",)),
    Table("staleness", ("async_a0.0_iid_s1.0_n100", "async_iid_s1.0_n100",
                        "async_a1.0_iid_s1.0_n100"),
          "algorithm_args.fl_async.a,algorithm_args.fl_buff.a", "group"),
    Table("byzantine", ("byz_none_n50", "byz_sign_flip0.2_n50", "byz_sign_flip0.1_n50",
                        "byz_noise0.2_n50", "byz_noise0.1_n50", "byz_none_m4_n50",
                        "byz_sign_flip0.2_m4_n50", "byz_sign_flip0.1_m4_n50",
                        "byz_noise0.2_m4_n50", "byz_noise0.1_m4_n50"),
          "network.byzantine_attack,network.byzantine,algorithm_args.gossip_flag.subspace,"
          "algorithm_args.gossip_flag_vc.subspace", "group"),
)


# The headline: (model, N, the cell of the baselines, the cell of gossip_vc on the same
# seeds). The 10,000-tick cells first, then the 3000-tick grid's sizes.
HEADLINE_BASELINES = ("gossip", "gossip_classic", "gossip_part")
HEADLINE = (("lenet5", 50, "lenet_n50_h10k", "iid_n50"),
            ("lenet5", 200, "lenet_n200_h10k", "lenet_n200"),
            ("mlp", 500, "mlp_n500_h10k", "mlp_n500"),
            ("mlp", 1000, "mlp_n1000_h10k", "mlp_n1000"))
HEADLINE_3000 = (("lenet5", 50, "iid_n50", "iid_n50"), ("lenet5", 100, "lenet_n100", "lenet_n100"),
                 ("lenet5", 200, "lenet_n200", "lenet_n200"),
                 ("lenet5", 1000, "lenet_n1000", "lenet_n1000"),
                 *((("mlp", n, f"mlp_n{n}", f"mlp_n{n}")) for n in (50, 100, 200, 500, 1000)))
LR_CELLS = ("lr0.005_n50", "iid_n50", "lr0.02_n50", "lr0.05_n50")  # seed 0: lr 0.005-0.05
PLATEAU_AT = (1000, 3000, 10000)


def headline(archive: Path, results_md: Path, figures: Path) -> None:
    """The speed-up tables (10,000 ticks and 3000 ticks), the figure, the plateau-end table
    and the learning-rate grid, from the archived cells that exist."""
    from vanish import plots

    def pairs(spec: Any) -> list[tuple[str, int, Path, Path]]:
        return [(m, n, archive / b, archive / r) for m, n, b, r in spec
                if (archive / b).is_dir() and (archive / r).is_dir()]

    rows = results.speedup_rows(pairs(HEADLINE), HEADLINE_BASELINES)
    rows3 = results.speedup_rows(pairs(HEADLINE_3000), HEADLINE_BASELINES)
    text = ("At 10,000 ticks:\n\n" + results.speedup_markdown(rows, HEADLINE_BASELINES)
            + "\n\nAt 3000 ticks (the grid's cells):\n\n"
            + results.speedup_markdown(rows3, HEADLINE_BASELINES) + "\n")
    results.replace_section(results_md, "headline", text)
    # One line per baseline, model and horizon: a bound is only as high as its horizon.
    plots.plot_speedup([dict(r, model=f"{r['model']}, 10k ticks") for r in rows]
                       + [dict(r, model=f"{r['model']}, 3000 ticks") for r in rows3],
                       HEADLINE_BASELINES, figures / "grid_speedup.png")
    (archive.parent / "results_headline.json").write_text(
        json.dumps({"h10k": rows, "h3000": rows3}, indent=1))
    plateau_rows = []
    for model, n, base, _ in pairs(HEADLINE):
        for seed_dir in sorted((base).glob("seed*")):
            _, summaries = results.load_run(seed_dir)
            for algo in HEADLINE_BASELINES:
                if algo in summaries:
                    plateau_rows.append({"model": model, "num_nodes": n, "algorithm": algo,
                                         "seed": int(seed_dir.name[4:]),
                                         "plateau": results.plateau(seed_dir, algo,
                                                                    at=PLATEAU_AT)})
    results.replace_section(results_md, "plateau",
                            results.plateau_markdown(plateau_rows, PLATEAU_AT) + "\n")
    h10k = [archive / c for c in ("lenet_n50_h10k", "lenet_n200_h10k") if (archive / c).is_dir()]
    if h10k:
        results.curves_figure(results.find_runs(h10k), ["num_nodes"],
                              figures / "grid_var_h10k.png", y="var_ratio")
        results.curves_figure(results.find_runs(h10k), ["num_nodes"],
                              figures / "grid_acc_h10k.png")
    lr_runs = [archive / c / "seed0" for c in LR_CELLS if (archive / c / "seed0").is_dir()]
    if lr_runs:
        lr_rows = results.aggregate(lr_runs, ["optim.lr"])
        results.replace_section(results_md, "lr", results.markdown(
            [r for r in lr_rows if r["algorithm"] != "fl"], ["optim.lr"]))
    print(f"headline: {len(rows)} + {len(rows3)} rows, {len(plateau_rows)} plateau rows, "
          f"{len(lr_runs)} lr cells -> {results_md}")


# Every section of docs/RESULTS.md that --tables fills (<!-- results:NAME --> markers).
SECTIONS = tuple(t.name for t in TABLES) + ("headline", "plateau", "lr", "align")
# Align, then average: every rule at ALIGN_TICKS over the archived seeds. The cells ran to
# different horizons; a rule run in several cells (the same experiment but for the horizon)
# pools their seeds, each seed from the first cell listed that has it (the longest run).
ALIGN_SNAPSHOT = (("iid", "iid_n50", ("gossip", "gossip_vc", "fl")),
                  ("iid", "align_iid_n50", ("gossip_align", "gossip_align_vc", "dimat", "dpsgd")),
                  ("iid", "alignvc_iid_n50", ("gossip_align_vc",)),
                  ("iid", "align1k_iid_n50", ("gossip_align", "gossip_align_vc")),
                  ("iid", "dimat_iid_n50", ("dimat", "dpsgd")),
                  ("iid", "dimat_vc_iid_n50", ("dimat_vc", "dpsgd_vc")),
                  ("alpha 0.5", "alpha0.5_n50", ("gossip", "gossip_vc", "fl")),
                  ("alpha 0.5", "align_alpha0.5_n50", ("dimat", "dpsgd")),
                  ("alpha 0.5", "alignvc_alpha0.5_n50", ("gossip_align_vc",)),
                  ("alpha 0.5", "align1k_alpha0.5_n50", ("gossip_align", "gossip_align_vc")),
                  ("alpha 0.5", "dimat_alpha0.5_n50", ("dimat", "dpsgd")),
                  ("alpha 0.5", "dimat_vc_alpha0.5_n50", ("dimat_vc", "dpsgd_vc")),
                  ("iid, N = 200", "lenet_n200", ("gossip", "gossip_vc", "fl")),
                  ("iid, N = 200", "dimat_iid_n200", ("dpsgd_vc", "dimat")))
ALIGN_TICKS = (500, 1000, 3000)  # 3000: the study's horizon (the gossip rules')


def _mean_sd(values: list[float], digits: int) -> str:
    """'0.812 ± 0.004' over seeds (sample sd; 0 for one seed; '-' for none)."""
    return results.format_stat(results.stats(values), digits)


def align_snapshot(archive: Path, results_md: Path, figures: Path) -> None:
    """The alignment study's table: mean node accuracy and the kernels' variance / initial
    at ALIGN_TICKS (mean ± sd over the archived seeds that got there, pooled over the cells
    that ran the rule) and the ticks to the target within the run (mean ± sd over the seeds
    that arrived, and how many did; the seeds whose loss went non-finite and the tick), for
    each rule; and seed 0's IID accuracy curves at N = 50."""
    from vanish import plots

    head = ["data", "rule", "cell", "seeds"] + [f"acc @ {t}" for t in ALIGN_TICKS] + [
        f"var ratio @ {t}" for t in ALIGN_TICKS] + ["ticks to target (arrived / seeds)",
                                                    "horizon"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    runs: list[Path] = []
    # (data, rule) -> {seed folder name: (cell, summary, accuracy curve, variance curve)}
    pooled: dict[tuple[str, str], dict[str, tuple[str, Any, Any, Any]]] = {}
    for data_label, cell, algos in ALIGN_SNAPSHOT:
        seeds = sorted(wd for wd in (archive / cell).glob("seed*")
                       if (wd / "summary.json").is_file())
        if not seeds:
            continue
        if data_label == "iid" and seeds[0].name == "seed0":
            runs.append(seeds[0])
        for wd in seeds:
            summary = results.load_run(wd)[1]
            acc, var = results.load_curves(wd), results.load_curves(wd, y="var_ratio")
            for a in algos:
                if a in summary and a in acc:
                    pooled.setdefault((data_label, a), {}).setdefault(
                        wd.name, (cell, summary[a], dict(acc[a]), dict(var.get(a, []))))
    for (data_label, a), by_seed in pooled.items():
        have = [(s, c, v) for _, s, c, v in by_seed.values()]
        cells = list(dict.fromkeys(cell for cell, *_ in by_seed.values()))
        row = [data_label, a, " + ".join(cells), str(len(have))]
        row += [_mean_sd([c[t] for _, c, _ in have if t in c], 3) for t in ALIGN_TICKS]
        row += [_mean_sd([v[t] for _, _, v in have if t in v], 4) for t in ALIGN_TICKS]
        hits = [s["ticks_to_target"] for s, _, _ in have
                if s.get("ticks_to_target") is not None]
        div = sorted(s[results.DIVERGED_AT] for s, _, _ in have
                     if s.get(results.DIVERGED_AT) is not None)
        row.append((f"{_mean_sd(hits, 0)} ({len(hits)}/{len(have)})" if hits
                    else f"never (0/{len(have)})")
                   + (f"; diverged {len(div)}/{len(have)}, at tick "
                      f"{', '.join(map(str, div))}" if div else ""))
        row.append(", ".join(sorted({str(s.get("final_tick")) for s, _, _ in have
                                     if s.get(results.DIVERGED_AT) is None}, key=int)) or "-")
        lines.append("| " + " | ".join(row) + " |")
    results.replace_section(results_md, "align", "\n".join(lines) + "\n")
    if runs:
        curves = {}
        for wd in runs:
            for a, pts in results.load_curves(wd).items():
                if a not in curves and any(a in algos for _, _, algos in ALIGN_SNAPSHOT):
                    curves[a] = [(t, y) for t, y in pts if t <= max(ALIGN_TICKS)]
        plots.plot_named_curves(curves, figures / "grid_acc_align.png",
                                "mean node accuracy (LeNet-5, N = 50, IID, seed 0)")


def tables(archive: Path, results_md: Path, figures: Path) -> int:
    """Regenerates every table, figure and accuracy-curve figure from the archived cells
    (those not yet archived are left out; a table with none is skipped): the table into its
    section of `results_md`, its rows into results_<name>.json beside `archive`."""
    from vanish import plots  # matplotlib: only for the figures

    for t in TABLES:
        have = [archive / c for c in t.cells if (archive / c).is_dir()]
        if not have:
            print(f"{t.name}: no archived cell yet, skipped")
            continue
        by = [f.strip() for f in t.by.split(",") if f.strip()]
        try:
            runs = results.find_runs(have)
            rows = results.aggregate(runs, by)
            plots.plot_ticks_to_target(rows, t.figure, figures / f"grid_tta_{t.name}.png", by,
                                       setup=results.figure_setup(runs, by))
            results.curves_figure(runs, by, figures / f"grid_acc_{t.name}.png")
            for x in t.curves_x:
                results.curves_figure(runs, by, figures / f"grid_acc_{t.name}_{x}.png", x)
            if t.variance:
                results.curves_figure(runs, by, figures / f"grid_var_{t.name}.png",
                                      y="var_ratio")
            results.replace_section(results_md, t.name, results.markdown(rows, by))
        except results.ResultsError as e:
            print(f"{t.name}: error: {e}", file=sys.stderr)
            return 1
        (archive.parent / f"results_{t.name}.json").write_text(json.dumps(rows, indent=1))
        print(f"{t.name}: {len(have)} of {len(t.cells)} cells -> {results_md} (exit 0)")
    try:
        headline(archive, results_md, figures)
        align_snapshot(archive, results_md, figures)
    except results.ResultsError as e:
        print(f"headline: error: {e}", file=sys.stderr)
        return 1
    return 0


def job(cell: Cell, seed: int, workdir: Path, algorithms: str | None = None) -> sweep.Job:
    """The run of one (cell, seed): the cell's config and overrides, the grid's settings
    (`algorithms`: those still to run, default the cell's)."""
    fields = {"run.ticks": cell.ticks, "algorithms": algorithms or cell.algorithms,
              "run.eval_every": 50, "run.checkpoint_every": 500 if cell.ticks > 1000 else 250,
              **cell.overrides}
    return sweep.Job(cell.name, seed, str(ROOT / cell.config), fields, workdir)


def finished(workdir: Path, ticks: int, algorithms: str) -> list[str]:
    """The `algorithms` whose run (or archive) in `workdir` reached the final tick."""
    return [a for a in algorithms.split(",")
            if sweep.finished(sweep.Job("", 0, "", {}, workdir), {a: ticks})]


def done(workdir: Path, ticks: int, algorithms: str = ALGORITHMS) -> bool:
    """The run (or its archive) in `workdir` reports the final tick for every algorithm."""
    return len(finished(workdir, ticks, algorithms)) == len(algorithms.split(","))


def prune(workdir: Path, algorithms: list[str]) -> None:
    """Deletes the checkpoints of `algorithms` in `workdir` (runs that finished and are
    archived: a 10,000-tick grid fills a disk with them), printing what each freed."""
    for a in algorithms:
        ckpt = workdir / a / "checkpoints"
        if ckpt.is_dir():
            size = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
            shutil.rmtree(ckpt)
            print(f"  pruned {ckpt} ({size / 1e9:.2f} GB)", flush=True)


def archive(workdir: Path, dest: Path) -> None:
    """Copies a finished run's config, summary and cut-down curves to `dest` (committed).

    When `dest` already holds an archive of the same experiment (same seed and every
    result-relevant field; a run of further algorithms added to a cell later), the new
    run's algorithms are merged into it: their summaries and curves replace any of the
    same name, the others stay. A different experiment is refused (ValueError)."""
    dest.mkdir(parents=True, exist_ok=True)
    summary = json.loads((workdir / "summary.json").read_text())
    stored = json.loads((workdir / "run_config.json").read_text())
    rows = []
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            cut = {k: rec[k] for k in CURVE_KEYS if k in rec}
            ratio = kernel_var_ratio(rec)
            if ratio is not None:
                cut["var_ratio"] = ratio
            rows.append(cut)
    if (dest / "summary.json").is_file() and (dest / "run_config.json").is_file():
        old_cfg, old_summary = results.load_run(dest)
        new_cfg, _ = results.load_run(workdir)
        differ = results.differences(old_cfg, new_cfg)
        if differ or old_cfg.get("seed") != new_cfg.get("seed"):
            raise ValueError(f"cannot merge {workdir} into the archive {dest}: a different "
                             f"experiment (fields {differ or ['seed']} differ)")
        new = set(summary)
        summary = {**{a: s for a, s in old_summary.items() if a not in new}, **summary}
        kept = [json.loads(line) for line in (dest / "metrics.jsonl").read_text().splitlines()
                if line.strip()]
        rows = [r for r in kept if r.get("algorithm") not in new] + rows
        old_stored = json.loads((dest / "run_config.json").read_text())
        names = old_stored["config"]["algorithms"].split(",")
        names += [a for a in stored["config"]["algorithms"].split(",") if a not in names]
        old_stored["config"]["algorithms"] = ",".join(names)
        stored = old_stored
    (dest / "run_config.json").write_text(json.dumps(stored, indent=1) + "\n")
    (dest / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (dest / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(ROOT / "runs" / "grid"))
    p.add_argument("--only", default="", help="comma-separated cell names (default: all)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--algorithms", default="",
                   help="comma-separated: run only these of each cell's algorithms (default: all)")
    p.add_argument("--archive-root", default=str(ARCHIVE))
    p.add_argument("--list", action="store_true", help="print cells and their state only")
    p.add_argument("--archive", action="store_true",
                   help="archive finished workdirs into --archive-root only; run nothing")
    p.add_argument("--prune", action="store_true",
                   help="delete the checkpoints of runs that finished and are archived (the "
                        "archive keeps their results; they cannot be resumed or extended "
                        "afterwards); run nothing")
    p.add_argument("--tables", action="store_true",
                   help="regenerate docs/RESULTS.md's grid sections and figures from the "
                        "archive; run nothing")
    args = p.parse_args(argv)
    if args.tables:
        return tables(Path(args.archive_root), ROOT / "docs" / "RESULTS.md",
                      ROOT / "docs" / "figures")
    by_name = {c.name: c for c in CELLS}
    only = [s for s in args.only.split(",") if s]
    unknown = sorted(set(only) - by_name.keys())
    if unknown:
        p.error(f"unknown cells {unknown}; known: {sorted(by_name)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    # Cells run in the order --only names them (a queue of priorities), else the grid's order.
    cells = [by_name[n] for n in dict.fromkeys(only)] if only else list(CELLS)
    wanted = {a for a in args.algorithms.split(",") if a}
    offered = {a for c in cells for a in c.algorithms.split(",")}
    if wanted - offered:
        p.error(f"--algorithms {sorted(wanted - offered)} is in none of the chosen cells; "
                f"they run {sorted(offered)}")
    for cell in cells:
        for seed in seeds:
            workdir = Path(args.root) / cell.name / f"seed{seed}"
            kept = Path(args.archive_root) / cell.name / f"seed{seed}"
            have = finished(kept, cell.ticks, cell.algorithms)
            ran = finished(workdir, cell.ticks, cell.algorithms)
            if set(ran) - set(have):
                archive(workdir, kept)
                have = finished(kept, cell.ticks, cell.algorithms)
            todo = [a for a in cell.algorithms.split(",") if a not in have]
            state = "done" if not todo else f"todo: {','.join(todo)}"
            if wanted:
                todo = [a for a in todo if a in wanted]
            print(f"{cell.name:22s} seed {seed}: {state}", flush=True)
            if args.prune:
                prune(workdir, sorted(set(ran) & set(have)))
            if args.list or args.archive or args.prune or not todo:
                continue
            rc = sweep.run_jobs([job(cell, seed, workdir, ",".join(todo))],
                                processes=True)[workdir]
            print(f"{cell.name:22s} seed {seed}: exit {rc} (log {workdir}.log)", flush=True)
            if rc:
                return rc
            if finished(workdir, cell.ticks, ",".join(todo)):
                archive(workdir, kept)
    return 0


if __name__ == "__main__":
    sys.exit(main())
