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
import numpy as np

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


def target_kind(Y) -> str:
    """``"one_hot"`` (rows of 0/1 with one 1), ``"signed"`` (one column of ±1) or ``"real"``."""
    Y = np.asarray(Y)
    if Y.shape[1] == 1 and np.all(np.abs(Y) == 1):
        return "signed"
    if Y.shape[1] >= 2 and np.all((Y == 0) | (Y == 1)) and np.all(Y.sum(axis=1) == 1):
        return "one_hot"
    return "real"


def check_targets(loss: str, Y, name: str) -> None:
    """InputError unless the targets ``Y`` (m, d_y) of the dataset ``name`` suit ``loss``:
    cross-entropy needs one-hot rows or one ±1 column (on real targets it is meaningless)."""
    if loss == "cross_entropy" and target_kind(Y) == "real":
        raise InputError(f"cross-entropy needs class targets (one-hot rows or one ±1 column), "
                         f"but {name!r} has real-valued targets; use the squared loss.")


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


def sufficient_data(spec: ModelSpec, loss: str, X, Y, *, dtype=None
                    ) -> tuple[jax.Array, jax.Array]:
    """``(X̃, Ỹ)`` with r = d_x + d_y rows on which a deep linear net's squared loss, its
    gradient and every Hessian-vector product are those on the m rows of ``(X, Y)``.

    For ``f(x) = W x`` (``W = W_L ⋯ W_1``, no biases) the loss ``(1/2m)‖X Wᵀ − Y‖²_F`` is
    ``(1/2m)‖[X Y] [Wᵀ; −I]‖²_F``, and the thin QR ``[X Y] = Q R`` (Q with orthonormal
    columns, R r × r) turns it into ``(1/2m)‖R [Wᵀ; −I]‖²_F``: the rows of R are r pseudo
    samples with the same loss as a function of θ in exact arithmetic, hence the same
    derivatives of every order. They are scaled by ``√(r/m)`` so that :func:`squared_loss`'s
    ``1/(2·rows)`` still divides by m. The QR (O(m r²), on the host in float64) is backward
    stable, so in floating point the loss is as accurate as on the samples; a loss, gradient
    or Hessian-vector product then costs r/m of one on the samples.

    Args:
      dtype: of the rows (default X's); float64 keeps the QR's accuracy when the samples are
        float32 but the consumer computes in float64 (Hessians).

    Returns ``(X, Y)`` themselves when this does not hold or does not save anything: another
    model or loss, or ``m ≤ r``. For full-batch quantities only (not minibatches).
    """
    if np.ndim(X) != 2 or np.ndim(Y) != 2 or np.shape(X)[0] != np.shape(Y)[0]:
        raise InputError(f"X and Y must be (m, d_x) and (m, d_y) arrays, got shapes "
                         f"{np.shape(X)} and {np.shape(Y)}.")
    m, d_x = X.shape
    rows = d_x + Y.shape[1]
    if spec.kind != "linear" or loss != "squared" or m <= rows:
        return X, Y
    R = np.linalg.qr(np.hstack([np.asarray(X, np.float64), np.asarray(Y, np.float64)]),
                     mode="r")
    R = R * np.sqrt(rows / m)
    dtype = jnp.asarray(X).dtype if dtype is None else dtype
    return jnp.asarray(R[:, :d_x], dtype), jnp.asarray(R[:, d_x:], dtype)
