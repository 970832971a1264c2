"""The size model: what a run will hold in memory, checked against the machine before it starts.

    resources.check_plan(experiment)     # the schedule, work list, graph and fault plan
    resources.check_memory(experiment)   # the stacked state and one evaluation batch

Both raise `ResourceError` with the numbers (needed, available, the field to change) instead
of letting NumPy or XLA fail with a traceback after minutes, or the kernel kill the process.
Estimates are deliberately simple upper bounds of the large arrays; `VANISH_MEMORY_LIMIT`
(bytes, e.g. 8e9) overrides the memory the machine reports, for tests and shared machines.
"""

from __future__ import annotations

import os
from typing import Any

from vanish import topology
from vanish.errors import ResourceError

GiB = 1024**3


def available_bytes() -> int:
    """Memory this process may still use: VANISH_MEMORY_LIMIT, else MemAvailable
    (/proc/meminfo), else physical memory."""
    limit = os.environ.get("VANISH_MEMORY_LIMIT")
    if limit:
        return int(float(limit))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= 0.1 * GiB else f"{n / 1024**2:.0f} MiB"


def plan_bytes(exp: Any) -> dict[str, float]:
    """Host bytes of the largest plan arrays over run.ticks, by part (upper bounds).

    schedule: the drawn gaps and times ([N, ticks / interval_lo] int64, ~5 arrays) and
    the packed work list (~6 bytes per slot); graph: networkx's adjacency while a graph is
    drawn (~400 bytes per edge end, per drawn graph); faults: the churn bitmap and the
    redrawn graphs' neighbour tables.
    """
    n, ticks = exp.graph.n, exp.run.ticks
    lo = max(1, min(exp.schedule.interval))
    events = n * (ticks / lo + 1)
    degree, _ = topology.degree_estimate(exp.graph.name, n, exp.graph.kwargs)
    s = exp.network
    epochs = (ticks // s.redraw_every + 1) if s.redraw_every else 1
    churn = ticks * n * 1.2 if (s.churn_down > 0 or s.churn_trace) else 0.0
    return {"schedule": events * 5 * 8 + events * 6,
            "graph": (n + 1) * (degree + 1) * 400.0,
            "faults": churn + (epochs - 1) * n * degree * 5.0}


def check_plan(exp: Any) -> None:
    """Refuses a run whose plan (schedule, graph, faults) cannot fit in memory."""
    need = plan_bytes(exp)
    have = available_bytes()
    if sum(need.values()) <= have:
        return
    part = max(need, key=need.__getitem__)
    fix = {"schedule": "config.run.ticks or config.topology.num_nodes",
           "graph": "config.topology.num_nodes",
           "faults": "config.run.ticks (churn and redrawn graphs are drawn for every tick)"}[part]
    raise ResourceError(
        f"config.run.ticks = {exp.run.ticks} with config.topology.num_nodes = {exp.graph.n}: "
        f"the run's plan needs about {_gib(sum(need.values()))} of host memory ({part}: "
        f"{_gib(need[part])}), more than the {_gib(have)} available; reduce {fix}")


def param_count(exp: Any) -> int:
    """Parameters of one node's model (abstract evaluation: no device is touched)."""
    import jax
    import jax.numpy as jnp

    from vanish import models

    model = models.make_model(exp.model.name, num_classes=exp.dataset.num_classes,
                              conv_impl="xla", init=exp.model.init)  # the same shapes as any
    shape = (1, *exp.dataset.x_train.shape[1:])
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape)))
    return int(sum(x.size for x in jax.tree.leaves(shapes)))


def state_bytes(exp: Any, params: int) -> dict[str, float]:
    """Bytes of the stacked state of the widest algorithm, by part (fp32).

    params: N copies; optimizer: one (SGD momentum) or two (Adam) more; inbox: one more
    (gossip's accumulator) or `degree + threshold` more (rules that hold the received models
    themselves); data: the training set, on the device once.
    """
    from vanish import algorithms, nodes

    n = exp.graph.n + 1  # FL's server
    opt = nodes.OPTIMIZERS[exp.optim.name].caps["copies"](exp.optim.momentum)
    _, degree = topology.degree_estimate(exp.graph.name, exp.graph.n, exp.graph.kwargs)
    inbox = max((int(degree) * 2 if algorithms.REGISTRY[a].caps.message_buffers else 1)
                for a in exp.algorithms)
    per_model = params * 4.0
    x = exp.dataset.x_train
    return {"params": n * per_model, "optimizer": opt * n * per_model,
            "inbox": inbox * n * per_model, "data": float(x.size * x.dtype.itemsize)}


def check_memory(exp: Any) -> None:
    """Refuses a run whose stacked state cannot fit in memory (with the numbers)."""
    params = param_count(exp)
    need = state_bytes(exp, params)
    have = available_bytes()
    total = sum(need.values())
    if total <= have:
        return
    parts = ", ".join(f"{k} {_gib(v)}" for k, v in need.items())
    raise ResourceError(
        f"config.topology.num_nodes = {exp.graph.n} x {params:,} parameters of "
        f"{exp.model.name}: the run's state needs about {_gib(total)} ({parts}), more than the "
        f"{_gib(have)} of memory available; reduce config.topology.num_nodes or choose a "
        "smaller model (config.model.name)")
