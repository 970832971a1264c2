"""Host-side partitioners (IID, Dirichlet weights/split, shards, label subsets) + device sampler.

    part = partition.make_partition('dirichlet_weights', y_train, 64, seed=0, alpha=0.5)
    idx_KxB = partition.sample_indices(key, part.device_arrays(), node_ids_K, 64)

Every scheme is one `Partition`: padded index groups [G, L] plus per-node group probabilities
[N, G]. A node draws a group by its probabilities, then an index uniformly within that group
(with replacement), so the device sampler is a single mechanism for every scheme.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vanish import checks, registry
from vanish.errors import PartitionError
from vanish.registry import Knob

SeedLike = int | np.random.Generator



@dataclasses.dataclass(frozen=True, eq=False)
class Partition:
    """Per-node sampling distribution over the training set.

    Attributes:
      name: scheme name, e.g. 'dirichlet_split'.
      group_index: int32 [G, L] training-set indices of each group, padded with -1.
      group_size: int32 [G] number of valid entries per row of `group_index`.
      node_group_prob: float32 [N, G] probability that node n draws from group g.
      params: scheme parameters, for logging.
    """

    name: str
    group_index: np.ndarray
    group_size: np.ndarray
    node_group_prob: np.ndarray
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        group_index = np.array(self.group_index, dtype=np.int32)  # copies: frozen below
        group_size = np.array(self.group_size, dtype=np.int32)
        prob = np.array(self.node_group_prob, dtype=np.float32)
        if group_index.ndim != 2 or group_size.shape != group_index.shape[:1]:
            raise ValueError(f'group_index must be [G, L] and group_size [G]; got '
                             f'{group_index.shape} and {group_size.shape}')
        if prob.ndim != 2 or prob.shape[1] != group_index.shape[0] or prob.shape[0] < 1:
            raise ValueError(f'node_group_prob must be [N, G={group_index.shape[0]}] with N >= 1;'
                             f' got {prob.shape}')
        if np.any(group_size < 0) or np.any(group_size > group_index.shape[1]):
            raise ValueError('group_size entries must lie in [0, L]')
        if np.any(prob < 0) or not np.allclose(prob.sum(axis=1), 1.0, atol=1e-4):
            raise ValueError('each row of node_group_prob must be non-negative and sum to 1')
        if np.any(prob[:, group_size == 0] > 0):
            raise ValueError('a node has positive probability on an empty group')
        valid = np.arange(group_index.shape[1]) < group_size[:, None]
        if np.any(group_index[valid] < 0):
            raise ValueError('group_index has padding (-1) inside a group')
        for arr in (group_index, group_size, prob):
            arr.setflags(write=False)  # shared by callers; a silent edit would skew every run
        object.__setattr__(self, 'group_index', group_index)
        object.__setattr__(self, 'group_size', group_size)
        object.__setattr__(self, 'node_group_prob', prob)
        object.__setattr__(self, 'params', dict(self.params))

    @property
    def n_nodes(self) -> int:
        return int(self.node_group_prob.shape[0])

    @property
    def n_groups(self) -> int:
        return int(self.group_index.shape[0])

    def group_members(self, group: int) -> np.ndarray:
        """Training indices of one group (host-side, for inspection)."""
        return self.group_index[group, : self.group_size[group]]

    def device_arrays(self) -> PartitionArrays:
        """The partition as device arrays for `sample_indices` / `sample_indices_for_keys`."""
        # Built in float64: every cdf entry within 6e-8 of 1 (the last one, and any after a
        # node's last positive group) then rounds to exactly 1.0f, so u ~ U[0, 1) never lands
        # past it on a zero-probability group.
        prob64 = self.node_group_prob.astype(np.float64)
        cdf = np.cumsum(prob64 / prob64.sum(axis=1, keepdims=True), axis=1)
        return PartitionArrays(
            group_index=jnp.asarray(self.group_index),
            group_size=jnp.asarray(self.group_size),
            group_cdf=jnp.asarray(cdf.astype(np.float32)),
        )


class PartitionArrays(NamedTuple):
    """Device view of a `Partition` (a pytree; pass it as an argument of jitted code)."""

    group_index: jax.Array  # int32 [G, L], padding -1
    group_size: jax.Array  # int32 [G]
    group_cdf: jax.Array  # float32 [N, G], cumulative node_group_prob, ending in exactly 1


# ----------------------------------------------------------------------------- schemes


def _check_labels(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f'y must be a non-empty 1-D integer label array; got {y.dtype} {y.shape}')
    if y.min() < 0:
        raise ValueError('labels must be non-negative')
    return y


def _check_n_nodes(n_nodes: int) -> int:
    if not isinstance(n_nodes, (int, np.integer)) or n_nodes < 1:
        raise PartitionError(f'n_nodes must be an integer >= 1; got {n_nodes!r}')
    return int(n_nodes)


def _check_alpha(alpha: float) -> float:
    if not np.isfinite(alpha) or alpha <= 0:
        raise PartitionError(f'alpha must be a finite number > 0; got {alpha!r}')
    return float(alpha)


def _groups_from_owner(owner: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded [G, L] index lists from owner[i] = group of training index i (-1: unused)."""
    used = np.flatnonzero(owner >= 0)
    order = used[np.argsort(owner[used], kind='stable')]  # ascending index within each group
    group_size = np.bincount(owner[used], minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(group_size)[:-1]])
    pos = np.arange(order.size) - starts[owner[order]]
    group_index = np.full((n_groups, max(int(group_size.max(initial=0)), 1)), -1, np.int32)
    group_index[owner[order], pos] = order
    return group_index, group_size.astype(np.int32)


