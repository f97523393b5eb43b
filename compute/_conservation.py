"""Quantities gradient flow conserves: the balancedness of linear and ReLU networks.

The loss of a network with identity activation is unchanged by ``W_k → A W_k``,
``b_k → A b_k``, ``W_{k+1} → W_{k+1} A⁻¹`` for any invertible ``A`` (d_k × d_k). By
Noether's argument, along gradient flow ``θ̇ = −∇L(θ)`` (any loss of the outputs) each

    D_k = W_{k+1}ᵀ W_{k+1} − W_k W_kᵀ − b_k b_kᵀ        (k = 1 … L−1, d_k × d_k)

stays constant (no ``b_k b_kᵀ`` term without biases). For ReLU / leaky-ReLU networks only
diagonal ``A > 0`` (per-unit rescaling) is a symmetry, and only ``diag(D_k)`` is conserved:
``‖W_{k+1}[:, j]‖² − ‖W_k[j, :]‖² − b_k[j]²`` per hidden unit j.

Gradient *descent* with step η changes ``D_k`` by ``η² (∇_{k+1}ᵀ∇_{k+1} − ∇_k∇_kᵀ − …)`` per
step, so over a fixed time ``t = η·steps`` the drift is O(η): a check on the integrator, and
the reason small initialisations stay nearly balanced (``D_k ≈ 0`` at the start and after).

References:
  Du, Hu & Lee, "Algorithmic Regularization in Learning Deep Homogeneous Models: Layers are
  Automatically Balanced", NeurIPS 2018 (arXiv:1806.00900); Arora, Cohen & Hazan 2018
  (arXiv:1802.06509); Kunin et al. 2021, "Neural Mechanics" (arXiv:2012.04728).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from compute._errors import InputError
from compute._models import ModelSpec, unflatten_params

__all__ = ["BALANCEDNESS_ACTIVATIONS", "balancedness", "balancedness_drift",
           "rescaling_directions"]

# Activations with a rescaling symmetry: full matrices for identity, diagonals for the ReLUs.
BALANCEDNESS_ACTIVATIONS = ("identity", "relu", "leaky_relu")


def balancedness(spec: ModelSpec, theta) -> list[np.ndarray]:
    """The conserved matrices ``D_k = W_{k+1}ᵀW_{k+1} − W_kW_kᵀ (− b_kb_kᵀ)`` at θ.

    Args:
      spec: a network with activation in :data:`BALANCEDNESS_ACTIVATIONS` and ≥ 1 hidden
        layer.
      theta: flat parameters ``(n,)``.

    Returns:
      list of L−1 float64 arrays, ``D_k`` of shape ``(d_k, d_k)`` for hidden layer k (only
      the diagonal, the rest zero, for ReLU / leaky-ReLU networks).
    """
    _check_spec(spec)
    theta = _check_weights(spec, theta, 1)
    return [np.asarray(D, np.float64) for D in _balancedness_kernel(spec)(theta)]


def balancedness_drift(spec: ModelSpec, weights) -> np.ndarray:
    """How far each recorded point's balancedness has moved from the first row's.

    Args:
      spec: as in :func:`balancedness`.
      weights: ``(T, n)`` flat parameters along a path (e.g. ``PathResult.weights``).

    Returns:
      float64 ``(T,)``: ``Σ_k ‖D_k(θ_t) − D_k(θ_0)‖_F`` (0 at the first row).
    """
    _check_spec(spec)
    W = _check_weights(spec, weights, 2)
    return np.asarray(_drift_kernel(spec)(W), np.float64)


def rescaling_directions(spec: ModelSpec, theta) -> np.ndarray:
    """Tangent vectors of the rescaling symmetry's orbit through θ (flat order).

    For hidden layer k and a generator E (d_k × d_k) the curve ``A = I + εE`` moves
    ``W_k → A W_k``, ``b_k → A b_k``, ``W_{k+1} → W_{k+1} A⁻¹``, so its tangent is
    ``δW_k = E W_k``, ``δb_k = E b_k``, ``δW_{k+1} = −W_{k+1} E`` (zero elsewhere). The
    generators are all ``e_a e_bᵀ`` for identity activation (GL(d_k): d_k² of them) and
    ``e_a e_aᵀ`` for ReLU / leaky-ReLU (positive diagonal rescaling: d_k).

    The loss is constant along each orbit, so ``∇L·v = 0`` everywhere and, differentiating
    once more, ``H v = 0`` at every critical point: these are the Hessian's flat directions
    that the symmetry forces (their span's dimension is the number of zero eigenvalues it
    explains).

    Args:
      spec: as in :func:`balancedness`; theta: flat parameters ``(n,)``.

    Returns:
      float64 ``(r, n)``, one tangent per row (not normalised; rows may be dependent where
      the weights are rank-deficient, e.g. zero).
    """
    _check_spec(spec)
    theta = np.asarray(_check_weights(spec, theta, 1))
    blocks, offset = [], 0
    for (rows, cols), b in spec.layer_shapes():
        W = theta[offset:offset + rows * cols].reshape(rows, cols)
        offset += rows * cols
        bias = None
        if b is not None:
            bias = theta[offset:offset + b]
            offset += b
        blocks.append((W, bias))
    starts = np.cumsum([0] + [W.size + (0 if bb is None else bb.size) for W, bb in blocks])
    full = spec.activation == "identity"
    out = []
    for k in range(len(blocks) - 1):
        (W, bias), (W_up, _) = blocks[k], blocks[k + 1]
        d = W.shape[0]
        pairs = [(a, c) for a in range(d) for c in range(d)] if full else \
            [(a, a) for a in range(d)]
        for a, c in pairs:
            v = np.zeros(spec.n_params)
            dW = np.zeros_like(W)
            dW[a] = W[c]                                # (E W)[a, :] = W[c, :]
            v[starts[k]:starts[k] + W.size] = dW.ravel()
            if bias is not None:
                v[starts[k] + W.size + a] = bias[c]     # (E b)[a] = b[c]
            dW_up = np.zeros_like(W_up)
            dW_up[:, c] = -W_up[:, a]                   # (−W_{k+1} E)[:, c] = −W_{k+1}[:, a]
            v[starts[k + 1]:starts[k + 1] + W_up.size] = dW_up.ravel()
            out.append(v)
    return np.asarray(out, np.float64).reshape(-1, spec.n_params)


@functools.lru_cache(maxsize=32)
def _balancedness_kernel(spec: ModelSpec):
    diagonal = spec.activation != "identity"

    def matrices(theta):
        layers = unflatten_params(spec, theta)
        out = []
        for lower, upper in zip(layers[:-1], layers[1:], strict=True):
            D = upper["W"].T @ upper["W"] - lower["W"] @ lower["W"].T
            if "b" in lower:
                D = D - jnp.outer(lower["b"], lower["b"])
            out.append(jnp.diag(jnp.diag(D)) if diagonal else D)
        return out

    return jax.jit(matrices)


@functools.lru_cache(maxsize=32)
def _drift_kernel(spec: ModelSpec):
    matrices = _balancedness_kernel(spec)

    def drift(W):
        first = matrices(W[0])

        def row(theta):
            return sum(jnp.linalg.norm(D - D0) for D, D0 in
                       zip(matrices(theta), first, strict=True))

        return jax.lax.map(row, W, batch_size=256)

    return jax.jit(drift)


def _check_spec(spec: ModelSpec) -> None:
    if spec.activation not in BALANCEDNESS_ACTIVATIONS:
        raise InputError(f"balancedness is conserved only for activations with a rescaling "
                         f"symmetry ({', '.join(BALANCEDNESS_ACTIVATIONS)}), not "
                         f"{spec.activation!r}.")
    if spec.depth < 1:
        raise InputError("balancedness needs at least one hidden layer; this model has none.")


def _check_weights(spec: ModelSpec, weights, ndim: int) -> jax.Array:
    try:
        arr = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("the weights must be an array of numbers.") from None
    n = spec.n_params
    if arr.ndim != ndim or arr.shape[-1] != n or (ndim == 2 and arr.shape[0] < 1):
        want = f"(n,) = ({n},)" if ndim == 1 else f"(T, n) with n = {n} and T ≥ 1"
        raise InputError(f"the weights must have shape {want}, got {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise InputError("the weights contain NaN or inf.")
    return jnp.asarray(arr, jnp.float64)
