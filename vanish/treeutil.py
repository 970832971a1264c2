"""Small pytree helpers shared by the kernels (ground floor: imports only JAX).

    treeutil.per_node(mask_N, x.ndim) * x      # an [N] value against a stacked [N, ...] leaf
    treeutil.layer_name(path)                  # 'Conv_0/kernel' for a key path
"""

from __future__ import annotations

from typing import Any

import jax


def per_node(v_N: jax.Array, ndim: int) -> jax.Array:
    """[N] -> [N, 1, ..., 1]: a per-node value broadcast against a stacked leaf of rank ndim.

    Args:
      v_N: one value per node (leading axis N).
      ndim: the rank of the stacked leaf it multiplies or selects.
    Returns:
      v_N with ndim - 1 trailing axes of size 1.
    """
    return v_N.reshape(v_N.shape + (1,) * (ndim - 1))


def path_names(path: Any) -> tuple[str, ...]:
    """Key names of a JAX key path (DictKey.key, GetAttrKey.name, SequenceKey.idx), or of an
    'a/b' string.

    Args:
      path: a key path from jax.tree_util.tree_flatten_with_path, or a '/'-joined name.
    Returns:
      The names, outermost first.
    """
    if isinstance(path, str):
        return tuple(p for p in path.split("/") if p)
    return tuple(str(next((getattr(k, a) for a in ("key", "name", "idx") if hasattr(k, a)), k))
                 for k in path)


def layer_name(path: Any) -> str:
    """'Conv_0/kernel' for a key path: the one key-path-to-name helper (metric names, skip
    patterns, checkpoint manifests).

    Args:
      path: a key path (or a '/'-joined name).
    Returns:
      The '/'-joined names.
    """
    return "/".join(path_names(path))
