"""Communication graphs: generators, validation, mixing weights and the device view (host side).

    topo = topology.make("random_regular", 64, degree=8, seed=0, weighting="metropolis")
    graph = topo.device_graph()          # pass to vanish.mixing kernels as an argument
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np

from vanish import checks, registry
from vanish.errors import TopologyError
from vanish.registry import Knob

WEIGHTINGS = ("uniform", "metropolis", "max_degree")
# Bounded resampling for random families that can come out disconnected.
MAX_CONNECT_TRIES = 100



class Graph(NamedTuple):
    """Device view of a Topology (see docs/ARCHITECTURE.md); a pytree of jnp arrays."""

    senders: jax.Array  # [E] int32
    receivers: jax.Array  # [E] int32
    edge_weight: jax.Array  # [E] f32, W[receiver, sender]
    self_weight: jax.Array  # [N] f32
    nbr: jax.Array  # [N, D] int32, padding -> the node itself
    nbr_weight: jax.Array  # [N, D] f32, 0 on padding
    nbr_valid: jax.Array  # [N, D] bool
    nbr_edge: jax.Array  # [N, D] int32, edge index of that in-edge, padding -> 0
    out_nbr: jax.Array  # [N, Do] int32, padding -> the node itself
    out_valid: jax.Array  # [N, Do] bool
    degree: jax.Array  # [N] int32, in-degree


class NeighborTable(NamedTuple):
    """NumPy version of the padded in/out-neighbour tables of `Graph`."""

    nbr: np.ndarray
    nbr_weight: np.ndarray
    nbr_valid: np.ndarray
    nbr_edge: np.ndarray
    out_nbr: np.ndarray
    out_valid: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Topology:
    """A validated graph with mixing weights; directed edge s -> r means r receives s's model.

    Edges are sorted by (receiver, sender); undirected graphs store both directions.
    `edge_weight[e] = W[receivers[e], senders[e]]` and every row of W sums to 1.
    """

    name: str
    n: int
    senders: np.ndarray
    receivers: np.ndarray
    edge_weight: np.ndarray
    self_weight: np.ndarray
    degree: np.ndarray
    directed: bool
    weighting: str

    def __post_init__(self) -> None:
        for field, dtype in (("senders", np.int32), ("receivers", np.int32), ("degree", np.int32),
                             ("edge_weight", np.float32), ("self_weight", np.float32)):
            arr = np.array(getattr(self, field), dtype=dtype)
            arr.flags.writeable = False  # frozen means frozen, arrays included
            object.__setattr__(self, field, arr)

    @property
    def num_edges(self) -> int:
        return int(self.senders.shape[0])

    @property
    def max_degree(self) -> int:
        """Largest in-degree (the width D of the in-neighbour table, before padding to >= 1)."""
        return int(self.degree.max(initial=0))

    def dense(self) -> np.ndarray:
        """Mixing matrix W [n, n] float64: W[i, j] is the weight node i gives node j's model."""
        w = np.zeros((self.n, self.n), np.float64)
        w[self.receivers, self.senders] = self.edge_weight
        w[np.arange(self.n), np.arange(self.n)] = self.self_weight
        return w

    def neighbor_table(self) -> NeighborTable:
        """Padded in- and out-neighbour tables (width >= 1; padding points at the node itself)."""
        edge = np.arange(self.num_edges, dtype=np.int32)
        nbr, pos = _pad_rows(self.n, self.receivers, self.senders)  # edges grouped by receiver
        nbr_weight = np.zeros(nbr.shape, np.float32)
        nbr_valid = np.zeros(nbr.shape, bool)
        nbr_edge = np.zeros(nbr.shape, np.int32)
        nbr_weight[self.receivers, pos] = self.edge_weight
        nbr_valid[self.receivers, pos] = True
        nbr_edge[self.receivers, pos] = edge
        order = np.lexsort((self.receivers, self.senders))
        out_nbr, out_pos = _pad_rows(self.n, self.senders[order], self.receivers[order])
        out_valid = np.zeros(out_nbr.shape, bool)
        out_valid[self.senders[order], out_pos] = True
        return NeighborTable(nbr, nbr_weight, nbr_valid, nbr_edge, out_nbr, out_valid)

    def device_graph(self) -> Graph:
        """The jnp view passed to `vanish.mixing`; same-shaped graphs never recompile."""
        host = (self.senders, self.receivers, self.edge_weight, self.self_weight,
                *self.neighbor_table(), self.degree)  # NeighborTable follows Graph's field order
        return Graph(*(jnp.asarray(a) for a in host))

    def to_networkx(self) -> nx.Graph | nx.DiGraph:
        """nx.Graph (undirected) or nx.DiGraph with edges s -> r, 'weight' = W[r, s]."""
        g: nx.Graph = nx.DiGraph() if self.directed else nx.Graph()
        g.add_nodes_from(range(self.n))
        g.add_weighted_edges_from(zip(self.senders.tolist(), self.receivers.tolist(),
                                      self.edge_weight.tolist()))
        return g

    def edges_undirected(self) -> np.ndarray:
        """Unique unordered pairs [M, 2] with u < v."""
        pairs = np.sort(np.stack([self.senders, self.receivers], axis=1), axis=1)
        return np.unique(pairs, axis=0).reshape(-1, 2)

    def with_weighting(self, scheme: str) -> Topology:
        """Same graph, mixing weights recomputed with `scheme` (one of WEIGHTINGS)."""
        ew, sw = _weights(scheme, self.n, self.senders, self.receivers, self.degree)
        return dataclasses.replace(self, edge_weight=ew, self_weight=sw, weighting=scheme)

    def __repr__(self) -> str:
        kind = "directed" if self.directed else "undirected"
        return (f"Topology({self.name}, n={self.n}, edges={self.num_edges}, {kind}, "
                f"max_degree={self.max_degree}, weighting={self.weighting!r})")


