"""Faults in a real process: kill -9 at random points, SIGINT / SIGTERM, a second signal.

Every run is a real `python -m vanish.run` subprocess on a tiny synthetic config (8 nodes,
MLP, 2 algorithms x 300 ticks, evaluation and checkpoint every 50 ticks; a few seconds each).
One uninterrupted run is the reference (`reference`, shared by the module); each test
interrupts the same command several times in one workdir, reruns it to the end and compares
bit for bit: the metrics rows of every algorithm (without the ticks_per_s timing),
summary.json and the final checkpoint's state.

To stop a run inside a checkpoint write, `_HOOK` runs the same CLI with os.rename wrapped:
before orbax commits the named step (renames its `<step>.orbax-checkpoint-tmp-*` directory,
complete but uncommitted, to `<step>`) it prints PAUSED-IN-CHECKPOINT and sleeps.

Random kill delays come from a seed printed in every failure message; VANISH_FAULT_SEED=<n>
repeats one.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

from vanish import checkpoint, tracking

ROOT = Path(__file__).resolve().parents[1]
ALGORITHMS = ("gossip", "gossip_vc")
TICKS, EVERY = 300, 50
EVAL_TICKS = list(range(0, TICKS + 1, EVERY))
WAIT_S = 180  # generous: CI machines are slow and shared

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

CONFIG = f'''
from vanish import config


def get_config():
    c = config.default_config()
    c.data.name = "synthetic"
    c.dataset_args.synthetic.num_train = 800
    c.dataset_args.synthetic.num_test = 200
    c.data.test_per_class = 5
    c.model.name, c.optim.batch_size, c.optim.lr, c.optim.momentum = "mlp", 8, 0.05, 0.9
    c.topology.num_nodes, c.topology.name = 8, "random_regular"
    c.topology_args.random_regular.degree = 3
    c.run.ticks = {TICKS}
    c.run.eval_every = {EVERY}
    c.run.checkpoint_every = 0
    c.run.keep_checkpoints = 2
    c.schedule.interval_lo = 2
    c.schedule.interval_hi = 4
    c.schedule.send_every = 2
    c.schedule.first_tick = "random"
    c.algorithms = "{','.join(ALGORITHMS)}"
    c.run.wandb = False
    return c
'''

# VANISH_TEST_PAUSE_IN_CHECKPOINT=<algorithm>/<step>:<seconds or inf>
_HOOK = r'''
import os, runpy, sys, time
where, _, seconds = os.environ["VANISH_TEST_PAUSE_IN_CHECKPOINT"].rpartition(":")
algorithm, step = where.split("/")
final = os.sep + os.path.join(algorithm, "checkpoints", step)
real_rename = os.rename

def rename(src, dst, *args, **kwargs):
    if ".orbax-checkpoint-tmp" in os.fspath(src) and os.fspath(dst).endswith(final):
        print("PAUSED-IN-CHECKPOINT", os.fspath(src), file=sys.stderr, flush=True)
        end = time.monotonic() + float(seconds)
        while time.monotonic() < end:
            time.sleep(0.05)
    return real_rename(src, dst, *args, **kwargs)

os.rename = rename
runpy.run_module("vanish.run", run_name="__main__", alter_sys=True)
'''


@pytest.fixture(scope="module")
def seed():
    return int(os.environ.get("VANISH_FAULT_SEED", random.randrange(10**6)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    (base / "config.py").write_text(CONFIG)
    env = dict(os.environ, VANISH_TCMALLOC="0", JAX_PLATFORMS="cpu", WANDB_MODE="disabled",
               PYTHONUNBUFFERED="1",
               # Later processes load the compiled steps of the first one (same programs).
               JAX_COMPILATION_CACHE_DIR=str(base / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.2",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env.pop("VANISH_TEST_PAUSE_IN_CHECKPOINT", None)
    return base, env


class Cli:
    """One run of the CLI (or of `_HOOK` around it) in the background, output in files."""

    def __init__(self, setup, workdir: Path, *, pause: str | None = None) -> None:
        base, env = setup
        args = ["--config", str(base / "config.py"), "--workdir", str(workdir)]
        prog = ["-c", _HOOK] if pause else ["-m", "vanish.run"]
        if pause:
            env = dict(env, VANISH_TEST_PAUSE_IN_CHECKPOINT=pause)
        workdir.parent.mkdir(parents=True, exist_ok=True)
        self.err_path = workdir.parent / f"{workdir.name}.{time.monotonic_ns()}.stderr"
        self._err = open(self.err_path, "w")  # pylint: disable=consider-using-with
        self.proc = subprocess.Popen([sys.executable, *prog, *args], cwd=ROOT, env=env,
                                     stdout=subprocess.DEVNULL, stderr=self._err)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while text not in self.stderr:
            if self.proc.poll() is not None:
                pytest.fail(f"exited ({self.proc.returncode}) before {text!r}:\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {text!r} within {WAIT_S} s:\n{self.tail()}")
            time.sleep(0.01)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = WAIT_S) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._err.close()

    def tail(self) -> str:
        return self.stderr[-3000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


@pytest.fixture
def cli(setup):
    """Starts CLI runs; kills any still running at the end of the test."""
    runs = []

    def start(workdir, **kw):
        runs.append(Cli(setup, workdir, **kw))
        return runs[-1]

    yield start
    for run in runs:
        run.kill()


@pytest.fixture(scope="module")
def reference(setup):
    workdir = setup[0] / "reference"
    run = Cli(setup, workdir)
    assert run.wait() == 0, run.tail()
    return workdir


def _rows(workdir: Path, algorithm: str | None = None) -> list[dict]:
    rows = tracking.read_jsonl(workdir / tracking.METRICS_FILE)
    return [r for r in rows if algorithm in (None, r["algorithm"])]


def _ticks(workdir: Path, algorithm: str) -> list[int]:
    return [r["tick"] for r in _rows(workdir, algorithm)]


def _final_state(workdir: Path, algorithm: str) -> tuple[int, dict]:
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

    step = checkpoint.latest_step(workdir / algorithm)
    path = checkpoint.checkpoint_dir(workdir / algorithm) / str(step) / "state"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sharding info not provided": restored as saved
        return step, ocp.PyTreeCheckpointer().restore(path)


def assert_same_result(workdir: Path, reference: Path, note: str) -> None:
    def timeless(rows):
        return [{k: v for k, v in r.items() if k != "ticks_per_s"} for r in rows]

    for algorithm in ALGORITHMS:  # each algorithm's rows in order (across them: any order)
        assert _ticks(workdir, algorithm) == EVAL_TICKS, (note, algorithm)
        assert (timeless(_rows(workdir, algorithm)) == timeless(_rows(reference, algorithm))
                ), (note, algorithm)
    assert (json.loads((workdir / "summary.json").read_text())
            == json.loads((reference / "summary.json").read_text())), note
    for algorithm in ALGORITHMS:
        (step, got), (ref_step, want) = (_final_state(workdir, algorithm),
                                         _final_state(reference, algorithm))
        assert step == ref_step == TICKS, (note, algorithm)
        got_leaves, got_def = jax.tree_util.tree_flatten_with_path(got)
        want_leaves, want_def = jax.tree_util.tree_flatten_with_path(want)
        assert got_def == want_def, (note, algorithm)
        for (path, a), (_, b) in zip(got_leaves, want_leaves):
            a, b = np.asarray(a), np.asarray(b)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (
                note, algorithm, jax.tree_util.keystr(path))
        leftovers = [p.name for p in checkpoint.checkpoint_dir(workdir / algorithm).iterdir()
                     if not p.name.isdigit()]
        assert not leftovers, (note, algorithm, leftovers)  # crashed saves were cleaned up


def _tmp_checkpoints(workdir: Path, algorithm: str) -> list[str]:
    return [p.name for p in checkpoint.checkpoint_dir(workdir / algorithm).iterdir()
            if ".orbax-checkpoint-tmp" in p.name]


# ----------------------------------------------------------------------------- kill -9


@pytest.mark.slow
def test_kill9_at_three_points_then_rerun_is_bit_identical(reference, cli, tmp_path, seed):
    rng = random.Random(seed)
    delays = [rng.uniform(0.0, 0.6), rng.uniform(0.0, 0.3)]
    note = f"seed {seed}, delays {delays}"
    workdir = tmp_path / "run"

    # 1. Inside a checkpoint write: gossip's step 100 is complete in its temporary directory
    #    but not committed (renamed) yet. Its metrics row for tick 100 is already written.
    run = cli(workdir, pause="gossip/100:inf")
    run.wait_for("PAUSED-IN-CHECKPOINT")
    run.signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL
    assert _tmp_checkpoints(workdir, "gossip"), "the uncommitted step should be left behind"
    assert checkpoint.all_steps(workdir / "gossip") == [EVERY]  # the tmp dir is no step
    assert _ticks(workdir, "gossip") == [0, 50, 100]

    # 2. At a random moment of gossip's resumed run (restore, replay, evaluation, save...).
    run = cli(workdir)
    run.wait_for(f"[gossip] resuming at tick {EVERY}")
    time.sleep(delays[0])
    run.signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL, note
    tracking.read_jsonl(workdir / tracking.METRICS_FILE)  # still readable

    # 3. At a random moment of the second algorithm, past its tick-100 evaluation.
    run = cli(workdir)
    run.wait_for("[gossip_vc] tick 100 |")
    time.sleep(delays[1])
    run.signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL, note
    assert checkpoint.latest_step(workdir / "gossip") == TICKS, note

    # The same command once more finishes the run: rows past the restored checkpoints were
    # dropped and replayed, the uncommitted step ignored and cleaned up.
    run = cli(workdir)
    assert run.wait() == 0, run.tail()
    assert_same_result(workdir, reference, note)


# ------------------------------------------------- a second run, a damaged log or checkpoint


@pytest.mark.slow
def test_two_concurrent_starts_one_runs_one_is_refused(reference, cli, tmp_path):
    """The second start, while the first holds the workdir (paused in a checkpoint write),
    is refused naming the first's pid and changes nothing; the first finishes right."""
    workdir = tmp_path / "run"
    first = cli(workdir, pause="gossip/100:3")
    first.wait_for("PAUSED-IN-CHECKPOINT")
    second = cli(workdir)
    assert second.wait() == 1, second.tail()
    assert re.search(rf"vanish: error: {re.escape(str(workdir))} is in use by another vanish "
                     rf"run: pid {first.proc.pid} on host", second.stderr), second.tail()
    assert "Traceback" not in second.stderr
    assert first.wait() == 0, first.tail()
    assert_same_result(workdir, reference, "two starts")


