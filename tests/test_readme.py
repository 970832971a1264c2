"""The README's library example runs, and its two set-up commands are the ones CI uses."""

import pathlib
import re

import jax
import numpy as np

from vanish import nodes, variance

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_library_example_runs_and_corrects_variance():
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    n = scope["N"]
    # The loop ran: every node took 5 steps on its own batches, with finite losses.
    loss_N = np.asarray(scope["loss_N"])
    assert loss_N.shape == (n,) and np.all(np.isfinite(loss_N))
    # One round on fresh, uncorrelated models: plain averaging over 4-regular neighbours
    # would shrink the dense kernel's variance to ~ (k+1)/(4k) = 0.31; the corrected merge
    # keeps it at the received mean; biases (zero) stay zero.
    params_N = nodes.init_params(scope["model"], jax.random.PRNGKey(1), n, (28, 28, 1))
    out_N = scope["gossip_round"](params_N)
    before = np.asarray(variance.layer_variance(params_N)["Dense_0"]["kernel"])
    after = np.asarray(variance.layer_variance(out_N)["Dense_0"]["kernel"])
    np.testing.assert_allclose(after.mean() / before.mean(), 1.0, rtol=0.02)
    assert jax.tree.structure(out_N) == jax.tree.structure(params_N)
    assert np.all(np.asarray(out_N["Dense_0"]["bias"]) == 0)


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    test_cmd = [b.strip() for b in blocks if "pytest" in b][0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines()
    run_cmd = [b.strip() for b in blocks if "vanish.run" in b][0]
    assert "experiments/default/config.py" in run_cmd
    assert (ROOT / "experiments" / "default" / "config.py").exists()
