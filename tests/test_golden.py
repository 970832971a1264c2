"""Golden metrics: every algorithm on a small synthetic config, against a recorded fixture.

The fixture (tests/golden/metrics.json) was recorded from the engine before a rewrite; the
engine must reproduce it (identical merge / training counts, metrics to 1e-6). When a change
alters results ON PURPOSE, regenerate it and say so in the commit message:

    VANISH_REGEN_GOLDEN=1 python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from jax_cache import compile_cache
from helpers import make_sim
from vanish import config, data

FIXTURE = Path(__file__).parent / "golden" / "metrics.json"
ALGORITHMS = ("single", "fl_sched", "fl", "gossip", "gossip_vc", "gossip_part", "dpsgd", "dpsgd_vc")
EXACT = ("averaging_events", "training_events")


def golden_cfg(algorithm):
    cfg = config.default_config()
    cfg.data.name, cfg.data.test_per_class = "synthetic", 5
    cfg.dataset_args.synthetic.num_train, cfg.dataset_args.synthetic.num_test = 600, 200
    cfg.model.name, cfg.optim.batch_size, cfg.optim.lr, cfg.optim.momentum = "mlp", 8, 0.05, 0.9
    cfg.topology.num_nodes, cfg.topology.name = 6, "random_regular"
    cfg.topology_args.random_regular.degree = 3
    cfg.run.ticks = 40
    cfg.run.eval_every = 10
    cfg.schedule.interval_lo = 2
    cfg.schedule.interval_hi = 4
    cfg.algorithm_args.fl.round_ticks, cfg.algorithm_args.gossip_part.num_partitions = 5, 3
    cfg.algorithm_args.fl_sched.round_ticks = 5
    cfg.algorithms = algorithm
    return cfg


def run_golden(algorithm, dataset):

    cfg = golden_cfg(algorithm)
    sim = make_sim(cfg, algorithm, dataset)
    state = sim.init_state()
    rows = []
    for t0 in range(0, cfg.run.ticks, cfg.run.eval_every):
        state = sim.run_ticks(state, t0, t0 + cfg.run.eval_every)
        state, m = sim.evaluate(state)
        rows.append({k: v for k, v in m.items()
                     if k in EXACT or k.startswith(("acc_", "loss_", "var/")) or k == "consensus"})
    return rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    with compile_cache(tmp_path_factory.getbasetemp() / "jax_cache_golden"):
        yield data.load("synthetic", num_train=600, num_test=200, seed=0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_engine_reproduces_golden_metrics(algorithm, dataset):
    got = run_golden(algorithm, dataset)
    if os.environ.get("VANISH_REGEN_GOLDEN"):
        table = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}
        table[algorithm] = got
        FIXTURE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        pytest.skip("fixture regenerated")
    want = json.loads(FIXTURE.read_text())[algorithm]
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert set(g) == set(w), f"evaluation {i}: metric names changed"
        for k in w:
            if k in EXACT:
                assert g[k] == w[k], f"{algorithm} eval {i} {k}: {g[k]} != {w[k]}"
            else:
                np.testing.assert_allclose(
                    g[k], w[k], rtol=1e-6, atol=1e-6,
                    err_msg=f"{algorithm} eval {i} {k} differs from tests/golden/metrics.json; "
                            "if the change is intended, regenerate (see module docstring)")
