"""Experiment configs and sweeps: one folder per experiment, each a runnable document.

    python -m vanish.run --config experiments/default/config.py --workdir runs/default
    python -m experiments.sweep experiments/paper_noniid/sweep.yaml   # a grid, locally
    python -m experiments.variance_demo.run --workdir runs/variance_demo

Each `experiments/<name>/config.py` returns `vanish.config.default_config()` with overrides;
its docstring says what it reproduces, the command, the expected runtime and result.
`experiments/<name>/sweep.yaml` is a W&B sweep over config fields (see `experiments/sweep.py`
for how the flags reach the run).
"""
