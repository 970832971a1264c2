"""Tests for experiments/: configs are typo-free documents, sweeps pass W&B's sweep schema
and parse into real flags, the local sweep runner runs a grid end to end (a real process) and
tabulates it, one W&B agent combination runs end to end (shrunk), and the variance demo shows
the 1/k law."""

from __future__ import annotations

import csv
import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # plain `pytest` puts tests/ on the path, not the repo root
    sys.path.insert(0, str(ROOT))

from experiments import sweep as sweep_lib  # noqa: E402
from experiments.variance_demo import run as demo  # noqa: E402
from vanish import build, config, run, tracking  # noqa: E402
from vanish import sweep as sweeps  # noqa: E402

ALPHA = "partition_args.dirichlet_weights.alpha"  # the non-IID runs' concentration
DEGREE = "topology_args.random_regular.degree"  # paper_topology derives the others from it

yaml = pytest.importorskip("yaml")

EXPERIMENTS = ROOT / "experiments"
WANDB_SWEEP_SCHEMA = ROOT / "tests" / "wandb_sweep_schema" / "schema.json"  # see its LICENSE
CONFIGS = sorted(EXPERIMENTS.glob("*/config.py"))
SWEEPS = sorted(EXPERIMENTS.glob("*/sweep.yaml"))
TICK_EXPERIMENTS = ["default", "paper_iid", "paper_noniid", "paper_topology", "paper_scale",
                    "cifar10", "robustness"]
NON_TICK = {"variance_demo": "python -m experiments.variance_demo.run --workdir runs/variance_demo"}
FIELDS = config.fields()  # {dotted path: Field(default, help)}
# Fields the end-to-end tests shrink (sizes only), unless the sweep sets them.
TINY = {"data.name": "synthetic", "dataset_args.synthetic.num_train": 600,
        "dataset_args.synthetic.num_test": 200,
        "data.test_per_class": 5, "topology.num_nodes": 6, DEGREE: 3,
        "model.name": "mlp", "run.ticks": 30, "run.eval_every": 10, "optim.batch_size": 16,
        "run.checkpoint_every": 30}


def _ids(paths):
    return [p.parent.name for p in paths]


def type_ok(default, value) -> bool:
    """What `--config.<field>=<value>` accepts: the field's type; an int for a float."""
    if isinstance(default, bool) or isinstance(value, bool):
        return type(value) is type(default)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return type(value) is type(default)


def wandb_argv(sweep: dict, params: dict) -> list[str]:
    """The command line `wandb agent` builds: macros expanded as W&B does (`${args}` is
    `--<name>=<value>` per parameter, names as written in the YAML)."""
    args = [f"--{sweep_lib.PREFIX}{k}={v}" for k, v in params.items()]
    out = []
    for part in sweep["command"]:
        if part == "${env}":
            continue
        out += {"${interpreter}": ["python"], "${program}": [sweep["program"]],
                "${args}": args}.get(part, [str(part)])
    return out


def wandb_sweep_violations(sweep: dict) -> list[str]:
    """What W&B would reject in a sweep config, [] if nothing.

    W&B's own checks (`sweeps.schema_violations_from_proposed_config`, which `wandb sweep`
    and the local controller run): its JSON schema with the `float` / `integer` formats,
    then min < max and categorical probabilities. The `sweeps` package pins numpy<2 and so
    cannot be installed beside JAX; its schema is vendored (tests/wandb_sweep_schema/).
    Plus this project's rule: random and bayes searches name the metric and its goal.
    """
    import jsonschema

    formats = jsonschema.FormatChecker()
    formats.checks("float")(lambda v: isinstance(v, float))
    formats.checks("integer")(lambda v: isinstance(v, int))
    validator = jsonschema.Draft7Validator(json.loads(WANDB_SWEEP_SCHEMA.read_text()),
                                           format_checker=formats)
    problems = [f"{'/'.join(map(str, e.absolute_path)) or 'sweep'}: {e.message}"
                for e in validator.iter_errors(sweep)]
    for name, spec in (sweep.get("parameters") or {}).items():
        if not isinstance(spec, dict):
            continue  # the schema already said so
        lo, hi = spec.get("min"), spec.get("max")
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and not lo < hi:
            problems.append(f"{name}: min {lo} is not less than max {hi}")
        if "probabilities" in spec and (len(spec["probabilities"]) != len(spec.get("values", []))
                                        or not math.isclose(sum(spec["probabilities"]), 1.0)):
            problems.append(f"{name}: probabilities do not match values / sum to 1")
    metric = sweep.get("metric")
    if sweep.get("method") in ("random", "bayes") and not (
            isinstance(metric, dict) and metric.get("name") and metric.get("goal")):
        problems.append(f"method {sweep.get('method')} needs metric: {{name, goal}}")
    return problems


