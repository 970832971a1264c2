"""Training and evaluation of a checked Experiment: the tick loop, metrics, checkpoints, resume.

    experiment = build.experiment(cfg)
    summaries = train.train_and_evaluate(experiment, "runs/default")

    sim = train.Simulation(experiment, "gossip_vc")      # one algorithm, for your own loop
    state = sim.init_state()
    state = sim.run_ticks(state, 0, 100)                  # device work; no host transfer
    state, row = sim.evaluate(state)                      # the only host pull

Writes into the workdir: run_config.json, metrics.jsonl (one row per algorithm per
evaluation), summary.json, summary.md, accuracy.png, variance.png and
<algorithm>/checkpoints/<tick>/. Running again resumes every algorithm from its newest
checkpoint that reads back; a finished algorithm is not rerun.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import math
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vanish import (build, checkpoint, engine, lock, metrics, nodes, plots, results, runtime,
                    tracking, workdir)
from vanish.engine import SimState
from vanish.errors import CheckpointDamagedError, CheckpointMismatchError, WorkdirConflictError
from vanish.partition import format_label_histogram
from vanish.signals import Interrupted, StopRequest

log = logging.getLogger("vanish")


class Simulation:
    """One algorithm of an Experiment: its parts, its engine and its evaluator."""

    def __init__(self, exp: build.Experiment, name: str):
        c = self.components = build.components(exp, name)
        self.name, self.algo, self.topo, self.n = name, c.algorithm, c.topology, c.topology.n
        self.schedule, self.work, self.network = c.schedule, c.work, c.network
        init = functools.partial(nodes.init_params, c.model, c.keys["init"], self.n,
                                 c.input_shape, shared=c.algorithm.caps.shared_init)
        self.engine = engine.Engine(
            c.algorithm, nodes.make_train_step(c.model, c.tx), c.tx, init, c.work, c.consts,
            batch_size=c.batch_size, train_key=c.keys["train"], fuse=c.fuse,
            reset_opt=c.reset_opt, merge_slots=c.merge_slots, devices=c.devices,
            network_spec=None if c.network is None else c.network.spec, halo=c.halo)
        # Accuracy is the honest nodes' (Byzantine nodes' own models are not the result).
        self.eval_mask = c.is_client if c.network is None else c.is_client & ~c.network.byzantine
        self.mesh, self.consts, self.fuse = self.engine.mesh, self.engine.consts, self.engine.fuse
        self.model, self.tx, self.is_client = c.model, c.tx, c.is_client
        self.experiment = exp
        self._eval = metrics.make_evaluator(c.model, c.eval_nodes, mesh=self.mesh)
        self.x_test, self.y_test = c.x_test, c.y_test
        self._weight = jnp.asarray(self.eval_mask, jnp.float32)
        if self.mesh is not None:  # global arrays made on every process: replicated / split
            self.x_test, self.y_test = engine._put_global((c.x_test, c.y_test),
                                                          engine._replicated(self.mesh))
            self._weight = engine._put_global(
                np.asarray(self.eval_mask, np.float32),
                jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(engine.AXIS)))

    def init_state(self) -> SimState:
        return self.engine.init_state()

    def run_ticks(self, state: SimState, t0: int, t1: int) -> SimState:
        """Runs ticks [t0, t1); asynchronous (returns before the device is done)."""
        return self.engine.run_ticks(state, t0, t1)

    def evaluate(self, state: SimState) -> tuple[SimState, dict[str, Any]]:
        """Pulls this evaluation's metrics to the host and resets the loss accumulators."""
        out = jax.device_get(self._eval(
            state.params, self.x_test, self.y_test, self._weight, state.train_count,
            state.merges, state.loss_sum, state.loss_n))
        m = metrics.to_row(out, self.eval_mask, has_server=self.algo.caps.has_server)
        if self.network is not None:
            m.update(metrics.network_row(jax.device_get(state.net_stats),
                                         self.network.online_at(int(state.tick)),
                                         self.engine.fetch(state.merges),
                                         self.components.is_client))
        traffic = self.engine.traffic_bytes(state)
        if traffic is not None:
            m.update(metrics.traffic_row(*traffic))
        if self.experiment.clock.on:  # simulated time (vanish/clock.py)
            m[metrics.SIM_SECONDS] = int(state.tick) * self.experiment.clock.tick_seconds
        state = state._replace(loss_sum=jnp.zeros_like(state.loss_sum),
                               loss_n=jnp.zeros_like(state.loss_n))
        return state, m


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


