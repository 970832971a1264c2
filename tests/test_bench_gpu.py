"""scripts/bench_gpu.py runs end to end at tiny sizes on CPU and writes its JSON rows; its
fused (lax.scan, the accelerator default) and unfused paths do the same work."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "bench_gpu", Path(__file__).parents[1] / "scripts" / "bench_gpu.py")
bg = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bg)

TINY = ["--lenet", "8", "--mlp", "10", "--ticks", "12", "--warmup", "2", "--batch", "4",
        "--degree", "3", "--num-train", "64"]


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
@pytest.mark.parametrize("fuse", ["1", "3"])
def test_bench_gpu_writes_rows(tmp_path, fuse):
    out = tmp_path / "gpu.json"
    res = bg.main(TINY + ["--fuse", fuse, "--out", str(out)])
    stored = json.loads(out.read_text())
    assert stored["backend"] == res["backend"]
    assert [(r["model"], r["n"]) for r in stored["rows"]] == [("lenet5", 8), ("mlp", 10)]
    for row in stored["rows"]:
        assert "error" not in row, row
        assert row["fuse"] == int(fuse)
        # 12 timed ticks, each node trains every 8..12 ticks: at least one event per node.
        assert row["node_steps"] >= row["n"]
        assert row["node_steps_per_s"] > 0 and row["ticks_per_s"] > 0
        np.testing.assert_allclose(row["node_steps_per_s"] / row["ticks_per_s"],
                                   row["node_steps"] / row["ticks"], rtol=1e-9)
        assert row["compile_s"] > 0 and row["state_bytes"] > 0
        assert row["peak_device_bytes"] is None or row["peak_device_bytes"] > 0
