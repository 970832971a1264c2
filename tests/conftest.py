"""Test-run order for pytest-xdist: the longest files first.

`--dist loadfile` (pyproject.toml) hands whole files to the workers in collection order, so
a long file collected last runs alone at the end while the other worker idles. Starting the
longest ones first (longest-processing-time-first) keeps both busy; the order of tests
inside a file is unchanged, and a file missing from the list keeps its place after them.
The list comes from `--durations=0` on the 2-core machine, two workers (2026-12-07, with two
background runs beside it, less the tests marked slow since).
"""

from __future__ import annotations

import pytest

LONGEST_FIRST = (
    "test_algorithms.py",  # 210 s
    "test_simulation.py",  # 145 s
    "test_network.py",  # ~137 s
    "test_traffic.py",  # ~94 s
    "test_alignment.py",  # ~85 s
    "test_reliability.py",  # ~74 s
    "test_bad_input.py",  # ~70 s
    "test_nodes.py",  # ~63 s
    "test_fl_async.py",  # ~54 s
    "test_compressed.py",  # 39 s
    "test_flag.py",  # 36 s
    "test_clock.py",  # ~35 s
    "test_golden.py",  # 33 s
    "test_variance.py",  # 30 s
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable sort
