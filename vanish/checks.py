"""Small value checks shared by the config rule book and the registries' knob declarations.

    check = checks.between(0, 0.5, hi_open=True)
    check(0.7)  # -> "must be in [0, 0.5)"; None when the value is fine

A check returns what is wrong as a phrase that follows "config.<field> = <value> ", or None.
Ground floor: imports nothing of vanish.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from typing import Any, Callable

Check = Callable[[Any], "str | None"]


def is_int(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def at_least(lo: int, note: str = "") -> Check:
    """An integer >= lo (`note` explains a special value, e.g. ' (0 = automatic)')."""
    def check(value: Any) -> str | None:
        return None if value >= lo else f"must be >= {lo}{note}"
    return check


def between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    """A number in [lo, hi], (lo, hi], [lo, hi) or (lo, hi); NaN is refused."""
    shown = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def check(value: Any) -> str | None:
        above = value > lo if lo_open else value >= lo  # False for NaN
        below = value < hi if hi_open else value <= hi
        return None if above and below else f"must be in {shown}"
    return check


def finite_at_least(lo: float, *, strict: bool = False) -> Check:
    """A finite number >= lo (> lo if strict)."""
    def check(value: Any) -> str | None:
        if math.isfinite(value) and (value > lo if strict else value >= lo):
            return None
        return f"must be a finite number {'>' if strict else '>='} {lo:g}"
    return check


def did_you_mean(word: Any, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or ''."""
    close = difflib.get_close_matches(str(word), [c for c in choices if c], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def one_of(choices: Iterable[str]) -> Check:
    """One of `choices` (shown in the message, with the closest one suggested)."""
    names = tuple(choices)

    def check(value: Any) -> str | None:
        if value in names:
            return None
        shown = ", ".join(repr(c) if c == "" else c for c in names)
        return f"is unknown{did_you_mean(value, names)}; choose from {shown}"
    return check


def comma_names(pattern: str, example: str) -> Check:
    """A comma-separated list (possibly empty) of names, each matching the regex `pattern`."""
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return f"must be a comma-separated list of names such as {example}"
        bad = [n.strip() for n in value.split(",")
               if n.strip() and not re.fullmatch(pattern, n.strip())]
        return None if not bad else f"has malformed name(s) {bad}; e.g. {example}"
    return check


def parses(parse: Callable[[Any], Any], errors: type[Exception] = ValueError) -> Check:
    """The check of a value with a parser of its own: the parser's message when it refuses
    (raises one of `errors`), None when it reads the value."""
    def check(value: Any) -> str | None:
        try:
            parse(value)
        except errors as e:
            return str(e)
        return None
    return check
