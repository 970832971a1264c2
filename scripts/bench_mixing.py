"""Benchmark of one gossip mix of N stacked LeNet-5 models, as a ratio to an elementwise pass.

    python scripts/bench_mixing.py [out.json] [--naive]   # table + JSON (bench_mixing.json)
    from scripts.bench_mixing import run; rows = run(n=256)
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vanish import mixing, topology  # noqa: E402

# PyTorch-style LeNet-5 (conv 6@5x5, conv 16@5x5, dense 120, 84, 10): ~62k params per node.
LENET5_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1/kernel": (5, 5, 1, 6), "conv1/bias": (6,),
    "conv2/kernel": (5, 5, 6, 16), "conv2/bias": (16,),
    "dense1/kernel": (400, 120), "dense1/bias": (120,),
    "dense2/kernel": (120, 84), "dense2/bias": (84,),
    "dense3/kernel": (84, 10), "dense3/bias": (10,),
}


def stacked_lenet5(n: int, seed: int = 0) -> dict[str, jax.Array]:
    key = jax.random.PRNGKey(seed)
    return {name: jax.random.normal(jax.random.fold_in(key, i), (n,) + shape, jnp.float32)
            for i, (name, shape) in enumerate(LENET5_SHAPES.items())}


@jax.jit
def _elementwise(tree: Any) -> Any:
    return jax.tree.map(lambda x: x * 2 + 1, tree)


@jax.jit
def _naive_gather(tree: Any, graph: topology.Graph) -> Any:
    # The textbook formulation (materialises [N, D, P]); kept as the "before" reference.
    def leaf(x: jax.Array) -> jax.Array:
        w = graph.nbr_weight.reshape(graph.nbr.shape + (1,) * (x.ndim - 1))
        s = graph.self_weight.reshape((-1,) + (1,) * (x.ndim - 1))
        return s * x + jnp.sum(w * x[graph.nbr], axis=1)
    return jax.tree.map(leaf, tree)


def _time(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """ms per call, per candidate; rounds interleave candidates so load drifts hit all alike."""
    for fn in fns.values():
        jax.block_until_ready(fn())  # compile + warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = np.random.default_rng(0)
    for _ in range(repeats):
        # Shuffled each round: the call after segment_sum (which frees GBs) runs slower.
        for name in order.permutation(list(fns)):
            fn = fns[name]
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def run(n: int = 1024, degree: int = 8, repeats: int = 5, naive: bool = False) -> list[dict]:
    """Times elementwise, dense, each sparse method and 'auto' on a random regular graph.

    Returns rows {name, ms (median), ratio_vs_elementwise, min_ms, min_ratio, n, degree,
    params_per_node, backend}; the auto row also names the method it picked.
    `naive=True` adds the materialising gather (slow: seconds at n = 1024).
    """
    topo = topology.random_regular(n, degree, seed=0)
    graph = topo.device_graph()
    tree = stacked_lenet5(n)
    backend = jax.default_backend()
    auto = mixing.select_method(backend, n, int(graph.nbr.shape[1]), topo.num_edges)
    fns: dict[str, Callable[[], Any]] = {"elementwise": lambda: _elementwise(tree)}
    for method in ("dense", "gather", "segment_sum"):
        fns[method] = lambda m=method: mixing.mix(tree, graph, method=m)
    fns["auto"] = lambda: mixing.mix(tree, graph)
    if naive:
        fns["naive_gather"] = lambda: _naive_gather(tree, graph)
    times = _time(fns, repeats)
    base = float(np.median(times["elementwise"]))
    rows = []
    for name, ts in times.items():
        t = float(np.median(ts))
        # min_ms: on a shared machine the fastest run is the least disturbed one.
        row: dict[str, Any] = {"name": name, "ms": round(t, 2),
                               "ratio_vs_elementwise": round(t / base, 3),
                               "min_ms": round(min(ts), 2),
                               "min_ratio": round(min(ts) / min(times["elementwise"]), 3)}
        if name == "auto":
            row["method"] = auto
        rows.append(row)
    meta = {"n": n, "degree": degree, "params_per_node": sum(
        int(np.prod(s)) for s in LENET5_SHAPES.values()), "backend": backend}
    for row in rows:
        row.update(meta)
    return rows


def main(argv: list[str]) -> None:
    args = [a for a in argv[1:] if not a.startswith("--")]
    path = args[0] if args else "bench_mixing.json"
    rows = run(naive="--naive" in argv)
    print(f"mix of N={rows[0]['n']} x {rows[0]['params_per_node']} params, "
          f"random {rows[0]['degree']}-regular, backend={rows[0]['backend']}")
    print(f"{'name':<14}{'median ms':>10}{'x elementwise':>15}{'min ms':>10}{'x (min)':>9}")
    for row in rows:
        extra = f"  -> {row['method']}" if "method" in row else ""
        print(f"{row['name']:<14}{row['ms']:>10.1f}{row['ratio_vs_elementwise']:>15.2f}"
              f"{row['min_ms']:>10.1f}{row['min_ratio']:>9.2f}{extra}")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv)
