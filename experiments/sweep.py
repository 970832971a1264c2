"""Runs an experiment's sweep locally (a grid, resumable, one table), or one W&B agent call.

    python -m experiments.sweep experiments/paper_noniid/sweep.yaml \
        [--config.run.ticks=500 ...] [--seeds 0,1,2] [--root runs/noniid] [--processes]
    wandb sweep experiments/paper_noniid/sweep.yaml   # needs a W&B account or server
    wandb agent <entity>/<project>/<sweep id>         # from the repository root

Local grid (no W&B needed): every combination of the sweep's `parameters` times every seed
runs in its own workdir, <root>/<combination>/seed<s> (default root:
runs/<experiment>/sweep); a finished run is skipped, an interrupted one resumes. `--config.*`
flags set fields of every run (the swept values win where both name a field); the seeds are
`--seeds`, else the sweep's `config.seed` values, else the config's seed. Then
<root>/results.md and results.csv hold one row per combination and algorithm over its seeds
(ticks to the target accuracy as mean ± sd and how many seeds reached it, final and best
accuracy) and <root>/<combination>/accuracy_seeds.png the mean and min-max band over seeds.

How the flags reach a W&B agent's run (the one mechanism every sweep.yaml uses): a swept
parameter is named `config.<section>.<field>`, and the command ends in `${args}`, which W&B
expands to `--config.partition_args.dirichlet_weights.alpha=0.1`: this program then runs that
one combination in
runs/<experiment>/sweep/<combination> and logs every algorithm's curves
(`<algorithm>/acc_mean`, ...) and the sweep metrics (`final_acc`, `ticks_to_target` of
gossip_vc if listed, else the last algorithm; `speedup_vs_gossip`) into the agent's run.
W&B agents need a W&B server or account (`wandb login`); offline, use the local grid.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
PREFIX = "config."

log = logging.getLogger("vanish")

USAGE = __doc__.split("\n\n")[0]


class UsageError(ValueError):
    """A bad command line or sweep file (reported as one line)."""


# ------------------------------------------------------------------------ sweep files


def load_sweep(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parses a sweep.yaml (needs PyYAML, as `wandb sweep` does)."""
    import yaml  # lazy: only sweeps need it

    try:
        with open(path) as f:
            sweep = yaml.safe_load(f)
    except OSError as e:
        raise UsageError(f"sweep file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"sweep file {path} is not YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(sweep, dict) or "parameters" not in sweep:
        raise UsageError(f"{path}: not a W&B sweep (no 'parameters' mapping)")
    return sweep


def swept_values(sweep: Mapping[str, Any]) -> dict[str, list[Any]]:
    """{dotted config path: values} in file order; `config.` stripped, `value:` as a 1-list.

    Raises UsageError for a parameter not named `config.<path>` or without values: only
    `values` / `value` are supported (a grid, or W&B's random choice among them).
    """
    out: dict[str, list[Any]] = {}
    for name, spec in (sweep.get("parameters") or {}).items():
        if not str(name).startswith(PREFIX):
            raise UsageError(f"sweep parameter {name!r} must be named '{PREFIX}<section>.<field>'"
                             f" so that W&B's ${{args}} passes it as --{PREFIX}<path>=<value>")
        if not isinstance(spec, Mapping) or not ("values" in spec or "value" in spec):
            raise UsageError(f"sweep parameter {name!r} needs 'values: [...]' or 'value: x'")
        values = list(spec["values"]) if "values" in spec else [spec["value"]]
        if not values:
            raise UsageError(f"sweep parameter {name!r} has an empty 'values' list")
        out[str(name)[len(PREFIX):]] = values
    return out


def sweep_config_path(sweep: Mapping[str, Any]) -> str:
    """The config file named after `--config` in the sweep's command (relative: repo root)."""
    command = [str(c) for c in sweep.get("command", [])]
    for i, arg in enumerate(command):
        if arg == "--config" and i + 1 < len(command):
            return str(_from_root(command[i + 1]))
        if arg.startswith("--config="):
            return str(_from_root(arg.split("=", 1)[1]))
    raise UsageError("the sweep's command names no '--config <file>'")


def _from_root(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def experiment_name(config_path: str | os.PathLike[str]) -> str:
    return Path(str(config_path).partition(":")[0]).resolve().parent.name


# ------------------------------------------------------------------------ metrics


def primary_algorithm(algorithms: Sequence[str]) -> str:
    return "gossip_vc" if "gossip_vc" in algorithms else algorithms[-1]


def sweep_metrics(summaries: Mapping[str, Mapping[str, Any]], primary: str) -> dict[str, Any]:
    """The flat summary a sweep optimises: `final_acc`, `ticks_to_target` of the primary
    algorithm, `<algorithm>/<key>` for every algorithm, and `speedup_vs_gossip`.

    A target never reached is left out (not logged as a number).
    """
    out: dict[str, Any] = {}
    for alg, summary in summaries.items():
        for key, value in summary.items():
            if value is not None:
                out[f"{alg}/{key}"] = value
    main = summaries.get(primary, {})
    for key in ("final_acc", "ticks_to_target", "best_acc", "var_ratio"):
        if main.get(key) is not None:
            out[key] = main[key]
    mine, plain = main.get("ticks_to_target"), summaries.get("gossip", {}).get("ticks_to_target")
    if primary != "gossip" and mine and plain:
        out["speedup_vs_gossip"] = plain / mine
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def log_to_wandb_run(run: Any, workdir: Path, summaries: Mapping[str, Mapping[str, Any]],
                     primary: str) -> None:
    """Every algorithm's metric rows as `<algorithm>/<metric>` at step = tick, then the summary."""
    from vanish import tracking

    by_tick: dict[int, dict[str, Any]] = {}
    for row in tracking.read_jsonl(workdir / tracking.METRICS_FILE):
        alg = row.get("algorithm", "")
        step = by_tick.setdefault(int(row["tick"]), {})
        step.update({f"{alg}/{k}": v for k, v in row.items()
                     if k not in ("algorithm", "tick") and _is_number(v)})
    for tick in sorted(by_tick):  # W&B steps must increase
        run.log(by_tick[tick], step=tick)
    run.summary.update(sweep_metrics(summaries, primary))


# ------------------------------------------------------------------------ the command line


class Args:
    """The parsed command line."""

    def __init__(self) -> None:
        self.sweep: str | None = None
        self.config: str | None = None
        self.overrides: dict[str, str] = {}
        self.seeds: list[int] | None = None
        self.root: str | None = None
        self.processes = False
        self.list = False


def parse(argv: Sequence[str]) -> Args:
    """SWEEP.yaml | --sweep F | --config F, --config.<path>=<value>, --seeds, --root
    (--workdir), --processes, --list."""
    a, rest = Args(), list(argv)
    while rest:
        arg = rest.pop(0)
        name, eq, value = arg.partition("=")
        if name in ("--config", "--sweep", "--seeds", "--root", "--workdir") and not eq:
            if not rest:
                raise UsageError(f"{name} needs a value")
            value = rest.pop(0)
        if name.startswith("--" + PREFIX):
            if not eq:
                raise UsageError(f"{arg}: set a field as {arg}=<value>")
            a.overrides[name[2 + len(PREFIX):]] = value
        elif name == "--config":
            a.config = value
        elif name == "--sweep":
            a.sweep = value
        elif name == "--seeds":
            try:
                a.seeds = [int(s) for s in value.split(",") if s.strip()]
            except ValueError:
                raise UsageError(f"--seeds={value}: give comma-separated integers, e.g. 0,1,2"
                                 ) from None
        elif name in ("--root", "--workdir"):
            a.root = value
        elif arg == "--processes":
            a.processes = True
        elif arg == "--list":
            a.list = True
        elif arg in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        elif not arg.startswith("-") and a.sweep is None:
            a.sweep = arg
        else:
            raise UsageError(f"unexpected argument {arg!r}\n{USAGE}")
    if a.sweep is None and a.config is None:
        raise UsageError(f"name a sweep file (or --config <file> for one combination)\n{USAGE}")
    return a


def grid_from(a: Args) -> tuple[list[Any], Path]:
    """The jobs of a local grid and their root folder."""
    from vanish import sweep as sweep_lib

    assert a.sweep is not None
    spec = load_sweep(a.sweep)
    config = a.config or sweep_config_path(spec)
    swept = swept_values(spec)
    seeds = a.seeds or [int(s) for s in swept.pop("seed", [])] or None
    swept.pop("seed", None)
    if seeds is None:
        from vanish import run as run_lib

        base = run_lib.apply_overrides(run_lib.load_config_file(config), a.overrides)
        seeds = [int(base.seed)]
    root = Path(a.root) if a.root else Path("runs") / experiment_name(config) / "sweep"
    return sweep_lib.grid_jobs(config, swept, seeds=seeds, root=root,
                               overrides=a.overrides), root


def main(argv: Sequence[str]) -> int:
    from vanish import errors
    from vanish import run as run_lib
    from vanish import sweep as sweep_lib

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run_lib.quiet_libraries()
    try:
        a = parse(argv)
        if a.sweep is not None:
            jobs, root = grid_from(a)
            if a.list:
                for job in jobs:
                    state = "done" if sweep_lib.finished(job) else "todo"
                    print(f"{job.name} seed {job.seed}: {state} ({job.workdir})")
                return 0
            status = sweep_lib.run_jobs(jobs, processes=a.processes)
            written = sweep_lib.write_results(jobs, root)
            print(written["md"].read_text())
            print(f"results in {written['md']} and {written['csv']}")
            return max(status.values(), default=0)
        return one_combination(a)
    except (UsageError, *errors.USER_ERRORS) as e:
        print(f"vanish: error: {run_lib.one_line(e)}", file=sys.stderr)
        return 1


def one_combination(a: Args) -> int:
    """A W&B agent's call: the one combination its --config.* flags name."""
    from vanish import build, results
    from vanish import run as run_lib
    from vanish import sweep as sweep_lib

    assert a.config is not None
    cfg = run_lib.apply_overrides(run_lib.load_config_file(a.config), a.overrides)
    root = Path(a.root) if a.root else Path("runs") / experiment_name(a.config) / "sweep"
    workdir = root / sweep_lib.combination_name(a.overrides)
    wandb_run = None
    if os.environ.get("WANDB_SWEEP_ID"):  # started by `wandb agent`: report into its run
        import wandb

        cfg = run_lib.apply_overrides(cfg, {"run.wandb": False})  # the agent's run captures it
        wandb_run = wandb.init(config=cfg.to_dict())
    try:
        log.info("sweep combination %s -> %s", a.overrides, workdir)
        summaries = run_lib.run_config(cfg, workdir)
        print(results.summary_table(summaries))
        if wandb_run is not None:
            algorithms = list(build.expected_ends(cfg))
            log_to_wandb_run(wandb_run, workdir, summaries, primary_algorithm(algorithms))
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    return 0


def cli() -> None:
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        # `python experiments/sweep.py` (W&B's ${program}) puts experiments/ first on the path,
        # where the experiment folders would shadow same-named modules; use the repo root.
        sys.path[0] = str(REPO_ROOT)
    cli()
