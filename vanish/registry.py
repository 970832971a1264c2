"""One shape for every named component: a registry is a dict name -> line, where a line has a
factory, a one-line description, its own knobs (default, help, check) and its capabilities.

    from vanish import registry, topology
    topology.REGISTRY["watts_strogatz"].knobs     # {'k': Knob(8, ...), 'p': Knob(0.1, ...)}
    registry.register(topology.REGISTRY, "my_graph", registry.Component(my_graph, "..."),
                      kind="topology")

The knobs of the components a config chooses by name become generated config sections
(`algorithm_args.<name>`, `topology_args.<name>`, `partition_args.<name>`: vanish/config.py),
checked by the knob's own check, passed to the factory by keyword. The algorithm registry's
`Entry` (vanish/algorithms/__init__.py) is this shape plus the hooks through which a rule plans
for itself. This module is ground: it imports nothing of vanish but the checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from vanish import checks


class Knob(NamedTuple):
    """One knob of one component: default (its type is the knob's), help, check."""

    default: Any
    help: str
    check: checks.Check | None = None


class Component(NamedTuple):
    """A registry line: the factory (a callable), a one-line description, its own knobs (the
    keyword arguments the factory takes from the config) and its capabilities (what the
    builder and the size model read; free-form per kind, documented by each registry)."""

    factory: Callable[..., Any]
    description: str
    knobs: Mapping[str, Knob] = {}
    caps: Mapping[str, Any] = {}


def key(name: Any) -> str:
    """A component's name as the registries spell it: stripped, lower case, '-' as '_'
    ('Fashion-MNIST' -> 'fashion_mnist')."""
    return str(name).strip().lower().replace("-", "_")


def register(reg: dict[str, Any], name: str, line: Any, *, kind: str) -> None:
    """Adds `line` to `reg` under `name` (a ValueError if the name is taken)."""
    if name in reg:
        raise ValueError(f"{kind} {name!r} is already registered")
    reg[name] = line


def defaults(line: Any) -> dict[str, Any]:
    """{knob: default} of a registry line."""
    return {k: knob.default for k, knob in line.knobs.items()}


def knob_problems(reg: Mapping[str, Any], name: str, given: Mapping[str, Any], *,
                  prefix: str) -> list[str]:
    """What is wrong with the knob values `given` to `name` (unknown knobs, failed checks),
    each naming the knob as `prefix + knob` (e.g. prefix 'config.topology_args.ring.')."""
    line = reg[name]
    found = [f"{prefix}{k} is not a knob of {name!r} (its knobs: "
             f"{', '.join(line.knobs) or 'none'})" for k in given if k not in line.knobs]
    for k, value in given.items():
        knob = line.knobs.get(k)
        phrase = knob.check(value) if knob is not None and knob.check is not None else None
        if phrase:
            found.append(f"{prefix}{k} = {value!r} {phrase}")
    return found


def unknown(reg: Mapping[str, Any], name: str, *, kind: str) -> str:
    """The one-line refusal of an unregistered name, with the closest registered one."""
    return (f"unknown {kind} {name!r}{checks.did_you_mean(name, reg)}; valid: "
            f"{', '.join(reg)}")
