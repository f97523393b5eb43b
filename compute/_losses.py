"""Losses, and the objective ``θ ↦ L(θ)`` over the flat parameter vector.

* ``squared``: ``L = (1/2m) Σ_i ‖f(x_i) − y_i‖²`` exactly as THEORY.md (the papers drop 1/m).
* ``cross_entropy``: mean softmax cross-entropy against one-hot ``Y`` (``d_y ≥ 2``), or,
  with one output, the logistic loss ``mean log(1 + exp(−y f))`` for targets ``y = ±1``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import jax
import jax.numpy as jnp

from compute._errors import InputError
from compute._models import ModelSpec, forward, unflatten_params

LOSSES = ("squared", "cross_entropy")


def squared_loss(pred: jax.Array, Y: jax.Array) -> jax.Array:
    """``(1/2m) ‖pred − Y‖_F²`` for ``(m, d_y)`` arrays."""
    return 0.5 * jnp.sum((pred - Y) ** 2) / Y.shape[0]


def cross_entropy_loss(pred: jax.Array, Y: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy (one-hot ``Y``), or logistic loss for one ±1 column."""
    if pred.shape[-1] == 1:
        return jnp.mean(jax.nn.softplus(-Y * pred))
    return -jnp.sum(Y * jax.nn.log_softmax(pred, axis=-1)) / Y.shape[0]


_LOSS_FUNCTIONS = {"squared": squared_loss, "cross_entropy": cross_entropy_loss}


def loss_function(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The loss ``(pred, Y) -> scalar`` called ``name``."""
    if name not in _LOSS_FUNCTIONS:
        raise InputError(f"loss must be one of {', '.join(LOSSES)}, got {name!r}.")
    return _LOSS_FUNCTIONS[name]


def model_loss(spec: ModelSpec, params, X: jax.Array, Y: jax.Array,
               loss: str = "squared") -> jax.Array:
    """The loss of the network ``spec`` with parameters ``params`` on ``(X, Y)``."""
    return loss_function(loss)(forward(spec, params, X), Y)


@lru_cache(maxsize=256)
def flat_objective(spec: ModelSpec, loss: str = "squared"
                   ) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """``objective(theta, X, Y)``: the loss as a function of the flat parameters ``(n,)``.

    The returned function is pure and jit/vmap/grad-friendly; data are arguments (not
    closed over) so one compiled kernel serves every dataset of the same shape. It is
    memoised per ``(spec, loss)``: compiled kernels key on the function object, so the same
    model must always get the same function or every call would recompile.
    """
    fn = loss_function(loss)

    def objective(theta, X, Y):
        return fn(forward(spec, unflatten_params(spec, theta), X), Y)

    return objective
