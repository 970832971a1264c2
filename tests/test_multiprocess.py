"""Multi-host for real: 2 processes on localhost (gloo CPU collectives), 4 fake devices each.

Three runs of the real CLI on one small config (gossip_vc and D-PSGD, 16 nodes):
  * one process, one device: the reference;
  * 2 processes x 4 devices from scratch (`--config.run.distributed=true`): every metric row
    equals the reference's; only process 0 wrote the run files;
  * 2 processes resuming the reference's tick-20 checkpoint (its tick-40 one deleted): every
    process restores its own shards of a checkpoint written on one device, and the rows
    after tick 20 equal the reference's again.
Beside them, a run that loses process 1 (kill -9) mid-run: process 0 ends at once with one
line, and the same commands resume it.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# Slow (minutes): run by `python -m pytest -m slow -n0` and by CI, not by the default command.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ALGORITHMS = ("gossip_vc", "dpsgd")
FLAGS = ["--config", str(ROOT / "experiments/default/config.py"),
         "--config.data.name=synthetic", "--config.model.name=mlp",
         "--config.topology.num_nodes=16", "--config.topology_args.random_regular.degree=3",
         "--config.dataset_args.synthetic.num_train=600",
         "--config.dataset_args.synthetic.num_test=200",
         "--config.data.test_per_class=5", "--config.run.ticks=40", "--config.optim.batch_size=8",
         "--config.run.eval_every=10", "--config.run.checkpoint_every=20",
         f"--config.algorithms={','.join(ALGORITHMS)}"]


def _env(cache: Path, devices: int) -> dict:
    return dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="disabled",
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                JAX_COMPILATION_CACHE_DIR=str(cache),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _one_process(workdir: Path, cache: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "vanish.run", "--workdir", str(workdir), *FLAGS],
                          env=_env(cache, 1), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _two_processes(workdir: Path, cache: Path) -> list[str]:
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "vanish.run", "--workdir", str(workdir), *FLAGS,
         "--config.run.distributed=true", f"--config.run.coordinator_address=localhost:{port}",
         "--config.run.num_processes=2", f"--config.run.process_id={i}"],
        env=_env(cache, 4), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True) for i in range(2)]
    try:
        logs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return logs


def _rows(workdir: Path) -> dict:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {(r["algorithm"], r["tick"]): r for r in rows}


def _assert_same_rows(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, row in want.items():
        assert got[key].keys() == row.keys(), key
        for name, value in row.items():
            if name in ("ticks_per_s", "algorithm"):
                continue
            np.testing.assert_allclose(got[key][name], value, rtol=1e-6, atol=1e-6,
                                       err_msg=f"{key} {name}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("multiprocess")
    cache = base / "jax_cache"
    _one_process(base / "one", cache)
    two_logs = _two_processes(base / "two", cache)
    resumed = base / "resumed"
    shutil.copytree(base / "one", resumed)
    for algo in ALGORITHMS:
        shutil.rmtree(resumed / algo / "checkpoints" / "40")
    (resumed / "summary.json").unlink()
    resumed_logs = _two_processes(resumed, cache)
    return dict(base=base, two_logs=two_logs, resumed_logs=resumed_logs)


def test_two_processes_equal_one(runs):
    base = runs["base"]
    want = _rows(base / "one")
    assert {t for _, t in want} == {0, 10, 20, 30, 40}
    assert want[("gossip_vc", 40)]["averaging_events"] > 0
    _assert_same_rows(_rows(base / "two"), want)
    for i, log in enumerate(runs["two_logs"]):  # really 2 processes x 4 devices
        assert f"process {i} of 2: 4 of the 8 devices" in log


def test_only_process_zero_writes_the_run_files(runs):
    base = runs["base"]
    two = base / "two"
    one_rows = (base / "one" / "metrics.jsonl").read_text().splitlines()
    assert len((two / "metrics.jsonl").read_text().splitlines()) == len(one_rows)  # no doubles
    assert json.loads((two / "summary.json").read_text()).keys() == set(ALGORITHMS)
    assert (two / "summary.md").is_file() and (two / "accuracy.png").is_file()
    for algo in ALGORITHMS:  # both checkpoints, written by both processes together
        assert sorted(p.name for p in (two / algo / "checkpoints").iterdir()) == ["20", "40"]


def test_every_process_restores_a_checkpoint_of_another_layout(runs):
    base = runs["base"]
    for log in runs["resumed_logs"]:  # each process restored tick 20 (one device wrote it)
        for algo in ALGORITHMS:
            assert f"[{algo}] resuming at tick 20" in log
    _assert_same_rows(_rows(base / "resumed"), _rows(base / "one"))


# --------------------------------------------------------------- a process lost mid-run

LOST_FLAGS = [f for f in FLAGS if not f.startswith(("--config.run.ticks", "--config.algorithms"))
              ] + ["--config.run.ticks=400", "--config.algorithms=gossip_vc"]
_LOST = re.compile(r"vanish: error: process 1 of the 2 is gone \((.+)\): process 0 stops too; "
                   r"gossip_vc resumes from its last complete checkpoint, tick (\d+) \((\S+)\); "
                   r"to resume, start every process again with its same command, here: (.+)$")


def _start(workdir: Path, cache: Path, port: int, i: int) -> tuple[subprocess.Popen, Path]:
    log = workdir.parent / f"{workdir.name}.{i}.{time.monotonic_ns()}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vanish.run", "--workdir", str(workdir), *LOST_FLAGS,
             "--config.run.distributed=true",
             f"--config.run.coordinator_address=localhost:{port}",
             "--config.run.num_processes=2", f"--config.run.process_id={i}"],
            env=_env(cache, 4), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
    return proc, log


def test_a_lost_process_ends_the_other_at_once_with_one_line_and_the_run_resumes(tmp_path):
    """kill -9 of process 1 mid-run: process 0 exits at once with status 1 and one line
    naming process 1, the last complete checkpoint and its resume command (no traceback, no
    abort of JAX's coordination client); both commands, run again, resume there and finish."""
    workdir, cache = tmp_path / "run", tmp_path / "jax_cache"
    port = _free_port()
    (survivor, log), (victim, _) = (_start(workdir, cache, port, i) for i in range(2))
    try:
        deadline = time.monotonic() + 600
        while "[gossip_vc] tick 40 |" not in log.read_text():
            assert survivor.poll() is None and victim.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        victim.kill()
        assert survivor.wait(timeout=120) == 1, log.read_text()[-3000:]
    finally:
        for p in (survivor, victim):
            p.kill()
            p.wait()
    text = log.read_text()
    for noise in ("Traceback", "Fatal Python error", "Check failure", "Exception ignored"):
        assert noise not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("vanish: error:")]
    assert len(errors) == 1, text[-3000:]
    match = _LOST.match(errors[0])
    assert match, errors[0]
    cause, tick, where, command = match.groups()
    assert "Gloo" in cause or "peer" in cause, cause
    steps = sorted(int(p.name) for p in (workdir / "gossip_vc" / "checkpoints").iterdir()
                   if p.name.isdigit())
    assert int(tick) == steps[-1] >= 20 and where.endswith(f"checkpoints/{tick}"), (tick, steps)
    assert "vanish.run" in command and "--config.run.process_id=0" in command, command
    # The same two commands resume from that checkpoint and finish.
    port = _free_port()
    procs = [_start(workdir, cache, port, i) for i in range(2)]
    try:
        for proc, log in procs:
            assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        for proc, _ in procs:
            proc.kill()
            proc.wait()
    for _, log in procs:
        assert f"[gossip_vc] resuming at tick {tick}" in log.read_text()
    assert json.loads((workdir / "summary.json").read_text())["gossip_vc"]["final_tick"] == 400
