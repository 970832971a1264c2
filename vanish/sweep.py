"""Many runs: a grid of config overrides x seeds, each in its own workdir, then one table.

    alpha = "partition_args.dirichlet_weights.alpha"
    jobs = sweep.grid_jobs("experiments/paper_noniid/config.py", {alpha: [0.1, 5.0]},
                           seeds=[0, 1], root="runs/noniid", overrides={"run.ticks": 300})
    sweep.run_jobs(jobs)                # finished ones skipped, the others resume or start
    rows = sweep.table(jobs)            # per combination and algorithm, over the seeds
    sweep.write_results(jobs, "runs/noniid")   # results.csv, results.md, seed figures

The tables are vanish.results' (`combinations`, `combinations_markdown`, `to_csv`); this
module reads the jobs' summaries for it and draws the seed figures with vanish.plots.

One loop serves the local sweep runner (experiments/sweep.py), the results grid
(scripts/run_grid.py) and the robustness study (scripts/run_robustness.py). A job runs
in this process through `run.run_config` (the command line's own path) or, with
`processes=True`, as `python -m vanish.run` (one process per run, its output in a log).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from vanish import errors, results, run

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


def _short(path: str) -> str:
    """A component's knob without its section: 'random_regular.degree' for
    'topology_args.random_regular.degree' (component names are unique per kind)."""
    section, _, rest = path.partition(".")
    return rest if section.endswith("_args") and rest.count(".") == 1 else path


def combination_name(params: Mapping[str, Any]) -> str:
    """'data.partition=shards,optim.lr=0.1' (a component's knob without its section:
    'dirichlet_weights.alpha=0.1'): the folder of one combination ('base' if none)."""
    return ",".join(f"{_short(k)}={_fmt(v)}" for k, v in params.items()) or "base"


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
    """The job's summary.json reports the planned final tick for every algorithm, or that it
    diverged before it (a result too: a rerun diverges again, bit for bit)."""
    try:
        summary = json.loads((job.workdir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    ends = expected(job) if ends is None else ends
    return all(isinstance(summary.get(a), dict) and (
        summary[a].get("final_tick") == t or summary[a].get(results.DIVERGED_AT) is not None)
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


def table(jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """One row per combination and algorithm over its seeds' summaries
    (`results.combinations`): seeds run, seeds that reached the target, ticks to target
    (mean, sd over those), final and best accuracy (mean, sd, min, max). Unfinished runs are
    left out (`seeds` counts those present)."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        summaries = by_name.setdefault(job.name, [])
        try:
            summaries.append(json.loads((job.workdir / "summary.json").read_text()))
        except (OSError, ValueError):
            continue
    return results.combinations(by_name)


def write_results(jobs: Sequence[Job], root: str | os.PathLike[str]) -> dict[str, Path]:
    """results.csv, results.md and <combination>/accuracy_seeds.png (mean and min-max band
    over the seeds, the setup in the title) under `root`; returns their paths."""
    from vanish import plots, tracking

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = table(jobs)
    written = {"csv": root / "results.csv", "md": root / "results.md"}
    tracking.atomic_write_text(written["csv"], results.to_csv(rows))
    tracking.atomic_write_text(written["md"], results.combinations_markdown(rows))
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
