"""`python -m vanish.run --list`: every registered name of every kind, with its knobs, and
every config field with its default and help (one source: the registries and the schema)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


from vanish import algorithms, config, data, partition, topology



# ------------------------------------------------------------------------------- the listing


def _lines(reg: Mapping[str, Any], section: str | None = None) -> dict[str, str]:
    """{name: its description, then one line per knob of its config `section` (none
    without one)} of a registry, for `listing`."""
    return {name: line.description + "".join(
        f"\n      {section}.{name}.{k} = {kn.default!r}: {kn.help}"
        for k, kn in line.knobs.items() if section) for name, line in reg.items()}


def listing() -> str:
    """Every registered algorithm, topology, model, partition and dataset with its one-line
    description (and an algorithm's own knobs with defaults), then every config field with
    its default and help: `python -m vanish.run --list`. One source: the registries and the
    schema."""
    from vanish import models

    out: list[str] = []

    def table(title: str, rows: Mapping[str, str]) -> None:
        out.append(f"{title}:")
        width = max(map(len, rows), default=0)
        out.extend(f"  {name:<{width}}  {text}" for name, text in rows.items())
        out.append("")

    table("algorithms (config.algorithms, comma separated)",
          _lines(algorithms.REGISTRY, "algorithm_args"))
    table("topologies (config.topology.name; knobs: config.topology_args.<name>)",
          _lines(topology.REGISTRY, "topology_args"))
    from vanish import nodes

    table("models (config.model.name)", _lines(models.REGISTRY))
    table("kernel initializers (config.model.init)", _lines(models.INITIALIZERS))
    table("optimizers (config.optim.name)", _lines(nodes.OPTIMIZERS))
    table("learning-rate schedules (config.optim.schedule)", _lines(nodes.LR_SCHEDULES))
    table("partitions (config.data.partition; knobs: config.partition_args.<name>)",
          _lines(partition.REGISTRY, "partition_args"))
    from vanish import metrics

    table("metrics (config.run.metrics, comma separated)", _lines(metrics.REGISTRY))
    table("datasets (config.data.name; knobs: config.dataset_args.<name>)",
          {**_lines(data.REGISTRY, "dataset_args"), "<tfds name>": data.TFDS_DESCRIPTION})
    fields = {f"config.{path} = {f.default!r}": f.help for path, f in config.fields().items()}
    table("config fields (--config.<section>.<field>=<value>)", fields)
    return "\n".join(out)
