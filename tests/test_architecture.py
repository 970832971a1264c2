"""The package's shape: layers as docs/ARCHITECTURE.md draws them, no import cycle, one reader
of the config, and a rule defined here runs through the command line's code path."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from vanish import algorithms, checks, config

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vanish"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """vanish modules `path` imports (anywhere in it, lazy imports included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vanish"):
            out.add(node.module)
            for alias in node.names:  # `from vanish import build`: the module build
                full = f"{node.module}.{alias.name}"
                if (ROOT / (full.replace(".", "/") + ".py")).is_file() or (
                        ROOT / full.replace(".", "/")).is_dir():
                    out.add(full)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("vanish"))
    return out - {"vanish"}


GRAPH = {module_name(p): imports_of(p) - {module_name(p)} for p in PACKAGE.rglob("*.py")}
GRAPH.pop("vanish", None)


def layers() -> dict[str, int]:
    """{module: layer} from the table in docs/ARCHITECTURE.md."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    table = text.split("<!-- layers:", 1)[1]
    out = {}
    for row in re.findall(r"^\| (\d+) [^|]*\| ([^|]+) \|", table, re.M):
        for name in row[1].split():
            out[f"vanish.{name}"] = int(row[0])
    return out


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_ones():
    layer = layers()
    assert set(GRAPH) == set(layer), (sorted(set(GRAPH) - set(layer)),
                                      sorted(set(layer) - set(GRAPH)))
    upward = [(m, d) for m, deps in GRAPH.items() for d in deps if layer[d] > layer[m]]
    assert upward == [], upward


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(GRAPH[m]):
            assert state.get(d) != 1, " -> ".join([*stack, m, d])
            if d not in state:
                visit(d, [*stack, m])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])


# The modules that may hold a ConfigDict: the schema, its one reader, and the entry points
# that hand the config to the reader (they read no field themselves).
# The builder is build.py and its rooms: the rule book, the settings types, the listing.
BUILDER = {"vanish.build", "vanish.rules", "vanish.settings", "vanish.listing"}
CONFIG_HOLDERS = {"vanish.config", "vanish.run", "vanish.sweep"} | BUILDER


def test_only_the_builder_reads_the_config():
    importers = {m for m, deps in GRAPH.items() if "vanish.config" in deps}
    assert importers <= BUILDER | {"vanish.results", "vanish.compat"}, importers
    # results reads stored records (finished runs' run_config.json, through vanish.compat),
    # never a ConfigDict: of the schema it takes the result-neutral fields only (and the
    # knobs of components a record does not choose); compat
    # reads the defaults an old record lacks.
    used = {n.attr for n in ast.walk(ast.parse((PACKAGE / "results.py").read_text()))
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id == "config"}
    assert used <= {"RESULT_NEUTRAL", "idle_knobs"}, used
    holders = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                 for a in n.names} | {n.module for n in ast.walk(tree)
                                      if isinstance(n, ast.ImportFrom) and n.module}
        if any(n and n.startswith("ml_collections") for n in names):
            holders.add(module_name(path))
    assert holders <= CONFIG_HOLDERS, holders
    # The entry points pass the config on; they never read a field of it.
    for name in ("run", "sweep"):
        source = (PACKAGE / f"{name}.py").read_text()
        assert not re.search(r"\bcfg\.(?!copy|to_dict|get_ref)[a-z_]+\.", source), name
        assert not re.search(r"\bcfg\[", source), name


# --------------------------------------------------- a rule of one's own, through the CLI


def _half_merge(beta_own: float = 0.5):
    """A rule defined here: every node sends to its neighbours and merges the mean of what it
    holds at each tick's end with its own model at `beta_own` (plain averaging, another
    default beta): its own knob."""
    import jax
    import jax.numpy as jnp

    from vanish.algorithms import base, gossip
    from vanish.variance import CorrectionConfig

    none = CorrectionConfig(target="none")

    def end_of_tick(params_N, inbox, consts, tick):
        merged_N = base.ready_to_merge(inbox.count, consts, tick)
        cnt = jnp.maximum(inbox.count, 1)

        def mix(p, t):
            m = base.treeutil.per_node(merged_N, p.ndim)
            mean = t / base.treeutil.per_node(cnt, p.ndim).astype(p.dtype)
            return jnp.where(m, beta_own * p + (1 - beta_own) * mean, p)

        params_N = jax.tree.map(mix, params_N, inbox.total)
        cleared = jax.tree.map(lambda t: jnp.where(
            base.treeutil.per_node(merged_N, t.ndim), 0.0, t), inbox.total)
        return params_N, gossip.Inbox(cleared, jnp.where(merged_N, 0, inbox.count),
                                      inbox.var_total), merged_N

    return base.Algorithm(name="half_merge", init=gossip.init,
                          emit=lambda ib, s, c: gossip.emit(none, ib, s, c),
                          end_of_tick=end_of_tick)


def test_a_rule_defined_here_is_one_registry_line_and_runs_through_the_cli(tmp_path):
    from vanish import run

    entry = algorithms.Entry(_half_merge, "merge at a beta of its own",
                             knobs=dict(beta_own=algorithms.Knob(0.5, "weight of the own model",
                                                                 checks.between(0, 1))))
    algorithms.register("half_merge", entry)
    try:
        assert config.default_config().algorithm_args.half_merge.beta_own == 0.5
        workdir = tmp_path / "w"
        cfg_file = tmp_path / "cfg.py"
        cfg_file.write_text(
            "from vanish import config\n\ndef get_config():\n    c = config.default_config()\n"
            "    c.algorithms = 'half_merge,gossip'\n    c.data.name = 'synthetic'\n"
            "    c.dataset_args.synthetic.num_train, c.dataset_args.synthetic.num_test = 600, 200\n"
            "    c.data.test_per_class = 5\n    c.model.name = 'mlp'\n"
            "    c.optim.batch_size = 8\n    c.topology.num_nodes = 6\n"
            "    c.topology_args.random_regular.degree = 3\n"
            "    c.run.ticks, c.run.eval_every = 20, 10\n    return c\n")
        argv = ["vanish", f"--config={cfg_file}", f"--workdir={workdir}"]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            assert run.command([*argv, "--config.algorithm_args.half_merge.beta_own=2"]) == 1
        assert ("config.algorithm_args.half_merge.beta_own = 2.0 must be in [0, 1]"
                in err.getvalue())  # its knob is checked like any field
        assert not workdir.exists()
        with contextlib.redirect_stdout(io.StringIO()):
            assert run.command([*argv, "--config.algorithm_args.half_merge.beta_own=0.5"]) == 0
        summary = json.loads((workdir / "summary.json").read_text())
        # beta_own = 0.5 is gossip's own merge: the same trajectory, bit for bit.
        for key in ("final_acc", "averaging_events", "var_ratio"):
            assert summary["half_merge"][key] == summary["gossip"][key], key
        stored = json.loads((workdir / "run_config.json").read_text())["config"]
        assert stored["algorithm_args"]["half_merge"] == {"beta_own": 0.5}
    finally:
        algorithms.REGISTRY.pop("half_merge")


def test_registering_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        algorithms.register("gossip", algorithms.REGISTRY["gossip"])
