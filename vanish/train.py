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
from typing import Any, NamedTuple, NoReturn

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

    def __init__(self, exp: build.Experiment, name: str, *, count_traffic: bool = True):
        self.exp = exp
        c = self.components = build.components(exp, name)
        self.name, self.algo, self.topo, self.n = name, c.algorithm, c.topology, c.topology.n
        self.schedule, self.work, self.network = c.schedule, c.work, c.network
        init = functools.partial(nodes.init_params, c.model, c.keys["init"], self.n,
                                 c.input_shape, shared=c.algorithm.caps.shared_init)
        self.engine = engine.Engine(
            c.algorithm, nodes.make_train_step(c.model, c.tx), c.tx, init, c.work, c.consts,
            batch_size=c.batch_size, train_key=c.keys["train"], fuse=c.fuse,
            reset_opt=c.reset_opt, merge_slots=c.merge_slots, devices=c.devices,
            network_spec=None if c.network is None else c.network.spec, halo=c.halo,
            count_traffic=count_traffic)
        # Accuracy is the honest nodes' (Byzantine nodes' own models are not the result).
        self.eval_mask = c.is_client if c.network is None else c.is_client & ~c.network.byzantine
        self.mesh, self.consts, self.fuse = self.engine.mesh, self.engine.consts, self.engine.fuse
        self.model, self.tx, self.is_client = c.model, c.tx, c.is_client
        self.experiment = exp
        self._eval = metrics.make_evaluator(c.model, c.eval_nodes, mesh=self.mesh,
                                            extra=exp.run.metrics)
        self.x_test, self.y_test = c.x_test, c.y_test
        self._weight = jnp.asarray(self.eval_mask, jnp.float32)
        if self.mesh is not None:  # global arrays made on every process: replicated / split
            self.x_test, self.y_test = engine.put_global((c.x_test, c.y_test),
                                                          engine.replicated(self.mesh))
            self._weight = engine.put_global(
                np.asarray(self.eval_mask, np.float32),
                jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(engine.AXIS)))

    def init_state(self) -> SimState:
        return self.engine.init_state()

    def restore_latest(self, ckpt_dir: str | os.PathLike[str]
                       ) -> tuple[SimState, dict[str, Any], int]:
        """(state, metadata, tick) of the newest intact checkpoint under `ckpt_dir` (a run's
        `<workdir>/<algorithm>`), for analysis (scripts/neighbour_correlation.py)."""
        state, meta, step, _ = checkpoint.restore_latest_intact(Path(ckpt_dir), _template(self))
        return _as_state(state), meta, step

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
        if self.algo.stats is not None:  # the rule's own numbers (vanish/algorithms/base.py)
            m.update({k: v.item() for k, v in
                      jax.device_get(self.algo.stats(state.inbox)).items()})
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

    Resume (`_plan_resume` decides, `_repair_log` makes the metrics log agree): the newest
    intact checkpoint, whose metrics rows are verified against the log (a cut last line
    repaired, rows past it dropped and replayed); rows missing or duplicated before it fall
    back to an older checkpoint, or to a fresh start. A larger run.ticks than the
    checkpoint's extends the run on the same schedule (the schedule of [0, T) does not depend
    on the horizon), with the engine sizes the checkpoint ran with.

    SIGINT / SIGTERM (see `signals.StopRequest`; `stop` may be shared by several calls) stop
    it between two compiled calls: it writes a checkpoint at that tick and raises
    `Interrupted` after one stderr line saying how to resume. Metrics rows are written before
    the checkpoint of their tick, so a kill -9 at any point resumes to the uninterrupted
    result. The summary is computed only from a verified log.
    """
    if stop is None:
        with StopRequest() as stop:
            return run_algorithm(exp, name, path, writers, progress=progress, stop=stop)
    sim = Simulation(exp, name)
    state = sim.init_state()
    ckpt_dir = path / name  # checkpoints in workdir/<algorithm>/checkpoints/<tick>
    plan = (_plan_resume(exp, sim, ckpt_dir, name, path, state)
            if checkpoint.latest_step(ckpt_dir) is not None else _fresh("no checkpoint"))
    _repair_log(path / tracking.METRICS_FILE, name, plan)
    if plan.step is None:
        plan = plan._replace(sim=sim, state=state)
    else:
        log.info("[%s] %s", name, plan.reason)
    return _Run(exp, name, path, plan, writers).to_the_end(stop, progress)


class _Run:
    """One algorithm of `run_algorithm` on its way to run.ticks: its simulation and state,
    its metric rows and checkpoints. Several processes (multi-host): all compute, process 0
    alone writes metrics and figures (checkpoints are written by all, each its own shards;
    orbax syncs them)."""

    def __init__(self, exp: build.Experiment, name: str, path: Path, plan: ResumePlan,
                 writers: dict[str, tracking.MetricWriter]) -> None:
        assert plan.sim is not None and plan.state is not None
        self.exp, self.name, self.path, self.sim, self.state = exp, name, path, plan.sim, plan.state
        self.var0, self.row_ticks = dict(plan.var0 or {}), list(plan.row_ticks)
        self.start = self.saved = int(self.state.tick) if plan.step is not None else 0
        self.primary = jax.process_index() == 0
        run = exp.run
        self.writer = writers[name] = tracking.make_writers(
            path, name, wandb=run.wandb, project=run.wandb_project, group=path.name,
            config=dict(exp.record, algorithm=name), wandb_mode=run.wandb_mode or None,
            tensorboard=run.tensorboard,
        ) if self.primary else tracking.MultiWriter([])

    def save(self, tick: int) -> None:
        meta = dict(config_hash=self.exp.config_hash, horizon=self.exp.run.ticks,
                    schedule=self.sim.schedule.fingerprint(), slots=_total_slots(self.sim),
                    merge_slots=self.sim.components.merge_slots, row_ticks=self.row_ticks,
                    var0=self.var0, algorithm=self.name)
        checkpoint.save(self.path / self.name, tick, self.state,
                        keep=self.exp.run.keep_checkpoints, metadata=meta)
        self.saved = tick

    def write(self, tick: int, m: dict[str, Any], rate: float) -> None:
        _write(self.writer, tick, m, self.var0, ticks_per_s=rate)
        self.row_ticks.append(tick)

    def first_row(self) -> None:
        """Tick 0 of a fresh start: the setup line, the label histogram and the first row."""
        sim = self.sim
        hist = format_label_histogram(sim.components.label_hist)
        log.info("[%s] %s, %d nodes, K=%d slots, %d chunks, %d device(s)", self.name,
                 sim.topo.name, sim.n, sim.work.slots, len(sim.work), sim.components.devices)
        self.writer.write_text("label_histogram", "per-node label histogram\n" + hist)
        self.state, m = sim.evaluate(self.state)
        self.var0 = metrics.initial_variances(m)
        self.write(0, m, 0.0)

    def segment(self, t: int, t_next: int, stop: StopRequest, pacer: _Pacer) -> int:
        """Runs ticks [t, t_next) in calls of ~0.1 s each; the tick it stopped at."""
        while t < t_next and not stop.requested:
            t1, t_call = min(t_next, t + pacer.ticks), time.perf_counter()
            self.state = jax.block_until_ready(self.sim.run_ticks(self.state, t, t1))
            pacer.update(t1 - t, time.perf_counter() - t_call)
            t = t1
        return t

    def evaluate(self, t0: int, tick: int, t_wall: float) -> tuple[dict[str, Any], float]:
        """The row of `tick` (the segment from `t0` started at `t_wall`), written; the metrics
        and the segment's ticks per second. A non-finite loss raises `Diverged` (no row)."""
        self.state, m = self.sim.evaluate(self.state)
        rate = (tick - t0) / max(time.perf_counter() - t_wall, 1e-9)
        if not all(math.isfinite(m[k]) for k in ("loss_mean", "acc_mean")):
            raise Diverged(self.name, tick, t0)
        self.write(tick, m, rate)  # the row first, then its checkpoint
        return m, rate

    def train(self, stop: StopRequest, bar: tracking.ProgressBar) -> int:
        """Segments of run.eval_every ticks, each ending with its row (and checkpoint),
        until run.ticks or a stop request; the tick it reached."""
        ticks, every, ckpt_every = self.exp.run.ticks, self.exp.run.eval_every, \
            self.exp.run.checkpoint_every
        pacer, t = _Pacer(), self.start
        while t < ticks and not stop.requested:
            t0, t_next = t, min(ticks, (t // every + 1) * every)
            t_wall = time.perf_counter()
            t = self.segment(t, t_next, stop, pacer)
            if t < t_next:
                break  # stopped inside the segment
            m, rate = self.evaluate(t0, t_next, t_wall)
            bar.update(t_next - t0, acc=f"{m['acc_mean']:.3f}", tps=f"{rate:.0f}")
            if t_next % ckpt_every == 0 or t_next == ticks or stop.requested:
                self.save(t_next)
        return t

    def to_the_end(self, stop: StopRequest, progress: bool | None) -> dict[str, Any]:
        """Trains to run.ticks and returns the summary; a stop request ends it with a
        checkpoint and `Interrupted`."""
        ticks = self.exp.run.ticks
        if self.start == 0:
            self.first_row()
        bar = tracking.ProgressBar(ticks, desc=self.name,
                                   enabled=progress if self.primary else False,
                                   initial=self.start)
        try:
            t = self.train(stop, bar)
        except Diverged as e:
            return self.diverged(e)
        finally:
            bar.close()
        if t < ticks:  # stopped by a signal
            if t > self.saved:
                self.save(t)
            raise _interrupted(stop, self.name, t, ticks, self.saved)
        # (Other processes read process 0's rows: its last row precedes the final checkpoint,
        # whose save every process waited for.)
        summary = self.summary()
        if stop.requested:  # the signal came after the last tick: this algorithm is complete
            raise _interrupted(stop, self.name, t, ticks, self.saved)
        return summary

    def summary(self, **extra: Any) -> dict[str, Any]:
        """The summary of the verified metrics log's rows (and `extra`), written."""
        summary = metrics.summarize(tracking.summary_rows(
            self.path / tracking.METRICS_FILE, self.name, self.row_ticks),
            self.exp.run.target_accuracy)
        summary.update(extra)
        self.writer.write_summary(summary)
        return summary

    def diverged(self, e: Diverged) -> dict[str, Any]:
        """The summary of a run whose loss went non-finite: a result, not an error (a
        learning rate too high, a rule that blows up), so a sweep records it and goes on.
        Its rows up to the last finite evaluation are kept; `diverged_at` names the tick
        whose evaluation was not finite. Nothing is checkpointed past the last finite row;
        a rerun resumes from the last checkpoint and, bit for bit, diverges again."""
        log.warning("[%s] non-finite loss at tick %d (config.optim.lr = %g too high?): the run "
                    "stops there; its metrics up to tick %d are kept in %s and its summary "
                    "records diverged_at %d", self.name, e.tick, self.exp.optim.lr, e.last,
                    self.path, e.tick)
        return self.summary(**{results.DIVERGED_AT: e.tick})


class Diverged(FloatingPointError):
    """A non-finite loss at evaluation tick `tick` of algorithm `name`; `last`: the tick of
    its last finite row."""

    def __init__(self, name: str, tick: int, last: int) -> None:
        super().__init__(f"[{name}] non-finite loss at tick {tick}; the last finite row is "
                         f"tick {last}")
        self.name, self.tick, self.last = name, tick, last


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


# ------------------------------------------------------------------------------- resume


class ResumePlan(NamedTuple):
    """How one algorithm continues: `_plan_resume` decides, `_repair_log` makes the metrics
    log agree, `run_algorithm` continues from it.

    step: the checkpoint (its tick) to resume from; None: the algorithm starts afresh.
    row_ticks: the ticks of the algorithm's metrics rows that checkpoint vouches for, which
        stay; its other rows past `step` (all of them when None) and a last line cut
        mid-write are dropped from the log.
    reason: why, in a few words (for a resume: the line that says so).
    sim, state, var0: the simulation and state to continue, and the initial variances (None
        when it starts afresh).
    """

    step: int | None
    row_ticks: list[int]
    reason: str
    sim: Simulation | None = None
    state: SimState | None = None
    var0: dict[str, float] | None = None


def _fresh(reason: str) -> ResumePlan:
    return ResumePlan(None, [], reason)


def _plan_resume(exp: build.Experiment, sim: Simulation, ckpt_dir: Path, name: str, path: Path,
                 template: Any) -> ResumePlan:
    """Where `name` continues from. It reads the checkpoints and the metrics log, and changes
    neither (`_repair_log` carries the plan out on the log).

    The newest checkpoint that reads back (damaged newer ones are skipped with a warning),
    checked against the workdir's config and this run's schedule; its metrics rows must be
    in the log. If rows before it are missing or duplicated, an older checkpoint whose rows
    are intact is used, else the algorithm starts afresh (the same seed recomputes the same
    rows). If no checkpoint reads back, it starts afresh only when that loses nothing (no
    metric rows of it past tick 0); otherwise CheckpointDamagedError, nothing changed.
    Raises WorkdirConflictError for a checkpoint of another config, horizon or schedule, and
    MetricsLogError for damaged lines of the log.
    """
    metrics_file = path / tracking.METRICS_FILE
    newest = _restore_newest(exp, sim, ckpt_dir, name, metrics_file, template)
    if isinstance(newest, ResumePlan):
        return newest
    sim, state, meta, step = newest
    _check_run(exp, ckpt_dir, name, path, meta, step)
    sim, state, meta = _fit_engine(exp, sim, ckpt_dir, name, (state, meta, step))
    horizon = int(meta.get("horizon", exp.run.ticks))
    _check_schedule(exp, sim, ckpt_dir, meta, horizon)
    plan = _with_intact_rows(exp, sim, ckpt_dir, name, metrics_file, (state, meta, step))
    if plan.step is not None and exp.run.ticks > horizon and plan.step == horizon:
        plan = plan._replace(reason=f"{plan.reason} (extending the run from {horizon} to "
                                    f"{exp.run.ticks} ticks)")
    return plan


def _restore_newest(exp: build.Experiment, sim: Simulation, ckpt_dir: Path, name: str,
                    metrics_file: Path, template: Any
                    ) -> tuple[Simulation, Any, dict[str, Any], int] | ResumePlan:
    """(simulation, state, metadata, step) of the newest checkpoint that reads back, or a
    fresh start when none does and nothing of `name` was recorded (CheckpointDamagedError
    when rows of it would be lost). Checkpoints written before vanish counted messages
    continue without byte counts (in a simulation built with count_traffic=False)."""
    try:
        try:
            state, meta, step, _ = checkpoint.restore_latest_intact(ckpt_dir, template)
        except CheckpointMismatchError:
            if template.traffic is None:
                raise
            sim = Simulation(exp, name, count_traffic=False)
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
        return _fresh("no checkpoint reads back and nothing of it was recorded")
    return sim, state, meta, step


def _check_run(exp: build.Experiment, ckpt_dir: Path, name: str, path: Path,
               meta: dict[str, Any], step: int) -> None:
    """Refuses a checkpoint of another config, or one past config.run.ticks."""
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


def _fit_engine(exp: build.Experiment, sim: Simulation, ckpt_dir: Path, name: str,
                restored: tuple[Any, dict[str, Any], int]
                ) -> tuple[Simulation, Any, dict[str, Any]]:
    """The simulation with the engine sizes the checkpoint ran with (another horizon may
    choose others; the checkpoint's keep it bit-exact), and the state restored into it."""
    state, meta, step = restored
    slots = int(meta.get("slots", _total_slots(sim)))
    merge_slots = int(meta.get("merge_slots", sim.components.merge_slots))
    if (slots, merge_slots) == (_total_slots(sim), sim.components.merge_slots):
        return sim, state, meta
    engine_settings = dataclasses.replace(exp.engine, slots=slots, merge_slots=merge_slots)
    sim = Simulation(dataclasses.replace(exp, engine=engine_settings), name,
                     count_traffic=sim.engine.count_traffic)
    state, meta = _restore(ckpt_dir, sim, step)
    return sim, state, meta


def _check_schedule(exp: build.Experiment, sim: Simulation, ckpt_dir: Path,
                    meta: dict[str, Any], horizon: int) -> None:
    """Refuses a checkpoint of another training schedule (over the ticks both share)."""
    if meta.get("schedule") != sim.schedule.fingerprint(upto=min(horizon, exp.run.ticks)):
        why = ("it was written by an earlier vanish, whose training schedule was drawn "
               "differently: it cannot be continued, and its finished results stay valid"
               if "horizon" not in meta else "the config changed")
        raise WorkdirConflictError(
            f"{ckpt_dir} holds a checkpoint of another training schedule (fingerprint "
            f"{meta.get('schedule')}): {why}. Use a new --workdir, or restore the old config; "
            "nothing was overwritten.")


def _with_intact_rows(exp: build.Experiment, sim: Simulation, ckpt_dir: Path, name: str,
                      metrics_file: Path, restored: tuple[Any, dict[str, Any], int]
                      ) -> ResumePlan:
    """The newest checkpoint, from the restored one down, whose metrics rows are all in the
    log (each exactly once); a fresh start when none is (or an older one is damaged too).
    MetricsLogError when a line of the log is damaged."""
    state, meta, step = restored
    while True:
        row_ticks = _row_ticks(meta, step, exp.run.eval_every)
        check = tracking.check_log(metrics_file, name, row_ticks)
        if check.damaged:
            raise tracking.metrics_log_error(check)
        if check.ok:
            return ResumePlan(step, row_ticks, f"resuming at tick {step}", sim, state,
                              meta["var0"])
        older = [s for s in checkpoint.all_steps(ckpt_dir) if s < min(
            (*check.missing, *check.duplicated, step))]
        log.warning("[%s] %s lacks (or repeats) the rows of ticks %s; resuming from %s "
                    "instead", name, metrics_file, sorted({*check.missing, *check.duplicated}),
                    f"checkpoint {older[-1]}" if older else "the start")
        if not older:
            return _fresh("the metrics log lacks rows before every checkpoint")
        step = older[-1]
        try:
            state, meta = _restore(ckpt_dir, sim, step)
        except Exception as e:  # noqa: BLE001  orbax: a bare Exception for an unreadable file
            if isinstance(e, (TypeError, AttributeError, NameError)):  # a bug, not damage
                raise
            log.warning("[%s] checkpoint %d is damaged too (%s); starting afresh", name, step,
                        _first_line(e))
            return _fresh(f"checkpoint {step} is damaged too")


def _repair_log(metrics_file: Path, name: str, plan: ResumePlan) -> None:
    """Carries `plan` out on the metrics log: `name`'s rows past plan.step (all of them for a
    fresh start) and a last line cut mid-write are dropped. Only process 0 writes the log;
    the others read it (they decide on the same checkpoint: a row process 0 has dropped is
    missing for them too)."""
    if jax.process_index() == 0:
        tracking.reconcile_log(metrics_file, name, plan.step, plan.row_ticks)


def _write(writer: tracking.MetricWriter, tick: int, m: dict[str, Any], var0: dict[str, float],
           ticks_per_s: float) -> None:
    ratios = metrics.variance_ratios(m, var0)
    writer.write_scalars(tick, {**m, **ratios, "ticks_per_s": ticks_per_s})


# ------------------------------------------------------------------------------ the run


def train_and_evaluate(exp: build.Experiment, path: str | os.PathLike[str], *,
                       progress: bool | None = None) -> dict[str, dict[str, Any]]:
    """Runs every algorithm of the experiment on the same data and seeds; returns summaries.

    Bad input raises before the workdir is touched: WorkdirError (unusable, corrupt run
    files), WorkdirConflictError (it holds another config's run, the fields named). In a
    multi-process run, a process that is lost (killed, its host gone) ends every other one
    at once with one `vanish: error:` line naming it, the last complete checkpoint and the
    command that resumes (`_exit_lost`).

    Args:
      exp: a checked Experiment (`build.experiment(cfg)`).
      path: the workdir; created if missing.
      progress: show a progress bar (None: when stderr is a terminal).
    Returns:
      {algorithm: summary} (final accuracy, ticks to target, variance ratio, ...).
    """
    if exp.processes.distributed:  # first: no JAX backend may start before the processes join
        _join(exp.processes)
    where = workdir.check(path, exp.algorithms)  # writable, its run files readable
    build.check_workdir(exp, where)
    log.info("dataset %s: %d train / %d test, backend %s, %d device(s)", exp.dataset.name,
             len(exp.dataset.y_train), len(exp.dataset.y_test), jax.default_backend(),
             jax.device_count())
    where.mkdir(parents=True, exist_ok=True)  # the first write: every check has passed
    primary = jax.process_index() == 0
    with lock.WorkdirLock(where) if primary else contextlib.nullcontext() as held:
        if primary:
            workdir.store_config(where, exp.record, exp.neutral, tracking.atomic_write_text)
        summaries = _run_all(exp, where, progress, held)
        if primary:
            _write_results(exp, where, summaries)
    return summaries


def _join(p: build.ProcessSettings) -> None:
    index, count = runtime.join_processes(p.coordinator_address, p.num_processes,
                                          p.process_id, heartbeat_timeout_s=p.heartbeat_timeout)
    log.info("process %d of %d: %d of the %d devices", index, count,
             jax.local_device_count(), jax.device_count())


def _run_all(exp: build.Experiment, where: Path, progress: bool | None,
             held: lock.WorkdirLock | None) -> dict[str, dict[str, Any]]:
    """Every algorithm in turn, then (process 0) the comparison figures into every run."""
    writers: dict[str, tracking.MetricWriter] = {}
    summaries: dict[str, dict[str, Any]] = {}
    try:
        for name in exp.algorithms:
            try:
                summaries[name] = run_algorithm(exp, name, where, writers, progress=progress)
            except Exception as e:  # noqa: BLE001  a lost process -> one line; else re-raised
                if not runtime.is_lost_process(e):
                    raise
                _exit_lost(e, where, name, writers, held)
        if jax.process_index() == 0:
            acc_png, var_png = plots.plot_run(where, target=exp.run.target_accuracy,
                                              setup=exp.setup())
            for writer in writers.values():  # the comparison figures into every run
                writer.write_image(exp.run.ticks, "accuracy", acc_png)
                writer.write_image(exp.run.ticks, "variance", var_png)
    finally:
        for writer in writers.values():
            writer.close()
    return summaries


def _exit_lost(error: BaseException, where: Path, name: str,
               writers: dict[str, tracking.MetricWriter], held: lock.WorkdirLock | None
               ) -> NoReturn:
    """Another process of the run is gone while `name` ran: its last complete checkpoint
    and the resume command into one error line, and this process ends at once
    (`runtime.exit_lost_process`: no JAX shutdown, which would wait for the lost process and
    abort). The workdir lock is released and the writers flushed first."""
    steps = checkpoint.complete_steps(where / name)
    kept = (f"{name} resumes from its last complete checkpoint, tick {steps[-1]} "
            f"({checkpoint.checkpoint_dir(where / name) / str(steps[-1])})" if steps
            else f"{name} has no complete checkpoint yet (it starts over)")
    for writer in writers.values():
        with contextlib.suppress(Exception):
            writer.flush()
    if held is not None:
        held.release()
    runtime.exit_lost_process(error, f"{kept}; to resume, start every process again with "
                                     f"its same command, here: {shlex.join(sys.orig_argv)}")


def _write_results(exp: build.Experiment, where: Path,
                   summaries: dict[str, dict[str, Any]]) -> None:
    """metrics.csv and summary.md (process 0)."""
    tracking.write_csv(where / tracking.METRICS_FILE)
    table = results.summary_table(summaries, markdown=True, target=exp.run.target_accuracy)
    tracking.atomic_write_text(where / "summary.md", table + "\n")
    log.info("results in %s (summary.md, summary.json, metrics.csv, accuracy.png, "
             "variance.png)", where)