@pytest.mark.slow
def test_a_damaged_metrics_log_resumes_to_the_same_result(reference, cli, tmp_path):
    """A finished run loses its last rows and its last line is cut: the same command
    recomputes them (from the newest checkpoint whose rows are intact)."""
    import shutil

    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    log = workdir / tracking.METRICS_FILE
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-3]) + lines[-3][:25])
    run = cli(workdir)
    assert run.wait() == 0, run.tail()
    assert_same_result(workdir, reference, "damaged log")


@pytest.mark.slow
def test_a_damaged_checkpoint_falls_back_to_the_same_result(reference, cli, tmp_path):
    """gossip_vc's newest checkpoint (tick 300) has a corrupt array file and gossip's is
    gone: both resume from tick 250 with a warning naming the damaged step and replay."""
    import shutil

    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    newest = checkpoint.checkpoint_dir(workdir / "gossip_vc") / str(TICKS)
    arrays = sorted((f for f in newest.rglob("*") if f.is_file() and f.parent.name == "d"),
                    key=lambda f: f.stat().st_size)
    arrays[-1].write_bytes(b"\0" * arrays[-1].stat().st_size)
    shutil.rmtree(checkpoint.checkpoint_dir(workdir / "gossip") / str(TICKS) / "state")
    for name in ("summary.json", "summary.md"):
        (workdir / name).unlink()
    run = cli(workdir)
    assert run.wait() == 0, run.tail()
    for algorithm in ALGORITHMS:
        assert re.search(rf"{algorithm}/checkpoints/{TICKS} is damaged .*checkpoint "
                         rf"{TICKS - EVERY}", run.stderr), run.tail()
    assert_same_result(workdir, reference, "damaged checkpoints")


