"""The command line: run a config's algorithms side by side, with metrics, plots and resume.

    python -m vanish.run --config experiments/default/config.py --workdir runs/default \
        [--config.num_nodes=64 --config.algorithms=fl,gossip,gossip_vc ...]

Writes into the workdir: metrics.jsonl (one row per algorithm per evaluation), config.json,
summary.json, accuracy.png, variance.png, summary.md, and <algorithm>/checkpoints/<tick>/. Running
the same command again resumes every algorithm from its last checkpoint (the newest one that
reads back); a finished algorithm is not rerun.

Bad input (config, files, workdir, data) is refused with one line naming it, before anything
is written: the command line checks what it can before importing jax (vanish/cli.py,
`config.validate`, `config.check_workdir`), `train_and_evaluate` the graph and the data.
"""

from __future__ import annotations

# `python -m vanish.run`: the light front end checks the flags, the config and the workdir
# before jax and the engine (below) load, then runs train_and_evaluate from this module
# imported as vanish.run; it never returns. (Not named `cli`: this module defines cli below.)
if __name__ == "__main__":
    from vanish.cli import cli as front_end

    front_end()

import hashlib
import json
import logging
import math
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from vanish import build, checkpoint, metrics, plots, runtime, tracking
from vanish import config as config_lib
from vanish import data as data_lib
from vanish import partition as partition_lib
from vanish import topology as topology_lib
from vanish.partition import format_label_histogram
from vanish.simulation import Simulation, build_topology
from vanish.errors import WorkdirConflictError

log = logging.getLogger("vanish")