def _label_groups(y: np.ndarray, num_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    num_classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.max() >= num_classes:
        raise ValueError(f'labels reach {int(y.max())} but num_classes={num_classes}')
    group_index, group_size = _groups_from_owner(y.astype(np.int64), num_classes)
    return group_index, group_size, num_classes


def iid(y: np.ndarray, n_nodes: int) -> Partition:
    """Every node samples uniformly from the whole (shared) training set."""
    y = _check_labels(y)
    n_nodes = _check_n_nodes(n_nodes)
    return Partition('iid', np.arange(y.size, dtype=np.int32)[None, :],
                     np.array([y.size], np.int32), np.ones((n_nodes, 1), np.float32))


def dirichlet_weights(y: np.ndarray, n_nodes: int, alpha: float, seed: SeedLike,
                      num_classes: int | None = None) -> Partition:
    """The reference's non-IID scheme: per-node label weights ~ Dirichlet(alpha * 1_C).

    A sample's label is drawn by the node's weights, then an image of that label from the
    shared training set. Classes absent from `y` get weight 0 (rows are renormalised).
    """
    y = _check_labels(y)
    n_nodes, alpha = _check_n_nodes(n_nodes), _check_alpha(alpha)
    group_index, group_size, num_classes = _label_groups(y, num_classes)
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(num_classes, alpha), size=n_nodes) * (group_size > 0)
    row_sum = weights.sum(axis=1, keepdims=True)
    # A row can underflow to all-zero for tiny alpha; give that node its heaviest present class.
    empty = row_sum[:, 0] <= 0
    weights[empty, np.argmax(group_size)] = 1.0
    weights /= weights.sum(axis=1, keepdims=True)
    return Partition('dirichlet_weights', group_index, group_size, weights, {'alpha': alpha})


def dirichlet_split(y: np.ndarray, n_nodes: int, alpha: float, seed: SeedLike,
                    min_size: int = 10, max_tries: int = 100) -> Partition:
    """Disjoint Dirichlet split of the training set, as the FL libraries do (NIID-Bench).

    Per class, its shuffled indices are cut across nodes by proportions ~ Dirichlet(alpha * 1_N);
    nodes already holding >= M / N samples get proportion 0 for later classes (NIID-Bench's
    balancing). Every training index goes to exactly one node; node n's group is its own index
    list (node_group_prob = identity).

    Nodes with fewer than `min_size` samples: the split is redrawn, up to `max_tries` times
    (NIID-Bench redraws forever). If every draw falls short (small alpha with many nodes, e.g.
    alpha=0.1 and 1000 nodes on 60k images), the last draw is topped up: each short node gets
    random samples taken from other nodes' holdings beyond their own first `min_size`, so no
    node is ever empty, at the price of a few off-distribution samples on the short nodes.
    """
    y = _check_labels(y)
    n_nodes, alpha = _check_n_nodes(n_nodes), _check_alpha(alpha)
    if min_size < 1 or min_size * n_nodes > y.size:
        raise PartitionError(f'min_size must be >= 1 and min_size * n_nodes <= {y.size} training '
                         f'examples; got min_size={min_size}, n_nodes={n_nodes}')
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    cap = y.size / n_nodes
    for _ in range(max(int(max_tries), 1)):
        owner = np.empty(y.size, np.int64)
        held = np.zeros(n_nodes, np.int64)
        for c in classes:
            idx_c = rng.permutation(np.flatnonzero(y == c))
            p = rng.dirichlet(np.full(n_nodes, alpha))
            masked = p * (held < cap)
            p = masked / masked.sum() if masked.sum() > 0 else p
            cuts = (np.cumsum(p) * idx_c.size).astype(np.int64)[:-1]
            node_of = np.searchsorted(cuts, np.arange(idx_c.size), side='right')
            owner[idx_c] = node_of
            held += np.bincount(node_of, minlength=n_nodes)
        if held.min() >= min_size:
            break
    else:
        owner = _top_up(owner, held, min_size, rng)
    group_index, group_size = _groups_from_owner(owner, n_nodes)
    return Partition('dirichlet_split', group_index, group_size, np.eye(n_nodes, dtype=np.float32),
                     {'alpha': alpha, 'min_size': min_size})