# --------------------------------------------------------------------- SIGINT / SIGTERM

_STOPPED = re.compile(r"vanish: stopped by (SIG\w+): (\w+) at tick (\d+) of (\d+) "
                      r"\(checkpoint at tick (\d+)\); to resume, run the same command again: "
                      r"(.*)")


def _stopped(run: Cli) -> tuple[str, str, int, int, str]:
    lines = [m for m in map(_STOPPED.match, run.stderr.splitlines()) if m]
    assert len(lines) == 1, run.tail()
    name, algorithm, tick, ticks, saved, command = lines[0].groups()
    assert int(ticks) == TICKS and int(saved) == int(tick), run.tail()
    assert "Traceback" not in run.stderr, run.tail()
    return name, algorithm, int(tick), command


@pytest.mark.slow
def test_sigint_sigterm_and_a_second_signal(reference, cli, tmp_path):
    workdir = tmp_path / "run"

    # 1. SIGINT while gossip trains: it stops between two compiled calls, writes a
    #    checkpoint at that tick, says how to resume and exits with 130.
    run = cli(workdir)
    run.wait_for("[gossip] tick 50 |")
    run.signal(signal.SIGINT)
    assert run.wait() == 130, run.tail()
    name, algorithm, tick, command = _stopped(run)
    assert (name, algorithm) == ("SIGINT", "gossip") and 50 <= tick < TICKS, run.tail()
    assert "--workdir " + str(workdir) in command and "vanish.run" in command
    assert "stopping at the next tick boundary" in run.stderr
    assert checkpoint.latest_step(workdir / "gossip") == tick
    assert max(_ticks(workdir, "gossip")) <= tick  # no row past the checkpoint

    # 2. SIGTERM while a checkpoint is being written: the write completes, then it stops
    #    there and exits with 143.
    run = cli(workdir, pause="gossip_vc/100:0.5")
    run.wait_for("PAUSED-IN-CHECKPOINT")
    run.signal(signal.SIGTERM)
    assert run.wait() == 143, run.tail()
    assert _stopped(run)[:3] == ("SIGTERM", "gossip_vc", 100)
    assert checkpoint.latest_step(workdir / "gossip") == TICKS  # resumed and finished
    assert checkpoint.latest_step(workdir / "gossip_vc") == 100
    assert "gossip" in json.loads((workdir / "summary.json").read_text())

    # 3. A second SIGINT exits at once, even with the main thread stuck in a checkpoint
    #    write: no new checkpoint, status 130.
    run = cli(workdir, pause="gossip_vc/200:inf")
    run.wait_for("PAUSED-IN-CHECKPOINT")
    run.signal(signal.SIGINT)
    run.wait_for("stopping at the next tick boundary")
    time.sleep(0.3)
    assert run.proc.poll() is None, "the first signal must wait for the checkpoint"
    run.signal(signal.SIGINT)
    assert run.wait(timeout=10) == 130, run.tail()
    assert "second SIGINT: exiting at once" in run.stderr
    assert checkpoint.latest_step(workdir / "gossip_vc") == 150
    assert _tmp_checkpoints(workdir, "gossip_vc")

    # The same command resumes gossip_vc at 150 and ends bit-identical.
    run = cli(workdir)
    assert run.wait() == 0, run.tail()
    assert "[gossip_vc] resuming at tick 150" in run.stderr
    assert_same_result(workdir, reference, "signals")


def test_stop_request_turns_a_signal_into_a_flag_and_restores_the_handlers():
    from vanish import signals  # pylint: disable=import-outside-toplevel

    def handlers():
        fd = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(fd)
        return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), fd

    before = handlers()
    with signals.StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)  # would end pytest without the StopRequest
        deadline = time.monotonic() + 10
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop.signum == signal.SIGTERM
    assert handlers() == before
