"""Runs an experiment's W&B sweep: one combination per `wandb agent` call, or a grid locally.

    wandb sweep experiments/paper_noniid/sweep.yaml          # prints the sweep id
    wandb agent <entity>/<project>/<sweep id>                # from the repository root
    python -m experiments.sweep --sweep experiments/paper_noniid/sweep.yaml   # no W&B needed
    python -m experiments.sweep --config experiments/paper_noniid/config.py --config.data.alpha=0.1

How the flags reach the run (the one mechanism every sweep.yaml uses): a swept parameter
is named `config.<field>`, e.g. `config.data.alpha: {values: [0.1, 0.5, 5.0]}`, and the command
ends in `${args}`, which W&B expands to `--config.data.alpha=0.1`: exactly the override flags
of `vanish.run` (ml_collections parses them with the field's type). `${args_no_hyphens}`
would give `config.data.alpha=0.1`, which absl rejects, so it is not used.

Why a program of its own instead of `python -m vanish.run`: `vanish.run` resumes from its
workdir and refuses a changed config there, so every combination needs its own workdir,
and a W&B command line cannot build one from the swept values. This program derives it,
`runs/<experiment>/sweep/<field>=<value>,...` (re-running a combination resumes it), runs
`vanish.run.train_and_evaluate`, and, under `wandb agent`, logs every algorithm's curves
(`<algorithm>/acc_mean`, ...) and the sweep metrics into the agent's run: `final_acc` and
`ticks_to_target` of the primary algorithm (gossip_vc if listed, else the last one),
`<algorithm>/<summary key>` for all, and `speedup_vs_gossip` (gossip's ticks to target over
the primary's, when both reached it). The per-algorithm W&B runs of `config.wandb` are
turned off under an agent: the agent's run id is in the environment and would capture them.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import logging
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

REPO_ROOT = Path(__file__).resolve().parent.parent
PREFIX = "config."

log = logging.getLogger("vanish")


# ------------------------------------------------------------------------ sweep files


def load_sweep(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parses a sweep.yaml (needs PyYAML, as `wandb sweep` does)."""
    import yaml  # lazy: only sweeps need it

    with open(path) as f:
        sweep = yaml.safe_load(f)
    if not isinstance(sweep, dict) or "parameters" not in sweep:
        raise ValueError(f"{path}: not a W&B sweep (no 'parameters' mapping)")
    return sweep


def swept_values(sweep: Mapping[str, Any]) -> dict[str, list[Any]]:
    """{config field: values} in file order; `config.` stripped, `value:` as a 1-list.

    Raises ValueError for a parameter not named `config.<field>` or without values: only
    `values` / `value` are supported (a grid, or W&B's random choice among them).
    """
    out: dict[str, list[Any]] = {}
    for name, spec in sweep["parameters"].items():
        if not str(name).startswith(PREFIX):
            raise ValueError(f"sweep parameter {name!r} must be named '{PREFIX}<field>' so that "
                             f"W&B's ${{args}} passes it as --{PREFIX}<field>=<value>")
        if not isinstance(spec, Mapping) or not ("values" in spec or "value" in spec):
            raise ValueError(f"sweep parameter {name!r} needs 'values: [...]' or 'value: x'")
        values = list(spec["values"]) if "values" in spec else [spec["value"]]
        if not values:
            raise ValueError(f"sweep parameter {name!r} has an empty 'values' list")
        out[str(name)[len(PREFIX):]] = values
    return out


