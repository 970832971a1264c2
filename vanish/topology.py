"""Communication graphs: generators, validation, mixing weights and the device view (host side).

    topo = topology.make("random_regular", 64, degree=8, seed=0, weighting="metropolis")
    graph = topo.device_graph()          # pass to vanish.mixing kernels as an argument
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np

from vanish.errors import TopologyError

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


def random_regular(n: int, d: int, seed: int = 0, *, weighting: str = "uniform") -> Topology:
    """Uniform random d-regular graph, redrawn deterministically from `seed` until connected."""
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
    time-varying family (`ROUND_VARYING`): a run rotates it, epoch e being round e.
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


def _torus_of(n: int, rows: int | None = None, cols: int | None = None, **kw: Any) -> Topology:
    if rows is None and cols is None:
        return torus(n, **kw)
    rows = rows if rows is not None else n // int(cols)  # type: ignore[arg-type]
    cols = cols if cols is not None else n // rows
    _need(rows * cols == n, f"torus rows * cols = {rows} * {cols} = {rows * cols} != n={n}")
    return torus(rows, cols, **kw)


# name -> (generator, required kwargs passed positionally after n, optional kwargs, seeded)
_FACTORY: dict[str, tuple[Callable[..., Topology], tuple[str, ...], tuple[str, ...], bool]] = {
    "ring": (ring, (), (), False),
    "torus": (_torus_of, (), ("rows", "cols"), False),
    "complete": (complete, (), (), False),
    "star": (star, (), ("center",), False),
    "random_regular": (random_regular, ("degree",), (), True),
    "erdos_renyi": (erdos_renyi, ("p",), (), True),
    "watts_strogatz": (watts_strogatz, ("k", "p"), (), True),
    "barabasi_albert": (barabasi_albert, ("m",), (), True),
    "exponential": (exponential, (), (), False),
    "one_peer_exponential": (one_peer_exponential, (), ("t",), False),
    "edge_list": (lambda n, path, directed=False, **kw: from_edge_list(path, n, directed, **kw),
                  ("path",), ("directed",), False),
}
TOPOLOGIES = tuple(_FACTORY)
# Families that change by round rather than by a random draw: epoch e of a run is round e
# (`Spec.epoch`), every tick unless network.redraw_every sets the epoch length.
ROUND_VARYING = ("one_peer_exponential",)


def make(name: str, n: int | None, *, seed: int = 0, weighting: str = "uniform",
         **kwargs: Any) -> Topology:
    """Builds a topology by name, e.g. make("random_regular", 64, degree=8, seed=1).

    Names (kwargs): ring, torus (rows, cols), complete, star (center), random_regular (degree),
    erdos_renyi (p), watts_strogatz (k, p), barabasi_albert (m), exponential,
    one_peer_exponential (t), edge_list (path, directed; n may be None: inferred).
    """
    if name not in _FACTORY:
        raise TopologyError(f"unknown topology {name!r}; valid names: {', '.join(TOPOLOGIES)}")
    if weighting not in WEIGHTINGS:
        raise TopologyError(f"unknown weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)}")
    fn, required, optional, seeded = _FACTORY[name]
    unknown = sorted(set(kwargs) - set(required) - set(optional))
    missing = [k for k in required if k not in kwargs]
    if unknown or missing:
        raise TopologyError(f"topology {name!r}: unexpected argument(s) {unknown}, missing "
                            f"{missing}; it takes {list(required + optional) or 'none'}")
    if n is None and name != "edge_list":
        raise TopologyError(f"topology {name!r} needs the number of nodes n")
    args = [kwargs.pop(k) for k in required]
    if seeded:
        kwargs["seed"] = seed
    return fn(n, *args, weighting=weighting, **kwargs)


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
        return self.name in _FACTORY and _FACTORY[self.name][3]

    @property
    def round_varying(self) -> bool:
        """The family rotates by round (one-peer exponential), not by a random draw."""
        return self.name in ROUND_VARYING

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
