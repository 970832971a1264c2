"""The simulated clock: seconds per tick, per-node compute time, per-node link latency and
bandwidth, mapped onto the tick model (one model: the schedule and the message delays).

    settings = clock.Settings(tick_seconds=0.1, compute="lognormal:0.05:0.5",
                              latency="0.02", bandwidth="1.25e6")
    clk = clock.make(settings, n=100, seed=0)          # None when tick_seconds == 0
    floor_N = clk.interval_floor()                     # a node trains at most every k ticks
    link_NM = clk.link_ticks(sizes)                    # ticks a message of each kind travels

A tick lasts `tick_seconds` of simulated time, so the metric row of tick t is at t x
tick_seconds seconds. Everything else is expressed in the tick model the engine already runs,
inside the one compiled program:
  * compute: a training step of node i takes c_i seconds, so the node cannot train again
    before ceil(c_i / tick_seconds) ticks have passed: that is a floor under its training
    interval U{lo..hi} (the stragglers' interval for a straggler), drawn on the host into the
    training schedule like every interval;
  * links: the model a node sends after its training step at tick t leaves when the step
    is done and reaches the receiver after its sender's latency plus payload / bandwidth,
    i.e. at tick t + floor((c_i + latency_i + bytes / bandwidth_i) / tick_seconds). The
    payload is the rule's own message size (a compressed message travels faster), and the
    delay goes through the network layer's in-flight queue, where `network.delay` (ticks
    drawn per message) adds to it: one delay model, not two.
Transfers at a round's end (an FL server's broadcast, a D-PSGD mixing round) are not
delayed: those rules' rounds are deadlines in ticks (their knobs), and an FL upload that
arrives after its round's end counts in the next round; a client whose local steps outlast
a round (E x its floor > round_ticks) sits out the rounds that start while it is still
computing (vanish/schedule.py `fl_rounds`). `fl` with round_ticks 0 has no
deadline: each round waits for its slowest participant's upload (planned from these times:
vanish/schedule.py `waiting_rounds`), so a straggler holds every round it is in.

Each quantity is a constant ("0.05"), drawn per node from the seed ("lognormal:MEDIAN:SIGMA",
"uniform:LO:HI"), or read from a file (one value per node, one per line, '#' comments).
"" is the tick model's own: instantaneous steps, latency 0, unlimited bandwidth.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from vanish.errors import ConfigError

# Salts of the per-node draws (each quantity its own stream of the seed).
_SALT = {"compute": 0xC0C0, "latency": 0x1A7E, "bandwidth": 0xBA9D}
_EPS = 1e-9  # float slack when a time is an exact multiple of the tick


@dataclasses.dataclass(frozen=True)
class Settings:
    """The clock section of a run (the builder fills it); tick_seconds 0: no clock."""

    tick_seconds: float = 0.0
    compute: str = ""
    latency: str = ""
    bandwidth: str = ""

    @property
    def on(self) -> bool:
        return self.tick_seconds > 0


def parse(text: str, n: int, seed: int, what: str, *, positive: bool = False,
          default: float = 0.0) -> np.ndarray:
    """[n] float64 values of one quantity from its spec (see the module docstring)."""
    spec = str(text).strip()
    field = f"config.clock.{what}"
    if not spec:
        return np.full(n, default, np.float64)
    head, _, rest = spec.partition(":")
    if head in ("lognormal", "uniform"):
        try:
            a, b = (float(v) for v in rest.split(":"))
        except ValueError:
            raise ConfigError(f"{field} = {text!r}: write {head}:A:B with two numbers "
                              f"(e.g. lognormal:0.05:0.5 = median 0.05 s, sigma 0.5)") from None
        rng = np.random.default_rng(np.random.SeedSequence([seed, _SALT[what]]))
        if head == "lognormal":
            if a <= 0 or b < 0:
                raise ConfigError(f"{field} = {text!r}: lognormal needs median > 0 and "
                                  "sigma >= 0")
            values = a * np.exp(b * rng.standard_normal(n))
        else:
            if not 0 <= a <= b:
                raise ConfigError(f"{field} = {text!r}: uniform needs 0 <= lo <= hi")
            values = rng.uniform(a, b, n)
    else:
        try:
            values = np.full(n, float(spec), np.float64)
        except ValueError:
            values = _read_file(spec, n, field)
    if not np.all(np.isfinite(values)) or np.any(values < 0) or (positive and
                                                                  np.any(values <= 0)):
        bad = "positive" if positive else "finite and >= 0"
        raise ConfigError(f"{field} = {text!r}: every value must be {bad}")
    return values


def _read_file(path: str, n: int, field: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{field} = {path!r} is neither a number, lognormal:M:S, "
                          "uniform:LO:HI nor a file")
    values = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        try:
            values.append(float(line))
        except ValueError:
            raise ConfigError(f"{path}:{i}: {line!r} is not a number ({field}: one value "
                              "per node, one per line)") from None
    if len(values) != n:
        raise ConfigError(f"{field}: {path} holds {len(values)} values; the run has {n} "
                          "nodes (one value per node, one per line)")
    return np.asarray(values, np.float64)


@dataclasses.dataclass(frozen=True)
class Clock:
    """Per-node times of one run (host arrays)."""

    tick_seconds: float
    compute: np.ndarray  # [N] seconds per training step
    latency: np.ndarray  # [N] seconds, sender's link
    bandwidth: np.ndarray  # [N] bytes per second, sender's link (inf: unlimited)

    def interval_floor(self) -> np.ndarray:
        """[N] the fewest ticks between two trainings of each node (>= 1)."""
        return np.maximum(1, np.ceil(self.compute / self.tick_seconds - _EPS)).astype(np.int64)

    def link_ticks(self, sizes: tuple[int, ...]) -> np.ndarray:
        """[N, M] int32: ticks a message of each kind (bytes `sizes`) travels from each
        sender, its training step included."""
        size_M = np.asarray(sizes, np.float64)
        seconds = (self.compute + self.latency)[:, None] + size_M[None, :] / \
            self.bandwidth[:, None]
        return np.floor(seconds / self.tick_seconds + _EPS).astype(np.int32)

    def seconds(self, tick: int) -> float:
        return float(tick) * self.tick_seconds


def make(s: Settings, n: int, seed: int) -> Clock | None:
    """The run's clock (None when tick_seconds is 0); ConfigError names a bad spec."""
    if not s.on:
        for what in ("compute", "latency", "bandwidth"):
            if str(getattr(s, what)).strip():
                raise ConfigError(f"config.clock.{what} is set but config.clock.tick_seconds "
                                  "is 0: set the seconds a tick lasts (e.g. 0.1)")
        return None
    if not math.isfinite(s.tick_seconds):
        raise ConfigError(f"config.clock.tick_seconds = {s.tick_seconds} must be finite")
    return Clock(s.tick_seconds, parse(s.compute, n, seed, "compute"),
                 parse(s.latency, n, seed, "latency"),
                 parse(s.bandwidth, n, seed, "bandwidth", positive=True, default=math.inf))