def sample_combination(sweep: dict, rng: random.Random) -> dict:
    """One combination as W&B's random search draws it: a choice among `values`, the
    `value`, or uniform in [min, max] (integers if both bounds are); `config.` stripped."""
    out = {}
    for name, spec in sweep["parameters"].items():
        assert name.startswith(sweep_lib.PREFIX), name
        if "values" in spec:
            value = rng.choice(spec["values"])
        elif "value" in spec:
            value = spec["value"]
        elif isinstance(spec["min"], int) and isinstance(spec["max"], int):
            value = rng.randint(spec["min"], spec["max"])
        else:
            value = rng.uniform(spec["min"], spec["max"])
        out[name[len(sweep_lib.PREFIX):]] = value
    return out


def parse_like_cli(argv: list[str]) -> ml_collections.ConfigDict:
    """The config `--config <file> --config.x=y ...` yields, via a private FlagValues."""
    assert argv[:2] == ["python", "experiments/sweep.py"], argv
    program_args = [str(ROOT / a) if a.endswith("config.py") else a for a in argv[2:]]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config", flag_values=fv, lock_config=True,
                                    sys_argv=["prog", *program_args])
    fv(["prog", *program_args])
    return fv.config


# ------------------------------------------------------------------------------- (a) configs


def test_every_experiment_has_a_config():
    assert set(TICK_EXPERIMENTS + list(NON_TICK)) <= set(_ids(CONFIGS))
    assert {p.parent.name for p in SWEEPS} == set(TICK_EXPERIMENTS)


@pytest.mark.parametrize("path", CONFIGS, ids=_ids(CONFIGS))
def test_config_has_only_real_fields_and_documents_its_command(path):
    name = path.parent.name
    cfg = run.load_config_file(str(path))
    assert isinstance(cfg, ml_collections.ConfigDict)
    assert build.problems(cfg) == []  # every field known, typed and in range
    source = path.read_text()
    docstring = re.match(r'\s*r?"""(.*?)"""', source, re.S)
    assert docstring, f"{path} has no module docstring"
    text = " ".join(docstring.group(1).split())
    command = NON_TICK.get(
        name, f"python -m vanish.run --config experiments/{name}/config.py --workdir runs/{name}")
    assert command in text
    # What it costs, and what it gives: measured once run here, else the claim expected.
    assert "Runtime" in text and ("Measured result" in text or "Expected result" in text)
    assert "SPEC" not in text  # explains itself: no document outside the repository


def test_config_checker_catches_a_typo_and_a_wrong_type():
    cfg = config.default_config()
    cfg.topology.num_node = 5  # typo: default_config() is not locked, so this adds a field
    assert build.problems(cfg) == ["unknown config field 'topology.num_node' (did you mean "
                                   "'topology.num_nodes'?) (python -m vanish.run --list shows "
                                   "every field)"]
    cfg = ml_collections.ConfigDict(config.default_config().to_dict())
    cfg.optim = ml_collections.ConfigDict({**cfg.optim.to_dict(), "lr": "0.01"})
    assert build.problems(cfg) == ["config.optim.lr = '0.01' must be a number, not str"]


def test_topology_config_derives_graph_density_from_degree():
    cfg = run.load_config_file(str(EXPERIMENTS / "paper_topology" / "config.py"))
    swept = run.apply_overrides(cfg, {"topology_args.random_regular.degree": 16})
    a = swept.topology_args
    assert a.barabasi_albert.m == 8 and a.erdos_renyi.p == pytest.approx(16 / 49)
    assert a.watts_strogatz.k == 16
    assert cfg.topology_args.barabasi_albert.m == 4  # apply_overrides copies; the original stays


