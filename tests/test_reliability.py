"""A run finishes right or refuses clearly (in this process; tests/test_faults.py does the same
with real processes and signals): damaged metrics logs, a second run on one workdir,
extending a finished run, a workdir of an earlier version, files created with the umask.

One uninterrupted run of a tiny config (6 nodes, MLP, 2 algorithms x 60 ticks, evaluation
every 10 ticks, checkpoints every 20, 3 kept) is the reference; each test copies it, damages
or changes one thing, reruns the same code path as the command line and compares the metrics
rows (timing aside) and summaries with the reference.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from helpers import tiny_config
from jax_cache import compile_cache
from vanish import build, checkpoint, errors, lock, run, tracking

ALGORITHMS = ("gossip", "gossip_vc")
TICKS, EVERY = 60, 10


def cfg_for(ticks: int = TICKS, **fields):
    cfg = tiny_config(**{"run.ticks": ticks, "run.eval_every": EVERY,
                         "run.checkpoint_every": 20, "run.keep_checkpoints": 3, **fields})
    cfg.algorithms = ",".join(ALGORITHMS)
    return cfg


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    with compile_cache(tmp_path_factory.getbasetemp() / "jax_cache_reliability"):
        yield


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("reference") / "w"
    run.run_config(cfg_for(), workdir, progress=False)
    return workdir


def rows(workdir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "ticks_per_s"}
            for r in tracking.read_jsonl(workdir / tracking.METRICS_FILE)]


def same_as(workdir: Path, reference: Path) -> None:
    got, want = rows(workdir), rows(reference)
    key = lambda r: (r["algorithm"], r["tick"])  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key)
    assert (json.loads((workdir / "summary.json").read_text())
            == json.loads((reference / "summary.json").read_text()))
    for algorithm in ALGORITHMS:
        assert [r["tick"] for r in got if r["algorithm"] == algorithm] == list(
            range(0, TICKS + 1, EVERY))


def copy(reference: Path, tmp_path: Path) -> Path:
    workdir = tmp_path / "w"
    shutil.copytree(reference, workdir)
    return workdir


def test_truncated_metrics_log_of_a_finished_run_is_recomputed(reference, tmp_path):
    """The last 3 rows (gossip_vc's ticks 40, 50, 60) are lost: the run falls back to the
    checkpoint before them (tick 20... its rows intact) and recomputes the same rows."""
    workdir = copy(reference, tmp_path)
    log = workdir / tracking.METRICS_FILE
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-3]))
    run.run_config(cfg_for(), workdir, progress=False)
    same_as(workdir, reference)


def test_a_last_line_cut_mid_write_is_repaired(reference, tmp_path):
    workdir = copy(reference, tmp_path)
    log = workdir / tracking.METRICS_FILE
    text = log.read_text()
    log.write_text(text[:-40])  # the final row cut in the middle
    run.run_config(cfg_for(), workdir, progress=False)
    same_as(workdir, reference)
    assert log.read_text().endswith("\n")


def test_a_missing_row_in_the_middle_falls_back_to_an_older_checkpoint(reference, tmp_path):
    workdir = copy(reference, tmp_path)
    log = workdir / tracking.METRICS_FILE
    kept = [line for line in log.read_text().splitlines(keepends=True)
            if not ('"algorithm": "gossip"' in line and '"tick": 50' in line)]
    log.write_text("".join(kept))
    run.run_config(cfg_for(), workdir, progress=False)
    same_as(workdir, reference)


def test_a_second_run_on_a_locked_workdir_is_refused_naming_the_holder(reference, tmp_path):
    workdir = copy(reference, tmp_path)
    before = (workdir / "summary.json").read_text()
    with lock.WorkdirLock(workdir):
        with pytest.raises(errors.WorkdirLockedError, match=rf"pid {os.getpid()} on host"):
            run.run_config(cfg_for(), workdir, progress=False)
    assert (workdir / "summary.json").read_text() == before
    run.run_config(cfg_for(), workdir, progress=False)  # released: it runs (finished: no-op)
    same_as(workdir, reference)


def test_a_finished_run_extends_to_more_ticks_on_the_same_trajectory(reference, tmp_path):
    """40 ticks, then the same command with 60: the rows and the summary equal the
    60-tick run's (the schedule of [0, 40) does not depend on the horizon)."""
    workdir = tmp_path / "w"
    run.run_config(cfg_for(ticks=40), workdir, progress=False)
    assert json.loads((workdir / "summary.json").read_text())["gossip"]["final_tick"] == 40
    run.run_config(cfg_for(ticks=60), workdir, progress=False)
    same_as(workdir, reference)
    with pytest.raises(errors.WorkdirConflictError, match=r"at tick 60, past "
                       r"config\.run\.ticks = 30: rerun with config\.run\.ticks >= 60"):
        run.run_config(cfg_for(ticks=30), workdir, progress=False)


def test_a_workdir_of_the_flat_config_resumes_or_names_what_changed(reference, tmp_path):
    """run_config.json as an earlier vanish wrote it (flat field names, its own hash):
    the same experiment resumes; another one is refused, naming the field old -> new."""
    workdir = copy(reference, tmp_path)
    stored = json.loads((workdir / "run_config.json").read_text())
    from vanish import compat, workdir as workdir_lib

    flat = workdir_lib.flatten(stored["config"])
    old = {}
    for name, paths in compat.OLD_NAMES.items():
        if paths[0] in flat:
            old[name] = flat[paths[0]]
    old.update(seed=flat["seed"], algorithms=flat["algorithms"])
    (workdir / "run_config.json").write_text(json.dumps({"config_hash": "0123456789abcdef",
                                                         "config": old}))
    with pytest.raises(errors.WorkdirConflictError, match=r"config\.optim\.lr: 0\.05 -> 0\.02"):
        run.run_config(cfg_for(**{"optim.lr": 0.02}), workdir, progress=False)
    run.run_config(cfg_for(), workdir, progress=False)
    same_as(workdir, reference)
    upgraded = json.loads((workdir / "run_config.json").read_text())
    assert upgraded["schema"] == 2 and "0123456789abcdef" in upgraded["accepts"]


def _previous_layout(record: dict) -> dict:
    """A record as vanish wrote it before the topology / partition knobs had sections of
    their own (topology.degree, data.alpha, ...; config.py's sections otherwise)."""
    old = {k: dict(v) if isinstance(v, dict) else v for k, v in record.items()
           if k not in ("topology_args", "partition_args")}
    args, parts = record["topology_args"], record["partition_args"]
    old["topology"].update(degree=args["random_regular"]["degree"],
                           edge_prob=args["erdos_renyi"]["p"],
                           rewire_prob=args["watts_strogatz"]["p"],
                           attach=args["barabasi_albert"]["m"], edge_list="")
    old["data"].update(alpha=parts["dirichlet_weights"]["alpha"],
                       shards_per_node=parts["shards"]["shards_per_node"],
                       label_subsets=parts["label_subsets"]["subsets"])
    return old


def test_a_workdir_of_the_previous_sections_resumes_and_migrates(reference, tmp_path):
    """A run stopped at tick 40 whose run_config.json has the previous layout (and its own
    hash) resumes to the reference's trajectory; a changed degree is named in the new
    spelling; scripts/migrate_records.py rewrites the record as vanish writes it today."""
    import importlib.util

    workdir = tmp_path / "w"
    run.run_config(cfg_for(ticks=40), workdir, progress=False)
    file = workdir / "run_config.json"
    today = json.loads(file.read_text())
    old = dict(today, config_hash="0123456789abcdef", accepts=[],
               config=_previous_layout(today["config"]))
    file.write_text(json.dumps(old))
    with pytest.raises(errors.WorkdirConflictError,
                       match=r"config\.topology_args\.random_regular\.degree: 3 -> 4"):
        run.run_config(cfg_for(**{"topology_args.random_regular.degree": 4}), workdir,
                       progress=False)
    run.run_config(cfg_for(ticks=60), workdir, progress=False)
    same_as(workdir, reference)
    spec = importlib.util.spec_from_file_location(
        "migrate_records", Path(__file__).parents[1] / "scripts" / "migrate_records.py")
    migrate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migrate)
    file.write_text(json.dumps(old))
    assert migrate.main([str(workdir)]) == 0
    migrated = json.loads(file.read_text())
    from vanish import config, workdir as workdir_lib

    got, want = (workdir_lib.flatten(r["config"]) for r in (migrated, today))
    idle = config.idle_knobs(want)  # topology.degree also set watts_strogatz.k (unused here)
    assert {k: v for k, v in got.items() if k not in idle} == {
        k: v for k, v in want.items() if k not in idle}
    assert migrated["config_hash"] == today["config_hash"]
    assert "0123456789abcdef" in migrated["accepts"]
    assert migrate.migrate(file) is None  # a second pass changes nothing