def run_algorithm(exp: build.Experiment, name: str, path: Path,
                  writers: dict[str, tracking.MetricWriter], *, progress: bool | None = None,
                  stop: StopRequest | None = None) -> dict[str, Any]:
    """Runs (or resumes) one algorithm to run.ticks and returns its summary.

    Its metric writer is stored in `writers[name]`; the caller closes it after the comparison
    figures of all algorithms have been written to it too.

    Resume (`_resume`): the newest intact checkpoint, whose metrics rows are verified against
    the log (a cut last line repaired, rows past it dropped and replayed); rows missing or
    duplicated before it fall back to an older checkpoint, or to a fresh start. A larger
    run.ticks than the checkpoint's extends the run on the same schedule (the schedule of
    [0, T) does not depend on the horizon), with the engine sizes the checkpoint ran with.

    SIGINT / SIGTERM (see `signals.StopRequest`; `stop` may be shared by several calls) stop
    it between two compiled calls: it writes a checkpoint at that tick and raises
    `Interrupted` after one stderr line saying how to resume. Metrics rows are written before
    the checkpoint of their tick, so a kill -9 at any point resumes to the uninterrupted
    result. The summary is computed only from a verified log.
    """
    if stop is None:
        with StopRequest() as stop:
            return run_algorithm(exp, name, path, writers, progress=progress, stop=stop)
    ckpt_dir = path / name  # checkpoints in workdir/<algorithm>/checkpoints/<tick>
    metrics_file = path / tracking.METRICS_FILE
    sim = Simulation(exp, name)
    state = sim.init_state()
    resumed = _resume(exp, sim, ckpt_dir, name, path, state) \
        if checkpoint.latest_step(ckpt_dir) is not None else None
    if resumed is not None:
        sim, state, var0, row_ticks = resumed
        start = int(state.tick)
    else:
        var0, row_ticks, start = {}, [], 0
        if metrics_file.exists():  # rows of a run stopped before its first checkpoint
            _reconcile(metrics_file, name, None, [])
    # Several processes (multi-host): all compute, process 0 alone writes metrics and
    # figures (checkpoints are written by all, each its own shards; orbax syncs them).
    primary = jax.process_index() == 0
    run = exp.run
    writer = writers[name] = tracking.make_writers(
        path, name, wandb=run.wandb, project=run.wandb_project, group=path.name,
        config=dict(exp.record, algorithm=name), wandb_mode=run.wandb_mode or None,
        tensorboard=run.tensorboard,
    ) if primary else tracking.MultiWriter([])
    ticks, every, ckpt_every = run.ticks, run.eval_every, run.checkpoint_every
    saved = start  # the newest checkpoint's tick (0: none)

    def save(tick: int) -> None:
        nonlocal saved
        meta = dict(config_hash=exp.config_hash, horizon=ticks,
                    schedule=sim.schedule.fingerprint(), slots=_total_slots(sim),
                    merge_slots=sim.components.merge_slots, row_ticks=row_ticks, var0=var0,
                    algorithm=name)
        checkpoint.save(ckpt_dir, tick, state, keep=run.keep_checkpoints, metadata=meta)
        saved = tick

    def write(tick: int, m: dict[str, Any], rate: float) -> None:
        _write(writer, tick, m, var0, ticks_per_s=rate)
        row_ticks.append(tick)

    if start == 0:
        hist = format_label_histogram(sim.components.label_hist)
        log.info("[%s] %s, %d nodes, K=%d slots, %d chunks, %d device(s)", name,
                 sim.topo.name, sim.n, sim.work.slots, len(sim.work), sim.components.devices)
        writer.write_text("label_histogram", "per-node label histogram\n" + hist)
        state, m = sim.evaluate(state)
        var0 = metrics.initial_variances(m)
        write(0, m, 0.0)
    bar = tracking.ProgressBar(ticks, desc=name, enabled=progress if primary else False,
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
            kept = f"the checkpoint at tick {saved} and " if saved else ""
            raise FloatingPointError(
                f"[{name}] non-finite loss at tick {t_next} (config.optim.lr = {exp.optim.lr:g}"
                f" too high?); {kept}the metrics up to tick {t0} are kept in {path}")
        write(t_next, m, rate)  # the row first, then its checkpoint
        bar.update(t_next - t0, acc=f"{m['acc_mean']:.3f}", tps=f"{rate:.0f}")
        if t_next % ckpt_every == 0 or t_next == ticks or stop.requested:
            save(t_next)
    bar.close()
    if t < ticks:  # stopped by a signal
        if t > saved:
            save(t)
        raise _interrupted(stop, name, t, ticks, saved)
    # (Other processes read process 0's rows: its last row precedes the final checkpoint,
    # whose save every process waited for.)
    summary = metrics.summarize(tracking.summary_rows(metrics_file, name, row_ticks),
                                run.target_accuracy)
    writer.write_summary(summary)
    if stop.requested:  # the signal came after the last tick: this algorithm is complete
        raise _interrupted(stop, name, t, ticks, saved)
    return summary


def _interrupted(stop: StopRequest, name: str, tick: int, ticks: int, saved: int) -> Interrupted:
    assert stop.signum is not None
    where = f"checkpoint at tick {saved}" if saved else "no checkpoint yet: it starts over"
    print(f"vanish: stopped by {signal.Signals(stop.signum).name}: {name} at tick {tick} "
          f"of {ticks} ({where}); to resume, run the same command again: "
          f"{shlex.join(sys.orig_argv)}", file=sys.stderr, flush=True)
    return Interrupted(stop.signum, name, tick)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _total_slots(sim: Simulation) -> int:
    """The chunk width over all devices (what run.slots sets)."""
    return int(sim.work.slots) * int(sim.components.devices)


def _row_ticks(meta: dict[str, Any], tick: int, every: int) -> list[int]:
    """The ticks with a metrics row up to checkpoint `tick`: as recorded with it, or (a
    checkpoint of an earlier vanish) every evaluation tick up to it."""
    if isinstance(meta.get("row_ticks"), list):
        return [int(t) for t in meta["row_ticks"] if int(t) <= tick]
    return list(range(0, tick + 1, every))


def _reconcile(metrics_file: Path, name: str, step: int | None, row_ticks: list[int]) -> None:
    """Repairs the metrics log for a resume from `step` (None: a fresh start). Only process 0
    writes the log; the others read it (they decide on the same checkpoint: a row process 0
    has dropped is missing for them too)."""
    if jax.process_index() == 0:
        tracking.reconcile_log(metrics_file, name, step, row_ticks)


# The state as checkpoints written before vanish counted messages hold it: no `traffic`.
_LEGACY_FIELDS: list[str] = [f for f in SimState._fields if f != "traffic"]
_Legacy = collections.namedtuple("SimState", _LEGACY_FIELDS)  # type: ignore[misc]


def _template(sim: Simulation) -> Any:
    """What this run's checkpoints hold: the state, or without counters the legacy one."""
    t = sim.init_state()
    return t if t.traffic is not None else _Legacy(*(getattr(t, f) for f in _LEGACY_FIELDS))


def _as_state(x: Any) -> SimState:
    return x if isinstance(x, SimState) else SimState(**x._asdict(), traffic=None)


def _restore(ckpt_dir: Path, sim: Simulation, step: int) -> tuple[SimState, dict[str, Any]]:
    state, meta = checkpoint.restore(ckpt_dir, _template(sim), step)
    return _as_state(state), meta


def _resume(exp: build.Experiment, sim: Simulation, ckpt_dir: Path, name: str, path: Path,
            template: Any) -> tuple[Simulation, Any, dict[str, float], list[int]] | None:
    """(simulation, state, var0, row ticks) to continue from, or None to start afresh.

    The newest checkpoint that reads back (damaged newer ones are skipped with a warning),
    checked against the workdir's config and this run's schedule; its metrics rows must be
    in the log (the log is repaired: a cut last line, rows past the checkpoint). If rows
    before it are missing or duplicated, an older checkpoint whose rows are intact is used,
    else the algorithm starts afresh (the same seed recomputes the same rows). If no
    checkpoint reads back, it starts afresh only when that loses nothing (no metric rows of
    it past tick 0); otherwise CheckpointDamagedError, nothing changed.
    """
    metrics_file = path / tracking.METRICS_FILE
    try:
        try:
            state, meta, step, _ = checkpoint.restore_latest_intact(ckpt_dir, template)
        except CheckpointMismatchError:
            if template.traffic is None:
                raise
            # Written before vanish counted messages: it continues without byte counts.
            sim.engine.count_traffic = False
            state, meta, step, _ = checkpoint.restore_latest_intact(ckpt_dir, _template(sim))
            state = _as_state(state)
            log.info("[%s] its checkpoints predate byte counting: this run reports no bytes",
                     name)
    except CheckpointDamagedError as e:
        rows = [r for r in tracking.read_jsonl(metrics_file)
                if r.get("algorithm") == name and r.get("tick", 0) > 0
                ] if metrics_file.exists() else []
        if rows:
            raise CheckpointDamagedError(
                f"[{name}] {e}; starting {name} afresh would drop its metrics up to "
                f"tick {rows[-1]['tick']}. Move {checkpoint.checkpoint_dir(ckpt_dir)} away to "
                "restart it, or use a new --workdir; nothing was changed") from None
        log.warning("[%s] %s; nothing of it was recorded, so it starts afresh", name, e)
        return None
    stored = workdir.stored_config(path)
    hashes = (stored.hashes if stored else frozenset()) | {exp.config_hash}
    if meta.get("config_hash") not in hashes:
        raise WorkdirConflictError(
            f"{ckpt_dir} holds a checkpoint of a different run (config hash "
            f"{meta.get('config_hash')}, not one of {sorted(hashes)}): the config changed. Use a "
            "new --workdir, or restore the old config; nothing was overwritten.")
    if step > exp.run.ticks:
        raise WorkdirConflictError(
            f"{ckpt_dir} holds {name} at tick {step}, past config.run.ticks = "
            f"{exp.run.ticks}: rerun with config.run.ticks >= {step} (a larger value extends "
            "the run), or use a new --workdir; nothing was changed")
    slots = int(meta.get("slots", _total_slots(sim)))
    merge_slots = int(meta.get("merge_slots", sim.components.merge_slots))
    if (slots, merge_slots) != (_total_slots(sim), sim.components.merge_slots):
        # Another horizon may choose other engine sizes; the checkpoint's keep it bit-exact.
        engine_settings = dataclasses.replace(exp.engine, slots=slots, merge_slots=merge_slots)
        counted = sim.engine.count_traffic
        sim = Simulation(dataclasses.replace(exp, engine=engine_settings), name)
        sim.engine.count_traffic = counted
        state, meta = _restore(ckpt_dir, sim, step)
    horizon = int(meta.get("horizon", exp.run.ticks))
    if meta.get("schedule") != sim.schedule.fingerprint(upto=min(horizon, exp.run.ticks)):
        why = ("it was written by an earlier vanish, whose training schedule was drawn "
               "differently: it cannot be continued, and its finished results stay valid"
               if "horizon" not in meta else "the config changed")
        raise WorkdirConflictError(
            f"{ckpt_dir} holds a checkpoint of another training schedule (fingerprint "
            f"{meta.get('schedule')}): {why}. Use a new --workdir, or restore the old config; "
            "nothing was overwritten.")
    every = exp.run.eval_every
    while True:
        row_ticks = _row_ticks(meta, step, every)
        check = tracking.check_log(metrics_file, name, row_ticks)
        if check.damaged:
            raise tracking.metrics_log_error(check)
        if check.ok:
            break
        older = [s for s in checkpoint.all_steps(ckpt_dir) if s < min(
            (*check.missing, *check.duplicated, step))]
        log.warning("[%s] %s lacks (or repeats) the rows of ticks %s; resuming from %s "
                    "instead", name, metrics_file, sorted({*check.missing, *check.duplicated}),
                    f"checkpoint {older[-1]}" if older else "the start")
        if not older:
            _reconcile(metrics_file, name, None, [])
            return None
        step = older[-1]
        try:
            state, meta = _restore(ckpt_dir, sim, step)
        except Exception as e:  # noqa: BLE001  orbax: a bare Exception for an unreadable file
            if isinstance(e, (TypeError, AttributeError, NameError)):  # a bug, not damage
                raise
            log.warning("[%s] checkpoint %d is damaged too (%s); starting afresh", name, step,
                        _first_line(e))
            _reconcile(metrics_file, name, None, [])
            return None
    _reconcile(metrics_file, name, step, row_ticks)  # a cut tail, rows past it: dropped
    log.info("[%s] resuming at tick %d%s", name, step,
             f" (extending the run from {horizon} to {exp.run.ticks} ticks)"
             if exp.run.ticks > horizon and step == horizon else "")
    return sim, state, meta["var0"], row_ticks


def _write(writer: tracking.MetricWriter, tick: int, m: dict[str, Any], var0: dict[str, float],
           ticks_per_s: float) -> None:
    ratios = metrics.variance_ratios(m, var0)
    writer.write_scalars(tick, {**m, **ratios, "ticks_per_s": ticks_per_s})


def train_and_evaluate(exp: build.Experiment, path: str | os.PathLike[str], *,
                       progress: bool | None = None) -> dict[str, dict[str, Any]]:
    """Runs every algorithm of the experiment on the same data and seeds; returns summaries.

    Bad input raises before the workdir is touched: WorkdirError (unusable, corrupt run
    files), WorkdirConflictError (it holds another config's run, the fields named).

    Args:
      exp: a checked Experiment (`build.experiment(cfg)`).
      path: the workdir; created if missing.
      progress: show a progress bar (None: when stderr is a terminal).
    Returns:
      {algorithm: summary} (final accuracy, ticks to target, variance ratio, ...).
    """
    p = exp.processes
    if p.distributed:  # first: no JAX backend may start before the processes join
        index, count = runtime.join_processes(p.coordinator_address, p.num_processes,
                                              p.process_id)
        log.info("process %d of %d: %d of the %d devices", index, count,
                 jax.local_device_count(), jax.device_count())
    where = workdir.check(path, exp.algorithms)  # writable, its run files readable
    build.check_workdir(exp, where)
    log.info("dataset %s: %d train / %d test, backend %s, %d device(s)", exp.dataset.name,
             len(exp.dataset.y_train), len(exp.dataset.y_test), jax.default_backend(),
             jax.device_count())
    where.mkdir(parents=True, exist_ok=True)  # the first write: every check has passed
    primary = jax.process_index() == 0
    with lock.WorkdirLock(where) if primary else contextlib.nullcontext():
        if primary:
            workdir.store_config(where, exp.record, exp.neutral, tracking.atomic_write_text)
        writers: dict[str, tracking.MetricWriter] = {}
        try:
            summaries = {a: run_algorithm(exp, a, where, writers, progress=progress)
                         for a in exp.algorithms}
            if primary:
                acc_png, var_png = plots.plot_run(where, target=exp.run.target_accuracy,
                                                  setup=exp.setup())
                for writer in writers.values():  # the comparison figures into every run
                    writer.write_image(exp.run.ticks, "accuracy", acc_png)
                    writer.write_image(exp.run.ticks, "variance", var_png)
        finally:
            for writer in writers.values():
                writer.close()
        if primary:
            tracking.write_csv(where / tracking.METRICS_FILE)
            table = results.summary_table(summaries, markdown=True,
                                          target=exp.run.target_accuracy)
            tracking.atomic_write_text(where / "summary.md", table + "\n")
            log.info("results in %s (summary.md, summary.json, metrics.csv, accuracy.png, "
                     "variance.png)", where)
    return summaries

