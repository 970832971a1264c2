"""Test-run order for pytest-xdist: the longest files first.

`--dist loadfile` (pyproject.toml) hands whole files to the workers in collection order, so
a long file collected last runs alone at the end while the other worker idles. Starting the
longest ones first (longest-processing-time-first) keeps both busy; the order of tests
inside a file is unchanged, and a file missing from the list keeps its place after them.
The list comes from `--durations=0` on the 2-core machine, two workers (2026-12-03: the
default suite's 1022 worker-seconds took 530 s of wall time, so little is left to balance).
"""

from __future__ import annotations

import pytest

LONGEST_FIRST = (
    "test_network.py",  # 250 s
    "test_nodes.py",  # 122 s
    "test_algorithms.py",  # 120 s
    "test_bad_input.py",  # 116 s
    "test_simulation.py",  # 108 s
    "test_golden.py",  # 53 s
    "test_experiments.py",  # 53 s
    "test_variance.py",  # 49 s
    "test_run.py",  # 45 s
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable sort
