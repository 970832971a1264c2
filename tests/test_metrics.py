"""Run summaries: time to accuracy on quantised accuracies, the one variance-ratio definition."""

import numpy as np

from vanish import metrics


def _row(tick, acc, **extra):
    return {"tick": tick, "acc_mean": acc, "acc_min": acc, "averaging_events": tick, **extra}


def test_target_reached_exactly_counts_despite_float32_rounding():
    rows = [_row(0, 0.1), _row(100, float(np.float32(0.79999995))), _row(200, 0.81)]
    assert rows[1]["acc_mean"] < 0.8
    assert metrics.summarize(rows, 0.8)["ticks_to_target"] == 100
    # ... but one image short (0.79 of 100) is not the target.
    rows[1]["acc_mean"] = 0.79
    assert metrics.summarize(rows, 0.8)["ticks_to_target"] == 200
    assert metrics.summarize(rows[:2], 0.8)["ticks_to_target"] is None


def test_variance_ratio_is_the_mean_over_kernels_only():
    last = _row(10, 0.5, **{"var_ratio/Dense_0/kernel": 0.5, "var_ratio/Dense_1/kernel": 1.5,
                            "var_ratio/Dense_0/bias": 100.0})
    summary = metrics.summarize([_row(0, 0.1), last], 0.9)
    assert summary["var_ratio"] == 1.0 == metrics.kernel_var_ratio(last)
    assert metrics.variance_ratios({"var/a/kernel": 2.0}, {"a/kernel": 4.0}) == {
        "var_ratio/a/kernel": 0.5}