def grid(sweep: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the swept values, first parameter slowest (W&B's grid order)."""
    values = swept_values(sweep)
    return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]


def sweep_config_path(sweep: Mapping[str, Any]) -> Path:
    """The config file named after `--config` in the sweep's command (relative: repo root)."""
    command = [str(c) for c in sweep.get("command", [])]
    for i, arg in enumerate(command):
        if arg == "--config" and i + 1 < len(command):
            return _from_root(command[i + 1])
        if arg.startswith("--config="):
            return _from_root(arg.split("=", 1)[1])
    raise ValueError("the sweep's command names no '--config <file>'")


def _from_root(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


# ------------------------------------------------------------------------ configs


def load_config(path: str | os.PathLike[str]) -> ml_collections.ConfigDict:
    """`get_config()` of a config file, loaded by path as `--config <file>` does."""
    path = Path(path)
    name = "_vanish_experiment_" + re.sub(r"\W", "_", str(path.resolve()))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load a config from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def apply(cfg: ml_collections.ConfigDict, params: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A copy of cfg with params set; an unknown field or a wrong type raises.

    Follows `--config.<field>=<value>`: an int is accepted for a float field.
    """
    out = copy.deepcopy(cfg)  # keeps FieldReferences (fields computed from swept ones)
    for key, value in params.items():
        if key not in out:
            raise KeyError(f"{key!r} is not a config field (see vanish/config.py)")
        out[key] = value  # ConfigDict rejects a value of another type (int -> float allowed)
    return out


def _fmt(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^\w.+-]", "_", text)


def combination_name(params: Mapping[str, Any]) -> str:
    """'alpha=0.1,degree=8': the workdir name of one combination ('base' if none)."""
    return ",".join(f"{k}={_fmt(v)}" for k, v in params.items()) or "base"


def experiment_name(config_path: str | os.PathLike[str]) -> str:
    return Path(config_path).resolve().parent.name


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


# ------------------------------------------------------------------------ running


def run_combination(cfg: ml_collections.ConfigDict, params: Mapping[str, Any],
                    root: str | os.PathLike[str]) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Runs (or resumes) one combination in root/<combination name>; returns its summaries."""
    from vanish import run as run_lib

    workdir = Path(root) / combination_name(params)
    log.info("sweep combination %s -> %s", dict(params), workdir)
    return workdir, run_lib.train_and_evaluate(cfg, workdir)


def run_grid(sweep_path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None,
             ) -> dict[str, dict[str, dict[str, Any]]]:
    """Every combination of a sweep's grid, sequentially, without W&B."""
    sweep = load_sweep(sweep_path)
    config_path = sweep_config_path(sweep)
    base = load_config(config_path)
    root = Path(root) if root else Path("runs") / experiment_name(config_path) / "sweep"
    results = {}
    for params in grid(sweep):
        workdir, summaries = run_combination(apply(base, params), params, root)
        results[workdir.name] = summaries
    return results


def main(argv: Sequence[str]) -> None:
    from absl import flags
    from ml_collections import config_flags

    from vanish import plots
    from vanish import run as run_lib

    del argv
    FLAGS = flags.FLAGS
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run_lib.quiet_libraries()
    if FLAGS.sweep:
        results = run_grid(FLAGS.sweep, FLAGS.workdir)
        for name, summaries in results.items():
            print(f"\n{name}\n{plots.summary_table(summaries)}")
        return
    if FLAGS.config is None:
        raise flags.ValidationError("pass --config <config.py> (one combination) or --sweep "
                                    "<sweep.yaml> (the whole grid)")
    cfg = FLAGS.config
    params = {k: cfg[k] for k in config_flags.get_override_values(FLAGS["config"])}
    root = FLAGS.workdir or str(
        Path("runs") / experiment_name(config_flags.get_config_filename(FLAGS["config"]))
        / "sweep")
    algorithms = [a.strip() for a in str(cfg.algorithms).split(",") if a.strip()]
    run = None
    if os.environ.get("WANDB_SWEEP_ID"):  # started by `wandb agent`: report into its run
        import wandb

        cfg.run.wandb = False
        run = wandb.init(config=cfg.to_dict())
    try:
        workdir, summaries = run_combination(cfg, params, root)
        print(plots.summary_table(summaries))
        if run is not None:
            log_to_wandb_run(run, workdir, summaries, primary_algorithm(algorithms))
    finally:
        if run is not None:
            run.finish()


def cli() -> None:
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
    flags.DEFINE_string("workdir", None, "root of the combinations' workdirs "
                        "(default runs/<experiment>/sweep)")
    flags.DEFINE_string("sweep", None, "a sweep.yaml: run its whole grid here, without W&B")
    app.run(main)


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        # `python experiments/sweep.py` (W&B's ${program}) puts experiments/ first on the path,
        # where the experiment folders would shadow same-named modules; use the repo root.
        sys.path[0] = str(REPO_ROOT)
    cli()