def test_run_files_are_created_with_the_umask(reference):
    umask = os.umask(0)
    os.umask(umask)
    for name in ("metrics.jsonl", "metrics.csv", "summary.json", "summary.md",
                 "run_config.json"):
        mode = (reference / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~umask, (name, oct(mode))


def test_the_builder_refuses_before_the_workdir_exists(tmp_path):
    workdir = tmp_path / "never"
    with pytest.raises(errors.ResourceError, match=r"config\.run\.ticks = 1000000000"):
        run.run_config(cfg_for(ticks=10**9), workdir)
    with pytest.raises(errors.ConfigError, match=r"leaves no honest node of 6"):
        run.run_config(cfg_for(**{"network.byzantine": 0.99}), workdir)
    assert not workdir.exists()
    exp = build.experiment(cfg_for())
    assert exp.run.ticks == TICKS and checkpoint.latest_step(workdir / "gossip") is None


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_a_checkpoint_written_before_byte_counting_resumes_without_bytes(tmp_path, monkeypatch):
    """A workdir whose checkpoints hold no message counters (an earlier vanish) continues
    to the same models and accuracies; its rows after the resume carry no byte counts."""
    from vanish import engine, train

    new_init, save = engine.Engine.__init__, checkpoint.save

    def old_init(self, *args, **kwargs):  # an engine that does not count (as before)
        new_init(self, *args, **{**kwargs, "count_traffic": False})

    def old_save(workdir, step, state, **kwargs):  # the state as an earlier vanish saved it
        legacy = train._Legacy(*(getattr(state, f) for f in train._LEGACY_FIELDS))
        return save(workdir, step, legacy, **kwargs)

    workdir = tmp_path / "w"
    with monkeypatch.context() as m:
        m.setattr(engine.Engine, "__init__", old_init)
        m.setattr(checkpoint, "save", old_save)
        run.run_config(cfg_for(ticks=40), workdir, progress=False)
    assert all("bytes_sent_mean" not in r for r in rows(workdir))
    run.run_config(cfg_for(ticks=TICKS), workdir, progress=False)  # extend: resumes at 40
    fresh = tmp_path / "fresh"
    run.run_config(cfg_for(ticks=TICKS), fresh, progress=False)
    strip = lambda rs: sorted(  # noqa: E731
        ({k: v for k, v in r.items() if not k.startswith("bytes_")} for r in rs),
        key=lambda r: (r["algorithm"], r["tick"]))
    assert strip(rows(workdir)) == strip(rows(fresh))
    assert all("bytes_sent_mean" not in r for r in rows(workdir))
    assert all("bytes_sent_mean" in r for r in rows(fresh))


def test_fields_added_since_a_workdir_was_written_read_as_their_defaults(reference, tmp_path):
    """A record without a later section (clock) or a later algorithm's knobs is the same
    experiment when those fields are at their defaults: it resumes (here: it is finished)."""
    workdir = copy(reference, tmp_path)
    stored = json.loads((workdir / "run_config.json").read_text())
    del stored["config"]["clock"]
    stored["config"]["algorithm_args"].pop("gossip_topk", None)
    (workdir / "run_config.json").write_text(json.dumps(stored))
    run.run_config(cfg_for(), workdir, progress=False)
    same_as(workdir, reference)
    changed = cfg_for(**{"clock.tick_seconds": 0.5})
    with pytest.raises(errors.WorkdirConflictError,
                       match=r"config\.clock\.tick_seconds: 0\.0 -> 0\.5"):
        run.run_config(changed, workdir, progress=False)
