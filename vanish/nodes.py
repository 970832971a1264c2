"""Stacked node state: N models initialised at once and trained / evaluated with `jax.vmap`.

    params_N = nodes.init_params(model, key, n=64, input_shape=(28, 28, 1))
    tx = nodes.make_optimizer(lr=0.01, momentum=0.9)
    step = nodes.make_train_step(model, tx)      # (params_N, opt_N, x_NB, y_NB) -> ...
    opt_N = nodes.init_opt_state(tx, params_N)
    params_N, opt_N, loss_N = jax.jit(step)(params_N, opt_N, x_NB, y_NB)

Every function here is vmapped over the leading node axis; none loops over nodes.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vanish import registry, treeutil

PyTree = Any
# The mesh axis of the stacked node dimension when it is split over devices (engine.py).
NODE_AXIS = "nodes"


def init_params(
    model: nn.Module,
    key: jax.Array,
    n: int,
    input_shape: tuple[int, ...],
    *,
    shared: bool = False,
) -> PyTree:
    """Initialises `n` stacked models.

    Args:
      model: a flax module taking a batch [B, *input_shape].
      key: root key of the initialisation.
      n: number of nodes.
      input_shape: shape of one example.
      shared: False (gossip learning): every node initialises independently from its own
        key `split(key, n)[i]`. True (federated learning): every node gets the same model,
        the one initialised from `key` itself (the server's model).

    Returns:
      params_N: the flax `params` pytree with a leading node axis of size n.
    """
    if n < 1:
        raise ValueError(f"need at least one node, got n={n}")
    dummy = jnp.zeros((1, *input_shape), jnp.float32)

    def init_one(k: jax.Array) -> PyTree:
        return model.init(k, dummy)["params"]

    if shared:
        one = init_one(key)
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)).copy(), one)
    return jax.vmap(init_one)(jax.random.split(key, n))


def inv_schedule(lr: float, gamma: float = 1e-4, power: float = 0.75) -> optax.Schedule:
    """Caffe's "inv" policy, lr * (1 + gamma * it) ** -power (the reference's LeNet schedule).

    `it` is the optimizer's own step count, so under `vmap` it is counted per node.
    """
    return lambda count: lr * (1.0 + gamma * count) ** (-power)


# The optimizers (vanish/registry.py's shape; the one list of names: the config's check, the
# size model, --list): factory(learning_rate, momentum, weight_decay) -> optax transformation;
# capabilities `copies(momentum)`, its state's size in parameter copies (the size model's),
# and `decoupled_decay` (weight decay is the optimizer's own, else chained in).
OPTIMIZERS: dict[str, registry.Component] = {
    "sgd": registry.Component(lambda lr, m, wd: optax.sgd(lr, momentum=m or None),
                              "SGD with momentum (config.optim.momentum; 0: plain SGD)",
                              caps=dict(copies=lambda m: 1 if m else 0)),
    "adam": registry.Component(lambda lr, m, wd: optax.adam(lr), "Adam",
                               caps=dict(copies=lambda m: 2)),
    "adamw": registry.Component(lambda lr, m, wd: optax.adamw(lr, weight_decay=wd),
                                "AdamW (decoupled weight decay: config.optim.weight_decay)",
                                caps=dict(copies=lambda m: 2, decoupled_decay=True)),
}
# Learning-rate schedules: factory(lr) -> a learning rate or an optax schedule.
LR_SCHEDULES: dict[str, registry.Component] = {
    "constant": registry.Component(lambda lr: lr, "the same rate throughout"),
    "inv": registry.Component(inv_schedule, "Caffe's inv: lr (1 + 1e-4 t)^-0.75, t the node's "
                              "own step count"),
}


def make_optimizer(
    name: str = "sgd",
    *,
    lr: float = 0.01,
    momentum: float = 0.9,
    schedule: str = "constant",
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """An optax optimizer by name (a key of OPTIMIZERS: 'sgd' with momentum, 'adam', 'adamw');
    `schedule` a key of LR_SCHEDULES ('constant', or 'inv': Caffe's inv policy per node)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; choose from {', '.join(LR_SCHEDULES)}")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    opt = OPTIMIZERS[name]
    tx = opt.factory(LR_SCHEDULES[schedule].factory(lr), momentum, weight_decay)
    if opt.caps.get("decoupled_decay"):
        return tx
    if weight_decay:
        tx = optax.chain(optax.add_decayed_weights(weight_decay), tx)
    return tx


def init_opt_state(tx: optax.GradientTransformation, params_N: PyTree) -> PyTree:
    """Per-node optimizer state, stacked like the params."""
    return jax.vmap(tx.init)(params_N)


def loss_and_accuracy(
    model: nn.Module, params: PyTree, x_B: jax.Array, y_B: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean softmax cross-entropy and accuracy of one model on one batch."""
    # flax types apply() as `Any | tuple[Any, variables]` (the tuple only with mutable=...).
    logits: jax.Array = model.apply({"params": params}, x_B)  # type: ignore[assignment]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y_B).mean()
    acc = (jnp.argmax(logits, -1) == y_B).mean()
    return loss, acc


class TrainStep(NamedTuple):
    """A training step's result per node: new params, new optimizer state, and the loss on
    its batch (before the update)."""

    params: PyTree
    opt_state: PyTree
    loss: jax.Array


def make_train_step(
    model: nn.Module, tx: optax.GradientTransformation
) -> Callable[[PyTree, PyTree, jax.Array, jax.Array], TrainStep]:
    """A (not yet jitted) vmapped SGD step: one optimizer update per node on its own batch.

    The returned function maps (params_K, opt_state_K, x_KB..., y_KB) to TrainStep with
    leading axis K on every output; K is whatever stack it is given (all N nodes, or the
    K nodes that train this tick). Jit it where it is used, donating params and state.
    """

    def step_one(params: PyTree, opt_state: PyTree, x_B: jax.Array, y_B: jax.Array) -> TrainStep:
        def loss_fn(p: PyTree) -> jax.Array:
            return loss_and_accuracy(model, p, x_B, y_B)[0]

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return TrainStep(optax.apply_updates(params, updates), opt_state, loss)

    return jax.vmap(step_one)


def make_eval_step(
    model: nn.Module,
) -> Callable[[PyTree, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """A (not yet jitted) evaluation of every node on one shared test set.

    Returns a function (params_N, x_T, y_T) -> (acc_N, loss_N). The test set is not
    batched over nodes, so convolutions see one input and N kernels (no grouped conv).
    """

    def eval_one(params: PyTree, x_T: jax.Array,
                 y_T: jax.Array) -> tuple[jax.Array, jax.Array]:
        loss, acc = loss_and_accuracy(model, params, x_T, y_T)
        return acc, loss

    return jax.vmap(eval_one, in_axes=(0, None, None))


def tree_take(tree_N: PyTree, idx_K: jax.Array) -> PyTree:
    """Gathers the rows idx_K of every leaf (the nodes that act this tick)."""
    return jax.tree.map(lambda x: x[idx_K], tree_N)


per_node = treeutil.per_node  # [N] -> [N, 1, ..., 1] (public here too: the kernels' API)


def tree_put(tree_N: PyTree, idx_K: jax.Array, tree_K: PyTree, valid_K: jax.Array) -> PyTree:
    """Writes rows of tree_K back at idx_K where valid_K; invalid (padding) rows are dropped.

    Padding rows are sent out of bounds and dropped by the scatter, so they never touch a
    real node even when their index duplicates a valid one.
    """

    def put(x_N: jax.Array, x_K: jax.Array) -> jax.Array:
        target = jnp.where(valid_K, idx_K, x_N.shape[0])
        return x_N.at[target].set(x_K, mode="drop")

    return jax.tree.map(put, tree_N, tree_K)