def _top_up(owner: np.ndarray, held: np.ndarray, min_size: int,
            rng: np.random.Generator) -> np.ndarray:
    """Move random samples to nodes holding < min_size, never taking a donor below min_size."""
    order = rng.permutation(owner.size)
    order = order[np.argsort(owner[order], kind='stable')]  # by node, random within a node
    starts = np.concatenate([[0], np.cumsum(held)[:-1]])
    rank = np.arange(owner.size) - starts[owner[order]]
    spare = order[rank >= min_size]  # enough of them: min_size * n_nodes <= M was checked
    deficit = np.maximum(min_size - held, 0)
    moved = rng.choice(spare, size=int(deficit.sum()), replace=False)
    owner = owner.copy()
    owner[moved] = np.repeat(np.arange(held.size), deficit)
    return owner


def shards(y: np.ndarray, n_nodes: int, shards_per_node: int, seed: SeedLike) -> Partition:
    """McMahan et al.'s pathological non-IID split: label-sorted shards, disjoint, equal sized.

    The M training indices are sorted by label (random order within a label), cut into
    n_nodes * shards_per_node shards of M // (n_nodes * shards_per_node) indices (the remainder
    of fewer than that many indices is left unused), and each node gets `shards_per_node`
    random shards.
    """
    y = _check_labels(y)
    n_nodes = _check_n_nodes(n_nodes)
    n_shards = n_nodes * int(shards_per_node)
    if shards_per_node < 1 or n_shards > y.size:
        raise PartitionError(f'shards_per_node must be >= 1 with n_nodes * shards_per_node <= '
                         f'{y.size}; got shards_per_node={shards_per_node}, n_nodes={n_nodes}')
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(y.size)
    by_label = shuffled[np.argsort(y[shuffled], kind='stable')]
    shard_size = y.size // n_shards
    shards_SxL = by_label[: n_shards * shard_size].reshape(n_shards, shard_size)
    group_index = shards_SxL[rng.permutation(n_shards)].reshape(n_nodes, -1)
    return Partition('shards', group_index, np.full(n_nodes, group_index.shape[1], np.int32),
                     np.eye(n_nodes, dtype=np.float32), {'shards_per_node': int(shards_per_node)})


def label_subsets(y: np.ndarray, n_nodes: int, subsets: Sequence[Sequence[int]],
                  assignment: str = 'round_robin', num_classes: int | None = None) -> Partition:
    """Nodes that only see some labels, e.g. subsets=[[0..4], [5..9]].

    Node n belongs to subset n % S ('round_robin') or n * S // n_nodes ('blocks', contiguous
    runs of nodes). A node draws a label uniformly from its subset, then an image of that label
    from the shared training set.
    """
    y = _check_labels(y)
    n_nodes = _check_n_nodes(n_nodes)
    group_index, group_size, num_classes = _label_groups(y, num_classes)
    subsets = [list(map(int, s)) for s in subsets]
    if not subsets or any(not s for s in subsets):
        raise PartitionError('subsets must be a non-empty list of non-empty label lists')
    for s in subsets:
        bad = [c for c in s if not 0 <= c < num_classes or group_size[c] == 0]
        if bad:
            raise PartitionError(f'subset {s} has labels {bad} with no training examples '
                             f'(labels present: {np.flatnonzero(group_size).tolist()})')
    member_SxC = np.zeros((len(subsets), num_classes), np.float64)
    for i, s in enumerate(subsets):
        member_SxC[i, s] = 1.0
    member_SxC /= member_SxC.sum(axis=1, keepdims=True)
    nodes = np.arange(n_nodes)
    if assignment == 'round_robin':
        subset_of_node = nodes % len(subsets)
    elif assignment == 'blocks':
        subset_of_node = nodes * len(subsets) // n_nodes
    else:
        raise PartitionError(f"assignment must be 'round_robin' or 'blocks'; got {assignment!r}")
    return Partition('label_subsets', group_index, group_size, member_SxC[subset_of_node],
                     {'subsets': subsets, 'assignment': assignment})


