"""Many runs: a grid of config overrides x seeds, each in its own workdir, then one table.

    jobs = sweep.grid_jobs("experiments/paper_noniid/config.py", {"data.alpha": [0.1, 5.0]},
                           seeds=[0, 1], root="runs/noniid", overrides={"run.ticks": 300})
    sweep.run_jobs(jobs)                # finished ones skipped, the others resume or start
    rows = sweep.table(jobs)            # per combination and algorithm, over the seeds
    sweep.write_results(jobs, "runs/noniid")   # results.csv, results.md, seed figures

One loop serves the local sweep runner (experiments/sweep.py), the results grid
(scripts/run_grid.py) and the robustness study (scripts/run_robustness.py). A job runs
in this process through `run.run_config` (the command line's own path) or, with
`processes=True`, as `python -m vanish.run` (one process per run, its output in a log).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from vanish import errors, run

log = logging.getLogger("vanish")


class Job(NamedTuple):
    """One run: a config file, the fields it overrides (dotted paths), its seed, its folder."""

    name: str  # the combination (without the seed): runs of one name differ only in seed
    seed: int
    config: str  # the config file (path or path:argument, as --config)
    overrides: Mapping[str, Any]  # {dotted path: value}
    workdir: Path

    def flags(self) -> list[str]:
        """The job as `python -m vanish.run` arguments."""
        fields = {**self.overrides, "seed": self.seed}
        return ["--config", self.config, "--workdir", str(self.workdir),
                *(f"--config.{k}={_flag(v)}" for k, v in fields.items())]

    def config_dict(self) -> Any:
        """The job's config: the file's get_config() with the overrides and the seed."""
        cfg = run.load_config_file(self.config)
        return run.apply_overrides(cfg, {**self.overrides, "seed": self.seed})


def _flag(value: Any) -> str:
    return str(value) if not isinstance(value, float) else repr(value)


def _fmt(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^\w.+-]", "_", text)


def combination_name(params: Mapping[str, Any]) -> str:
    """'data.alpha=0.1,topology.degree=8': the folder of one combination ('base' if none)."""
    return ",".join(f"{k}={_fmt(v)}" for k, v in params.items()) or "base"


def grid_jobs(config: str, swept: Mapping[str, Sequence[Any]], *, seeds: Sequence[int],
              root: str | os.PathLike[str],
              overrides: Mapping[str, Any] | None = None) -> list[Job]:
    """Every combination of the swept values (first field slowest) x every seed.

    Args:
      config: the config file.
      swept: {dotted path: values}.
      seeds: the seeds each combination runs with.
      root: the combinations' folders go under it: <root>/<combination>/seed<s>.
      overrides: fields set for every job (after the file, before the swept values).
    """
    import itertools

    jobs = []
    for combo in itertools.product(*swept.values()):
        params = dict(zip(swept, combo))
        name = combination_name(params)
        for seed in seeds:
            jobs.append(Job(name, int(seed), config, {**(overrides or {}), **params},
                            Path(root) / name / f"seed{seed}"))
    return jobs


def expected(job: Job) -> dict[str, int]:
    """{algorithm: final tick} the job's summary reports once it is finished."""
    from vanish import build

    return build.expected_ends(job.config_dict())


