"""The optimisers a path can use, as optax gradient transformations, and their validation.

Every optimiser updates the flat parameter vector ``θ`` (shape ``(n,)``) from a gradient
``g`` (full-batch, or a minibatch estimate; optionally plus Gaussian noise):

* ``gd``: ``θ ← θ − η g`` (``optax.sgd(η)``).
* ``momentum`` (heavy ball, Polyak 1964): ``v ← g + β v``, ``θ ← θ − η v``
  (``optax.sgd(η, momentum=β)``).
* ``nesterov`` (Sutskever et al. 2013's form): ``v ← g + β v``, ``θ ← θ − η (g + β v)``
  (``optax.sgd(η, momentum=β, nesterov=True)``).
* ``adam`` (Kingma & Ba 2015): ``m ← β₁m + (1−β₁)g``, ``s ← β₂s + (1−β₂)g²``,
  ``θ ← θ − η m̂ / (√ŝ + ε)`` with bias corrections ``m̂ = m/(1−β₁ᵗ)``, ``ŝ = s/(1−β₂ᵗ)``;
  β₁ = 0.9, β₂ = 0.999, ε = 1e-8 (optax's defaults; ``momentum`` does not apply).
* ``sgd``: the ``gd`` update on a minibatch gradient; the batch indices are drawn without
  replacement, afresh each step, from a seeded PRNG key. Without an explicit batch size it
  uses ``min(DEFAULT_SGD_BATCH, m)`` samples. (A batch size also turns any other optimiser
  into its minibatch version.)

The learning rate and β may be traced values, so one compiled path serves every step size.

References:
  Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.
  Sutskever, Martens, Dahl & Hinton, "On the importance of initialization and momentum in
  deep learning", ICML 2013.
  Kingma & Ba, "Adam: A Method for Stochastic Optimization", arXiv:1412.6980.
"""

from __future__ import annotations

import math

import optax

from compute._errors import InputError
from compute._limits import MAX_STEPS

__all__ = ["DEFAULT_SGD_BATCH", "OPTIMIZERS", "check_path_options", "make_optimizer"]

OPTIMIZERS = ("gd", "momentum", "nesterov", "adam", "sgd")
DEFAULT_SGD_BATCH = 32
_MAX_LEARNING_RATE = 1e6  # larger steps are always a typo; divergence below it is reported


def make_optimizer(name: str, learning_rate, *, momentum=0.9) -> optax.GradientTransformation:
    """The optax transformation called ``name`` (see the module docstring for the maths).

    Args:
      name: one of :data:`OPTIMIZERS`.
      learning_rate: the step size η (a float or a traced scalar).
      momentum: β of ``momentum`` and ``nesterov`` (ignored by the others).

    Returns:
      An ``optax.GradientTransformation`` acting on the flat parameter vector.
    """
    if name in ("gd", "sgd"):
        return optax.sgd(learning_rate)
    if name == "momentum":
        return optax.sgd(learning_rate, momentum=momentum)
    if name == "nesterov":
        return optax.sgd(learning_rate, momentum=momentum, nesterov=True)
    if name == "adam":
        return optax.adam(learning_rate)
    raise InputError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}.")


def check_path_options(*, optimizer: str, lr, steps, batch, n_samples: int, momentum,
                       noise) -> int | None:
    """Validate a path's options; return the minibatch size (None: the full batch).

    Raises:
      InputError: with one sentence naming the bad option.
    """
    if optimizer not in OPTIMIZERS:
        raise InputError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}.")
    if not _is_number(lr) or not 0 < lr <= _MAX_LEARNING_RATE:
        raise InputError(f"the learning rate must be a finite number in (0, "
                         f"{_MAX_LEARNING_RATE:g}], got {lr!r}.")
    if not _is_int(steps) or not 1 <= steps <= MAX_STEPS:
        raise InputError(f"steps must be an integer between 1 and {MAX_STEPS}, got {steps!r}.")
    if optimizer in ("momentum", "nesterov") and (not _is_number(momentum)
                                                  or not 0 <= momentum < 1):
        raise InputError(f"momentum must be a number in [0, 1), got {momentum!r}.")
    if not _is_number(noise) or noise < 0:
        raise InputError(f"the gradient noise must be a finite number ≥ 0, got {noise!r}.")
    if batch is None:
        batch = min(DEFAULT_SGD_BATCH, n_samples) if optimizer == "sgd" else n_samples
    if not _is_int(batch) or not 1 <= batch <= n_samples:
        raise InputError(f"the batch size must be an integer between 1 and the number of "
                         f"samples ({n_samples}), got {batch!r}.")
    return None if int(batch) == n_samples else int(batch)  # all samples: the full batch


def _is_number(value) -> bool:
    try:
        return math.isfinite(float(value)) and not isinstance(value, bool)
    except (TypeError, ValueError):
        return False


def _is_int(value) -> bool:
    return _is_number(value) and float(value) == int(value)