def parse_subsets(text: str) -> list[list[int]]:
    """'0-4,5-9' -> [[0..4], [5..9]]; '0 2 4,1 3' -> [[0,2,4],[1,3]] (PartitionError if not)."""
    subsets = []
    for part in str(text).split(','):
        part = part.strip()
        try:
            if '-' in part:
                lo, hi = (int(v) for v in part.split('-'))
                if lo > hi:
                    raise ValueError
                subsets.append(list(range(lo, hi + 1)))
            elif part:
                subsets.append([int(v) for v in part.split()])
        except ValueError:
            raise PartitionError(f'cannot read {part!r}; use ranges \'lo-hi\' or space-separated '
                                 'labels, subsets separated by commas, e.g. \'0-4,5-9\'') from None
    if not subsets:
        raise PartitionError("names no labels; e.g. '0-4,5-9'")
    return subsets


def _label_subsets_of(y: np.ndarray, n_nodes: int, subsets: str | Sequence[Sequence[int]],
                      assignment: str = 'round_robin', num_classes: int | None = None
                      ) -> Partition:
    return label_subsets(y, n_nodes, parse_subsets(subsets) if isinstance(subsets, str)
                         else subsets, assignment, num_classes)


_ALPHA = Knob(0.5, 'Dirichlet concentration (small: each node sees few labels)',
              checks.finite_at_least(0, strict=True))
# The registry (vanish/registry.py's shape): a scheme's knobs become the config section
# `partition_args.<name>`; capability `seeded`: the scheme draws with the run's seed.
REGISTRY: dict[str, registry.Component] = {
    'iid': registry.Component(iid, 'every node samples the whole training set'),
    'dirichlet_weights': registry.Component(
        dirichlet_weights, "per-node label weights ~ Dirichlet(alpha) (the paper's non-IID)",
        knobs=dict(alpha=_ALPHA), caps=dict(seeded=True)),
    'dirichlet_split': registry.Component(
        dirichlet_split, 'a disjoint split, each class cut over nodes ~ Dirichlet(alpha)',
        knobs=dict(alpha=_ALPHA), caps=dict(seeded=True)),
    'shards': registry.Component(
        shards, 'label-sorted shards, a few per node (McMahan et al.)',
        knobs=dict(shards_per_node=Knob(2, 'label-sorted shards per node', checks.at_least(1))),
        caps=dict(seeded=True)),
    'label_subsets': registry.Component(
        _label_subsets_of, 'each node sees one subset of the labels',
        knobs=dict(subsets=Knob('0-4,5-9', "label subsets, e.g. '0-4,5-9' (round robin over "
                                "the nodes)", checks.parses(parse_subsets, PartitionError)))),
}
SCHEMES = tuple(REGISTRY)  # the built-in names (REGISTRY may grow)


def register(name: str, line: registry.Component) -> None:
    """Adds a partition scheme: a function (y, n_nodes, <knobs>[, seed]) -> Partition."""
    registry.register(REGISTRY, name, line, kind='partition scheme')


def make_partition(scheme: str, y: np.ndarray, n_nodes: int, *, seed: SeedLike = 0,
                   **kwargs: Any) -> Partition:
    """Build a partition by scheme name; kwargs are the scheme's own parameters (its knobs,
    defaults for those left out, and any other parameter its function takes)."""
    if scheme not in REGISTRY:
        raise PartitionError(registry.unknown(REGISTRY, scheme, kind='partition scheme'))
    line = REGISTRY[scheme]
    fn = line.factory
    signature = inspect.signature(fn)
    accepted = [p for p in signature.parameters if p not in ('y', 'n_nodes', 'seed')]
    accepted += [k for k in line.knobs if k not in accepted]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise PartitionError(f'partition scheme {scheme!r} got unknown parameters {unknown}; '
                             f'it accepts {accepted}')
    kwargs = {**registry.defaults(line), **kwargs}
    if line.caps.get('seeded') or 'seed' in signature.parameters:
        kwargs['seed'] = seed
    return fn(y, n_nodes, **kwargs)