def test_robustness_points_are_valid_one_factor_configs():
    from scripts import run_robustness as rr

    cfg = run.load_config_file(rr.CONFIG)
    base = build.experiment(cfg, dataset=_tiny_data())
    assert base.run.ticks == rr.TICKS and ",".join(base.algorithms) == rr.ALGORITHMS
    assert base.model.name == "mlp"
    names = [p.name for p in rr.POINTS]
    assert len(set(names)) == len(names) and names[0] == "baseline"
    flat = _flat(cfg)
    changed = {}
    for point in rr.POINTS:
        job = rr.job(point, 1, Path("runs/x"))
        cfg_p = job.config_dict()
        exp = build.experiment(cfg_p, dataset=_tiny_data())  # every check passes
        assert exp.seed == 1 and ",".join(exp.algorithms) == point.algorithms
        base_point = point.name in ("baseline", "modest_baseline")
        assert exp.network.faulty == (not base_point), point.name
        diff = {k for k, v in _flat(cfg_p).items() if v != flat[k]} - {
            "seed", "algorithms", "network.peer_mode"}
        assert len(diff) == (not base_point), (point.name, diff)  # one factor
        changed[point.name] = {k: _flat(cfg_p)[k] for k in diff}
    # Offline shares down / (up + down) of 20 / 50 / 80 %; fl is not run under peer sampling.
    for share in (20, 50, 80):
        down = changed[f"churn{share}"]["network.churn_down"]
        assert down / (cfg.network.churn_up + down) == pytest.approx(share / 100)
    assert [changed[f"peer{k}"]["network.peer_k"] for k in (1, 2, 8)] == [1, 2, 8]
    assert cfg.topology_args.random_regular.degree == 8 and cfg.network.peer_mode == "neighbors"
    assert all("fl" not in p.algorithms.split(",") for p in rr.POINTS if p.name.startswith("peer"))
    # MoDeST runs the baseline and churn points, with the same churn settings.
    assert [p.name for p in rr.POINTS if p.algorithms == "modest"] == [
        "modest_baseline", "modest_churn20", "modest_churn50", "modest_churn80"]
    for share in (20, 50, 80):
        assert changed[f"modest_churn{share}"] == changed[f"churn{share}"]


def _flat(cfg):
    from vanish import workdir

    return workdir.flatten(cfg.to_dict())


def _tiny_data():
    from vanish import data

    return data.load("synthetic", num_train=600, num_test=200, seed=0)


# ------------------------------------------------------------------------------- (b) sweeps


@pytest.mark.parametrize("path", SWEEPS, ids=_ids(SWEEPS))
def test_sweep_parses_into_typed_config_flags(path):
    sweep = sweep_lib.load_sweep(path)
    assert sweep["method"] in ("grid", "random")
    assert sweep["metric"]["goal"] in ("maximize", "minimize")
    assert sweep["metric"]["name"] in ("final_acc", "ticks_to_target")
    assert (ROOT / sweep["program"]).is_file()
    assert "${args}" in sweep["command"]
    assert Path(sweep_lib.sweep_config_path(sweep)) == path.parent / "config.py"
    values = sweep_lib.swept_values(sweep)
    assert values
    for key, options in values.items():
        assert key in FIELDS, f"swept {key!r} is not a config field"
        for v in options:
            assert type_ok(FIELDS[key].default, v), f"{key}: {v!r}"
    # The first and last grid points, through the command line W&B would run.
    base = run.load_config_file(str(path.parent / "config.py"))
    jobs = sweeps.grid_jobs(str(path.parent / "config.py"), values, seeds=[0], root="runs/x")
    for job in (jobs[0], jobs[-1]):
        params = {k: v for k, v in job.overrides.items()}
        cfg = parse_like_cli(wandb_argv(sweep, params))
        for key, v in params.items():
            assert _flat(cfg)[key] == v and type(_flat(cfg)[key]) is type(FIELDS[key].default)
        assert _flat(cfg) == _flat(run.apply_overrides(base, params))
        assert build.problems(cfg) == []


@pytest.mark.parametrize("path", SWEEPS, ids=_ids(SWEEPS))
def test_sweep_is_valid_for_wandb_and_a_random_draw_parses(path):
    sweep = sweep_lib.load_sweep(path)
    assert wandb_sweep_violations(sweep) == []
    # A combination W&B's random search could draw (seeded by the file), through the flags
    # `wandb agent` passes: every swept key is a config field, every value parses to its type.
    params = sample_combination(sweep, random.Random(str(path.relative_to(ROOT))))
    cfg = parse_like_cli(wandb_argv(sweep, params))
    for key, value in params.items():
        assert key in FIELDS, f"swept {key!r} is not a config field"
        got = _flat(cfg)[key]
        assert got == value and type(got) is type(FIELDS[key].default), (key, value)


