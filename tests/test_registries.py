"""Every registered name of every kind works from its defaults, or is refused in one line that
names what it needs; the one-peer exponential graph rotates its round every tick; a rule that
plans its own rounds is one registry line (its `schedule` hook)."""

import numpy as np
import pytest

from helpers import make_sim, tiny_config
from vanish import algorithms, build, models, network, nodes, partition, run, topology
from vanish.algorithms import Entry, PlanRequest
from vanish.errors import ConfigError

# Names whose defaults cannot run and what the one line must name.
NEEDS = {("topology", "edge_list"): "config.topology_args.edge_list.path"}
# A torus needs rows, cols >= 3; Watts-Strogatz's default ring lattice (k = 8) needs N > 8.
NODES = {("topology", "torus"): 9, ("topology", "watts_strogatz"): 12}


def _registries():
    out = [("topology", n, {"topology.name": n}) for n in topology.REGISTRY]
    out += [("partition", n, {"data.partition": n}) for n in partition.REGISTRY]
    out += [("model", n, {"model.name": n}) for n in models.MODELS]
    out += [("init", n, {"model.init": n}) for n in models.INITIALIZERS]
    out += [("optimizer", n, {"optim.name": n}) for n in nodes.OPTIMIZERS]
    out += [("lr schedule", n, {"optim.schedule": n}) for n in nodes.LR_SCHEDULES]
    out += [("weighting", n, {"topology.weighting": n}) for n in topology.WEIGHTINGS]
    return out


@pytest.mark.parametrize("kind,name,fields", _registries(),
                         ids=[f"{k}:{n}" for k, n, _ in _registries()])
def test_every_registered_name_builds_from_its_defaults_or_names_its_need(kind, name, fields):
    n = NODES.get((kind, name), 8)
    cfg = tiny_config(**fields, **{"topology.num_nodes": n, "algorithms": "gossip_vc"})
    if (kind, name) in NEEDS:
        with pytest.raises(ConfigError) as err:
            build.experiment(cfg)
        assert "\n" not in str(err.value) and NEEDS[kind, name] in str(err.value)
        return
    exp = build.experiment(cfg)
    parts = build.components(exp, "gossip_vc")
    assert parts.topology.n == n and parts.consts.graph.degree.shape == (n,)


def test_a_new_topology_from_defaults_runs_through_the_cli(tmp_path):
    # The time-varying one-peer exponential graph, end to end from its defaults.
    workdir = tmp_path / "w"
    code = run.command(["vanish", "--config=experiments/default/config.py",
                        f"--workdir={workdir}", "--config.topology.name=one_peer_exponential",
                        "--config.topology.num_nodes=8", "--config.data.name=synthetic",
                        "--config.run.ticks=20", "--config.run.eval_every=10",
                        "--config.run.checkpoint_every=10", "--config.algorithms=gossip"])
    assert code == 0 and (workdir / "summary.json").is_file()


def test_one_peer_exponential_rotates_its_round_every_tick():
    n = 16  # tau = 4 rounds: hops 1, 2, 4, 8, then again
    spec = topology.Spec("one_peer_exponential", n)
    assert spec.time_varying and spec.round_varying and not spec.seeded
    for e in range(1, 9):
        g = spec.epoch(e, seed=123)
        hop = 2 ** (e % 4)
        np.testing.assert_array_equal(g.neighbor_table().out_nbr[:, 0], (np.arange(n) + hop) % n)
    # A run rotates it every tick (no network option set): the plan holds one table a tick.
    cfg = tiny_config(**{"topology.name": "one_peer_exponential", "topology.num_nodes": n,
                         "algorithms": "gossip", "run.ticks": 12})
    exp = build.experiment(cfg)
    assert exp.network.redraw_every == 1
    plan = network.plan_for(exp.network, build.make_topology(exp, "gossip"), np.ones(n, bool),
                            star=False, ticks=12, seed=0, family=exp.graph)
    assert plan is not None
    out = np.asarray(plan.net.out_nbr)
    for t in range(12):
        np.testing.assert_array_equal(out[t, :, 0], (np.arange(n) + 2 ** (t % 4)) % n)
    # Synchronous rules mix over a fixed graph: refused in one line.
    with pytest.raises(ConfigError, match="one_peer_exponential topology changes every round"):
        build.experiment(tiny_config(**{"topology.name": "one_peer_exponential",
                                        "algorithms": "dpsgd"}))


def _every_other_tick(request: PlanRequest):
    """A round-based rule's own plan: every client trains at every even tick."""
    from vanish import schedule

    return schedule.draw(request.n, request.ticks, (2, 2), seed=request.seed, first_tick=0,
                         trainers=request.trainers)


def test_a_rule_with_its_own_schedule_is_one_registry_line():
    name = "test_even_gossip"
    algorithms.register(name, Entry("gossip:make", "gossip, training every other tick",
                                    schedule=_every_other_tick))
    try:
        sim = make_sim(tiny_config(**{"run.ticks": 12}), name)
        ticks = np.flatnonzero(sim.components.schedule.counts_per_tick())
        np.testing.assert_array_equal(ticks, np.arange(0, 12, 2))
        assert int(np.asarray(sim.run_ticks(sim.init_state(), 0, 12).train_count).sum()) \
            == 6 * sim.n
    finally:
        del algorithms.REGISTRY[name]
