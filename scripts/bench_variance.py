"""Benchmark: variance-corrected averaging of N stacked LeNet-5 models vs one elementwise pass.

Prints a table and writes JSON; the ratio is against a baseline measured in the same run.

    python scripts/bench_variance.py --n 1024 --repeats 7 --out bench_variance.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vanish import variance  # noqa: E402

# PyTorch-style LeNet-5 (flax layout): ~62k float32 parameters per node.
LENET5_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    'Conv_0': {'kernel': (5, 5, 1, 6), 'bias': (6,)},
    'Conv_1': {'kernel': (5, 5, 6, 16), 'bias': (16,)},
    'Dense_0': {'kernel': (400, 120), 'bias': (120,)},
    'Dense_1': {'kernel': (120, 84), 'bias': (84,)},
    'Dense_2': {'kernel': (84, 10), 'bias': (10,)},
}


def _stacked_lenet(key: jax.Array, n: int) -> dict:
    leaves, treedef = jax.tree.flatten(LENET5_SHAPES, is_leaf=lambda s: isinstance(s, tuple))
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([0.1 * jax.random.normal(k, (n,) + s, jnp.float32)
                              for k, s in zip(keys, leaves)])


def _median_ms(cases: list[tuple[str, Callable[..., Any], tuple]], repeats: int) -> list[float]:
    """Median wall time per case; cases are timed round-robin so load drift hits all alike."""
    for _, fn, args in cases:
        jax.block_until_ready(fn(*args))  # compile + warm-up
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(repeats):
        for i, (_, fn, args) in enumerate(cases):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[i].append(time.perf_counter() - start)
    return [1e3 * statistics.median(t) for t in times]


def _count_fusions(fn: Callable[..., Any], args: tuple) -> int:
    hlo = fn.lower(*args).compile().as_text()
    entry = hlo[hlo.index('ENTRY'):]
    return entry.count(' fusion(')


def run(n: int = 1024, repeats: int = 5, seed: int = 0) -> list[dict]:
    """Time the elementwise baseline and `mix_and_correct` per target on N stacked LeNet-5s.

    Args:
        n: number of nodes (stack size).
        repeats: timed runs per row (round-robin) after one warm-up; medians are reported.
        seed: PRNG seed of the synthetic models.

    Returns:
        Rows {name, ms, ratio_vs_elementwise, fusions, n, params_per_node}.
    """
    key_self, key_sum = jax.random.split(jax.random.PRNGKey(seed))
    self_N = _stacked_lenet(key_self, n)
    sum_N = jax.tree.map(lambda x: 8.0 * x, _stacked_lenet(key_sum, n))
    count_N = jnp.full((n,), 8, jnp.int32).at[::7].set(0)  # some nodes received nothing
    var_sum_N = jax.tree.map(lambda x: jnp.full((n,), 8 * 0.01, jnp.float32), self_N)
    params = sum(int(np.prod(x.shape[1:])) for x in jax.tree.leaves(self_N))

    elementwise = jax.jit(lambda t: jax.tree.map(lambda x: x * 2 + 1, t))
    cases: list[tuple[str, Callable[..., Any], tuple]] = [
        ('elementwise x*2+1', elementwise, (self_N,))]
    for target in ('others', 'self', 'blend', 'none'):
        cfg = variance.CorrectionConfig(target=target, blend=0.5)
        fn = jax.jit(lambda s, x, c, v, cfg=cfg: variance.mix_and_correct(s, x, c, v, 0.5, cfg))
        cases.append((f'mix_and_correct[{target}]', fn, (self_N, sum_N, count_N, var_sum_N)))
    cases.append(('correctable_variance',
                  jax.jit(lambda t: variance.correctable_variance(t, variance.CorrectionConfig())),
                  (self_N,)))

    rows = [{'name': name, 'ms': ms, 'fusions': _count_fusions(fn, args), 'n': n,
             'params_per_node': params}
            for (name, fn, args), ms in zip(cases, _median_ms(cases, repeats))]
    base = rows[0]['ms']
    for row in rows:
        row['ratio_vs_elementwise'] = row['ms'] / base
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=1024)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--out', default='bench_variance.json')
    args = parser.parse_args()
    rows = run(args.n, args.repeats)
    print(f"N={args.n}, {rows[0]['params_per_node']} params/node, backend "
          f'{jax.default_backend()}, median of {args.repeats}')
    print(f"{'name':28s} {'ms':>10s} {'ratio':>7s} {'fusions':>8s}")
    for row in rows:
        print(f"{row['name']:28s} {row['ms']:10.2f} {row['ratio_vs_elementwise']:7.2f} "
              f"{row['fusions']:8d}")
    with open(args.out, 'w') as f:
        json.dump({'device': str(jax.devices()[0]), 'rows': rows}, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
