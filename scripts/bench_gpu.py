"""Accelerator benchmark: gossip ticks of N stacked models, node-steps/s, memory, compile time.

    python scripts/bench_gpu.py [--lenet 1000,10000] [--mlp 10000,50000] [--ticks 40]
                                [--warmup 20] [--out bench_gpu.json]

Needs nothing beyond jax / flax / optax / chex (and this package's device kernels: schedule,
topology, models, nodes, mixing; no config, no data files, no torch / TensorFlow). For each
(model, N): a random 8-regular graph and the paper's schedule (a node trains every
U{8..12} ticks, seed 0) packed into chunks of K nodes (`schedule.choose_slots`), and per
chunk the engine's work: gather the K nodes' params and optimizer state, sample batches of
64 by index from a device-resident train set (synthetic, --num-train images), one vmapped
SGD + momentum step (`nodes.make_train_step`), scatter back, push each trained model to its
out-neighbours (`mixing.push_from`), and at a tick's last chunk every node holding >= degree
models merges (beta = 0.5) and clears its inbox (a masked pass over all N rows: an upper
bound of the engine's compacted merge). Chunks run `--fuse` at a time inside one
`lax.scan` (default as `engine.choose_fuse`: 1 on CPU, 32 on accelerators).
Ticks [warmup, warmup + ticks) are timed after compilation; JSON per row: node_steps_per_s,
ticks_per_s, compile_s, peak_device_bytes (the device's `memory_stats()`; None where the
backend keeps none, e.g. CPU), state_bytes, slots.
Sizes are overridable so that a CPU test runs it in seconds (tests/test_bench_gpu.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from typing import Any, NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vanish import mixing, models, nodes, schedule, topology  # noqa: E402

PyTree = Any


class State(NamedTuple):
    params: PyTree  # params_N
    opt: PyTree  # optimizer state, stacked
    acc: PyTree  # inbox: sum of received models, like params_N
    count_N: jax.Array  # [N] models received
    chunk: jax.Array  # int32, next chunk of the plan


def choose_fuse(requested: int) -> int:
    """Chunks per compiled call, as `engine.choose_fuse`: 1 on CPU, 32 on accelerators."""
    if requested > 0:
        return requested
    return 1 if jax.default_backend() == "cpu" else 32


def peak_device_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else int(peak)


def run_case(model_name: str, n: int, *, ticks: int, warmup: int, batch: int, degree: int,
             num_train: int, fuse: int, max_slots: int | None) -> dict[str, Any]:
    """One (model, N) row; see the module docstring for what a tick does."""
    sched = schedule.draw(n, warmup + ticks, (8, 12), seed=0)
    slots = schedule.choose_slots(sched.counts_per_tick(), max_slots=max_slots)
    work = schedule.pack(sched, slots)
    graph = topology.random_regular(n, degree, seed=0).device_graph()
    net = models.make_model(model_name)
    tx = nodes.make_optimizer(lr=0.01, momentum=0.9)
    step = nodes.make_train_step(net, tx)
    kx, ky, kp, kt = jax.random.split(jax.random.PRNGKey(0), 4)
    x_train = jax.random.normal(kx, (num_train, 28, 28, 1))
    y_train = jax.random.randint(ky, (num_train,), 0, 10)
    params = nodes.init_params(net, kp, n, (28, 28, 1))
    state = State(params, nodes.init_opt_state(tx, params), jax.tree.map(jnp.zeros_like, params),
                  jnp.zeros(n, jnp.int32), jnp.int32(0))
    padded = work.padded(len(work) + 1)  # a trailing no-op chunk: scans past the end are safe
    plan = tuple(jnp.asarray(a) for a in (padded.tick, padded.node, padded.valid, padded.last))

    def chunk(s: State, plan: tuple[jax.Array, ...], x: jax.Array, y: jax.Array) -> State:
        tick_C, node_C, valid_C, last_C = plan
        c = s.chunk
        node_K, valid_K = node_C[c], valid_C[c]
        key = jax.random.fold_in(kt, tick_C[c])
        keys_K = jax.vmap(lambda i: jax.random.fold_in(key, i))(node_K)
        idx_KB = jax.vmap(lambda k: jax.random.randint(k, (batch,), 0, x.shape[0]))(keys_K)
        out = step(nodes.tree_take(s.params, node_K), nodes.tree_take(s.opt, node_K),
                   x[idx_KB], y[idx_KB])
        params = nodes.tree_put(s.params, node_K, out.params, valid_K)
        opt = nodes.tree_put(s.opt, node_K, out.opt_state, valid_K)
        acc, count = mixing.push_from(s.acc, s.count_N, out.params, node_K, valid_K, graph)
        merge_N = last_C[c] & (count >= degree)

        def merge(p: jax.Array, a: jax.Array) -> jax.Array:
            m = nodes.per_node(merge_N, p.ndim)
            mean = a / nodes.per_node(jnp.maximum(count, 1), p.ndim).astype(a.dtype)
            return jnp.where(m, 0.5 * p + 0.5 * mean, p)

        params = jax.tree.map(merge, params, acc)
        acc = jax.tree.map(lambda a: jnp.where(nodes.per_node(merge_N, a.ndim), 0, a), acc)
        return State(params, opt, acc, jnp.where(merge_N, 0, count), c + 1)

    def block(s: State, plan: tuple[jax.Array, ...], x: jax.Array, y: jax.Array,
              end: jax.Array) -> State:
        def body(s: State, _: None) -> tuple[State, None]:
            return jax.lax.cond(s.chunk < end, lambda s: chunk(s, plan, x, y),
                                lambda s: s, s), None
        return jax.lax.scan(body, s, None, length=fuse)[0]

    fuse = choose_fuse(fuse)
    t = time.perf_counter()
    compiled = jax.jit(block, donate_argnums=(0,)).lower(
        state, plan, x_train, y_train, jnp.int32(0)).compile()
    compile_s = time.perf_counter() - t

    def run(s: State, c0: int, c1: int) -> State:
        s = s._replace(chunk=jnp.int32(c0))
        end = jnp.int32(c1)
        for _ in range(-(-(c1 - c0) // fuse)):
            s = compiled(s, plan, x_train, y_train, end)
        return s

    c0, c1 = (int(c) for c in np.searchsorted(work.tick, [warmup, warmup + ticks]))
    state = jax.block_until_ready(run(state, 0, c0))
    t = time.perf_counter()
    state = jax.block_until_ready(run(state, c0, c1))
    seconds = time.perf_counter() - t
    steps = int(work.valid[c0:c1].sum())
    if not np.isfinite(np.asarray(state.params[next(iter(state.params))]["bias"])).all():
        raise FloatingPointError(f"{model_name} N={n}: non-finite parameters")
    state_bytes = sum(int(a.nbytes) for a in jax.tree.leaves(state))
    return dict(model=model_name, n=n, ticks=ticks, slots=slots, fuse=fuse, chunks=c1 - c0,
                node_steps=steps, seconds=seconds, node_steps_per_s=steps / seconds,
                ticks_per_s=ticks / seconds, compile_s=compile_s,
                peak_device_bytes=peak_device_bytes(), state_bytes=state_bytes)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lenet", default="1000,10000", help="LeNet-5 node counts")
    ap.add_argument("--mlp", default="10000,50000", help="MLP node counts")
    ap.add_argument("--ticks", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--degree", type=int, default=8)
    ap.add_argument("--num-train", type=int, default=60000)
    ap.add_argument("--fuse", type=int, default=0, help="chunks per call (0: per backend)")
    ap.add_argument("--max-slots", type=int, default=0, help="cap on K (0: none)")
    ap.add_argument("--out", default="bench_gpu.json")
    args = ap.parse_args(argv)
    dev = jax.devices()[0]
    result: dict[str, Any] = dict(
        backend=jax.default_backend(), device=str(dev.device_kind), jax=jax.__version__,
        machine=platform.machine(), time=time.strftime("%Y-%m-%d %H:%M:%S"), rows=[])
    print(f"backend {result['backend']} ({result['device']})")
    print(f"{'model':6} {'N':>6} {'K':>4} {'ticks/s':>8} {'steps/s':>9} {'compile s':>9} "
          f"{'peak GB':>8} {'state GB':>8}")
    case = functools.partial(run_case, ticks=args.ticks, warmup=args.warmup, batch=args.batch,
                             degree=args.degree, num_train=args.num_train, fuse=args.fuse,
                             max_slots=args.max_slots or None)
    for name, sizes in (("lenet5", args.lenet), ("mlp", args.mlp)):
        for n in (int(v) for v in sizes.split(",") if v):
            try:
                row = case(name, n)
            except Exception as e:  # e.g. out of memory at the largest N: keep the others
                row = dict(model=name, n=n, error=f"{type(e).__name__}: {e}"[:400])
                print(f"{name:6} {n:6d} FAILED {row['error'][:200]}", flush=True)
            else:
                g = 2.0**30
                peak = row["peak_device_bytes"]
                peak_s = "-" if peak is None else f"{peak / g:.2f}"
                print(f"{name:6} {n:6d} {row['slots']:4d} {row['ticks_per_s']:8.2f} "
                      f"{row['node_steps_per_s']:9.0f} {row['compile_s']:9.1f} {peak_s:>8} "
                      f"{row['state_bytes'] / g:8.2f}", flush=True)
            result["rows"].append(row)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