def test_wandb_sweep_check_catches_what_wandb_rejects():
    good = {"method": "random", "metric": {"name": "final_acc", "goal": "maximize"},
            "parameters": {"config.optim.lr": {"min": 0.001, "max": 0.1},
                           "config.seed": {"values": [0, 1]},
                           "config.topology.num_nodes": {"distribution": "int_uniform", "min": 8,
                                                "max": 64}}}
    assert wandb_sweep_violations(good) == []
    params = sample_combination(good, random.Random(0))
    assert 0.001 <= params["optim.lr"] <= 0.1 and type(params["topology.num_nodes"]) is int
    cfg = parse_like_cli(["python", "experiments/sweep.py", "--config",
                          "experiments/default/config.py",
                          *(f"--config.{k}={v}" for k, v in params.items())])
    assert (cfg.optim.lr, cfg.topology.num_nodes) == (params["optim.lr"],
                                                      params["topology.num_nodes"])

    def problems(**changes):
        return wandb_sweep_violations({**good, **changes})

    assert problems(method="hyperopt")  # not a W&B search method
    assert problems(metric={"name": "final_acc", "goal": "maximise"})  # goal misspelt
    assert problems(metric={"goal": "maximize"})  # no name
    no_metric = {k: v for k, v in good.items() if k != "metric"}
    assert wandb_sweep_violations(no_metric)  # random search without a metric
    assert wandb_sweep_violations({**no_metric, "method": "bayes"})
    assert wandb_sweep_violations({**no_metric, "method": "grid"}) == []  # a grid needs none
    assert problems(parameters={})  # nothing swept
    assert problems(parameters={"config.seed": {"vals": [0, 1]}})  # no values / value
    assert problems(parameters={"config.seed": {"values": []}})
    assert problems(parameters={"config.optim.lr": {"min": 0.1, "max": 0.01}})
    assert problems(parameters={"config.seed": {"values": [0, 1], "probabilities": [0.9]}})
    assert problems(paramters=good["parameters"])  # a typo in a top-level key


def test_sweep_rejects_unprefixed_and_empty_parameters():
    with pytest.raises(ValueError, match="config.<section>.<field>"):
        sweep_lib.swept_values({"parameters": {"alpha": {"values": [0.1]}}})
    with pytest.raises(ValueError, match="empty"):
        sweep_lib.swept_values({"parameters": {f"config.{ALPHA}": {"values": []}}})
    defaults = config.default_config()
    with pytest.raises(ValueError, match=r"'data\.partiton' \(did you mean 'data\.partition'\?\)"):
        run.apply_overrides(defaults, {"data.partiton": "iid"})
    with pytest.raises(ValueError, match="it is now config.partition_args.dirichlet_weights.alpha"):
        run.apply_overrides(defaults, {"alpha": 0.1})
    with pytest.raises(ValueError, match="takes an integer, not 'ten'"):
        run.apply_overrides(defaults, {"topology.num_nodes": "ten"})
    with pytest.raises(ValueError, match="unexpected argument '--bogus'"):
        sweep_lib.parse(["x.yaml", "--bogus"])


def test_grid_order_and_workdir_names():
    swept = {"topology.name": ["ring", "erdos_renyi"], DEGREE: [3, 8]}
    jobs = sweeps.grid_jobs("c.py", swept, seeds=[0, 1], root="r", overrides={"run.ticks": 5})
    assert [(j.overrides["topology.name"], j.overrides[DEGREE], j.seed)
            for j in jobs[:3]] == [("ring", 3, 0), ("ring", 3, 1), ("ring", 8, 0)]
    assert len(jobs) == 8 and all(j.overrides["run.ticks"] == 5 for j in jobs)
    assert jobs[0].workdir == Path("r/topology.name=ring,random_regular.degree=3/seed0")
    assert jobs[0].flags()[-1] == "--config.seed=0"
    assert sweeps.combination_name({ALPHA: 5.0}) == "dirichlet_weights.alpha=5"
    assert sweeps.combination_name({}) == "base"


