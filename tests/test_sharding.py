"""The node axis sharded over 8 (fake CPU) devices gives the single-device results."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, jax, numpy as np
    from vanish import config, data
    from vanish.simulation import Simulation
    assert jax.device_count() == 8, jax.devices()
    cfg = config.default_config()
    cfg.dataset, cfg.model, cfg.num_nodes, cfg.degree = "synthetic", "mlp", 16, 3
    cfg.synthetic_train, cfg.synthetic_test, cfg.test_per_class = 600, 200, 5
    cfg.ticks, cfg.batch_size = 30, 8
    ds = data.load("synthetic", num_train=600, num_test=200)
    out = {}
    for shard in (False, True):
        cfg.shard_nodes = shard
        sim = Simulation(cfg, "gossip_vc", ds)
        state = sim.run_ticks(sim.init_state(), 0, 30)
        kernel = state.params["Dense_0"]["kernel"]
        out[str(shard)] = dict(
            params=np.asarray(kernel).tolist(),
            devices=len(kernel.sharding.device_set),
            merges=int(np.asarray(state.merges).sum()))
    print("RESULT" + json.dumps(out))
    """
)


def test_sharded_nodes_match_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][0]
    out = json.loads(line[len("RESULT"):])
    import numpy as np

    assert out["False"]["devices"] == 1 and out["True"]["devices"] == 8
    assert out["True"]["merges"] == out["False"]["merges"] > 0
    np.testing.assert_allclose(out["True"]["params"], out["False"]["params"], rtol=1e-5, atol=1e-6)


def test_uneven_split_is_rejected_with_a_clear_message(monkeypatch):
    import pytest

    from vanish import simulation

    monkeypatch.setattr(simulation.jax, "devices", lambda: [object()] * 4)
    with pytest.raises(ValueError, match="5 nodes cannot be split evenly over 4 devices"):
        simulation.node_mesh(5)
