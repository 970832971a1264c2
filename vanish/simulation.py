"""One algorithm's simulation: the components built from a config, its engine and metrics.

    sim = simulation.Simulation(cfg, "gossip_vc", dataset)
    state = sim.init_state()
    state = sim.run_ticks(state, 0, 100)      # device work; no host transfer inside
    state, metrics = sim.evaluate(state)      # the only host pull

`build` reads the config, `engine` owns the state and the compiled step (its module
docstring has the design), `metrics` owns evaluation and metric names.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vanish import build, engine, metrics, nodes, topology
from vanish.data import Dataset
from vanish.engine import SimState, choose_fuse, node_mesh, shard_state  # noqa: F401 (API)


class Simulation:
    """Host-side plan + jitted device steps of one algorithm."""

    def __init__(self, cfg: ml_collections.ConfigDict, algorithm: str, dataset: Dataset):
        c = self.components = build.components(cfg, algorithm, dataset)
        self.cfg, self.name, self.algo = cfg, algorithm, c.algorithm
        self.topo, self.n = c.topology, c.topology.n
        self.is_client, self.n_clients = c.is_client, int(c.is_client.sum())
        self.partition, self.label_hist = c.partition, c.label_hist
        self.x_test, self.y_test = c.x_test, c.y_test
        self.schedule, self.work = c.schedule, c.work
        self.model, self.tx, self.input_shape = c.model, c.tx, c.input_shape
        self.keys = c.keys
        init = functools.partial(nodes.init_params, c.model, c.keys["init"], self.n,
                                 c.input_shape, shared=c.algorithm.shared_init)
        self.engine = engine.Engine(
            c.algorithm, nodes.make_train_step(c.model, c.tx), c.tx, init, c.work, c.consts,
            batch_size=c.batch_size, train_key=c.keys["train"], fuse=c.fuse,
            reset_opt=c.reset_opt, merge_slots=c.merge_slots, devices=c.devices,
            network_spec=None if c.network is None else c.network.spec, halo=c.halo)
        self.network = c.network
        # Accuracy is the honest nodes' (Byzantine nodes' own models are not the result).
        self.eval_mask = c.is_client if c.network is None else c.is_client & ~c.network.byzantine
        self.fuse, self.mesh, self.consts = self.engine.fuse, self.engine.mesh, self.engine.consts
        self._eval = metrics.make_evaluator(c.model, c.eval_nodes, mesh=self.mesh)
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
        m = metrics.to_row(out, self.eval_mask, has_server=self.algo.topology == "star")
        if self.network is not None:
            m.update(metrics.network_row(jax.device_get(state.net_stats),
                                         self.network.online_at(int(state.tick)),
                                         self.engine.fetch(state.merges), self.is_client))
        state = state._replace(loss_sum=jnp.zeros_like(state.loss_sum),
                               loss_n=jnp.zeros_like(state.loss_n))
        return state, m


def build_topology(cfg: ml_collections.ConfigDict, algorithm: str) -> topology.Topology:
    """The graph an algorithm runs on (checks a config's topology before any work)."""
    return build.topology_for(cfg, build.algorithm(cfg, algorithm))
