"""Kernel benchmark: vectorized training vs a loop, sparse mixing and variance correction.

    python scripts/bench_kernels.py [--out bench_kernels.json] [--nodes 16,64,256,1024] [--quick]

Every figure is paired with a baseline measured in the same run (machines are noisy):
  1. training: node-steps/s of the vmapped step vs a Python loop of jitted single-node steps
     (batch 32), MLP and LeNet-5, plus achieved GFLOP/s vs a 2048^2 fp32 matmul;
  2. mixing: one sparse mix of N=1024 LeNet-5 models vs an elementwise pass
     (scripts/bench_mixing.py);
  3. variance correction of the same stack vs the elementwise pass (scripts/bench_variance.py).
Targets: LeNet-5 vectorized >= 1.0x the loop at N >= 64 and MLP >= 3x at N = 256 on
the 2-core CPU (>= 25x for LeNet-5 at N = 1024 on a GPU); mixing and correction <= 3x elementwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from vanish import models, nodes, runtime  # noqa: E402

BATCH = 32


def timed(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Best wall time of `repeats` runs after one warm-up (compilation) run."""
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


def matmul_gflops(size: int = 2048) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size))
    f = jax.jit(lambda a: a @ a)
    return 2 * size**3 / timed(lambda: f(a)) / 1e9


def step_flops(model: Any, tx: Any) -> float:
    """Useful FLOPs of one single-node step, from XLA's cost analysis of the xla-conv program."""
    p = nodes.init_params(model, jax.random.PRNGKey(0), 1, (28, 28, 1))
    o = nodes.init_opt_state(tx, p)
    x, y = jnp.zeros((1, BATCH, 28, 28, 1)), jnp.zeros((1, BATCH), jnp.int32)
    cost = jax.jit(nodes.make_train_step(model, tx)).lower(p, o, x, y).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0))


def bench_training(name: str, n: int, loop_nodes: int, repeats: int) -> dict[str, Any]:
    tx = nodes.make_optimizer(lr=0.01, momentum=0.9)
    vec_model = models.make_model(name, conv_impl="auto")
    loop_model = models.make_model(name, conv_impl="xla")
    key = jax.random.PRNGKey(1)
    x = jax.random.normal(key, (n, BATCH, 28, 28, 1))
    y = jax.random.randint(key, (n, BATCH), 0, 10)
    params = nodes.init_params(vec_model, jax.random.PRNGKey(0), n, (28, 28, 1))
    opt = nodes.init_opt_state(tx, params)
    # Baseline: a Python loop of jitted single-node steps (the loop's rate does not depend
    # on N, so it is measured on min(N, loop_nodes) nodes).
    m = min(n, loop_nodes)
    # Both donate params and optimizer state, as the engine does (the update is in place).
    one = jax.jit(nodes.make_train_step(loop_model, tx), donate_argnums=(0, 1))
    states = [[jax.tree.map(lambda a, i=i: a[i : i + 1], params),
               jax.tree.map(lambda a, i=i: a[i : i + 1], opt)] for i in range(m)]

    def loop() -> list[Any]:
        for i, s in enumerate(states):
            s[:] = one(s[0], s[1], x[i : i + 1], y[i : i + 1])[:2]
        return states

    t_loop = timed(loop, repeats)
    vec = jax.jit(nodes.make_train_step(vec_model, tx), donate_argnums=(0, 1))
    stacked = [params, opt]

    def vectorized() -> list[Any]:
        stacked[:] = vec(stacked[0], stacked[1], x, y)[:2]
        return stacked

    t_vec = timed(vectorized, repeats)
    loop_rate, vec_rate = m / t_loop, n / t_vec
    flops = step_flops(loop_model, tx)
    return dict(model=name, n=n, conv_impl=getattr(vec_model, "conv_impl", "-"),
                loop_node_steps_s=loop_rate, vec_node_steps_s=vec_rate,
                speedup=vec_rate / loop_rate, vec_gflops=vec_rate * flops / 1e9,
                loop_gflops=loop_rate * flops / 1e9)


def main() -> None:
    runtime.reexec_with_tcmalloc()  # as the CLI does; VANISH_TCMALLOC=0 measures without
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_kernels.json")
    ap.add_argument("--nodes", default="16,64,256,1024")
    ap.add_argument("--models", default="mlp,lenet5")
    ap.add_argument("--loop-nodes", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="N in {16, 64}, skip mixing at 1024")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: train,mix,var")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    ns = [16, 64] if args.quick else [int(v) for v in args.nodes.split(",")]
    result: dict[str, Any] = dict(
        backend=jax.default_backend(), device=str(jax.devices()[0].device_kind),
        cpu_count=os.cpu_count(), machine=platform.machine(), jax=jax.__version__,
        tcmalloc=runtime.tcmalloc_active(),
        time=time.strftime("%Y-%m-%d %H:%M:%S"))
    result["matmul_gflops"] = peak = matmul_gflops()
    print(f"backend {result['backend']} ({result['device']}), tcmalloc {result['tcmalloc']}, "
          f"fp32 matmul 2048^2: {peak:.1f} GFLOP/s")
    if "train" not in skip:
        rows = []
        print(f"{'model':8} {'N':>5} {'impl':7} {'loop/s':>8} {'vmap/s':>8} {'speedup':>8} "
              f"{'GFLOP/s':>8} {'%peak':>6}")
        for name in args.models.split(","):
            for n in ns:
                r = bench_training(name, n, args.loop_nodes, args.repeats)
                rows.append(r)
                print(f"{name:8} {n:5d} {r['conv_impl']:7} {r['loop_node_steps_s']:8.0f} "
                      f"{r['vec_node_steps_s']:8.0f} {r['speedup']:7.2f}x {r['vec_gflops']:8.1f} "
                      f"{100 * r['vec_gflops'] / peak:5.1f}%", flush=True)
        result["training"] = rows
    n_mix = 256 if args.quick else 1024
    if "mix" not in skip:
        from scripts import bench_mixing

        result["mixing"] = rows = bench_mixing.run(n=n_mix)
        print(f"\nmixing N={n_mix} LeNet-5 stack, random 8-regular:")
        for r in rows:
            print(f"  {r['name']:28} {r['ms']:9.1f} ms "
                  f"{r['ratio_vs_elementwise']:6.2f}x elementwise")
    if "var" not in skip:
        from scripts import bench_variance

        result["variance"] = rows = bench_variance.run(n=n_mix)
        print(f"\nvariance correction N={n_mix} LeNet-5 stack:")
        for r in rows:
            print(f"  {r['name']:28} {r['ms']:9.1f} ms "
                  f"{r['ratio_vs_elementwise']:6.2f}x elementwise")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
