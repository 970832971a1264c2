"""Scale-out: the node axis split over 8 (fake CPU) devices, each training its own nodes.

The sharded runs happen in one subprocess (the device count is fixed when JAX starts): for
every (algorithm, topology) case it runs the same config with shard_nodes 'false' (one
device) and 'true' (8 devices) and reports both; the tests compare them and read the
compiled step's HLO.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# Each case compiles two simulations on 8 fake devices sharing 2 cores (~10 s each), so the
# default suite runs one case per algorithm; VANISH_FULL_SHARDING=1 runs the whole matrix
# (5 algorithms x ring / random regular / star, plus message loss, delays and churn; all
# pass, measured 2026-12-03).
FULL = [(a, t, "") for a in ("gossip", "gossip_vc", "fl", "dpsgd", "dpsgd_vc")
        for t in ("ring", "random_regular", "star")]
FULL += [("gossip_vc", "random_regular", "drop_prob=0.3"),
         ("gossip_vc", "random_regular", "delay=1-3"),
         ("gossip_vc", "random_regular", "churn_up=20,churn_down=5")]
CASES = FULL if os.environ.get("VANISH_FULL_SHARDING") else [
    ("gossip", "ring", "eval_nodes=1"), ("gossip_vc", "random_regular", "delay=1-3"),
    ("fl", "star", ""),
    ("dpsgd_vc", "ring", "")]

SCRIPT = textwrap.dedent(
    """
    import json, re, sys, jax, numpy as np
    from vanish import build, compat, config, data, run, train
    assert jax.device_count() == 8, jax.devices()
    ds = data.load("synthetic", num_train=600, num_test=200)

    def Simulation(cfg, algo, ds):
        cfg = run.apply_overrides(cfg, {"algorithms": algo})
        return train.Simulation(build.experiment(cfg, dataset=ds), algo)

    def cfg_for(algo, topo, extra):
        cfg = config.default_config()
        cfg.data.name = "synthetic"
        cfg.model.name = "mlp"
        cfg.topology.name = topo
        cfg.topology_args.random_regular.degree = 3
        cfg.topology.num_nodes = 15 if algo == "fl" else 16  # FL adds the server: 16 nodes
        cfg.dataset_args.synthetic.num_train = 600
        cfg.dataset_args.synthetic.num_test = 200
        cfg.data.test_per_class = 5
        cfg.run.ticks, cfg.optim.batch_size = 16, 8
        for kv in filter(None, extra.split(",")):
            k, v = kv.split("=")
            cfg = run.apply_overrides(cfg, {p: v for p in compat.OLD_NAMES.get(k, (k,))})
        return cfg

    out = {}
    # The last case: 12 nodes, which 8 devices cannot split; 'auto' takes 6 of them.
    for algo, topo, extra in json.loads(sys.argv[1]) + [("gossip_vc", "ring", "num_nodes=12")]:
        res = {}
        for shard in ("false", "auto" if "num_nodes=12" in extra else "true"):
            cfg = run.apply_overrides(cfg_for(algo, topo, extra), {"run.shard_nodes": shard})
            sim = Simulation(cfg, algo, ds)
            state = sim.run_ticks(sim.init_state(), 0, 8)
            state, m1 = sim.evaluate(state)
            state = sim.run_ticks(state, 8, 16)
            state, m2 = sim.evaluate(state)
            k = state.params["Dense_0"]["kernel"]
            res["true" if shard == "auto" else shard] = dict(
                kernel=np.asarray(k)[:, :64:7, ::9].tolist(),
                devices=len(k.sharding.device_set), metrics=[m1, m2],
                merges=np.asarray(state.merges).tolist())
        out[f"{algo}|{topo}|{extra}"] = res
    # The compiled sharded step of a LeNet-5 gossip_vc run: its dots and collectives
    # (and on a ring, whose sent models go to the two adjacent devices only).
    cfg = cfg_for("gossip_vc", "random_regular", "")
    cfg.model.name = "lenet5"
    cfg.topology.num_nodes = 64
    cfg.run.slots = 16
    cfg.run.shard_nodes = "true"
    hlo = {}
    for shard in ("false", "true", "ring"):
        cfg = run.apply_overrides(cfg, {"run.shard_nodes": "false" if shard == "false" else "true",
                                        "topology.name": "ring" if shard == "ring" else
                                        "random_regular"})
        sim = Simulation(cfg, "gossip_vc", ds)
        e = sim.engine
        txt = e._step.lower(sim.init_state(), e.consts, e.plan).compile().as_text()
        ops = {}
        for line in txt.splitlines():
            m = re.search(r"= (\\w+)\\[([\\d,]*)\\]\\S* (all-gather|all-reduce|dot|convolution|"
                          r"collective-permute|all-to-all)\\(", line)
            if m:
                ops.setdefault(m.group(3), []).append([int(d) for d in m.group(2).split(",") if d])
        hlo[shard] = dict(ops=ops, slots=e.work.slots, devices=e.devices, halo=e.halo)
    print("RESULT" + json.dumps(dict(runs=out, hlo=hlo)))
    """
)


# The tests that use it are marked slow (~2 min on 2 cores): `python -m pytest -m slow -n0`, and CI.
@pytest.fixture(scope="module")
def sharded() -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(CASES)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][0]
    return json.loads(line[len("RESULT"):])


@pytest.mark.slow
@pytest.mark.parametrize("algo,topo,extra", CASES)
def test_results_do_not_depend_on_the_device_count(sharded, algo, topo, extra):
    res = sharded["runs"][f"{algo}|{topo}|{extra}"]
    one, eight = res["false"], res["true"]
    assert one["devices"] == 1 and eight["devices"] == 8
    assert one["merges"] == eight["merges"] and sum(one["merges"]) > 0
    np.testing.assert_allclose(eight["kernel"], one["kernel"], rtol=0, atol=1e-6)
    for m1, m8 in zip(one["metrics"], eight["metrics"]):
        assert m1.keys() == m8.keys()
        for key in m1:
            np.testing.assert_allclose(m8[key], m1[key], rtol=1e-6, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_auto_splits_over_the_most_devices_that_divide_n(sharded):
    res = sharded["runs"]["gossip_vc|ring|num_nodes=12"]
    one, six = res["false"], res["true"]
    assert one["devices"] == 1 and six["devices"] == 6
    assert one["merges"] == six["merges"] and sum(one["merges"]) > 0
    np.testing.assert_allclose(six["kernel"], one["kernel"], rtol=0, atol=1e-6)
    for m1, m6 in zip(one["metrics"], six["metrics"]):
        for key in m1:
            np.testing.assert_allclose(m6[key], m1[key], rtol=1e-6, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_each_device_trains_only_its_own_nodes(sharded):
    """No replicated training: every dot of the sharded step has batch K / devices."""
    one, eight = sharded["hlo"]["false"], sharded["hlo"]["true"]
    k = one["slots"]
    assert eight["devices"] == 8 and eight["slots"] == 8 * (k // 8) and k == 16
    # The training dots (vmapped over the chunk's slots) lead with the batch.
    assert {shape[0] for shape in one["ops"]["dot"] if len(shape) == 3} == {k}
    assert {shape[0] for shape in eight["ops"]["dot"] if len(shape) == 3} == {k // 8}
    assert "convolution" not in eight["ops"]  # CPU: banded convs are dots
    # What crosses devices: the K sent models (and their receivers), gathered once per chunk;
    # nothing is all-reduced (the old GSPMD step all-reduced the K trained nodes' states).
    assert "all-reduce" not in eight["ops"]
    gathered = {shape[0] for shape in eight["ops"]["all-gather"]}
    assert gathered == {k}
    assert "all-gather" not in one["ops"]


@pytest.mark.slow
def test_a_ring_sends_only_to_the_adjacent_devices(sharded):
    """Halo exchange: one ppermute per shift (+1, -1) of the K / D sent models; no gather."""
    ring = sharded["hlo"]["ring"]
    k = sharded["hlo"]["false"]["slots"]
    assert ring["devices"] == 8 and ring["halo"] == [1, 7]
    assert "all-gather" not in ring["ops"] and "all-reduce" not in ring["ops"]
    assert {shape[0] for shape in ring["ops"]["collective-permute"]} == {k // 8}
    assert {shape[0] for shape in ring["ops"]["dot"] if len(shape) == 3} == {k // 8}


def test_uneven_split_is_rejected_with_a_clear_message(monkeypatch):
    from vanish import engine

    monkeypatch.setattr(engine.jax, "devices", lambda: [object()] * 4)
    with pytest.raises(ValueError, match="5 nodes cannot be split evenly over 4 devices"):
        engine.node_mesh(5)


# Measured with scripts/device_drift.py (one device against 8 fake CPU devices, gossip_vc,
# 16 nodes, MLP): the largest absolute difference of any metric over 300 ticks. Training and
# merge counts agree exactly; values differ by float summation order, which feeds back
# through training. README states the bound measured over 1000 ticks.
DRIFT_BOUND_300 = 1e-4  # measured: 1.5e-5 (the consensus distance, ~20 in value)


@pytest.mark.slow
def test_eight_devices_stay_within_the_stated_bound_over_300_ticks(tmp_path):
    out = tmp_path / "drift.json"
    proc = subprocess.run([sys.executable, "scripts/device_drift.py", "--ticks", "300",
                           "--json", str(out)], capture_output=True, text=True, timeout=1200,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    result = json.loads(out.read_text())
    assert result["counts_equal"] and result["devices"] == 8
    assert result["max_abs_diff"] <= DRIFT_BOUND_300, result["series"]