def config_hash(cfg: ml_collections.ConfigDict) -> str:
    items = {k: v for k, v in cfg.to_dict().items() if k not in config_lib.RESULT_NEUTRAL}
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_workdir_config(cfg: ml_collections.ConfigDict, workdir: Path, *,
                         write: bool = True) -> None:
    """Refuses to mix two configs in one workdir, before any algorithm runs.

    The first run records its config hash in workdir/run_config.json (unless `write` is
    False: check only); a later run with a different result-relevant config raises
    (result-neutral fields such as algorithms, eval_every or wandb may change).
    """
    path = Path(workdir) / "run_config.json"
    want = config_hash(cfg)
    if path.exists():
        try:
            have = json.loads(path.read_text(encoding="utf-8"))["config_hash"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            raise config_lib.WorkdirError(
                f"{path} is corrupt or unreadable ({type(e).__name__}: {e}); it records the "
                "config this workdir was first run with: restore it, or use a new --workdir; "
                "nothing was changed") from None
        if have != want:
            raise WorkdirConflictError(
                f"{workdir} holds a run with a different config: the config changed (hash "
                f"{have} != {want}). Use a new --workdir, or restore the old config; nothing "
                "was overwritten.")
        return
    if write:
        path.write_text(json.dumps(dict(config_hash=want, config=cfg.to_dict()), indent=1,
                                   default=str))


def load_dataset(cfg: ml_collections.ConfigDict) -> data_lib.Dataset:
    return data_lib.load(cfg.dataset, data_dir=cfg.data_dir or None, download=bool(cfg.download),
                         seed=int(cfg.seed),
                         num_train=int(cfg.synthetic_train), num_test=int(cfg.synthetic_test))


summarize = metrics.summarize  # the one definition lives in vanish/metrics.py


class Interrupted(SystemExit):
    """SIGINT / SIGTERM stopped a run at a tick boundary, after a checkpoint there.

    A SystemExit, so the CLI ends without a traceback with status 128 + the signal number
    (130 for SIGINT, 143 for SIGTERM); rerunning the same command resumes at `tick`.
    """

    def __init__(self, signum: int, algorithm: str, tick: int) -> None:
        super().__init__(128 + signum)
        self.signum, self.algorithm, self.tick = signum, algorithm, tick


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _ignore_signal(signum: int, frame: Any) -> None:
    del signum, frame  # StopRequest's thread reads the signal from the wakeup pipe


class StopRequest:
    """While active (`with`, main thread), SIGINT / SIGTERM ask the tick loop to stop.

    The first signal sets `signum` and says so on stderr; `run_algorithm` polls `requested`
    between its compiled calls, writes a checkpoint and raises `Interrupted`. A second signal
    exits the process at once (status 128 + signum) without a checkpoint: the last complete
    one stays, as after kill -9. A thread reads the signals from a wakeup pipe, so the second
    one is honoured even while the main thread waits in XLA or in a checkpoint write (a Python
    handler would only run once the main thread is back in the interpreter). Inert outside
    the main thread; the previous handlers are restored on exit.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._active = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._r, self._w = os.pipe()
        try:
            os.set_blocking(self._w, False)  # the C signal handler must never block on it
            self._old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        except (OSError, ValueError):  # a platform without wakeup pipes: stay inert
            os.close(self._r)
            os.close(self._w)
            return self
        self._old = {s: signal.signal(s, _ignore_signal) for s in STOP_SIGNALS}
        self._thread = threading.Thread(target=self._watch, name="vanish-signals", daemon=True)
        self._thread.start()
        self._active = True
        return self

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self._r, 64)
            except OSError:
                return
            if not data:  # __exit__ closed the write end
                return
            for signum in data:  # one byte per signal, also other handled signals
                if signum not in STOP_SIGNALS:
                    continue
                name = signal.Signals(signum).name
                if self.signum is None:
                    self.signum = signum
                    _say(f"vanish: {name}: stopping at the next tick boundary after a "
                         f"checkpoint (send {name} again to exit at once)")
                else:
                    _say(f"vanish: second {name}: exiting at once; the last complete "
                         "checkpoint is kept")
                    os._exit(128 + signum)

    def __exit__(self, *exc: object) -> None:
        if not self._active:
            return
        self._active = False
        for s, handler in self._old.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        signal.set_wakeup_fd(self._old_fd)
        os.close(self._w)
        self._thread.join(timeout=1.0)
        if not self._thread.is_alive():  # never close an fd that a thread still reads
            os.close(self._r)


def _say(line: str) -> None:
    os.write(2, (line + "\n").encode())


class _Pacer:
    """Lengths (in ticks) of the run_ticks calls of a segment: about `target_s` of work each.

    The loop waits for each call, so a stop request is honoured within about `target_s`.
    Results do not depend on how a segment is split (run_ticks runs the same chunks in the
    same order; tests/test_simulation.py checks it).
    """

    def __init__(self, target_s: float = 0.1) -> None:
        self.target_s, self.ticks = target_s, 1

    def update(self, ticks: int, seconds: float) -> None:
        want = int(ticks / max(seconds, 1e-6) * self.target_s)
        self.ticks = max(1, min(want, 4 * self.ticks))  # grow gradually, shrink at once


def run_algorithm(cfg: ml_collections.ConfigDict, algorithm: str, dataset: data_lib.Dataset,
                  workdir: Path, writers: dict[str, tracking.MetricWriter], *,
                  progress: bool | None = None, stop: StopRequest | None = None
                  ) -> dict[str, Any]:
    """Runs (or resumes) one algorithm to cfg.ticks and returns its summary.

    Its metric writer is stored in `writers[algorithm]`; the caller closes it after the
    comparison figures of all algorithms have been written to it too.

    SIGINT / SIGTERM (see `StopRequest`; `stop` may be shared by several calls) stop it
    between two compiled calls: it writes a checkpoint at that tick and raises `Interrupted`
    after one stderr line saying how to resume. Metrics rows are written before the
    checkpoint of their tick and rows past the restored checkpoint are dropped on resume, so
    a kill -9 at any point resumes to the uninterrupted result.
    """
    if stop is None:
        with StopRequest() as stop:
            return run_algorithm(cfg, algorithm, dataset, workdir, writers, progress=progress,
                                 stop=stop)
    sim = Simulation(cfg, algorithm, dataset)
    ckpt_dir = workdir / algorithm  # checkpoints in workdir/<algorithm>/checkpoints/<tick>
    state = sim.init_state()
    var0: dict[str, float] = {}
    start = 0
    meta_expected = dict(config_hash=config_hash(cfg), schedule=sim.schedule.fingerprint())
    if checkpoint.latest_step(ckpt_dir) is not None:
        state, var0, start = _resume(ckpt_dir, state, algorithm, workdir, meta_expected)
    # Several processes (multi-host): all compute, process 0 alone writes metrics and
    # figures (checkpoints are written by all, each its own shards; orbax syncs them).
    primary = jax.process_index() == 0
    writer = writers[algorithm] = tracking.make_writers(
        workdir, algorithm, wandb=bool(cfg.wandb), project=cfg.wandb_project,
        group=workdir.name, config=dict(cfg.to_dict(), algorithm=algorithm),
        # A fresh start writes tick 0 again: drop every row of this algorithm (left by a run
        # interrupted before its first checkpoint), not only those past the start tick.
        wandb_mode=cfg.wandb_mode or None, resume_tick=start if start else -1,
    ) if primary else tracking.MultiWriter([])
    ticks, every = int(cfg.ticks), max(1, int(cfg.eval_every))
    ckpt_every = int(cfg.checkpoint_every) or every
    saved = start  # the newest checkpoint's tick (0: none)

    def save(tick: int) -> None:
        nonlocal saved
        checkpoint.save(ckpt_dir, tick, state, keep=int(cfg.keep_checkpoints),
                        metadata=dict(meta_expected, var0=var0, algorithm=algorithm))
        saved = tick

    if start == 0:
        hist = format_label_histogram(sim.label_hist)
        log.info("[%s] %s, %d nodes, K=%d slots, %d chunks; per-node label histogram:\n%s",
                 algorithm, sim.topo.name, sim.n, sim.work.slots, len(sim.work), hist)
        writer.write_text("label_histogram", hist)
        state, m = sim.evaluate(state)
        var0 = metrics.initial_variances(m)
        _write(writer, 0, m, var0, ticks_per_s=0.0)
    bar = tracking.ProgressBar(ticks, desc=algorithm, enabled=progress if primary else False,
                               initial=start)
    pacer = _Pacer()
    t = start
    while t < ticks and not stop.requested:
        t0, t_next = t, min(ticks, (t // every + 1) * every)
        t_wall = time.perf_counter()
        while t < t_next and not stop.requested:  # the segment in calls of ~0.1 s each
            t1, t_call = min(t_next, t + pacer.ticks), time.perf_counter()
            state = jax.block_until_ready(sim.run_ticks(state, t, t1))
            pacer.update(t1 - t, time.perf_counter() - t_call)
            t = t1
        if t < t_next:
            break  # stopped inside the segment
        state, m = sim.evaluate(state)
        rate = (t_next - t0) / max(time.perf_counter() - t_wall, 1e-9)
        if not all(math.isfinite(m[k]) for k in ("loss_mean", "acc_mean")):
            raise FloatingPointError(
                f"[{algorithm}] non-finite loss at tick {t_next} (lr too high?); metrics up "
                f"to tick {t0} and the last checkpoint are kept in {workdir}")
        _write(writer, t_next, m, var0, ticks_per_s=rate)  # the row first, then its checkpoint
        bar.update(t_next - t0, acc=f"{m['acc_mean']:.3f}", tps=f"{rate:.0f}")
        if t_next % ckpt_every == 0 or t_next == ticks or stop.requested:
            save(t_next)
    bar.close()
    if t < ticks:  # stopped by a signal
        if t > saved:
            save(t)
        raise _interrupted(stop, algorithm, t, ticks, saved)
    # (Other processes read process 0's rows: its last row precedes the final checkpoint,
    # whose save every process waited for.)
    records = [r for r in tracking.read_jsonl(workdir / tracking.METRICS_FILE)
               if r["algorithm"] == algorithm]
    summary = summarize(records, float(cfg.target_accuracy))
    writer.write_summary(summary)
    if stop.requested:  # the signal came after the last tick: this algorithm is complete
        raise _interrupted(stop, algorithm, t, ticks, saved)
    return summary


def _interrupted(stop: StopRequest, algorithm: str, tick: int, ticks: int,
                 saved: int) -> Interrupted:
    assert stop.signum is not None
    where = (f"checkpoint at tick {saved}" if saved else
             "no checkpoint yet: it starts over")
    print(f"vanish: stopped by {signal.Signals(stop.signum).name}: {algorithm} at tick {tick} "
          f"of {ticks} ({where}); to resume, run the same command again: "
          f"{shlex.join(sys.orig_argv)}", file=sys.stderr, flush=True)
    return Interrupted(stop.signum, algorithm, tick)


def _resume(ckpt_dir: Path, state: Any, algorithm: str, workdir: Path,
            meta_expected: dict[str, Any]) -> tuple[Any, dict[str, float], int]:
    """(state, var0, start tick) from the newest checkpoint that reads back.

    Damaged newer checkpoints are skipped with a warning (resaving their ticks replaces
    them). If none reads back, the algorithm starts afresh only when that loses nothing (no
    metric rows of it past tick 0); otherwise CheckpointDamagedError, nothing changed.
    """
    try:
        restored, meta, step, damaged = checkpoint.restore_latest_intact(ckpt_dir, state)
    except checkpoint.CheckpointDamagedError as e:
        metrics_file = workdir / tracking.METRICS_FILE
        rows = [r for r in tracking.read_jsonl(metrics_file)
                if r.get("algorithm") == algorithm and r.get("tick", 0) > 0
                ] if metrics_file.exists() else []
        if rows:
            raise checkpoint.CheckpointDamagedError(
                f"[{algorithm}] {e}; starting {algorithm} afresh would drop its metrics up to "
                f"tick {rows[-1]['tick']}. Move {checkpoint.checkpoint_dir(ckpt_dir)} away to "
                "restart it, or use a new --workdir; nothing was changed") from None
        log.warning("[%s] %s; nothing of it was recorded, so it starts afresh", algorithm, e)
        return state, {}, 0
    for bad_step, why in damaged:
        log.warning("[%s] checkpoint %s is damaged (%s); resuming from checkpoint %d instead",
                    algorithm, checkpoint.checkpoint_dir(ckpt_dir) / str(bad_step), why, step)
    for key, want in meta_expected.items():
        if meta.get(key) != want:
            raise WorkdirConflictError(
                f"{ckpt_dir} holds a checkpoint of a different run ({key} "
                f"{meta.get(key)} != {want}): the config changed. Use a new --workdir, "
                "or restore the old config; nothing was overwritten.")
    start = int(restored.tick)
    log.info("[%s] resuming at tick %d", algorithm, start)
    return restored, meta["var0"], start


def _write(writer: tracking.MetricWriter, tick: int, m: dict[str, Any], var0: dict[str, float],
           ticks_per_s: float) -> None:
    ratios = metrics.variance_ratios(m, var0)
    writer.write_scalars(tick, {**m, **ratios, "ticks_per_s": ticks_per_s})


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str | Path, *,
                       progress: bool | None = None) -> dict[str, dict[str, Any]]:
    """Runs every algorithm of cfg.algorithms on the same data and seeds; returns summaries.

    Bad input raises before the workdir is touched: ConfigError (a field, the graph, the data,
    the workdir), WorkdirConflictError (the workdir holds another config's run),
    DatasetUnavailableError.
    """
    config_lib.validate(cfg)  # every field
    algorithms = config_lib.parse_algorithms(cfg.algorithms)
    workdir = config_lib.check_workdir(workdir, algorithms)  # writable, its run files readable
    check_workdir_config(cfg, workdir, write=False)
    if cfg.distributed:  # first: no JAX backend may start before the processes join
        index, count = runtime.join_processes(cfg.coordinator_address,
                                              int(cfg.num_processes), int(cfg.process_id))
        log.info("process %d of %d: %d of the %d devices", index, count,
                 jax.local_device_count(), jax.device_count())
    # The graph of every algorithm: 'fl' / 'single' ignore cfg.topology, so a bad topology
    # would otherwise surface only after they had trained.
    check_graphs(cfg, algorithms)
    dataset = load_dataset(cfg)
    check_data(cfg, dataset, algorithms)
    log.info("dataset %s: %d train / %d test, backend %s", dataset.name, len(dataset.y_train),
             len(dataset.y_test), jax.default_backend())
    workdir.mkdir(parents=True, exist_ok=True)  # the first write: every check has passed
    primary = jax.process_index() == 0
    check_workdir_config(cfg, workdir, write=primary)
    writers: dict[str, tracking.MetricWriter] = {}
    try:
        summaries = {a: run_algorithm(cfg, a, dataset, workdir, writers, progress=progress)
                     for a in algorithms}
        if primary:
            acc_png, var_png = plots.plot_run(workdir, target=float(cfg.target_accuracy))
            for writer in writers.values():  # the comparison figures into every algorithm's run
                writer.write_image(int(cfg.ticks), "accuracy", acc_png)
                writer.write_image(int(cfg.ticks), "variance", var_png)
    finally:
        for writer in writers.values():
            writer.close()
    if primary:
        table = plots.summary_table(summaries, markdown=True)
        (workdir / "summary.md").write_text(table + "\n")
        log.info("results in %s (summary.md, summary.json, accuracy.png, variance.png)", workdir)
    return summaries


def check_graphs(cfg: ml_collections.ConfigDict, algorithms: list[str]) -> None:
    """Builds every algorithm's graph; a merge threshold above a node's in-degree is refused
    (that node could never merge)."""
    threshold = int(cfg.threshold)
    for name in algorithms:
        try:
            topo = build_topology(cfg, name)
        except topology_lib.TopologyError as e:
            raise topology_lib.TopologyError(
                f"config.topology = {cfg.topology!r} (num_nodes={cfg.num_nodes}): {e}") from None
        algo = build.algorithm(cfg, name)
        if threshold > 0 and algo.topology == "graph" and algo.schedule == "gossip":
            node = int(np.argmin(topo.degree))
            if threshold > int(topo.degree[node]):
                raise config_lib.ConfigError(
                    f"config.threshold = {threshold} exceeds the in-degree "
                    f"{int(topo.degree[node])} of node {node} in {topo.name} ({name}): that node "
                    "could never merge; use a threshold <= the smallest in-degree, or 0 (each "
                    "node's own in-degree)")


def check_data(cfg: ml_collections.ConfigDict, dataset: data_lib.Dataset,
               algorithms: list[str]) -> None:
    """Refuses a partition the data cannot fill, a batch larger than a node's data, and more
    test images per class than the test set holds; runs on the host, before any training."""
    per_class = np.bincount(dataset.y_test, minlength=dataset.num_classes)
    if int(cfg.test_per_class) > int(per_class.min()):
        raise config_lib.ConfigError(
            f"config.test_per_class = {cfg.test_per_class} but class {int(per_class.argmin())} "
            f"of the {dataset.name} test set has only {int(per_class.min())} images")
    clients = int(cfg.num_nodes) if set(algorithms) - {"single"} else 1
    try:
        part = build.partition_for(cfg, np.asarray(dataset.y_train), clients)
    except partition_lib.PartitionError as e:
        raise partition_lib.PartitionError(
            f"config.partition = {cfg.partition!r} ({clients} nodes, {len(dataset.y_train)} "
            f"training examples of {dataset.name}): {e}") from None
    # A node draws from the groups it has positive probability for: that is its data.
    held = (part.node_group_prob > 0).astype(np.int64) @ part.group_size.astype(np.int64)
    node = int(np.argmin(held))
    if int(cfg.batch_size) > int(held[node]):
        raise config_lib.ConfigError(
            f"config.batch_size = {cfg.batch_size} is larger than node {node}'s data "
            f"({int(held[node])} training examples of {dataset.name} under partition "
            f"{cfg.partition!r} over {clients} nodes); use a smaller batch_size or fewer nodes")


# Errors caused by the config, the files, the workdir or the data (vanish raises them on
# purpose), reported by the command line as one line; any other exception is a bug and keeps
# its traceback. TopologyError, PartitionError, DatasetError and WorkdirError are ConfigErrors.
USER_ERRORS: tuple[type[BaseException], ...] = (
    config_lib.ConfigError, WorkdirConflictError, data_lib.DatasetUnavailableError,
    checkpoint.CheckpointMismatchError, checkpoint.CheckpointDamagedError,
    checkpoint.CheckpointWriteError, FloatingPointError, runtime.DistributedError)


def cli() -> None:
    """The `vanish` console script (pyproject.toml): the same as `python -m vanish.run`."""
    from vanish.cli import cli as front_end

    front_end()