def finished(job: Job, ends: Mapping[str, int] | None = None) -> bool:
    """The job's summary.json reports the planned final tick for every algorithm."""
    try:
        summary = json.loads((job.workdir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    ends = expected(job) if ends is None else ends
    return all(isinstance(summary.get(a), dict) and summary[a].get("final_tick") == t
               for a, t in ends.items())


def run_jobs(jobs: Iterable[Job], *, processes: bool = False, keep_going: bool = False
             ) -> dict[Path, int]:
    """Runs every job not finished yet, in order; returns {workdir: exit status} (0: done).

    Args:
      jobs: the runs; a finished one is skipped, an interrupted one resumes.
      processes: run each as `python -m vanish.run` (its output in <workdir>.log) instead of
        in this process.
      keep_going: go on after a failed job (else stop at the first).
    Returns:
      {workdir: 0 done / skipped, 1 refused (one line logged), other: the process's status}.
    """
    status: dict[Path, int] = {}
    for job in jobs:
        if finished(job):
            log.info("sweep: %s seed %d finished (%s)", job.name, job.seed, job.workdir)
            status[job.workdir] = 0
            continue
        log.info("sweep: %s seed %d -> %s", job.name, job.seed, job.workdir)
        job.workdir.parent.mkdir(parents=True, exist_ok=True)
        if processes:
            with open(job.workdir.with_name(job.workdir.name + ".log"), "a") as f:
                status[job.workdir] = subprocess.call([sys.executable, "-m", "vanish.run",
                        *job.flags()],
                                              stdout=f, stderr=subprocess.STDOUT)
        else:
            try:
                run.run_config(job.config_dict(), job.workdir)
                status[job.workdir] = 0
            except Exception as e:  # noqa: BLE001  bad input: one line, then stop or go on
                if not errors.is_user_error(e):
                    raise
                log.error("sweep: %s seed %d: %s", job.name, job.seed, run.one_line(e))
                status[job.workdir] = 1
        if status[job.workdir] and not keep_going:
            break
    return status


# ------------------------------------------------------------------------ across the runs


def _stats(values: Sequence[float]) -> tuple[float, float] | None:
    if not values:
        return None
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 \
        else 0.0
    return mean, sd


def table(jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """One row per combination and algorithm over its seeds' summaries: seeds run, seeds
    that reached the target, ticks to target (mean, sd over those), final and best accuracy
    (mean, sd, min, max). Unfinished runs are left out (`seeds` counts those present)."""
    by_name: dict[str, list[Job]] = {}
    for job in jobs:
        by_name.setdefault(job.name, []).append(job)
    rows = []
    for name, group in by_name.items():
        summaries = []
        for job in group:
            try:
                summaries.append(json.loads((job.workdir / "summary.json").read_text()))
            except (OSError, ValueError):
                continue
        algorithms = list(dict.fromkeys(a for s in summaries for a in s))
        for algo in algorithms:
            got = [s[algo] for s in summaries if isinstance(s.get(algo), dict)]
            reached = [float(g["ticks_to_target"]) for g in got
                       if g.get("ticks_to_target") is not None]
            final = [float(g["final_acc"]) for g in got if g.get("final_acc") is not None]
            # The cost of reaching the target beyond ticks (runs that count bytes / run a
            # simulated clock), over the seeds that reached it.
            cost = {key: [float(g[key]) for g in got if g.get(key) is not None]
                    for key in ("bytes_to_target", "seconds_to_target")}
            best = [float(g["best_acc"]) for g in got if g.get("best_acc") is not None]
            targets = {g.get("target_accuracy") for g in got}
            row: dict[str, Any] = dict(combination=name, algorithm=algo, seeds=len(got),
                                       reached=len(reached),
                                       target=targets.pop() if len(targets) == 1 else None)
            for key, values in (("ticks_to_target", reached), ("final_acc", final),
                                ("best_acc", best), *cost.items()):
                stat = _stats(values)
                row[f"{key}_mean"], row[f"{key}_sd"] = stat if stat else (None, None)
            row["final_acc_min"] = min(final) if final else None
            row["final_acc_max"] = max(final) if final else None
            rows.append(row)
    return rows


def _num(v: Any, digits: int) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table as Markdown: time to target as 'mean ± sd (k/n)', 'never' when no seed
    reached it; the target named in the header."""
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
    """The table as CSV (every column; empty where a value is missing)."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return out.getvalue()


def write_results(jobs: Sequence[Job], root: str | os.PathLike[str]) -> dict[str, Path]:
    """results.csv, results.md and <combination>/accuracy_seeds.png (mean and min-max band
    over the seeds, the setup in the title) under `root`; returns their paths."""
    from vanish import plots, tracking

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = table(jobs)
    written = {"csv": root / "results.csv", "md": root / "results.md"}
    tracking.atomic_write_text(written["csv"], to_csv(rows))
    tracking.atomic_write_text(written["md"], markdown(rows))
    by_name: dict[str, list[Job]] = {}
    for job in jobs:
        if (job.workdir / tracking.METRICS_FILE).is_file():
            by_name.setdefault(job.name, []).append(job)
    for name, group in by_name.items():
        per_seed = [tracking.read_jsonl(j.workdir / tracking.METRICS_FILE) for j in group]
        algorithms = list(dict.fromkeys(r["algorithm"] for rows_ in per_seed for r in rows_))
        runs = {a: [[r for r in rows_ if r["algorithm"] == a] for rows_ in per_seed]
                for a in algorithms}
        target = next((r["target"] for r in rows if r["combination"] == name and r["target"]),
                      None)
        setup = _setup(group)
        written[f"figure:{name}"] = plots.plot_seeds(
            runs, root / name / "accuracy_seeds.png", target=target,
            title=f"mean node accuracy, {name}", setup=setup)
    return written


def _setup(group: Sequence[Job]) -> dict[str, Any]:
    """What a figure's title states, from the first run's stored config and every seed."""
    from vanish import build

    try:
        stored = json.loads((group[0].workdir / "run_config.json").read_text())["config"]
        setup = build.setup_of(stored)
    except (OSError, ValueError, KeyError, TypeError):
        setup = {}
    return {**setup, "seeds": sorted(j.seed for j in group)}
