"""Tests for experiments/: configs are typo-free documents, sweeps pass W&B's sweep schema
and parse into real flags, one sweep combination runs end to end (shrunk), and the variance
demo shows the 1/k law."""

from __future__ import annotations

import json
import math
import random
import re
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
from vanish import config as config_lib  # noqa: E402
from vanish import tracking  # noqa: E402
from vanish import build  # noqa: E402

yaml = pytest.importorskip("yaml")

EXPERIMENTS = ROOT / "experiments"
WANDB_SWEEP_SCHEMA = ROOT / "tests" / "wandb_sweep_schema" / "schema.json"  # see its LICENSE
CONFIGS = sorted(EXPERIMENTS.glob("*/config.py"))
SWEEPS = sorted(EXPERIMENTS.glob("*/sweep.yaml"))
TICK_EXPERIMENTS = ["default", "paper_iid", "paper_noniid", "paper_topology", "paper_scale",
                    "cifar10", "robustness"]
NON_TICK = {"variance_demo": "python -m experiments.variance_demo.run --workdir runs/variance_demo"}
DEFAULTS = config_lib.default_config()
# Fields the end-to-end test shrinks (sizes only), unless the sweep sets them.
TINY = dict(dataset="synthetic", synthetic_train=600, synthetic_test=200, test_per_class=5,
            num_nodes=6, degree=3, model="mlp", ticks=30, eval_every=10, batch_size=16,
            checkpoint_every=30)


def _ids(paths):
    return [p.parent.name for p in paths]


def type_ok(default, value) -> bool:
    """What `--config.<field>=<value>` accepts: the field's type; an int for a float."""
    if isinstance(default, bool) or isinstance(value, bool):
        return type(value) is type(default)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return type(value) is type(default)


def config_problems(cfg: ml_collections.ConfigDict) -> list[str]:
    """Fields that default_config() lacks (typos) or whose type differs from its default."""
    problems = []
    for key, value in cfg.to_dict().items():
        if key not in DEFAULTS:
            problems.append(f"unknown field {key!r}")
        elif not type_ok(DEFAULTS[key], value):
            problems.append(f"{key}={value!r} is {type(value).__name__}, default "
                            f"{type(DEFAULTS[key]).__name__}")
    return problems


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
    cfg = sweep_lib.load_config(path)
    assert isinstance(cfg, ml_collections.ConfigDict)
    assert config_problems(cfg) == []
    for algorithm in config_lib.parse_algorithms(cfg.algorithms):  # also validates vc_* fields
        build.algorithm(cfg, algorithm)
    source = path.read_text()
    docstring = re.match(r'\s*r?"""(.*?)"""', source, re.S)
    assert docstring, f"{path} has no module docstring"
    text = " ".join(docstring.group(1).split())
    command = NON_TICK.get(
        name, f"python -m vanish.run --config experiments/{name}/config.py --workdir runs/{name}")
    assert command in text
    # What it costs, and what it gives: measured once run here, else the claim expected.
    assert "Runtime" in text and ("Measured result" in text or "Expected result" in text)


def test_config_checker_catches_a_typo_and_a_wrong_type():
    cfg = config_lib.default_config()
    cfg.num_node = 5  # typo: default_config() is not locked, so this silently adds a field
    assert config_problems(cfg) == ["unknown field 'num_node'"]
    cfg = ml_collections.ConfigDict({**cfg.to_dict(), "lr": "0.01"})
    assert sorted(config_problems(cfg)) == ["lr='0.01' is str, default float",
                                            "unknown field 'num_node'"]


def test_topology_config_derives_graph_density_from_degree():
    cfg = sweep_lib.load_config(EXPERIMENTS / "paper_topology" / "config.py")
    swept = sweep_lib.apply(cfg, {"degree": 16})
    assert swept.attach == 8 and swept.edge_prob == pytest.approx(16 / 49)
    assert cfg.topology.attach == 4  # apply() copies; the original is untouched


