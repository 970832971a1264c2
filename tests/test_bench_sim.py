"""scripts/bench_sim.py's A/B work plan: drawn in the script (the same for both trees of an
--against run), every training event exactly once, in tick order, in chunks of K slots."""

import importlib.util
from pathlib import Path

import numpy as np

_SPEC = importlib.util.spec_from_file_location(
    "bench_sim", Path(__file__).parents[1] / "scripts" / "bench_sim.py")
bs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bs)


def test_work_plan_holds_every_event_once_in_tick_order():
    n, ticks = 30, 40
    node_C, valid_C, tick_C, k = bs._work_plan(n, ticks)
    assert node_C.shape == valid_C.shape == (len(tick_C), k)
    assert np.all(np.diff(tick_C) >= 0)
    assert valid_C[:, 0].all()  # no empty chunk
    assert (tick_C == 0).sum() == -(-n // k)  # every node trains at tick 0
    events = sorted((int(t), int(v)) for t, row, ok in zip(tick_C, node_C, valid_C)
                    for v in row[ok])
    assert len(events) == len(set(events))  # nobody twice in one tick
    per_node = np.bincount([v for _, v in events], minlength=n)
    # Gaps of 8..12 ticks: 4 or 5 trainings in 40 ticks (ticks 0, <= 12, <= 24, <= 36, ...).
    assert per_node.min() >= 4 and per_node.max() <= 5
    again = bs._work_plan(n, ticks)
    for a, b in zip(again[:3], (node_C, valid_C, tick_C)):
        np.testing.assert_array_equal(a, b)  # deterministic: the same plan for both trees
