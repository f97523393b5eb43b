"""Converge to a nearby critical point of any kind (saddles included) and classify it.

Gradient descent runs away from saddles; to *land* on one (say the saddle in the middle of
a plateau of a training path) minimise ``φ(θ) = ½ ‖∇L(θ)‖²`` instead, whose minima are
every critical point of L. The Jacobian of ``∇L`` is the Hessian H, so:

* ``levenberg_marquardt``: ``δ = −(H² + μ I)⁻¹ H ∇L``: Gauss–Newton on ``∇L = 0`` with
  adaptive damping μ (÷3 after a step that lowers ‖∇L‖, ×4 and retry otherwise). For
  n ≤ ``MAX_PARAMS_EXACT_HESSIAN`` via the eigendecomposition of H, else matrix-free by
  conjugate gradients on Hessian-vector products.
* ``newton_abs``: the Newton step ``δ = −Σ_i sign(λ_i) / max(|λ_i|, μ) (q_iᵀ∇L) q_i``,
  i.e. ``−H⁻¹∇L`` with each eigenvalue's magnitude floored at μ (same adaptation). The
  sign must be kept: the saddle-free step ``−|H|⁻¹∇L`` of Dauphin et al. (2014) moves
  *away* from saddles and cannot find them. Needs the exact eigendecomposition.

References:
  Levenberg (1944); Marquardt (1963). Dauphin et al., "Identifying and attacking the saddle
  point problem in high-dimensional non-convex optimization", NeurIPS 2014 (arXiv:1406.2572).
  Pennington & Bahri, "Geometry of neural network loss surfaces via random matrix theory",
  ICML 2017 (critical points found by minimising ‖∇L‖²).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from compute._critical import CriticalPoint, classify_critical_point, default_tolerance
from compute._errors import InputError
from compute._hessian import Objective, hessian_matrix, hessian_vector_product
from compute._limits import MAX_PARAMS_EXACT_HESSIAN, MAX_STEPS, check_range
from compute._models import ModelSpec

__all__ = ["CRITICAL_POINT_METHODS", "CriticalPointSearch", "find_critical_point"]

CRITICAL_POINT_METHODS = ("levenberg_marquardt", "newton_abs")
_MAX_RETRIES = 40  # damping increases per step before giving up


@dataclass(frozen=True, eq=False)
class CriticalPointSearch:
    """Where :func:`find_critical_point` went.

    ``steps`` accepted steps; ``converged``: ``‖∇L‖ ≤ tol`` at the end;
    ``grad_norm_history``/``loss_history`` (steps + 1,) from the start; ``distance``:
    ``‖θ − θ_0‖``; ``classification``: the verdict at the end point (or None).
    """

    method: str
    steps: int
    converged: bool
    tol: float
    grad_norm: float
    loss: float
    grad_norm_history: np.ndarray
    loss_history: np.ndarray
    distance: float
    classification: CriticalPoint | None


@partial(jax.jit, static_argnames=("objective",))
def _value_and_grad(objective, theta, X, Y):
    return jax.value_and_grad(objective)(theta, X, Y)


@partial(jax.jit, static_argnames=("objective", "maxiter"))
def _lm_step_cg(objective, theta, X, Y, g, mu, maxiter):
    """``−(H² + μI)⁻¹ H g`` by conjugate gradients on Hessian-vector products."""
    hvp = lambda v: hessian_vector_product(objective, theta, v, X, Y)
    rhs = -hvp(g)
    delta, _ = jax.scipy.sparse.linalg.cg(lambda v: hvp(hvp(v)) + mu * v, rhs, maxiter=maxiter)
    return delta


def _hessian_norm_estimate(objective, theta, X, Y, g) -> float:
    """``max ‖H u‖`` over u = ∇L/‖∇L‖ and a fixed random unit vector (a lower bound on ‖H‖)."""
    u = np.random.default_rng(0).standard_normal(theta.shape[0])
    probes = [u / np.linalg.norm(u)]
    norm = float(jnp.linalg.norm(g))
    if norm > 0:
        probes.append(np.asarray(g) / norm)
    return max(float(jnp.linalg.norm(hessian_vector_product(
        objective, theta, jnp.asarray(v, theta.dtype), X, Y))) for v in probes)


def find_critical_point(objective: Objective, theta0, X, Y, *,
                        method: str = "levenberg_marquardt", max_steps: int = 100,
                        tol: float | None = None, spec: ModelSpec | None = None,
                        loss: str | None = None, global_min: float | None = None,
                        classify: bool = True,
                        dtype=jnp.float64) -> tuple[np.ndarray, CriticalPointSearch]:
    """Converge from ``theta0`` to a nearby critical point by minimising ``½‖∇L‖²``.

    Args:
      objective: ``objective(theta, X, Y) -> scalar``.
      theta0: start (n,), e.g. a point in the middle of a plateau.
      method: ``"levenberg_marquardt"`` or ``"newton_abs"`` (see the module docstring).
      max_steps: accepted steps at most.
      tol: stop when ``‖∇L‖ ≤ tol``; default ``1e-4 · r · max(|L(θ_0)|, ‖H‖ ‖θ_0‖)`` with
        r = :func:`compute.default_tolerance` (1e-10 relative in float64), ‖H‖ estimated by
        two Hessian-vector products: the classifier's gradient test, 10⁴ times tighter, and
        like it unchanged when the data (hence L, ∇L and H) are rescaled.
      spec, loss, global_min: passed to :func:`classify_critical_point` for the verdict.
      classify: classify the end point.

    Returns:
      ``(theta, info)``: the end point (n,) float64 and a :class:`CriticalPointSearch`.
    """
    if method not in CRITICAL_POINT_METHODS:
        raise InputError(f"method must be one of {', '.join(CRITICAL_POINT_METHODS)}, "
                         f"got {method!r}.")
    check_range("max_steps", max_steps, 0, MAX_STEPS)
    theta = jnp.asarray(theta0, dtype)
    X, Y = jnp.asarray(X, dtype), jnp.asarray(Y, dtype)
    start = theta
    n = int(theta.shape[0])
    exact = n <= MAX_PARAMS_EXACT_HESSIAN
    if method == "newton_abs" and not exact:
        raise InputError(f"newton_abs needs the exact Hessian (at most "
                         f"{MAX_PARAMS_EXACT_HESSIAN} parameters, got {n}); use "
                         "levenberg_marquardt.")
    value, g = _value_and_grad(objective, theta, X, Y)
    if tol is None:
        tol = 1e-4 * default_tolerance(dtype) * max(
            abs(float(value)), _hessian_norm_estimate(objective, theta, X, Y, g)
            * float(jnp.linalg.norm(theta)))
    losses, norms = [float(value)], [float(jnp.linalg.norm(g))]
    mu = None
    steps = 0
    while steps < max_steps and norms[-1] > tol:
        if exact:
            lam, Q = np.linalg.eigh(np.asarray(hessian_matrix(objective, theta, X, Y,
                                                              dtype=dtype)))
            c = Q.T @ np.asarray(g)
            if mu is None:
                mu = 1e-3 * max(float(np.max(np.abs(lam))), 1e-300)
                mu = mu * mu if method == "levenberg_marquardt" else mu
        elif mu is None:
            probe = hessian_vector_product(objective, theta, g / norms[-1], X, Y)
            mu = (1e-3 * max(float(jnp.linalg.norm(probe)), 1e-300)) ** 2
        for _ in range(_MAX_RETRIES):
            if not exact:
                delta = _lm_step_cg(objective, theta, X, Y, g, mu, 50)
            elif method == "levenberg_marquardt":
                delta = jnp.asarray(-Q @ (lam * c / (lam * lam + mu)), dtype)
            else:
                delta = jnp.asarray(-Q @ (np.sign(lam) * c / np.maximum(np.abs(lam), mu)),
                                    dtype)
            value_new, g_new = _value_and_grad(objective, theta + delta, X, Y)
            norm_new = float(jnp.linalg.norm(g_new))
            if np.isfinite(norm_new) and norm_new < norms[-1]:
                theta, g = theta + delta, g_new
                losses.append(float(value_new))
                norms.append(norm_new)
                mu = max(mu / 3.0, 1e-300)
                steps += 1
                break
            mu *= 4.0
        else:
            break  # no damping lowered ‖∇L‖: stalled
    result = np.asarray(theta, dtype=np.float64)
    verdict = (classify_critical_point(objective, theta, X, Y, spec=spec, loss=loss,
                                       global_min=global_min,
                                       dtype=dtype) if classify else None)
    info = CriticalPointSearch(method, steps, norms[-1] <= tol, float(tol), norms[-1],
                               losses[-1], np.array(norms), np.array(losses),
                               float(jnp.linalg.norm(theta - start)), verdict)
    return result, info
