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
    out += [("model", n, {"model.name": n}) for n in models.REGISTRY]
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


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
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


def _chain(n: int, hops: int = 1, *, weighting: str = "uniform") -> topology.Topology:
    """A test family: node i linked to i + 1, ..., i + hops (a path with chords)."""
    edges = [(i, j) for i in range(n) for j in range(i + 1, min(n, i + hops + 1))]
    return topology.from_networkx(__import__("networkx").Graph(edges), "chain",
                                  weighting=weighting)


def _halves(y, n_nodes: int, left: float = 0.5):
    """A test scheme: the first half of the nodes see labels < 5 with weight `left`."""
    import numpy as np

    from vanish.partition import Partition

    y = np.asarray(y)
    groups = [np.flatnonzero(y < 5), np.flatnonzero(y >= 5)]
    width = max(map(len, groups))
    index = np.stack([np.pad(g, (0, width - len(g)), constant_values=-1) for g in groups])
    prob = np.array([[left, 1 - left] if i < n_nodes // 2 else [1 - left, left]
                     for i in range(n_nodes)])
    return Partition("halves", index.astype(np.int32),
                     np.array([len(g) for g in groups], np.int32), prob, {"left": left})


def _blobs(*, seed: int, data_dir, download: bool, size: int = 300):
    """A test dataset: the synthetic images, `size` of them to train on."""
    from vanish import data

    return data.synthetic(seed=seed + 1, num_train=size, num_test=1000)


def test_a_topology_a_partition_and_a_dataset_defined_here_are_one_line_each(tmp_path):
    """The ARCHITECTURE.md recipes: a function plus one registry line; its knobs become
    `topology_args.<name>` / `partition_args.<name>` / `dataset_args.<name>`, checked like
    any field, listed, and run through the command line."""
    import contextlib
    import io
    import json

    from vanish import checks, config, data, registry

    topology.register("chain", registry.Component(
        _chain, "a path with chords", knobs=dict(hops=registry.Knob(
            1, "chords per node", checks.at_least(1))), caps=dict(degree=lambda n, k: (
                2 * k["hops"], 2 * k["hops"]))))
    partition.register("halves", registry.Component(
        _halves, "two label halves", knobs=dict(left=registry.Knob(
            0.8, "weight of a node's own half", checks.between(0, 1)))))
    data.register("blobs", registry.Component(_blobs, "a few synthetic images", knobs=dict(
        size=registry.Knob(300, "training images", checks.at_least(1)))))
    try:
        assert config.default_config().topology_args.chain.hops == 1
        assert config.default_config().dataset_args.blobs.size == 300
        assert config.default_config().partition_args.halves.left == 0.8
        assert "topology_args.chain.hops = 1: chords per node" in build.listing()
        workdir = tmp_path / "w"
        argv = ["vanish", "--config=experiments/default/config.py", f"--workdir={workdir}",
                "--config.topology.name=chain", "--config.topology.num_nodes=6",
                "--config.data.partition=halves", "--config.data.name=blobs",
                "--config.dataset_args.blobs.size=240",
                "--config.model.name=mlp", "--config.run.ticks=20",
                "--config.run.eval_every=10", "--config.algorithms=gossip_vc"]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            assert run.command([*argv, "--config.topology_args.chain.hops=0"]) == 1
        assert "config.topology_args.chain.hops = 0 must be >= 1" in err.getvalue()
        assert not workdir.exists()
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = run.command([*argv, "--config.topology_args.chain.hops=2"])
        assert code == 0, err.getvalue()[-500:]
        record = json.loads((workdir / "run_config.json").read_text())["config"]
        assert record["topology_args"]["chain"] == {"hops": 2}
        assert record["dataset_args"]["blobs"] == {"size": 240}
        assert (workdir / "summary.json").is_file()
        exp = build.experiment(tiny_config(**{"topology.name": "chain",
                                              "topology_args.chain.hops": 2,
                                              "data.partition": "halves"}))
        assert int(build.make_topology(exp, "gossip_vc").degree.max()) == 4
        assert build.make_partition(exp, 6).node_group_prob[0, 0] == 0.8
    finally:
        del topology.REGISTRY["chain"], partition.REGISTRY["halves"], data.REGISTRY["blobs"]


def _bias_sum(params):
    """A test metric: the sum of one node's biases."""
    import jax
    import jax.numpy as jnp

    leaves = jax.tree_util.tree_leaves_with_path(params)
    return sum(jnp.sum(x) for path, x in leaves if "bias" in jax.tree_util.keystr(path))


def test_a_metric_defined_here_is_one_line_and_reaches_rows_and_summaries(tmp_path):
    """The ARCHITECTURE.md recipe for a metric: a function of one node's params plus a line;
    `run.metrics` asks for it; rows hold its mean over the evaluated nodes (checked against
    NumPy on the same state), the summary its final value; a bad name is one line."""
    import contextlib
    import io
    import json

    import jax

    from vanish import metrics, registry, tracking

    metrics.register("bias_sum", registry.Component(_bias_sum, "sum of a node's biases"))
    try:
        sim = make_sim(tiny_config(**{"run.metrics": "bias_sum,kernel_norm"}), "gossip_vc")
        state = sim.run_ticks(sim.init_state(), 0, 10)
        params = jax.device_get(state.params)
        _, row = sim.evaluate(state)
        leaves = jax.tree_util.tree_leaves_with_path(params)
        bias = sum(np.asarray(x).reshape(sim.n, -1).sum(1) for p, x in leaves
                   if "bias" in jax.tree_util.keystr(p))
        norm = np.sqrt(sum((np.asarray(x).reshape(sim.n, -1).astype(np.float64) ** 2).sum(1)
                           for p, x in leaves if "kernel" in jax.tree_util.keystr(p)))
        np.testing.assert_allclose(row["bias_sum"], bias.mean(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(row["kernel_norm"], norm.mean(), rtol=1e-4)
        workdir = tmp_path / "w"
        argv = ["vanish", "--config=experiments/default/config.py", f"--workdir={workdir}",
                "--config.data.name=synthetic", "--config.model.name=mlp",
                "--config.topology.num_nodes=6", "--config.topology_args.random_regular.degree=3",
                "--config.run.ticks=20", "--config.run.eval_every=10",
                "--config.algorithms=gossip"]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            assert run.command([*argv, "--config.run.metrics=bias_summ"]) == 1
        assert ("config.run.metrics = 'bias_summ' names unknown metric(s) ['bias_summ'] (did "
                "you mean 'bias_sum'?)") in err.getvalue()
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            assert run.command([*argv, "--config.run.metrics=bias_sum"]) == 0
        rows = tracking.read_jsonl(workdir / tracking.METRICS_FILE)
        assert [r["tick"] for r in rows if "bias_sum" in r] == [0, 10, 20]
        summary = json.loads((workdir / "summary.json").read_text())
        assert summary["gossip"]["final_bias_sum"] == [r for r in rows if r["tick"] == 20][0][
            "bias_sum"]
    finally:
        del metrics.REGISTRY["bias_sum"]