# ----------------------------------------------------------------------------- construction


def _pad_rows(n: int, row: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Table [n, max(count, 1)] with val placed by (sorted) row, padding = row id; + positions."""
    count = np.bincount(row, minlength=n)
    table = np.repeat(np.arange(n, dtype=np.int32)[:, None], max(int(count.max(initial=0)), 1), 1)
    pos = np.arange(row.shape[0]) - (np.cumsum(count) - count)[row]
    table[row, pos] = val
    return table, pos


def _weights(scheme: str, n: int, senders: np.ndarray, receivers: np.ndarray,
             degree: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # float64 arithmetic, then one rounding to f32, keeps row sums within ~1e-7 of 1.
    deg = degree.astype(np.float64)
    ew: np.ndarray
    sw: np.ndarray
    if scheme == "uniform":
        ew = 1.0 / (deg[receivers] + 1.0)
        sw = 1.0 / (deg + 1.0)
    elif scheme == "metropolis":
        # In-degrees on both ends; symmetric for undirected graphs, hence doubly stochastic.
        ew = 1.0 / (1.0 + np.maximum(deg[receivers], deg[senders]))
        sw = 1.0 - np.bincount(receivers, weights=ew, minlength=n)
    elif scheme == "max_degree":
        d_max = float(deg.max(initial=0.0))
        ew = np.full(senders.shape, 1.0 / (d_max + 1.0))
        sw = 1.0 - deg / (d_max + 1.0)
    else:
        raise TopologyError(f"unknown weighting {scheme!r}; valid: {', '.join(WEIGHTINGS)}")
    return ew.astype(np.float32), sw.astype(np.float32)


def _check_nodes(n: int, edges: np.ndarray, where: Callable[[int], str] | None = None) -> None:
    """Raises on empty graphs, out-of-range ids and self-loops; `where(i)` locates edge i."""
    loc = where or (lambda i: "")
    if n < 1:
        raise TopologyError(f"empty graph: n must be >= 1, got n={n}")
    if n > 1 and edges.shape[0] == 0:
        raise TopologyError(f"empty graph: no edges among n={n} nodes")
    bad = np.flatnonzero((edges < 0).any(axis=1) | (edges >= n).any(axis=1))
    if bad.size:
        i = int(bad[0])
        node = int(edges[i][(edges[i] < 0) | (edges[i] >= n)][0])
        raise TopologyError(f"node id {node} out of range for n={n} (ids are 0-based){loc(i)}")
    loops = np.flatnonzero(edges[:, 0] == edges[:, 1])
    if loops.size:
        i = int(loops[0])
        raise TopologyError(f"self-loop at node {int(edges[i, 0])}{loc(i)}")


def _build(name: str, n: int, edges: Any, *, directed: bool = False, weighting: str = "uniform",
           check_connected: bool = True) -> Topology:
    """Validates an edge list [(u, v), ...] (u sends to v when directed) into a Topology.

    Duplicate edges (and, for undirected graphs, both orientations of one edge) are merged.
    """
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    _check_nodes(n, e)
    if not directed:
        e = np.concatenate([e, e[:, ::-1]], axis=0)
    e = np.unique(e, axis=0)  # merges duplicates; also sorts, re-sorted below by receiver
    senders, receivers = e[:, 0], e[:, 1]
    order = np.lexsort((senders, receivers))
    senders = senders[order].astype(np.int32)
    receivers = receivers[order].astype(np.int32)
    if check_connected:
        _check_connected(n, senders, receivers, directed)
    degree = np.bincount(receivers, minlength=n).astype(np.int32)
    ew, sw = _weights(weighting, n, senders, receivers, degree)
    return Topology(name, n, senders, receivers, ew, sw, degree, directed, weighting)


def _check_connected(n: int, senders: np.ndarray, receivers: np.ndarray, directed: bool) -> None:
    g: nx.Graph = nx.DiGraph() if directed else nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(zip(senders.tolist(), receivers.tolist()))
    # Directed graphs need strong connectivity, else some model can never reach some node.
    comps = list(nx.strongly_connected_components(g) if directed else nx.connected_components(g))
    if len(comps) > 1:
        sizes = sorted(map(len, comps), reverse=True)
        what = "directed graph is not strongly connected" if directed else "graph is disconnected"
        raise TopologyError(f"{what}: {len(comps)} {'strongly ' * directed}connected components "
                            f"(sizes {', '.join(map(str, sizes[:5]))}{', ...' * (len(sizes) > 5)})")


def _connected_draw(draw: Callable[[int], nx.Graph], seed: int, what: str, hint: str) -> nx.Graph:
    """Redraws deterministically from `seed` until connected, at most MAX_CONNECT_TRIES times."""
    for attempt in range(MAX_CONNECT_TRIES):
        # Attempt 0 uses the seed itself: a connected draw equals networkx's own for that seed.
        s = (seed if attempt == 0
             else np.random.SeedSequence([seed % 2**64, attempt]).generate_state(1)[0])
        g = draw(int(s))
        if nx.is_connected(g):
            return g
    raise TopologyError(f"{what} was disconnected in all {MAX_CONNECT_TRIES} draws from "
                        f"seed {seed}; {hint}")


def _nx_edges(g: nx.Graph) -> np.ndarray:
    return np.array(list(g.edges()), dtype=np.int64).reshape(-1, 2)


# ----------------------------------------------------------------------------- generators


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise TopologyError(msg)


def ring(n: int, *, weighting: str = "uniform") -> Topology:
    """Cycle 0-1-...-(n-1)-0 (n = 2 is a single edge, n = 1 a lone node)."""
    nodes = np.arange(n)
    edges: np.ndarray | list[tuple[int, int]] = (
        np.stack([nodes, (nodes + 1) % n], 1) if n > 1 else [])
    return _build("ring", n, edges, weighting=weighting)


def _square_factors(n: int) -> tuple[int, int] | None:
    for rows in range(math.isqrt(n), 2, -1):
        if n % rows == 0 and n // rows >= 3:
            return rows, n // rows
    return None


def torus(rows: int, cols: int | None = None, *, weighting: str = "uniform") -> Topology:
    """2-D periodic grid, node = r * cols + c; `torus(n)` picks the squarest rows x cols.

    Both sides must be >= 3: smaller sides wrap onto themselves (self-loops or double edges).
    """
    if cols is None:
        factors = _square_factors(rows)
        _need(factors is not None, f"degenerate torus: n={rows} has no factorisation rows * cols "
                                   f"with both >= 3; use torus(rows, cols) or a ring")
        rows, cols = factors  # type: ignore[misc]
    _need(rows >= 3 and cols >= 3, f"degenerate torus {rows}x{cols}: both sides must be >= 3")
    g = nx.grid_2d_graph(rows, cols, periodic=True)
    edges = [(r1 * cols + c1, r2 * cols + c2) for (r1, c1), (r2, c2) in g.edges()]
    return _build("torus", rows * cols, edges, weighting=weighting)


def complete(n: int, *, weighting: str = "uniform") -> Topology:
    """Every pair connected (n = 1: a single node, for no-communication baselines)."""
    return _build("complete", n, _nx_edges(nx.complete_graph(n)), weighting=weighting)


def star(n: int, center: int = 0, *, weighting: str = "uniform") -> Topology:
    """Hub `center` linked to every other node (e.g. the federated-learning server)."""
    _need(0 <= center < n, f"star center {center} out of range for n={n}")
    leaves = np.delete(np.arange(n), center)
    edges = np.stack([np.full_like(leaves, center), leaves], 1)
    return _build("star", n, edges, weighting=weighting)


def random_regular(n: int, degree: int, seed: int = 0, *, weighting: str = "uniform") -> Topology:
    """Uniform random d-regular graph (d = `degree`), redrawn deterministically from `seed`
    until connected."""
    d = degree
    _need(1 <= d < n, f"random_regular degree d={d} must satisfy 1 <= d < n={n}")
    _need(n * d % 2 == 0, f"random_regular: n * d must be even, got n={n}, d={d} (n*d={n * d})")
    g = _connected_draw(lambda s: nx.random_regular_graph(d, n, seed=s), seed,
                        f"random_regular(n={n}, d={d})", "use d >= 3 (d = 1, 2 rarely connect)")
    return _build("random_regular", n, _nx_edges(g), weighting=weighting)


def erdos_renyi(n: int, p: float, seed: int = 0, *, weighting: str = "uniform") -> Topology:
    """G(n, p), redrawn deterministically from `seed` until connected (bounded tries)."""
    _need(0.0 < p <= 1.0, f"erdos_renyi edge probability p={p} must be in (0, 1]")
    _need(n >= 2, f"erdos_renyi needs n >= 2, got n={n}")
    g = _connected_draw(lambda s: nx.gnp_random_graph(n, p, seed=s), seed, f"G(n={n}, p={p})",
                        f"use a larger p (connectivity threshold ln(n)/n = {math.log(n) / n:.4g})")
    return _build("erdos_renyi", n, _nx_edges(g), weighting=weighting)


def watts_strogatz(n: int, k: int, p: float, seed: int = 0, *,
                   weighting: str = "uniform") -> Topology:
    """Small-world graph: ring lattice with k nearest neighbours, each edge rewired w.p. p."""
    _need(2 <= k < n, f"watts_strogatz k={k} must satisfy 2 <= k < n={n}")
    _need(0.0 <= p <= 1.0, f"watts_strogatz rewiring probability p={p} must be in [0, 1]")
    g = _connected_draw(lambda s: nx.watts_strogatz_graph(n, k, p, seed=s), seed,
                        f"watts_strogatz(n={n}, k={k}, p={p})", "use a larger k or smaller p")
    return _build("watts_strogatz", n, _nx_edges(g), weighting=weighting)


def barabasi_albert(n: int, m: int, seed: int = 0, *, weighting: str = "uniform") -> Topology:
    """Preferential attachment: each new node links to m existing nodes (always connected)."""
    _need(1 <= m < n, f"barabasi_albert m={m} must satisfy 1 <= m < n={n}")
    g = nx.barabasi_albert_graph(n, m, seed=seed)
    return _build("barabasi_albert", n, _nx_edges(g), weighting=weighting)


def exponential(n: int, *, weighting: str = "uniform") -> Topology:
    """Static exponential graph (directed): i sends to (i + 2^j) mod n, j = 0..floor(log2(n-1))."""
    _need(n >= 2, f"exponential graph needs n >= 2, got n={n}")
    hops = 2 ** np.arange(int(math.floor(math.log2(n - 1))) + 1)
    src = np.repeat(np.arange(n), hops.size)
    edges = np.stack([src, (src + np.tile(hops, n)) % n], 1)
    return _build("exponential", n, edges, directed=True, weighting=weighting)


def one_peer_exponential(n: int, t: int = 0, *, weighting: str = "uniform") -> Topology:
    """Round t of the one-peer exponential graph (Ying et al. 2021): i sends to i + 2^(t mod tau).

    tau = ceil(log2 n). One round is a permutation, generally NOT strongly connected (only the
    union over tau rounds is), so connectivity is not checked. All rounds share shapes. A
    time-varying family (capability `round_varying`): a run rotates it, epoch e being round e.
    """
    _need(n >= 2, f"one_peer_exponential needs n >= 2, got n={n}")
    tau = max(1, math.ceil(math.log2(n)))
    hop = 2 ** (int(t) % tau)
    nodes = np.arange(n)
    edges = np.stack([nodes, (nodes + hop) % n], 1)
    return _build("one_peer_exponential", n, edges, directed=True, weighting=weighting,
                  check_connected=False)


def from_edge_list(path: str | os.PathLike[str], n: int | None = None, directed: bool = False,
                   *, weighting: str = "uniform") -> Topology:
    """Reads one `u v` pair (0-based ids) per line; `#` starts a comment, blank lines skipped.

    Directed: `u v` means u sends to v. A pair named twice (`u v` on two lines) is refused
    with both line numbers; undirected, `v u` after `u v` is the same edge listed both ways
    (accepted). `n` defaults to max id + 1; nodes without edges make the graph disconnected
    (rejected).
    """
    edges, lines = [], []
    first: dict[tuple[int, int], int] = {}
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        why = "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else err.strerror
        raise TopologyError(f"edge list {path} cannot be read: {why}") from None
    for lineno, raw in enumerate(text.split("\n"), start=1):
        parts = raw.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) != 2 or not all(re.fullmatch(r"[+-]?\d+", p) for p in parts):
            raise TopologyError(f"{path}: malformed line {lineno}: {raw.strip()!r} "
                                f"(expected two integer node ids 'u v')")
        edge = (int(parts[0]), int(parts[1]))
        if edge in first:
            raise TopologyError(f"{path}: line {lineno} repeats the edge {edge[0]} {edge[1]} of "
                                f"line {first[edge]}; name each edge once")
        first[edge] = lineno
        edges.append(edge)
        lines.append(lineno)
    e = np.array(edges, dtype=np.int64).reshape(-1, 2)
    if n is None:
        if e.shape[0] == 0:
            raise TopologyError(f"empty graph: no edges in {path}")
        n = int(max(e.max() + 1, 1))
    _check_nodes(n, e, where=lambda i: f" ({path}, line {lines[i]})")
    name = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    return _build(f"edge_list:{name}", n, e, directed=directed, weighting=weighting)


def from_networkx(g: nx.Graph, name: str = "networkx", *, weighting: str = "uniform") -> Topology:
    """Wraps a networkx (Di)Graph; labels other than 0..n-1 are renumbered in sorted order."""
    n = g.number_of_nodes()
    if set(g.nodes()) != set(range(n)):
        g = nx.convert_node_labels_to_integers(g, ordering="sorted")
    return _build(name, n, _nx_edges(g), directed=g.is_directed(), weighting=weighting)


def _torus_of(n: int, rows: int = 0, cols: int = 0, **kw: Any) -> Topology:
    if not rows and not cols:
        return torus(n, **kw)
    rows = rows or n // cols
    cols = cols or n // rows
    _need(rows * cols == n, f"torus rows * cols = {rows} * {cols} = {rows * cols} != n={n}")
    return torus(rows, cols, **kw)


def _log2_hops(n: int) -> int:
    return int(math.floor(math.log2(max(n - 1, 1)))) + 1


def _edge_list(n: int | None, path: str = "", directed: bool = False, **kw: Any) -> Topology:
    _need(bool(str(path).strip()), "topology 'edge_list' needs its path, a file of 'u v' lines "
          "(config.topology_args.edge_list.path)")
    return from_edge_list(path, n, directed, **kw)


_SEEDED = dict(seeded=True)
# The registry (vanish/registry.py's shape). A family's knobs become the config section
# `topology_args.<name>`; its capabilities: `seeded` (it draws at random: a time-varying run
# redraws it with each epoch's seed), `round_varying` (it changes by round: epoch e is round e,
# passed as `t`), `degree(n, knobs) -> (mean, max)` (the size model's estimates of the mean and
# the largest in-degree; edge_list's are unknown before its file is read) and
# `infers_n` (n may be None: read from the file). Adding a family is its function plus a line.
REGISTRY: dict[str, registry.Component] = {
    "ring": registry.Component(ring, "a cycle: each node's two neighbours",
                               caps=dict(degree=lambda n, k: (2, 2))),
    "torus": registry.Component(
        _torus_of, "a 2-D wrap-around grid: four neighbours each",
        knobs=dict(rows=Knob(0, "grid rows (0: the squarest factorisation of N, or N / cols)",
                             checks.at_least(0)),
                   cols=Knob(0, "grid columns (0: N / rows)", checks.at_least(0))),
        caps=dict(degree=lambda n, k: (4, 4))),
    "complete": registry.Component(complete, "every pair of nodes linked",
                                   caps=dict(degree=lambda n, k: (n - 1, n - 1))),
    "star": registry.Component(
        star, "one hub linked to every other node",
        knobs=dict(center=Knob(0, "the hub node", checks.at_least(0))),
        caps=dict(degree=lambda n, k: (2, n - 1))),
    "random_regular": registry.Component(
        random_regular, "a random d-regular graph",
        knobs=dict(degree=Knob(8, "every node's degree d", checks.at_least(1))),
        caps=dict(_SEEDED, degree=lambda n, k: (k["degree"], k["degree"]))),
    "erdos_renyi": registry.Component(
        erdos_renyi, "G(n, p): each edge present with probability p (redrawn until connected)",
        knobs=dict(p=Knob(0.2, "edge probability", checks.between(0, 1, lo_open=True))),
        caps=dict(_SEEDED, degree=lambda n, k: (k["p"] * (n - 1),
                                                  k["p"] * n + 3 * math.sqrt(k["p"] * n) + 1))),
    "watts_strogatz": registry.Component(
        watts_strogatz, "a ring lattice of k neighbours, each edge rewired with probability p",
        knobs=dict(k=Knob(8, "ring neighbours of each node", checks.at_least(1)),
                   p=Knob(0.1, "rewiring probability", checks.between(0, 1))),
        caps=dict(_SEEDED, degree=lambda n, k: (k["k"], 2 * k["k"]))),
    "barabasi_albert": registry.Component(
        barabasi_albert, "preferential attachment: each new node links to m others",
        knobs=dict(m=Knob(4, "edges of each new node", checks.at_least(1))),
        caps=dict(_SEEDED, degree=lambda n, k: (2 * k["m"], k["m"] * math.sqrt(n) + k["m"]))),
    "exponential": registry.Component(
        exponential, "node i sends to i + 2^j for every j (static, directed)",
        caps=dict(degree=lambda n, k: (_log2_hops(n), _log2_hops(n)))),
    "one_peer_exponential": registry.Component(
        one_peer_exponential, "round t: node i sends to i + 2^(t mod log2 N) (time-varying)",
        caps=dict(round_varying=True, degree=lambda n, k: (1, 1))),
    "edge_list": registry.Component(
        _edge_list, "a graph read from a file of 'u v' lines",
        knobs=dict(path=Knob("", "the file: one 'u v' edge per line; '#' starts a comment"),
                   directed=Knob(False, "u v means u -> v only (v receives u's model)")),
        caps=dict(infers_n=True, degree=lambda n, k: (8, 8))),
}
TOPOLOGIES = tuple(REGISTRY)  # the built-in names (REGISTRY may grow)


def register(name: str, line: registry.Component) -> None:
    """Adds a topology family (its function, description, knobs and capabilities)."""
    registry.register(REGISTRY, name, line, kind="topology")


def make(name: str, n: int | None, *, seed: int = 0, weighting: str = "uniform",
         **kwargs: Any) -> Topology:
    """Builds a topology by name, e.g. make("random_regular", 64, degree=8, seed=1).

    Keyword arguments are the family's knobs (`REGISTRY[name].knobs`; a knob left out takes
    its default) and `t`, the round of a round-varying family (one_peer_exponential).
    edge_list's n may be None (inferred from the file).
    """
    if name not in REGISTRY:
        raise TopologyError(registry.unknown(REGISTRY, name, kind="topology"))
    if weighting not in WEIGHTINGS:
        raise TopologyError(f"unknown weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)}")
    line = REGISTRY[name]
    t = kwargs.pop("t", None) if line.caps.get("round_varying") else None
    bad = registry.knob_problems(REGISTRY, name, kwargs, prefix=f"topology {name!r}: argument ")
    if bad:
        raise TopologyError("; ".join(bad))
    if n is None and not line.caps.get("infers_n"):
        raise TopologyError(f"topology {name!r} needs the number of nodes n")
    args = {**registry.defaults(line), **kwargs}
    if line.caps.get("seeded"):
        args["seed"] = seed
    if t is not None:
        args["t"] = t
    return line.factory(n, weighting=weighting, **args)


def degree_estimate(name: str, n: int, knobs: Mapping[str, Any]) -> tuple[float, float]:
    """The size model's (mean, largest) in-degree of a family over n nodes (its `degree`
    capability; a family without one: n - 1, the most a graph can have)."""
    line = REGISTRY[name]
    estimate = line.caps.get("degree")
    if estimate is None:
        return float(n - 1), float(n - 1)
    mean, top = estimate(n, {**registry.defaults(line), **knobs})
    return float(mean), float(top)


class Spec(NamedTuple):
    """A topology family and its arguments, to draw graphs from (host side).

        spec = topology.Spec("random_regular", 64, kwargs={"degree": 8})
        graph = spec.make(seed=0)

    `seeded` says whether the family draws at random (a time-varying topology redraws it).
    """

    name: str
    n: int
    weighting: str = "uniform"
    kwargs: dict[str, Any] = {}

    @property
    def seeded(self) -> bool:
        return self.name in REGISTRY and bool(REGISTRY[self.name].caps.get("seeded"))

    @property
    def round_varying(self) -> bool:
        """The family rotates by round (one-peer exponential), not by a random draw."""
        return self.name in REGISTRY and bool(REGISTRY[self.name].caps.get("round_varying"))

    @property
    def time_varying(self) -> bool:
        """A run can vary this family's graph over time (redraw or rotate it)."""
        return self.seeded or self.round_varying

    def epoch(self, e: int, seed: int) -> Topology:
        """The graph of epoch e >= 1 of a time-varying run: round e of a round-varying
        family, else a draw with the epoch's seed (from `seed` and e)."""
        if self.round_varying:
            return make(self.name, self.n, weighting=self.weighting, **{**self.kwargs, "t": e})
        epoch_seed = int(np.random.SeedSequence([seed, e]).generate_state(1)[0])
        return self.make(epoch_seed)

    def make(self, seed: int = 0) -> Topology:
        """The graph of this family drawn with `seed` (see `make`)."""
        return make(self.name, self.n, seed=seed, weighting=self.weighting, **self.kwargs)
