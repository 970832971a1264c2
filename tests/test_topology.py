"""Tests for vanish.topology: generators, weights, validation, edge lists, neighbour tables."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest

from vanish import topology
from vanish.topology import TopologyError

FAMILIES = {
    "ring": lambda: topology.ring(7),
    "torus": lambda: topology.torus(12),
    "complete": lambda: topology.complete(6),
    "star": lambda: topology.star(7, center=2),
    "random_regular": lambda: topology.random_regular(12, 3, seed=0),
    "erdos_renyi": lambda: topology.erdos_renyi(15, 0.3, seed=1),
    "watts_strogatz": lambda: topology.watts_strogatz(12, 4, 0.3, seed=0),
    "barabasi_albert": lambda: topology.barabasi_albert(14, 2, seed=0),
    "exponential": lambda: topology.exponential(9),
    "one_peer_exponential": lambda: topology.one_peer_exponential(8, 1),
}
UNDIRECTED = [k for k in FAMILIES if "exponential" not in k]


def edge_set(t: topology.Topology) -> set[tuple[int, int]]:
    return set(zip(t.senders.tolist(), t.receivers.tolist()))


@pytest.mark.parametrize("family", FAMILIES)
def test_structure_invariants(family: str) -> None:
    t = FAMILIES[family]()
    assert t.senders.dtype == np.int32 and t.edge_weight.dtype == np.float32
    assert len(edge_set(t)) == t.num_edges, "duplicate edges"
    assert np.all(t.senders != t.receivers), "self-loop"
    key = t.receivers.astype(np.int64) * t.n + t.senders
    assert np.all(np.diff(key) > 0), "edges not sorted by (receiver, sender)"
    np.testing.assert_array_equal(t.degree, np.bincount(t.receivers, minlength=t.n))
    if not t.directed:
        assert edge_set(t) == {(r, s) for s, r in edge_set(t)}
        assert nx.is_connected(t.to_networkx())
    elif family != "one_peer_exponential":
        assert nx.is_strongly_connected(t.to_networkx())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("weighting", topology.WEIGHTINGS)
def test_rows_stochastic_and_doubly_where_promised(family: str, weighting: str) -> None:
    t = FAMILIES[family]().with_weighting(weighting)
    w = t.dense()
    assert w.min() >= 0.0
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    if weighting != "uniform" and not t.directed:
        np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-6)
        np.testing.assert_allclose(w, w.T, atol=1e-7)


def test_uniform_on_star_is_not_doubly_stochastic() -> None:
    w = topology.star(5).dense()  # the check above must be able to tell the difference
    assert abs(w.sum(axis=0)[0] - 1.0) > 0.5


def test_weight_formulas() -> None:
    t = topology.barabasi_albert(20, 2, seed=3)
    d = t.degree.astype(np.float64)
    w = t.dense()
    for s, r in edge_set(t):
        assert w[r, s] == pytest.approx(1 / (d[r] + 1), rel=1e-6)
    wm = t.with_weighting("metropolis").dense()
    for s, r in edge_set(t):
        assert wm[r, s] == pytest.approx(1 / (1 + max(d[r], d[s])), rel=1e-6)
    wx = t.with_weighting("max_degree").dense()
    for s, r in edge_set(t):
        assert wx[r, s] == pytest.approx(1 / (d.max() + 1), rel=1e-6)
    np.testing.assert_allclose(np.diag(wx), 1 - d / (d.max() + 1), atol=1e-6)


def test_degrees_per_family() -> None:
    assert set(topology.ring(9).degree) == {2}
    tor = topology.torus(16)
    assert tor.n == 16 and set(tor.degree) == {4}
    assert topology.torus(3, 5).n == 15 and set(topology.torus(3, 5).degree) == {4}
    assert set(topology.complete(5).degree) == {4}
    st = topology.star(6, center=4)
    assert st.degree[4] == 5 and set(np.delete(st.degree, 4)) == {1}
    assert set(topology.random_regular(20, 5, seed=2).degree) == {5}
    ws = topology.watts_strogatz(20, 4, 0.2, seed=0)
    assert ws.num_edges == 20 * 4  # rewiring keeps the edge count
    assert topology.barabasi_albert(20, 3, seed=0).num_edges == 2 * 3 * (20 - 3)
    ex = topology.exponential(10)  # hops 1, 2, 4, 8
    assert set(ex.degree) == {4} and ex.directed
    assert edge_set(ex) >= {(0, 1), (0, 2), (0, 4), (0, 8), (9, 7)}


def test_one_peer_exponential_rounds() -> None:
    n = 12
    tau = math.ceil(math.log2(n))
    for t in range(2 * tau):
        g = topology.one_peer_exponential(n, t)
        hop = 2 ** (t % tau)
        assert edge_set(g) == {(i, (i + hop) % n) for i in range(n)}
        expected = 0.5 * np.eye(n)
        expected[(np.arange(n) + hop) % n, np.arange(n)] = 0.5  # W[receiver, sender]
        np.testing.assert_allclose(g.dense(), expected)
        assert set(g.degree) == {1} and np.allclose(g.self_weight, 0.5)
    union = nx.DiGraph()
    for t in range(tau):
        union.add_edges_from(edge_set(topology.one_peer_exponential(n, t)))
    assert nx.is_strongly_connected(union)


def test_seed_determinism() -> None:
    for make in (lambda s: topology.random_regular(30, 4, seed=s),
                 lambda s: topology.erdos_renyi(30, 0.2, seed=s),
                 lambda s: topology.watts_strogatz(30, 4, 0.5, seed=s),
                 lambda s: topology.barabasi_albert(30, 2, seed=s)):
        assert edge_set(make(5)) == edge_set(make(5))
        assert edge_set(make(5)) != edge_set(make(6))


def test_erdos_renyi_resamples_until_connected() -> None:
    p = 0.08  # below ln(40)/40 ~ 0.092: single draws are often disconnected
    draws = [nx.is_connected(nx.gnp_random_graph(40, p, seed=s)) for s in range(20)]
    assert not all(draws)
    for seed in range(5):
        assert nx.is_connected(topology.erdos_renyi(40, p, seed=seed).to_networkx())


@pytest.mark.parametrize("fn, match", [
    (lambda: topology.erdos_renyi(60, 0.005, seed=0), r"disconnected in all 100 draws.*larger p"),
    (lambda: topology.random_regular(7, 3), r"n \* d must be even.*n=7, d=3"),
    (lambda: topology.random_regular(6, 6), r"d=6 must satisfy 1 <= d < n=6"),
    (lambda: topology.torus(10), r"degenerate torus: n=10"),
    (lambda: topology.torus(2, 5), r"degenerate torus 2x5"),
    (lambda: topology.star(4, center=4), r"center 4 out of range for n=4"),
    (lambda: topology.ring(0), r"empty graph: n must be >= 1, got n=0"),
    (lambda: topology.from_networkx(nx.empty_graph(3)), r"empty graph: no edges among n=3"),
    (lambda: topology.from_networkx(nx.Graph([(0, 1), (1, 1)])), r"self-loop at node 1"),
    (lambda: topology._build("x", 3, [(0, 1), (1, 5)]), r"node id 5 out of range for n=3"),
    (lambda: topology._build("x", 3, [(0, 1), (-1, 2)]), r"node id -1 out of range for n=3"),
    (lambda: topology.from_networkx(nx.Graph([(0, 1), (2, 3), (4, 5)])),
     r"disconnected: 3 connected components"),
    (lambda: topology.from_networkx(nx.DiGraph([(0, 1), (1, 2)])),
     r"not strongly connected: 3 strongly connected components"),
    (lambda: topology.ring(5).with_weighting("magic"), r"unknown weighting 'magic'"),
    (lambda: topology.make("hypercube", 8), r"unknown topology 'hypercube'; valid: ring"),
    (lambda: topology.make("rign", 8), r"unknown topology 'rign' \(did you mean 'ring'\?\)"),
    (lambda: topology.make("random_regular", 8), r"d=8 must satisfy 1 <= d < n=8"),
    (lambda: topology.make("ring", 8, degree=3), r"argument degree is not a knob of 'ring'"),
    (lambda: topology.make("watts_strogatz", 8, p=2.0), r"argument p = 2\.0 must be in"),
    (lambda: topology.make("edge_list", None), r"needs its path"),
])
def test_invalid_inputs_raise_clear_errors(fn, match: str) -> None:
    with pytest.raises(TopologyError, match=match):
        fn()


def test_topology_error_is_value_error() -> None:
    assert issubclass(TopologyError, ValueError)


def test_edge_list_parsing(tmp_path) -> None:
    path = tmp_path / "g.txt"
    path.write_text("# a square with a diagonal\n0 1\n\n1 2  # inline comment\n2 3\n3 0\n"
                    "0 2\n2 0\n1 0\n")
    t = topology.from_edge_list(path)
    assert t.n == 4 and not t.directed
    und = {tuple(e) for e in t.edges_undirected().tolist()}
    assert und == {(0, 1), (1, 2), (2, 3), (0, 3), (0, 2)}  # listed both ways: one edge
    assert t.num_edges == 10
    d = topology.from_edge_list(path, directed=True)
    assert (0, 1) in edge_set(d) and (1, 0) in edge_set(d) and (3, 2) not in edge_set(d)
    assert topology.make("edge_list", None, path=str(path), weighting="metropolis").weighting \
        == "metropolis"


@pytest.mark.parametrize("text, kwargs, match", [
    ("0 1\n1 2 3\n", {}, r"malformed line 2: '1 2 3'"),
    ("# c\n0 1\n\n1 x\n", {}, r"malformed line 4"),
    ("0 1\n1,2\n", {}, r"malformed line 2"),
    ("0 1\n1 1\n", {}, r"self-loop at node 1 .*line 2"),
    ("0 1\n1 7\n", {"n": 4}, r"node id 7 out of range for n=4 .*line 2"),
    ("0 1\n2 3\n", {}, r"disconnected: 2 connected components"),
    ("0 1\n1 2\n", {"n": 5}, r"disconnected: 3 connected components"),
    ("# nothing\n\n", {}, r"empty graph"),
])
def test_edge_list_errors(tmp_path, text: str, kwargs: dict, match: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(TopologyError, match=match):
        topology.from_edge_list(path, **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
def test_neighbor_tables_match_edge_list(family: str) -> None:
    t = FAMILIES[family]()
    tab = t.neighbor_table()
    assert tab.nbr.shape == (t.n, max(t.max_degree, 1))
    for i in range(t.n):
        valid = tab.nbr_valid[i]
        e = tab.nbr_edge[i, valid]
        assert np.all(t.receivers[e] == i)
        np.testing.assert_array_equal(t.senders[e], tab.nbr[i, valid])
        np.testing.assert_array_equal(t.edge_weight[e], tab.nbr_weight[i, valid])
        assert sorted(e.tolist()) == np.flatnonzero(t.receivers == i).tolist()
        assert np.all(tab.nbr[i, ~valid] == i) and np.all(tab.nbr_weight[i, ~valid] == 0)
        outs = tab.out_nbr[i, tab.out_valid[i]]
        assert sorted(outs.tolist()) == sorted(t.receivers[t.senders == i].tolist())
        assert np.all(tab.out_nbr[i, ~tab.out_valid[i]] == i)
    g = t.device_graph()
    assert g._fields == topology.Graph._fields
    np.testing.assert_array_equal(np.asarray(g.nbr), tab.nbr)
    assert g.senders.dtype == np.int32 and g.nbr_valid.dtype == bool


def test_single_node_graph() -> None:
    t = topology.make("complete", 1)
    assert t.n == 1 and t.num_edges == 0 and t.dense().tolist() == [[1.0]]
    g = t.device_graph()
    assert g.nbr.shape == (1, 1) and not bool(g.nbr_valid[0, 0])


def test_make_matches_generators_and_networkx_roundtrip() -> None:
    pairs = [
        (topology.make("random_regular", 16, degree=4, seed=3), topology.random_regular(16, 4, 3)),
        (topology.make("erdos_renyi", 16, p=0.4, seed=1), topology.erdos_renyi(16, 0.4, 1)),
        (topology.make("watts_strogatz", 16, k=4, p=0.1), topology.watts_strogatz(16, 4, 0.1)),
        (topology.make("barabasi_albert", 16, m=2, seed=2), topology.barabasi_albert(16, 2, 2)),
        (topology.make("torus", 15, rows=3), topology.torus(3, 5)),
        (topology.make("star", 5, center=1), topology.star(5, 1)),
        (topology.make("one_peer_exponential", 8, t=2), topology.one_peer_exponential(8, 2)),
        (topology.make("exponential", 8), topology.exponential(8)),
    ]
    for a, b in pairs:
        assert edge_set(a) == edge_set(b) and a.name == b.name
    t = topology.make("ring", 6, weighting="max_degree")
    assert t.weighting == "max_degree"
    back = topology.from_networkx(t.to_networkx(), name="back", weighting="max_degree")
    assert edge_set(back) == edge_set(t)
    np.testing.assert_allclose(back.dense(), t.dense())
    path = nx.relabel_nodes(nx.path_graph(3), {0: "a", 1: "b", 2: "c"})
    relabelled = topology.from_networkx(path)
    assert edge_set(relabelled) == {(0, 1), (1, 0), (1, 2), (2, 1)}


def test_topology_is_immutable_and_repr_short() -> None:
    t = topology.ring(5)
    with pytest.raises(ValueError):
        t.senders[0] = 3
    with pytest.raises(AttributeError):
        t.n = 3  # type: ignore[misc]
    assert repr(t) == ("Topology(ring, n=5, edges=10, undirected, max_degree=2, "
                       "weighting='uniform')")
