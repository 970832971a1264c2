"""The vanishing-variance law in one figure: averaging k independent models shrinks variance 1/k.

    python -m experiments.variance_demo.run --workdir runs/variance_demo [--max_k 64]
    python experiments/variance_demo/run.py --workdir runs/variance_demo --config.seed=1

Initialises max_k + 1 independent models (own keys, as gossip nodes do), then for every k in
1, 2, 4, ..., max_k merges the first k of them into the last one with
`vanish.variance.mix_and_correct`: all k values at once, as a stack of k rows fed from
fixed-shape receive accumulators (sum of models, count, sum of their variances), the way
the engine merges its nodes. Writes `variance_shrink.png` (via
`vanish.plots.plot_variance_shrink`) and `variance_shrink.json` into the workdir.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vanish import models, nodes, plots, variance

CONFIG_FILE = Path(__file__).resolve().parent / "config.py"
# Input shapes of the datasets the models are built for (no data is read).
INPUT_SHAPES = {"cifar10": (32, 32, 3), "cifar100": (32, 32, 3)}
DEFAULT_INPUT_SHAPE = (28, 28, 1)

log = logging.getLogger("vanish")


def powers_of_two(max_k: int) -> list[int]:
    """1, 2, 4, ..., up to max_k (and max_k itself if it is not a power of two)."""
    if max_k < 1:
        raise ValueError(f"max_k must be >= 1, got {max_k}")
    ks = [1 << i for i in range(max_k.bit_length()) if 1 << i <= max_k]
    return ks if ks[-1] == max_k else ks + [max_k]


def _layer_name(path: Any) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def _flat(tree: Any) -> dict[str, Any]:
    return {_layer_name(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def shrink_ratios(cfg: ml_collections.ConfigDict, k_values: Sequence[int]) -> dict[str, Any]:
    """Variance of the merged model over the mean variance of the k merged ones, per layer.

    Args:
        cfg: reads model, init, conv_impl, seed, dataset (input shape only), beta and the
            vc_* correction fields.
        k_values: numbers of received models to merge.

    Returns:
        {'k': k_values, 'sizes': {layer: elements}, 'ratios' (beta = 0, plain mean: ~1/k),
         'corrected' (beta = 0, then corrected: ~1), 'self_mix' (beta = cfg.schedule.beta, plain:
         ~beta^2 + (1 - beta)^2 / k), 'self_mix_corrected', 'expected', 'expected_self_mix'},
        every ratio dict being {layer: [one float per k]} over the correctable layers.
    """
    k_values = [int(k) for k in k_values]
    max_k = max(k_values)
    model = models.make_model(cfg.model.name, num_classes=10, conv_impl=cfg.model.conv_impl,
            init=cfg.model.init)
    shape = INPUT_SHAPES.get(str(cfg.data.name), DEFAULT_INPUT_SHAPE)
    # Rows 0..max_k-1 are the received models, row max_k is the merging node's own model.
    # Jitted: one compile instead of the eager, op-by-op vmap of the forward pass init runs.
    params_M = jax.jit(lambda key: nodes.init_params(model, key, max_k + 1, shape))(
        jax.random.PRNGKey(int(cfg.seed)))
    received_M = jax.tree.map(lambda x: x[:max_k], params_M)
    own = jax.tree.map(lambda x: x[max_k], params_M)
    plain_cfg = variance.CorrectionConfig(target="none")
    fix_cfg = variance.CorrectionConfig(
        target="others", eps=float(cfg.correction.eps), ddof=int(cfg.correction.ddof))
    if cfg.correction.reference:
        fix_cfg = variance.CorrectionConfig.reference(target="others")
    # Row r of every accumulator holds what a node has received after k_values[r] models.
    rows = jnp.asarray([k - 1 for k in k_values])
    sum_R = jax.tree.map(lambda x: jnp.cumsum(x, axis=0)[rows], received_M)
    var_sum_R = jax.tree.map(lambda v: jnp.cumsum(v, axis=0)[rows],
                             variance.correctable_variance(received_M, fix_cfg))
    count_R = jnp.asarray(k_values, jnp.int32)
    self_R = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(k_values), *x.shape)), own)

    def merged_var(beta: float, corr: variance.CorrectionConfig) -> dict[str, np.ndarray]:
        out_R = variance.mix_and_correct(self_R, sum_R, count_R, var_sum_R, beta, corr)
        return {k: np.asarray(v) for k, v in _flat(variance.layer_variance(
            out_R, ddof=fix_cfg.ddof)).items()}

    # The reference each ratio is taken against: the mean variance of the k received models
    # (the 'others' target), so a corrected merge reads exactly 1.
    reference = {k: np.asarray(v) / np.asarray(k_values, np.float64)
                 for k, v in _flat(var_sum_R).items()}
    mask = _flat(variance.correctable_mask(received_M, fix_cfg, stacked=True))
    sizes = {k: int(np.prod(v.shape[1:])) for k, v in _flat(received_M).items()}
    layers = sorted(k for k, m in mask.items() if m)
    beta = float(cfg.schedule.beta)

    def ratios(var: dict[str, np.ndarray]) -> dict[str, list[float]]:
        return {k: [float(r) for r in var[k] / reference[k]] for k in layers}

    ks = np.asarray(k_values, np.float64)
    return dict(
        k=k_values, beta=beta, model=str(cfg.model.name), init=str(cfg.model.init),
        sizes={k: sizes[k] for k in layers},
        ratios=ratios(merged_var(0.0, plain_cfg)),
        corrected=ratios(merged_var(0.0, fix_cfg)),
        self_mix=ratios(merged_var(beta, plain_cfg)),
        self_mix_corrected=ratios(merged_var(beta, fix_cfg)),
        expected=[float(v) for v in 1.0 / ks],
        expected_self_mix=[float(v) for v in beta**2 + (1 - beta) ** 2 / ks],
    )


def write(result: dict[str, Any], workdir: str | Path) -> tuple[Path, Path]:
    """variance_shrink.png (plain and corrected, beta = 0) and variance_shrink.json."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    png = plots.plot_variance_shrink(result["k"], result["ratios"], workdir / "variance_shrink.png",
                                     corrected=result["corrected"])
    out = workdir / "variance_shrink.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    return png, out


def format_table(result: dict[str, Any]) -> str:
    """Per layer: ratio at each k (plain, then corrected), and 1/k."""
    head = ["layer (elements)"] + [f"k={k}" for k in result["k"]]
    lines = [head, ["1/k"] + [f"{v:.4f}" for v in result["expected"]]]
    for layer, values in result["ratios"].items():
        lines.append([f"{layer} ({result['sizes'][layer]})"] + [f"{v:.4f}" for v in values])
    for layer, values in result["corrected"].items():
        lines.append([f"{layer} corrected"] + [f"{v:.4f}" for v in values])
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))) for r in lines)


def main(argv: Sequence[str]) -> None:
    from absl import flags

    del argv
    FLAGS = flags.FLAGS
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = shrink_ratios(FLAGS.config, powers_of_two(FLAGS.max_k))
    png, js = write(result, FLAGS.workdir)
    print(format_table(result))
    print(f"wrote {png} and {js}")


def cli() -> None:
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", str(CONFIG_FILE), "experiment config file",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "where the PNG and JSON go")
    flags.DEFINE_integer("max_k", 64, "largest number of averaged models (k = 1, 2, 4, ...)")
    flags.mark_flags_as_required(["workdir"])
    app.run(main)


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path[0] = str(Path(__file__).resolve().parents[2])  # run as a file: repo root
    cli()
