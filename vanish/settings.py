"""The typed values the builder hands down: the settings of each concern and the frozen
Experiment (nothing below the builder sees a config)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


from vanish import config, data, network, topology, workdir
from vanish import clock as clock_lib

from vanish.rules import view


# ----------------------------------------------------------------------------- the values


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How long, how often, where and how a run is measured and executed (result-neutral
    except `ticks`)."""

    ticks: int
    eval_every: int
    target_accuracy: float
    checkpoint_every: int  # resolved: 0 means every evaluation
    keep_checkpoints: int
    wandb: bool
    wandb_project: str
    wandb_mode: str
    tensorboard: bool
    metrics: tuple[str, ...] = ()  # extra per-node metrics (metrics.REGISTRY names)


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """Engine strategy: never changes results beyond float summation order."""

    slots: int
    fuse: int
    max_slots: int
    merge_slots: int
    eval_nodes: int
    max_nodes_per_chunk: int
    masked_baseline: bool
    shard_nodes: str

    def capped(self, nodes_at_once: int) -> int:
        """`nodes_at_once` within the memory budget max_nodes_per_chunk (0: no cap)."""
        cap = self.max_nodes_per_chunk
        return min(nodes_at_once, cap) if cap > 0 else nodes_at_once


@dataclasses.dataclass(frozen=True)
class ProcessSettings:
    """Joining a multi-process run (read before anything starts a JAX backend)."""

    distributed: bool
    coordinator_address: str
    num_processes: int
    process_id: int
    heartbeat_timeout: int = 30  # seconds without a heartbeat before JAX counts a process lost


@dataclasses.dataclass(frozen=True)
class ScheduleSettings:
    """The reference tick model."""

    interval: tuple[int, int]
    first_tick: int | str
    send_every: int
    threshold: int  # 0: each node's in-degree (expected arrivals under peer sampling)
    beta: float


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The model: its name, convolution implementation and initializer (`model.*`)."""

    name: str
    conv_impl: str
    init: str


@dataclasses.dataclass(frozen=True)
class OptimSettings:
    """The optimizer (name, lr, momentum, lr schedule, weight decay), the batch size, and
    whether a node's optimizer state is reset when it merges (`optim.*`)."""

    name: str
    lr: float
    momentum: float
    schedule: str
    weight_decay: float
    batch_size: int
    reset_on_merge: bool


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A checked run: every value the layers below need, typed, and nothing else.

    `record` is the config as a plain nested dict, for the workdir and the trackers to store;
    nothing reads it for behaviour.
    """

    algorithms: tuple[str, ...]
    seed: int
    dataset: data.Dataset
    test_per_class: int
    partition: str
    partition_args: Mapping[str, Any]
    graph: topology.Spec
    model: ModelSettings
    optim: OptimSettings
    schedule: ScheduleSettings
    correction: Any  # variance.CorrectionConfig
    algorithm_args: Mapping[str, Mapping[str, Any]]
    network: network.Settings
    clock: clock_lib.Settings
    run: RunSettings
    engine: EngineSettings
    processes: ProcessSettings
    record: Mapping[str, Any]
    neutral: frozenset[str] = config.RESULT_NEUTRAL  # record fields that never change results

    @property
    def config_hash(self) -> str:
        """The digest of the record's result-relevant fields (stored with checkpoints)."""
        return workdir.config_hash(workdir.flatten(self.record), self.neutral)

    def setup(self) -> dict[str, Any]:
        """What a figure's title states: dataset, model, N, topology, partition, seed."""
        return setup_of(self.record)


def setup_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a figure's title states (dataset, model, N, topology, partition, seed) from a
    config or its stored record (vanish/workdir.py's run_config.json)."""
    g = view(record)
    part = g("data.partition")
    if part.startswith("dirichlet"):
        part += f" alpha={g(f'partition_args.{part}.alpha'):g}"
    return dict(dataset=g("data.name"), model=g("model.name"), num_nodes=g("topology.num_nodes"),
                topology=g("topology.name"), partition=part, seeds=[g("seed")])