def test_sweep_metrics_pick_the_primary_algorithm_and_speedup():
    summaries = {"fl": {"final_acc": 0.8, "ticks_to_target": 400},
                 "gossip": {"final_acc": 0.5, "ticks_to_target": 1200},
                 "gossip_vc": {"final_acc": 0.79, "ticks_to_target": 400}}
    m = sweep_lib.sweep_metrics(summaries, sweep_lib.primary_algorithm(list(summaries)))
    assert m["final_acc"] == 0.79 and m["ticks_to_target"] == 400
    assert m["speedup_vs_gossip"] == 3.0 and m["gossip/final_acc"] == 0.5
    summaries["gossip"]["ticks_to_target"] = None  # never reached: no number is invented
    m = sweep_lib.sweep_metrics(summaries, "gossip_vc")
    assert "speedup_vs_gossip" not in m and "gossip/ticks_to_target" not in m


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_the_sweep_command_runs_a_grid_with_an_override_and_two_seeds(tmp_path):
    """The README's sweep command as a real process: 2 combinations x 2 seeds, each in its
    own workdir, a cross-run table over the seeds, a seed figure per combination; run again,
    everything is skipped (finished) and the table is the same."""
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "tiny", "method": "grid", "program": "experiments/sweep.py",
        "parameters": {"config.schedule.beta": {"values": [0.5, 0.0]}},
        "command": ["${env}", "${interpreter}", "${program}", "--config",
                    "experiments/default/config.py", "${args}"]}))
    tiny = {**TINY, "run.ticks": 20, "run.checkpoint_every": 10, "algorithms": "gossip,gossip_vc"}
    cmd = [sys.executable, "-m", "experiments.sweep", str(sweep_file), "--seeds", "0,1",
           "--root", str(tmp_path / "out"), *(f"--config.{k}={v}" for k, v in tiny.items())]
    env = {**__import__("os").environ, "VANISH_TCMALLOC": "0", "WANDB_MODE": "disabled",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    for beta in ("0.5", "0"):
        for seed in (0, 1):
            summary = json.loads((out / f"schedule.beta={beta}" / f"seed{seed}" /
                                  "summary.json").read_text())
            assert summary["gossip_vc"]["final_tick"] == 20
            stored = json.loads((out / f"schedule.beta={beta}" / f"seed{seed}" /
                                 "run_config.json").read_text())["config"]
            assert (stored["seed"], stored["schedule"]["beta"]) == (seed, float(beta))
            assert stored["run"]["ticks"] == 20  # the override reached every run
        assert (out / f"schedule.beta={beta}" / "accuracy_seeds.png").is_file()
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["combination"], r["algorithm"], r["seeds"]) for r in rows] == [
        ("schedule.beta=0.5", "gossip", "2"), ("schedule.beta=0.5", "gossip_vc", "2"),
        ("schedule.beta=0", "gossip", "2"), ("schedule.beta=0", "gossip_vc", "2")]
    finals = [json.loads((out / "schedule.beta=0" / f"seed{s}" / "summary.json").read_text())
              ["gossip"]["final_acc"] for s in (0, 1)]
    assert float(rows[2]["final_acc_mean"]) == pytest.approx(sum(finals) / 2)
    md = (out / "results.md").read_text()
    assert "ticks to 0.75 (reached)" in md and "never (0/2)" in md or "(2/2)" in md
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert again.returncode == 0 and again.stderr.count("finished") == 4, again.stderr[-2000:]
    assert (out / "results.md").read_text() == md


def test_wandb_report_logs_every_algorithm_per_tick(tmp_path):
    class FakeRun:
        def __init__(self):
            self.logged, self.summary = [], {}

        def log(self, data, step):
            self.logged.append((step, data))

    with tracking.JsonlWriter(tmp_path / tracking.METRICS_FILE, "gossip") as w:
        w.write_scalars(0, {"acc_mean": 0.1})
        w.write_scalars(10, {"acc_mean": 0.2})
    with tracking.JsonlWriter(tmp_path / tracking.METRICS_FILE, "gossip_vc") as w:
        w.write_scalars(0, {"acc_mean": 0.1})
        w.write_scalars(10, {"acc_mean": 0.5})
    run = FakeRun()
    sweep_lib.log_to_wandb_run(run, tmp_path, {"gossip_vc": {"final_acc": 0.5}}, "gossip_vc")
    assert [step for step, _ in run.logged] == [0, 10]
    assert run.logged[1][1] == {"gossip/acc_mean": 0.2, "gossip_vc/acc_mean": 0.5}
    assert run.summary["final_acc"] == 0.5


