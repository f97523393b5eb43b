"""The learning curve that the theory predicts: Saxe et al.'s exact solution (THEORY.md §2).

Setting: a deep linear net ``f(x) = W_L ⋯ W_1 x`` trained by gradient flow on our loss
``L = (1/2m) ‖X W_1ᵀ ⋯ W_Lᵀ − Y‖_F²`` with whitened inputs (``XᵀX/m = I``). Then
``L(W) = ½ ‖W_L⋯W_1 − C/m‖_F² + ‖Y‖²/(2m) − ½ ‖C/m‖_F²`` with ``C = YᵀX``, and, with
``C/m = U S Vᵀ`` (singular values ``s_α``), a *balanced, decoupled* start (every layer
carries mode α with the same strength, ``W_L⋯W_1 = Σ_α u_α(0) U_α V_αᵀ``) stays decoupled:
each mode strength obeys

    du/dt = (N − 1) u^{2 − 2/(N − 1)} (s − u)        (N − 1 = H + 1 weight matrices)

which for one hidden layer (N − 1 = 2) is the logistic ``du/dt = 2u(s − u)``, solved by

    u(t) = s e^{2st} / (e^{2st} − 1 + s/u₀).

The loss is ``L(t) = ‖Y‖²/(2m) − ½ Σ_{α≤p} s_α² + ½ Σ_{α≤p} (s_α − u_α(t))²`` (modes beyond
the bottleneck p are never learned). Gradient descent with step η follows gradient flow at
``t = η × step`` (up to O(η) discretisation error).

References:
  Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of learning in deep
  linear neural networks", ICLR 2014, arXiv:1312.6120, eqs. (6)–(8) and §3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from compute._errors import InputError
from compute._limits import MAX_DEPTH, MAX_STEPS
from compute._models import make_model

__all__ = ["balanced_small_init", "saxe_learning_curve", "saxe_mode_strengths"]

WHITENING_TOLERANCE = 1e-6  # max |XᵀX/m − I| accepted as whitened


def saxe_mode_strengths(t, s, u0, *, depth: int = 1) -> np.ndarray:
    """Mode strengths ``u_α(t)`` of a balanced deep linear net under gradient flow.

    Args:
      t: ``(T,)`` times ≥ 0 (learning rate × step), increasing when ``depth > 1``.
      s: ``(k,)`` singular values ``s_α`` of ``C/m`` (≥ 0).
      u0: initial strength (> 0), a scalar or ``(k,)``.
      depth: hidden layers H; H = 1 uses the closed form, deeper nets integrate
        ``du/dt = (H + 1) u^{2 − 2/(H + 1)} (s − u)`` with RK4 (in ``log u``).

    Returns:
      ``(T, k)`` float64.
    """
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    s = np.atleast_1d(np.asarray(s, dtype=np.float64))
    u0 = np.broadcast_to(np.asarray(u0, dtype=np.float64), s.shape)
    if t.ndim != 1 or s.ndim != 1 or np.any(t < 0) or np.any(s < 0) or np.any(u0 <= 0) \
            or not (np.all(np.isfinite(t)) and np.all(np.isfinite(s))
                    and np.all(np.isfinite(u0))):
        raise InputError("need times t ≥ 0, singular values s ≥ 0 and u0 > 0, all finite.")
    if not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise InputError(f"depth must be an integer between 1 and {MAX_DEPTH}, got {depth!r}.")
    if depth == 1:
        tt, ss = t[:, None], s[None, :]
        positive = ss > 0
        safe = np.where(positive, ss, 1.0)
        logistic = safe / (1.0 + (safe / u0 - 1.0) * np.exp(-2.0 * safe * tt))
        no_signal = u0 / (1.0 + 2.0 * u0 * tt)  # s = 0: du/dt = −2u²
        return np.where(positive, logistic, no_signal)
    if np.any(np.diff(t) < 0):
        raise InputError("times must be increasing for depth > 1.")
    return _integrate_modes(t, s, u0, depth)


def saxe_learning_curve(X, Y, *, lr: float, steps: int, u0: float,
                        hidden_width: int | None = None, depth: int = 1) -> np.ndarray:
    """Predicted loss at every step of gradient descent from a small balanced init.

    Args:
      X, Y: ``(m, d_x)``, ``(m, d_y)`` with whitened inputs (``XᵀX/m = I``; see
        ``preprocess="whiten"``).
      lr, steps: gradient descent's step η and count T; step k is time ``t = η k``.
      u0: initial mode strength (:func:`balanced_small_init` gives the matching weights).
      hidden_width: the bottleneck p (default: no bottleneck, all ``min(d_x, d_y)`` modes).
      depth: hidden layers H.

    Returns:
      ``(T + 1,)`` float64 predicted losses, in our ``(1/2m)`` convention.
    """
    X, Y = _whitened(X, Y)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise InputError(f"the learning rate must be a positive number, got {lr!r}.")
    if not (isinstance(steps, int) and 1 <= steps <= MAX_STEPS):
        raise InputError(f"steps must be an integer between 1 and {MAX_STEPS}, got {steps!r}.")
    m = X.shape[0]
    s = np.linalg.svd(Y.T @ X / m, compute_uv=False)
    p = s.size if hidden_width is None else min(int(hidden_width), s.size)
    u = saxe_mode_strengths(lr * np.arange(steps + 1), s[:p], u0, depth=depth)
    const = float(np.sum(Y ** 2)) / (2 * m) - 0.5 * float(np.sum(s[:p] ** 2))
    return const + 0.5 * np.sum((s[:p] - u) ** 2, axis=1)


def balanced_small_init(X, Y, hidden_widths: Sequence[int], *, u0: float,
                        dtype=jnp.float64) -> jax.Array:
    """Flat weights of a deep linear net at Saxe's balanced, decoupled start.

    With ``C/m = U S Vᵀ``, ``p = min(min(widths), rank)`` and ``a = u0^{1/(H+1)}``: hidden
    unit α (α < p) carries mode α in every layer, ``W_1 = a [V_pᵀ; 0]``,
    ``W_k = a [I_p 0; 0 0]`` for the middle layers and ``W_L = a [U_p 0]``; other units start
    at zero (and stay there). So ``W_L⋯W_1 = u0 U_p V_pᵀ``: every learnable mode starts at
    strength u0, balanced across layers, as the theory assumes.

    Returns:
      ``(n,)`` flat parameters in THEORY.md's order, for ``make_model("linear", d_x, d_y,
      hidden_widths)``.
    """
    X, Y = _whitened(X, Y)
    if not (isinstance(u0, (int, float)) and math.isfinite(u0) and u0 > 0):
        raise InputError(f"u0 must be a positive number, got {u0!r}.")
    widths = tuple(int(w) for w in hidden_widths)
    if not widths:
        raise InputError("a balanced init needs at least one hidden layer.")
    m, d_x = X.shape
    d_y = Y.shape[1]
    make_model("linear", d_x, d_y, widths)  # validates the sizes
    U, s, Vt = np.linalg.svd(Y.T @ X / m, full_matrices=False)
    p = min(min(widths), int(np.sum(s > s[0] * 1e-12)) if s.size and s[0] > 0 else 0)
    a = u0 ** (1.0 / (len(widths) + 1))
    sizes = (d_x, *widths, d_y)
    layers = []
    for k in range(len(sizes) - 1):
        W = np.zeros((sizes[k + 1], sizes[k]))
        if k == 0:
            W[:p, :] = a * Vt[:p]
        elif k == len(sizes) - 2:
            W[:, :p] = a * U[:, :p]
        else:
            W[:p, :p] = a * np.eye(p)
        layers.append(W.ravel())
    return jnp.asarray(np.concatenate(layers), dtype=dtype)


def _whitened(X, Y) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise InputError("X and Y must be (m, d_x) and (m, d_y) with the same m.")
    gap = np.max(np.abs(X.T @ X / X.shape[0] - np.eye(X.shape[1])))
    if not gap <= WHITENING_TOLERANCE:
        raise InputError("Saxe's learning curve assumes whitened inputs (XᵀX/m = I); load the "
                         "data with preprocess='whiten'.")
    return X, Y


def _integrate_modes(t: np.ndarray, s: np.ndarray, u0: np.ndarray, depth: int) -> np.ndarray:
    """RK4 on ``v = log u``: ``dv/dt = k e^{(a−1)v} (s − e^v)``, k = H + 1, a = 2 − 2/k."""
    k = depth + 1
    power = 1.0 - 2.0 / k
    dt = np.diff(t, prepend=t[0])
    rate = k * max(float(np.max(s, initial=0.0)), float(np.max(u0))) ** (2.0 - 2.0 / k)
    substeps = max(1, math.ceil(float(np.max(dt, initial=0.0)) * rate / 0.02))

    def velocity(v):
        return k * jnp.exp(power * v) * (s - jnp.exp(v))

    def interval(v, h):
        def rk4(v, _):
            k1 = velocity(v)
            k2 = velocity(v + 0.5 * h * k1)
            k3 = velocity(v + 0.5 * h * k2)
            k4 = velocity(v + h * k3)
            return v + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4), None

        v, _ = jax.lax.scan(rk4, v, None, length=substeps)
        return v, v

    v0 = jnp.log(jnp.asarray(u0, jnp.float64))
    _, vs = jax.jit(lambda v, hs: jax.lax.scan(interval, v, hs))(
        v0, jnp.asarray(dt / substeps, jnp.float64))
    return np.exp(np.asarray(vs))
