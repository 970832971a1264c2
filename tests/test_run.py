"""The command-line driver (vanish/run.py): artifacts, resume, config checks, failure modes.

Runs are tiny (4 nodes, MLP, 600 synthetic images, 60 ticks). One uninterrupted run is shared
by the module (`full_run`); the resume test compares an interrupted-and-resumed run with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from jax_cache import compile_cache
from helpers import make_sim, override
from vanish import build, checkpoint, config, results, run, sweep, tracking, train
from vanish import workdir as workdir_lib

ALGORITHMS = ("gossip", "gossip_vc")
EVAL_TICKS = [0, 20, 40, 60]


def run_cfg(**overrides):
    cfg = config.default_config()
    cfg.data.name = "synthetic"
    cfg.dataset_args.synthetic.num_train = 600
    cfg.dataset_args.synthetic.num_test = 200
    cfg.data.test_per_class = 5
    cfg.model.name, cfg.optim.batch_size, cfg.optim.lr, cfg.optim.momentum = "mlp", 8, 0.05, 0.9
    cfg.topology.num_nodes, cfg.topology.name = 4, "ring"
    cfg.run.ticks = 60
    cfg.run.eval_every = 20
    cfg.run.checkpoint_every = 0
    cfg.run.keep_checkpoints = 2
    cfg.schedule.interval_lo = 2
    cfg.schedule.interval_hi = 4
    cfg.schedule.send_every = 2
    cfg.schedule.first_tick = "random"
    cfg.algorithms = ",".join(ALGORITHMS)
    cfg.run.wandb = False
    override(cfg, **overrides)
    return cfg


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
    """Every run builds fresh Simulations of the same shapes: a persistent XLA cache lets the
    reruns load the compiled steps (same executables, same results) instead of recompiling."""
    with compile_cache(tmp_path_factory.getbasetemp() / "jax_cache"):
        yield


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full_run")
    summaries = run.run_config(run_cfg(), workdir, progress=False)
    return workdir, summaries


def _rows(workdir, algorithm=None):
    rows = tracking.read_jsonl(Path(workdir) / tracking.METRICS_FILE)
    return [r for r in rows if algorithm in (None, r["algorithm"])]


def _without_timing(rows):
    return [{k: v for k, v in r.items() if k != "ticks_per_s"} for r in rows]


def _snapshot(workdir):
    return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(workdir).rglob("*")) if p.is_file()}


class Interrupted(Exception):
    pass


@pytest.fixture
def spy_run_ticks(monkeypatch):
    """Records (algorithm, t0, t1) of every Simulation.run_ticks call."""
    calls = []
    real = train.Simulation.run_ticks

    def spy(self, state, t0, t1):
        calls.append((self.name, t0, t1))
        return real(self, state, t0, t1)

    monkeypatch.setattr(train.Simulation, "run_ticks", spy)
    return calls


@pytest.fixture
def no_training(monkeypatch):
    def fail(self, *args):
        raise AssertionError(f"{self.name} started training")

    monkeypatch.setattr(train.Simulation, "run_ticks", fail)


# ------------------------------------------------------------------------ 1. end to end


def test_end_to_end_writes_every_artifact(full_run):
    workdir, summaries = full_run
    assert set(summaries) == set(ALGORITHMS)
    for algorithm in ALGORITHMS:
        rows = _rows(workdir, algorithm)
        assert [r["tick"] for r in rows] == EVAL_TICKS
        for r in rows:
            for key in ("acc_mean", "acc_min", "acc_max", "loss_mean", "consensus",
                        "averaging_events", "var/Dense_0/kernel", "var_ratio/Dense_0/kernel"):
                assert key in r, (algorithm, r["tick"], key)
        assert rows[-1]["training_events"] > 0 and rows[-1]["averaging_events"] > 0
        assert checkpoint.all_steps(workdir / algorithm) == [40, 60]  # keep_checkpoints = 2
    summary = json.loads((workdir / "summary.json").read_text())
    assert set(summary) == set(ALGORITHMS)
    for algorithm in ALGORITHMS:
        assert summary[algorithm]["final_tick"] == 60
        assert summary[algorithm]["final_acc"] == _rows(workdir, algorithm)[-1]["acc_mean"]
    assert set(json.loads((workdir / "config.json").read_text())) == set(ALGORITHMS)
    for png in ("accuracy.png", "variance.png"):
        assert (workdir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    table = (workdir / "summary.md").read_text()
    assert all(a in table for a in ALGORITHMS)


# ------------------------------------------------------------------------------ 2. resume


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_interrupted_runs_resume_to_the_uninterrupted_result(full_run, tmp_path, monkeypatch,
                                                             spy_run_ticks):
    """Two interruptions: gossip between writing its tick-40 metrics and its tick-40
    checkpoint (resumes from 20, replays 20..40), then gossip_vc before its first checkpoint
    (starts over). The end result equals the uninterrupted run bit for bit."""
    full_dir, _ = full_run
    workdir = tmp_path / "run"
    cfg = run_cfg()
    real_save = checkpoint.save

    def interrupt_at(algorithm, tick):
        def save(ckpt_dir, step, state, **kw):
            if (Path(ckpt_dir).name, int(step)) == (algorithm, tick):
                raise Interrupted(f"{algorithm} at {tick}")
            return real_save(ckpt_dir, step, state, **kw)

        return save

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "save", interrupt_at("gossip", 40))
        with pytest.raises(Interrupted):
            run.run_config(cfg, workdir, progress=False)
    assert [r["tick"] for r in _rows(workdir, "gossip")] == [0, 20, 40]
    assert checkpoint.all_steps(workdir / "gossip") == [20]

    spy_run_ticks.clear()
    with monkeypatch.context() as m:
        m.setattr(checkpoint, "save", interrupt_at("gossip_vc", 20))
        with pytest.raises(Interrupted):
            run.run_config(cfg, workdir, progress=False)
    assert spy_run_ticks[0][:2] == ("gossip", 20)  # resumed, not restarted
    assert checkpoint.all_steps(workdir / "gossip_vc") == []

    spy_run_ticks.clear()
    run.run_config(cfg, workdir, progress=False)
    assert {c[0] for c in spy_run_ticks} == {"gossip_vc"}  # gossip was finished
    # A segment may be split into several calls (a signal is honoured between them);
    # together they cover every tick once, in order.
    assert [c[1] for c in spy_run_ticks] == [0] + [c[2] for c in spy_run_ticks[:-1]]
    assert spy_run_ticks[-1][2] == 60

    for algorithm in ALGORITHMS:
        rows = _rows(workdir, algorithm)
        assert [r["tick"] for r in rows] == EVAL_TICKS, algorithm  # no duplicate ticks
        assert _without_timing(rows) == _without_timing(_rows(full_dir, algorithm))
    assert (json.loads((workdir / "summary.json").read_text())
            == json.loads((full_dir / "summary.json").read_text()))
    # The final states themselves are bit-identical.
    template = make_sim(cfg, "gossip").init_state()
    resumed, _ = checkpoint.restore(workdir / "gossip", template)
    template = make_sim(cfg, "gossip").init_state()
    straight, _ = checkpoint.restore(full_dir / "gossip", template)
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------- 3. changed config


def test_changed_config_on_existing_workdir_raises_and_keeps_everything(full_run, tmp_path,
                                                                        no_training):
    workdir = tmp_path / "copy"
    shutil.copytree(full_run[0], workdir)
    before = _snapshot(workdir)
    assert any(k.startswith("gossip/checkpoints/") for k in before)
    with pytest.raises(RuntimeError,
            match=r"different config: config\.optim\.lr: 0\.05 -> 0\.02\. .*"
                       r"nothing was overwritten"):
        run.run_config(run_cfg(lr=0.02), workdir, progress=False)
    assert _snapshot(workdir) == before


def test_changed_config_is_refused_before_any_algorithm_runs(tmp_path, no_training):
    # No checkpoint at all yet (e.g. the first run died early): the workdir's recorded
    # config still protects it, so no algorithm runs under the new config.
    workdir = tmp_path / "fresh"
    workdir.mkdir()
    first = build.experiment(run_cfg())
    workdir_lib.store_config(workdir, first.record, first.neutral)
    with pytest.raises(RuntimeError,
            match=r"config\.optim\.lr: 0\.05 -> 0\.02.*nothing was overwritten"):
        run.run_config(run_cfg(lr=0.02, algorithms="gossip"), workdir, progress=False)
    assert not (workdir / tracking.METRICS_FILE).exists()
    # Result-neutral fields may change.
    build.check_workdir(build.experiment(run_cfg(eval_every=5, algorithms="gossip_vc")), workdir)


# ------------------------------------------------------------------------- 4. non-finite


def test_a_non_finite_loss_is_recorded_as_diverged_and_the_run_goes_on(tmp_path, caplog):
    """A diverged run is a result (a learning rate too high): its rows up to the last finite
    evaluation are kept, its summary says diverged_at, the next algorithm still runs, the
    sweep counts it as finished, and a rerun diverges again at the same tick."""
    workdir = tmp_path / "nan"
    cfg = run_cfg(lr=1e6, algorithms="gossip,gossip_vc")
    with caplog.at_level(logging.WARNING):
        summaries = run.run_config(cfg, workdir, progress=False)
    assert set(summaries) == {"gossip", "gossip_vc"}  # the second ran after the first diverged
    for name, s in summaries.items():
        tick = s[results.DIVERGED_AT]
        assert 0 < tick <= 60 and tick % 20 == 0
        rows = _rows(workdir, name)
        assert [r["tick"] for r in rows] == list(range(0, tick, 20))  # kept, nothing after
        assert all(np.isfinite(r["loss_mean"]) for r in rows)
        assert s["final_tick"] == rows[-1]["tick"] and s["ticks_to_target"] is None
    assert re.search(r"\[gossip\] non-finite loss at tick \d+ \(config\.optim\.lr = 1e\+06",
                     caplog.text)
    assert json.loads((workdir / "summary.json").read_text())["gossip"][
        results.DIVERGED_AT] == summaries["gossip"][results.DIVERGED_AT]
    table = results.summary_table(summaries)
    assert f"diverged @ {summaries['gossip'][results.DIVERGED_AT]}" in table
    assert sweep.finished(sweep.Job("nan", 0, "", {}, workdir), {"gossip": 60, "gossip_vc": 60})
    again = run.run_config(cfg, workdir, progress=False)  # resumes, diverges bit for bit again
    assert again == summaries


# ------------------------------------------------------------------------ 5. bad values


@pytest.mark.parametrize("field,value", [
    ("algorithms", "fl,nope"),
    ("partition", "nope"),
    ("topology", "nope"),
    ("model", "nope"),
])
def test_bad_config_values_raise_before_any_training(tmp_path, no_training, field, value):
    # 'fl' first: it does not use cfg.topology.name, so a late check would let it train first.
    cfg = run_cfg(**{"algorithms": "fl,gossip", field: value})
    with pytest.raises(ValueError, match="'nope'.* is unknown|unknown .*'nope'"):
        run.run_config(cfg, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad" / tracking.METRICS_FILE).exists()


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "vanish.run", "--config",
         str(root / "experiments" / "default" / "config.py"), "--workdir", str(tmp_path / "w"),
         "--config.algorithms=fl,bogus"],
        capture_output=True, text=True, timeout=300, cwd=root,
        env={**__import__("os").environ, "VANISH_TCMALLOC": "0"})
    assert proc.returncode == 1
    assert "vanish: error: unknown algorithm(s) ['bogus']" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------- discovery: --list, --help


def test_list_names_every_registry_entry_and_every_config_field(capsys):
    from vanish import algorithms, data, models, partition, topology

    assert run.command(["vanish", "--list"]) == 0
    text = capsys.readouterr().out
    sections = {title: body for title, body in
                (block.split(":\n", 1) for block in text.strip().split("\n\n"))}
    def names(prefix):
        body = next(b for t, b in sections.items() if t.startswith(prefix))
        return [line.split()[0] for line in body.splitlines() if line.startswith("  ")
                and not line.startswith("    ")]
    assert names("algorithms") == list(algorithms.REGISTRY)
    assert names("topologies") == list(topology.TOPOLOGIES)
    assert names("models") == list(models.REGISTRY)
    assert names("partitions") == list(partition.SCHEMES)
    assert names("datasets")[:-1] == list(data.REGISTRY)
    fields = next(b for t, b in sections.items() if t.startswith("config fields"))
    for path, f in config.fields().items():
        assert f"config.{path} = {f.default!r}" in fields and f.help in fields, path
    for knob in algorithms.REGISTRY["gossip_krum"].knobs:  # an algorithm's own knobs, with it
        assert f"algorithm_args.gossip_krum.{knob} = 1" in sections[next(
            t for t in sections if t.startswith("algorithms"))]


def test_help_exits_zero_with_the_usage(capsys):
    assert run.command(["vanish", "--help"]) == 0
    assert "usage: python -m vanish.run --config FILE --workdir DIR" in capsys.readouterr().out