# ----------------------------------------------------------------------------- reporting


def label_histogram(partition: Partition, y: np.ndarray, num_classes: int) -> np.ndarray:
    """Expected label distribution of each node's samples, float64 [N, C]."""
    y = np.asarray(y)
    valid = np.arange(partition.group_index.shape[1]) < partition.group_size[:, None]
    g_of = np.broadcast_to(np.arange(partition.n_groups)[:, None], valid.shape)[valid]
    counts_GxC = np.bincount(g_of * num_classes + y[partition.group_index[valid]],
                             minlength=partition.n_groups * num_classes)
    counts_GxC = counts_GxC.reshape(partition.n_groups, num_classes).astype(np.float64)
    dist_GxC = counts_GxC / np.maximum(counts_GxC.sum(axis=1, keepdims=True), 1.0)
    return partition.node_group_prob.astype(np.float64) @ dist_GxC


def format_label_histogram(hist: np.ndarray, max_rows: int = 8) -> str:
    """A short table of per-node label percentages; `eff` = exp(entropy), labels in use."""
    hist = np.asarray(hist, dtype=np.float64)
    n, c = hist.shape
    plogp = np.where(hist > 0, hist * np.log(np.where(hist > 0, hist, 1.0)), 0.0)
    eff = np.exp(-plogp.sum(axis=1))
    header = 'node ' + ''.join(f'{k:>6d}' for k in range(c)) + '   eff'
    rows = list(range(n)) if n <= max_rows else (list(range(max_rows - max_rows // 2))
                                                 + list(range(n - max_rows // 2, n)))
    lines = [header]
    for i, r in enumerate(rows):
        if i > 0 and r != rows[i - 1] + 1:
            lines.append(f'  ... {r - rows[i - 1] - 1} more nodes')
        lines.append(f'{r:>4d} ' + ''.join(f'{100 * v:6.1f}' for v in hist[r]) + f'{eff[r]:6.2f}')
    lines.append('mean ' + ''.join(f'{100 * v:6.1f}' for v in hist.mean(axis=0))
                 + f'{eff.mean():6.2f}')
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- device sampler


@functools.partial(jax.jit, static_argnames='batch_size')
def sample_indices_for_keys(keys_K: jax.Array, arrays: PartitionArrays, node_ids_K: jax.Array,
                            batch_size: int) -> jax.Array:
    """Training indices int32 [K, B], one key per listed node (caller folds in tick and node).

    Each draw picks a group by the node's probabilities, then an index uniformly within it
    (with replacement); a node's draws depend only on its own key.
    """

    def one_node(key: jax.Array, node: jax.Array) -> jax.Array:
        # One bits() call instead of uniform + randint: threefry dominates compile time on CPU.
        bits_2xB = jax.random.bits(key, (2, batch_size), jnp.uint32)
        u_B = (bits_2xB[0] >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)  # exact, < 1
        group_B = jnp.searchsorted(arrays.group_cdf[node], u_B, side='right')
        # Never active (cdf rows end at exactly 1 > u); kept so an index can't run off the end.
        group_B = jnp.minimum(group_B, arrays.group_cdf.shape[1] - 1)
        size_B = jnp.maximum(arrays.group_size[group_B], 1).astype(jnp.uint32)
        # Modulo bias is below size / 2**32 (< 2e-5 relative for 60k-image groups).
        member_B = (bits_2xB[1] % size_B).astype(jnp.int32)
        return arrays.group_index[group_B, member_B]

    return jax.vmap(one_node)(keys_K, jnp.asarray(node_ids_K, jnp.int32))


@functools.partial(jax.jit, static_argnames='batch_size')
def sample_indices(key: jax.Array, arrays: PartitionArrays, node_ids_K: jax.Array,
                   batch_size: int) -> jax.Array:
    """Like `sample_indices_for_keys` with node keys fold_in(key, node_id).

    Folding in the node id (not split(key, K)) keeps a node's draws the same whatever other
    nodes are in the call; list a node twice and it gets the same batch twice.
    """
    node_ids_K = jnp.asarray(node_ids_K, jnp.int32)
    keys_K = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, node_ids_K)
    return sample_indices_for_keys(keys_K, arrays, node_ids_K, batch_size)