def test_robustness_points_are_valid_one_factor_configs():
    from scripts import run_robustness as rr
    from vanish import network

    cfg = sweep_lib.load_config(EXPERIMENTS / "robustness" / "config.py")
    assert cfg.run.ticks == rr.TICKS and cfg.algorithms == rr.ALGORITHMS and cfg.model.name == "mlp"
    names = [p.name for p in rr.POINTS]
    assert len(set(names)) == len(names) and names[0] == "baseline"
    changed = {}
    for point in rr.POINTS:
        argv = rr.command(point, 1, Path("runs/x"))
        assert argv[1:6] == ["-m", "vanish.run", "--config", rr.CONFIG, "--workdir"]
        cfg_p = parse_like_cli(["python", "experiments/sweep.py", "--config", rr.CONFIG,
                                *argv[7:]])
        assert cfg_p.seed == 1 and config_lib.problems(cfg_p) == [], point.name
        assert cfg_p.algorithms == point.algorithms
        for algorithm in config_lib.parse_algorithms(cfg_p.algorithms):
            build.algorithm(cfg_p, algorithm)
        assert network.is_faulty(cfg_p) == (point.name != "baseline"), point.name
        diff = {k for k, v in cfg_p.to_dict().items() if v != cfg[k]} - {"seed", "algorithms",
                                                                           "peer_mode"}
        assert len(diff) == (point.name != "baseline"), (point.name, diff)  # one factor
        changed[point.name] = {k: cfg_p[k] for k in diff}
    # Offline shares down / (up + down) of 20 / 50 / 80 %; fl is not run under peer sampling.
    for share in (20, 50, 80):
        down = changed[f"churn{share}"]["churn_down"]
        assert down / (cfg.network.churn_up + down) == pytest.approx(share / 100)
    assert [changed[f"peer{k}"]["peer_k"] for k in (1, 2, 8)] == [1, 2, 8]
    assert cfg.topology.degree == 8 and cfg.network.peer_mode == "neighbors"  # peer8: every neighbour
    assert all("fl" not in p.algorithms.split(",") for p in rr.POINTS if p.name.startswith("peer"))


# ------------------------------------------------------------------------------- (b) sweeps


@pytest.mark.parametrize("path", SWEEPS, ids=_ids(SWEEPS))
def test_sweep_parses_into_typed_config_flags(path):
    sweep = sweep_lib.load_sweep(path)
    assert sweep["method"] in ("grid", "random")
    assert sweep["metric"]["goal"] in ("maximize", "minimize")
    assert sweep["metric"]["name"] in ("final_acc", "ticks_to_target")
    assert (ROOT / sweep["program"]).is_file()
    assert "${args}" in sweep["command"]
    assert sweep_lib.sweep_config_path(sweep) == path.parent / "config.py"
    values = sweep_lib.swept_values(sweep)
    assert values
    for key, options in values.items():
        assert key in DEFAULTS, f"swept {key!r} is not a config field"
        for v in options:
            assert type_ok(DEFAULTS[key], v), f"{key}: {v!r} is not a {type(DEFAULTS[key])}"
    # The first and last grid points, through the command line W&B would run.
    base = sweep_lib.load_config(path.parent / "config.py")
    for params in (sweep_lib.grid(sweep)[0], sweep_lib.grid(sweep)[-1]):
        cfg = parse_like_cli(wandb_argv(sweep, params))
        for key, v in params.items():
            assert cfg[key] == v and type(cfg[key]) is type(DEFAULTS[key])
        assert {k: v for k, v in cfg.to_dict().items() if k not in params} == \
            {k: v for k, v in sweep_lib.apply(base, params).to_dict().items() if k not in params}


@pytest.mark.parametrize("path", SWEEPS, ids=_ids(SWEEPS))
def test_sweep_is_valid_for_wandb_and_a_random_draw_parses(path):
    sweep = sweep_lib.load_sweep(path)
    assert wandb_sweep_violations(sweep) == []
    # A combination W&B's random search could draw (seeded by the file), through the flags
    # `wandb agent` passes: every swept key is a config field, every value parses to its type.
    params = sample_combination(sweep, random.Random(str(path.relative_to(ROOT))))
    cfg = parse_like_cli(wandb_argv(sweep, params))
    for key, value in params.items():
        assert key in DEFAULTS, f"swept {key!r} is not a config field"
        assert cfg[key] == value and type(cfg[key]) is type(DEFAULTS[key]), (key, value)