# ------------------------------------------------------------------------- (c) end to end


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_a_wandb_agent_combination_runs_end_to_end(tmp_path, monkeypatch):
    """What `wandb agent` runs for the first combination of paper_noniid (shrunk): the
    sweep's --config.* flags select it, the workdir is named after them."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    sweep = sweep_lib.load_sweep(EXPERIMENTS / "paper_noniid" / "sweep.yaml")
    params = {k: v[0] for k, v in sweep_lib.swept_values(sweep).items()}
    assert params == {"partition_args.dirichlet_weights.alpha": 0.1}
    argv = ["--config", sweep_lib.sweep_config_path(sweep), "--root", str(tmp_path),
            *(f"--config.{k}={v}" for k, v in {**TINY, **params}.items())]
    assert sweep_lib.main(argv) == 0
    workdir = tmp_path / sweeps.combination_name({**TINY, **params})
    summaries = json.loads((workdir / "summary.json").read_text())
    algorithms = ["single", "fl", "gossip", "gossip_vc"]
    assert sorted(summaries) == sorted(algorithms)
    rows = tracking.read_jsonl(workdir / tracking.METRICS_FILE)
    for algorithm in algorithms:
        ticks = [r["tick"] for r in rows if r["algorithm"] == algorithm]
        assert ticks == [0, 10, 20, 30], algorithm
        last = [r for r in rows if r["algorithm"] == algorithm][-1]
        assert 0.0 <= last["acc_mean"] <= 1.0 and math.isfinite(last["loss_mean"])
        assert summaries[algorithm]["final_tick"] == 30
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["gossip_vc"]["partition_args"]["dirichlet_weights"]["alpha"] == 0.1
    assert saved["gossip_vc"]["topology"]["num_nodes"] == 6
    assert (workdir / "accuracy.png").is_file() and (workdir / "variance.png").is_file()
    # Merges happened, and plain gossip lost kernel variance where gossip_vc did not.
    assert summaries["gossip"]["averaging_events"] > 0
    assert summaries["gossip"]["var_ratio"] < summaries["gossip_vc"]["var_ratio"]


# ------------------------------------------------------------------------- (d) variance demo


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_variance_demo_shows_one_over_k_and_the_correction_restores_it(tmp_path):
    cfg = run.load_config_file(str(EXPERIMENTS / "variance_demo" / "config.py"))
    result = demo.shrink_ratios(cfg, [1, 2, 8])
    big = [layer for layer, n in result["sizes"].items() if n >= 500]
    assert {"Dense_0/kernel", "Conv_1/kernel"} <= set(big)
    for layer in big:
        plain, fixed, mix = (result[s][layer] for s in ("ratios", "corrected", "self_mix"))
        assert plain[0] == pytest.approx(1.0, rel=1e-5)  # k = 1: the model itself
        assert plain[2] == pytest.approx(1 / 8, rel=0.10), layer
        assert mix[2] == pytest.approx(0.25 + 0.25 / 8, rel=0.10), layer
        assert fixed == pytest.approx([1.0, 1.0, 1.0], rel=1e-4), layer
    for layer, ratios in result["self_mix_corrected"].items():
        assert ratios == pytest.approx([1.0] * 3, rel=1e-4), layer
    png, js = demo.write(result, tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(js.read_text())["ratios"]["Dense_0/kernel"][2] == plain_at(result, 8)


def plain_at(result: dict, k: int) -> float:
    return result["ratios"]["Dense_0/kernel"][result["k"].index(k)]


def test_powers_of_two():
    assert demo.powers_of_two(64) == [1, 2, 4, 8, 16, 32, 64]
    assert demo.powers_of_two(6) == [1, 2, 4, 6]
    with pytest.raises(ValueError):
        demo.powers_of_two(0)


def test_every_grid_cell_is_a_valid_config_of_its_algorithms():
    """scripts/run_grid.py: each cell's job builds (every check passes) with the cell's
    algorithms, its horizon, and the overrides it names."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_grid", ROOT / "scripts" / "run_grid.py")
    rg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rg)
    names = [c.name for c in rg.CELLS]
    assert len(set(names)) == len(names)
    for cell in rg.CELLS:
        cfg = rg.job(cell, 1, Path("runs/x")).config_dict()
        cfg.data.test_per_class = min(cfg.data.test_per_class, 20)  # the tiny test set's
        exp = build.experiment(cfg, dataset=_tiny_data())
        assert ",".join(exp.algorithms) == cell.algorithms and exp.run.ticks == cell.ticks
        flat = _flat(cfg)
        for path, value in cell.overrides.items():
            assert flat[path] == value, (cell.name, path)
    cost = [c for c in rg.CELLS if c.name.startswith("cost_")]
    assert {c.overrides["data.partition"] for c in cost} == {"iid", "dirichlet_weights"}
    assert all(rg.job(c, 0, Path("x")).config_dict().clock.tick_seconds > 0 for c in cost)
