"""Baseline: a plain per-node PyTorch CPU loop of LeNet-5 steps (optional; needs torch).

    pip install -e .[bench]          # torch (a CPU build is enough)
    python scripts/bench_torch.py [--nodes 50] [--rounds 4] [--threads 1,0] [--out FILE]

N independent PyTorch-style LeNet-5 models (conv 6@5x5 pad 2, ReLU, 2x2 max pool, conv
16@5x5, ReLU, pool, dense 120, 84, 10), each with its own SGD (lr 0.01, momentum 0.9),
trained one after the other, one step on its own synthetic batch of 64 per round: the
simplest simulator a PyTorch user writes (no merges, no data pipeline). Prints node-steps/s
at each thread count (0 = all cores) and writes JSON; `scripts/bench_sim.py --against REV
--torch` runs it between the JAX runs, so that the ratio is taken on the same machine state.
torch is never needed by the package or by the default tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any


def torch_rate(n: int, rounds: int, threads: int, batch: int = 64) -> dict[str, Any]:
    """node-steps/s of `rounds` rounds over n models (one warm-up round untimed)."""
    import importlib

    torch = importlib.import_module("torch")  # optional: untyped here, never a hard import
    nn = torch.nn
    torch.set_num_threads(threads if threads > 0 else (os.cpu_count() or 1))
    torch.manual_seed(0)

    def lenet5() -> Any:
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))

    models = [lenet5() for _ in range(n)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in models]
    xs = torch.randn(n, batch, 1, 28, 28)
    ys = torch.randint(0, 10, (n, batch))
    loss_fn = nn.CrossEntropyLoss()

    def one_round() -> None:
        for i, (m, o) in enumerate(zip(models, opts)):
            o.zero_grad(set_to_none=True)
            loss_fn(m(xs[i]), ys[i]).backward()
            o.step()

    one_round()
    t = time.perf_counter()
    for _ in range(rounds):
        one_round()
    s = time.perf_counter() - t
    return dict(n=n, rounds=rounds, threads=torch.get_num_threads(), batch=batch, seconds=s,
                node_steps_per_s=n * rounds / s, torch=torch.__version__)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", default="1,0", help="thread counts, 0 = all cores")
    ap.add_argument("--row", action="store_true", help="print one ROW json line per count")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise SystemExit("torch is not installed: `pip install -e .[bench]` (a CPU build "
                         "is enough); the JAX benchmarks do not need it") from None
    rows = []
    for threads in (int(v) for v in args.threads.split(",") if v):
        row = torch_rate(args.nodes, args.rounds, threads)
        rows.append(row)
        if args.row:
            print("ROW " + json.dumps(row), flush=True)
        print(f"torch {row['torch']}: {args.nodes} LeNet-5 models, {row['threads']} thread(s): "
              f"{row['node_steps_per_s']:.1f} node-steps/s", flush=True)
    result = dict(machine=platform.machine(), processor=platform.processor(),
                  cpu_count=os.cpu_count(), rows=rows)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