def test_wandb_sweep_check_catches_what_wandb_rejects():
    good = {"method": "random", "metric": {"name": "final_acc", "goal": "maximize"},
            "parameters": {"config.optim.lr": {"min": 0.001, "max": 0.1},
                           "config.seed": {"values": [0, 1]},
                           "config.topology.num_nodes": {"distribution": "int_uniform", "min": 8,
                                                "max": 64}}}
    assert wandb_sweep_violations(good) == []
    params = sample_combination(good, random.Random(0))
    assert 0.001 <= params["lr"] <= 0.1 and type(params["num_nodes"]) is int
    cfg = parse_like_cli(["python", "experiments/sweep.py", "--config",
                          "experiments/default/config.py",
                          *(f"--config.{k}={v}" for k, v in params.items())])
    assert (cfg.optim.lr, cfg.topology.num_nodes) == (params["lr"], params["num_nodes"])

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
    with pytest.raises(ValueError, match="config.<field>"):
        sweep_lib.swept_values({"parameters": {"alpha": {"values": [0.1]}}})
    with pytest.raises(ValueError, match="empty"):
        sweep_lib.swept_values({"parameters": {"config.data.alpha": {"values": []}}})
    with pytest.raises(KeyError, match="alhpa"):
        sweep_lib.apply(DEFAULTS, {"alhpa": 0.1})
    with pytest.raises(TypeError):
        sweep_lib.apply(DEFAULTS, {"num_nodes": "ten"})


def test_grid_order_and_workdir_names():
    sweep = {"parameters": {"config.topology.name": {"values": ["ring", "erdos_renyi"]},
                            "config.topology.degree": {"values": [3, 8]}}}
    points = sweep_lib.grid(sweep)
    assert points[:2] == [{"topology": "ring", "degree": 3}, {"topology": "ring", "degree": 8}]
    assert len(points) == 4
    assert sweep_lib.combination_name({"alpha": 5.0, "topology": "ring"}) == "alpha=5,topology=ring"
    assert sweep_lib.combination_name({}) == "base"


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


def test_local_grid_runs_every_combination_in_its_own_workdir(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sweep_lib, "run_combination", lambda cfg, params, root: calls.append(
        (cfg, dict(params), Path(root))) or (Path(root) / sweep_lib.combination_name(params), {}))
    results = sweep_lib.run_grid(EXPERIMENTS / "paper_topology" / "sweep.yaml", tmp_path)
    assert len(calls) == len(results) == 15
    assert {c[2] for c in calls} == {tmp_path}
    cfg, params, _ = calls[-1]
    assert params == {"topology": "ring", "degree": 16}
    assert (cfg.topology.name, cfg.topology.degree, cfg.topology.attach) == ("ring", 16, 8)
    assert "topology=erdos_renyi,degree=3" in results


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


def test_first_sweep_combination_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    sweep = sweep_lib.load_sweep(EXPERIMENTS / "paper_noniid" / "sweep.yaml")
    params = {k: v[0] for k, v in sweep_lib.swept_values(sweep).items()}
    assert params == {"alpha": 0.1}
    cfg = sweep_lib.apply(sweep_lib.load_config(sweep_lib.sweep_config_path(sweep)), params)
    cfg = sweep_lib.apply(cfg, {k: v for k, v in TINY.items() if k not in params})
    assert cfg.data.partition == "dirichlet_weights" and cfg.data.alpha == 0.1 and not cfg.run.wandb
    workdir, summaries = sweep_lib.run_combination(cfg, params, tmp_path)
    assert workdir == tmp_path / "alpha=0.1"
    algorithms = config_lib.parse_algorithms(cfg.algorithms)
    assert list(summaries) == algorithms == ["single", "fl", "gossip", "gossip_vc"]
    rows = tracking.read_jsonl(workdir / tracking.METRICS_FILE)
    for algorithm in algorithms:
        ticks = [r["tick"] for r in rows if r["algorithm"] == algorithm]
        assert ticks == [0, 10, 20, 30], algorithm
        last = [r for r in rows if r["algorithm"] == algorithm][-1]
        assert 0.0 <= last["acc_mean"] <= 1.0 and math.isfinite(last["loss_mean"])
        assert summaries[algorithm]["final_tick"] == 30
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["gossip_vc"]["alpha"] == 0.1 and saved["gossip_vc"]["num_nodes"] == 6
    assert (workdir / "accuracy.png").is_file() and (workdir / "variance.png").is_file()
    # Merges happened, and plain gossip lost kernel variance where gossip_vc did not.
    assert summaries["gossip"]["averaging_events"] > 0
    assert summaries["gossip"]["var_ratio"] < summaries["gossip_vc"]["var_ratio"]


# ------------------------------------------------------------------------- (d) variance demo


def test_variance_demo_shows_one_over_k_and_the_correction_restores_it(tmp_path):
    cfg = sweep_lib.load_config(EXPERIMENTS / "variance_demo" / "config.py")
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
