"""Honest slices: how far a path drawn on a plane really is from the surface drawn under it.

A path ``θ_0 … θ_T`` drawn on the contour plot of the plane ``c + α d₁ + β d₂`` is shown at
its least-squares plane coordinates ``(α_t, β_t)``; the contours there show the *slice*
loss ``L(c + α_t d₁ + β_t d₂)``, not the loss ``L(θ_t)`` the path actually had. Unless the
path lies in the plane the two differ, which is why PCA-plane contours so often disagree
with the path drawn on them (Li et al. 2018 §7 draw both without saying so).
:func:`honest_slice` puts the two numbers side by side, with the distance off the plane.

Planes that contain the action make the gap small: :func:`action_plane` is the plane
through a saddle spanned by the way to a minimum and the saddle's escape direction (its
most negative Hessian eigenvector), and :func:`checkpoint_plane` the plane through any three
recorded checkpoints of a path.

References:
  Li, Xu, Taylor, Studer & Goldstein, "Visualizing the Loss Landscape of Neural Nets",
  NeurIPS 2018, arXiv:1712.09913, §7 (paths drawn on PCA planes).
  Goodfellow, Vinyals & Saxe, "Qualitatively characterizing neural network optimization
  problems", ICLR 2015, arXiv:1412.6544 (planes through init, solution and a third point).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from compute._errors import InputError
from compute._hessian import hessian_spectrum
from compute._limits import MAX_PATH_WEIGHT_BYTES, MEMORY_BUDGET_BYTES
from compute._losses import flat_objective
from compute._models import ModelSpec, check_flat_params
from compute._planes import Plane, plane_through_points
from compute._projection import project_onto_plane
from compute._surface import _check_budget, _check_problem

__all__ = [
    "ActionPlane",
    "HonestSlice",
    "action_plane",
    "checkpoint_plane",
    "honest_slice",
]

# Eigenvalues count as negative below −NEGATIVE_TOL · max|λ| − ABSOLUTE_TOL (loss/param²),
# and as one (degenerate) eigenvalue within the same tolerance of each other.
NEGATIVE_TOL = 1e-8
ABSOLUTE_TOL = 1e-12
# An eigenvector whose part orthogonal to direction 1 is shorter than this (it is a unit
# vector) lies along direction 1: the next eigenvector is used instead.
MIN_ORTHOGONAL_PART = 1e-6
LANCZOS_PAIRS = 4  # smallest Ritz pairs searched for the escape direction above the exact limit


@dataclass(frozen=True, eq=False)
class HonestSlice:
    """A recorded path next to the plane it is drawn on (float64 numpy arrays, T points).

    Attributes:
      alpha, beta: ``(T,)`` least-squares plane coordinates of each point θ_t.
      true_loss: ``(T,)`` the loss at θ_t, the path's real loss.
      slice_loss: ``(T,)`` the loss at the projection ``c + α_t d₁ + β_t d₂``: what the
        contours under the drawn point show.
      distance: ``(T,)`` ``‖θ_t − projection‖``, in parameter units.
      relative_distance: ``(T,)`` distance over ``‖θ_t − c‖`` (0 where θ_t = c): 0 means in
        the plane, 1 means orthogonal to it.
    """

    alpha: np.ndarray
    beta: np.ndarray
    true_loss: np.ndarray
    slice_loss: np.ndarray
    distance: np.ndarray
    relative_distance: np.ndarray

    @property
    def gap(self) -> np.ndarray:
        """``(T,)`` ``true_loss − slice_loss``."""
        return self.true_loss - self.slice_loss

    @property
    def max_gap(self) -> float:
        """The largest ``|true_loss − slice_loss|`` over finite points (NaN if none)."""
        gap = np.abs(self.gap)
        gap = gap[np.isfinite(gap)]
        return float(gap.max()) if gap.size else math.nan


@dataclass(frozen=True, eq=False)
class ActionPlane:
    """The plane through a saddle that holds its escape direction and a minimum.

    Attributes:
      plane: center the saddle, ``direction1`` the unit vector towards the minimum,
        ``direction2`` the unit escape direction orthogonal to it; coordinates are
        Euclidean distances in parameter space; marks ``saddle`` and ``minimum``.
      eigenvalue: the Hessian eigenvalue of the eigenvector behind ``direction2``.
      lambda_min: the smallest Hessian eigenvalue at the saddle (computed ones, for Lanczos).
      negative: whether ``lambda_min`` is negative (a strict saddle).
      overlap: ``|cos|`` of the angle between that eigenvector and ``direction1`` (0 when
        it was already orthogonal; the plane contains the eigenvector either way).
      grad_norm: ``‖∇L‖`` at the saddle point given (near 0 at a critical point).
      method: ``"exact"`` or ``"lanczos"`` (how the eigenvector was found).
      note: empty, or a sentence saying why ``direction2`` is not the escape direction.
    """

    plane: Plane
    eigenvalue: float
    lambda_min: float
    negative: bool
    overlap: float
    grad_norm: float
    method: str
    note: str = ""


# --------------------------------------------------------------------------- honest slice


def honest_slice(spec: ModelSpec, loss: str, weights, center, d1, d2, X, Y, *,
                 memory_budget: int = MEMORY_BUDGET_BYTES) -> HonestSlice:
    """The true loss along a path next to the slice loss at its projected points.

    Each point θ_t gets the least-squares coordinates ``(α_t, β_t) = argmin ‖θ_t − c −
    α d₁ − β d₂‖`` (:func:`compute.project_onto_plane`; d₁, d₂ need not be orthogonal or
    unit, only independent), then one jitted evaluation (``vmap`` of the loss in batches
    within ``memory_budget``, float64) gives ``L(θ_t)`` and ``L(c + α_t d₁ + β_t d₂)``.

    Args:
      spec, loss: the network and the loss name.
      weights: ``(T, n)`` recorded points (e.g. ``PathResult.weights``), or one ``(n,)``.
      center, d1, d2: ``(n,)`` the plane, flat in THEORY.md's order.
      X, Y: data ``(m, d_x)``, ``(m, d_y)``.

    Returns:
      :class:`HonestSlice`.
    """
    center, d1, d2, X, Y = _check_problem(spec, loss, center, d1, d2, X, Y)
    W = _check_weights(weights, spec.n_params)
    coords, distance = project_onto_plane(W, center, d1, d2)
    alpha, beta = coords[:, 0], coords[:, 1]
    projected = center + alpha[:, None] * d1 + beta[:, None] * d2
    values = _losses_at(spec, loss, np.concatenate([W, projected]), X, Y,
                        _check_budget(memory_budget))
    T = W.shape[0]
    offset = np.linalg.norm(W - center, axis=1)
    relative = np.divide(distance, offset, out=np.zeros_like(distance), where=offset > 0)
    return HonestSlice(alpha=alpha, beta=beta, true_loss=values[:T], slice_loss=values[T:],
                       distance=distance, relative_distance=np.minimum(relative, 1.0))


def _check_weights(weights, n: int) -> np.ndarray:
    try:
        W = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("the path's weights must be an array of numbers.") from None
    if W.ndim == 1:
        W = W[None, :]
    if W.ndim != 2 or W.shape[1] != n or W.shape[0] < 1:
        raise InputError(f"the path's weights must be rows of the model's {n} parameters, "
                         f"got shape {W.shape}.")
    if W.size * 4 > MAX_PATH_WEIGHT_BYTES:
        raise InputError(f"{W.shape[0]} points of {n} parameters are too many; keep at most "
                         f"{MAX_PATH_WEIGHT_BYTES // (4 * n)} (record every k-th step).")
    if not np.all(np.isfinite(W)):
        raise InputError("the path's weights contain NaN or inf; use the finite part of the "
                         "path.")
    return W


def _losses_at(spec: ModelSpec, loss: str, rows: np.ndarray, X: np.ndarray, Y: np.ndarray,
               budget: int) -> np.ndarray:
    """``L(rows[i])`` (float64, P rows) by one compiled kernel per sample chunk.

    Both losses are sample means, so a dataset too big for one point's activations within
    ``budget`` is split into sample chunks whose values are averaged with weights
    ``m_chunk / m``. Rows are padded to a power of two so nearby path lengths share a kernel.
    """
    P, n = rows.shape
    m = X.shape[0]
    per_sample = 8 * 3 * sum(spec.layer_sizes)          # activations and their copies
    sample_chunk = max(1, min(m, (budget // 2) // per_sample))
    n_sample_chunks = -(-m // sample_chunk)
    per_row = sample_chunk * per_sample + 8 * n
    batch = int(max(1, min(P, budget // per_row)))
    padded = np.empty((max(8, 1 << (P - 1).bit_length()), n))
    padded[:P], padded[P:] = rows, rows[0]
    kernel = _loss_kernel(spec, loss)
    theta = jnp.asarray(padded, jnp.float64)
    total = np.zeros(P)
    for s in range(n_sample_chunks):
        part = slice(s * sample_chunk, min(m, (s + 1) * sample_chunk))
        Xs, Ys = (jnp.asarray(A[part], jnp.float64) for A in (X, Y))
        values = np.asarray(kernel(theta, Xs, Ys, batch), dtype=np.float64)[:P]
        total += values * ((part.stop - part.start) / m)
    return total


@functools.lru_cache(maxsize=64)
def _loss_kernel(spec: ModelSpec, loss: str):
    """Jitted ``kernel(thetas (P, n), X, Y, batch) -> (P,)``, one per (model, loss)."""
    objective = flat_objective(spec, loss)

    def kernel(thetas, X, Y, batch):
        return jax.lax.map(lambda theta: objective(theta, X, Y), thetas, batch_size=batch)

    return jax.jit(kernel, static_argnames="batch")


# --------------------------------------------------------------------------- planes


def action_plane(spec: ModelSpec, loss: str, theta_min, theta_saddle, X, Y, *,
                 span_margin: float = 0.25, method: str = "auto",
                 seed: int = 0) -> ActionPlane:
    """The plane through a saddle spanned by the way to a minimum and the escape direction.

    With ``s`` the saddle, ``u = (θ_min − s)/‖θ_min − s‖`` and ``v`` the unit eigenvector of
    the saddle's Hessian with the smallest eigenvalue, the plane is ``s + α u + β w`` with
    ``w`` the part of ``v`` orthogonal to ``u``, normalised. When the smallest eigenvalue
    is degenerate (eigenspace E of dimension ≥ 2, e.g. ``−σ_1(C)/m`` repeated ``d_1`` times
    at the origin of a one-hidden-layer linear net, THEORY.md §1), ``v`` is chosen in E
    orthogonal to ``u``, so ``w`` is an exact eigenvector. When ``v`` lies along ``u`` (the
    minimum sits on the escape direction), the next eigenvector is used and ``note`` says
    so. When no eigenvalue is negative (a degenerate saddle such as the origin of a deep
    linear net, whose Hessian is 0), ``v`` is still the smallest eigenvalue's eigenvector,
    which is not an escape direction, and ``note`` says so. ``v`` is signed so that its
    largest-magnitude entry is positive.

    The Hessian is exact (``eigh``) up to ``MAX_PARAMS_EXACT_HESSIAN`` parameters and
    Lanczos above (``method``, as :func:`compute.hessian_spectrum`). The ranges are
    ``α ∈ [−μD, (1 + μ)D]`` and ``β ∈ ±(½ + μ)D`` with ``D = ‖θ_min − s‖``, ``μ =
    span_margin``: the saddle at ``(0, 0)`` and the minimum at ``(D, 0)``.

    Args:
      spec, loss: the network and the loss name.
      theta_min, theta_saddle: ``(n,)`` flat points (distinct).
      X, Y: data. seed: the Lanczos start vector.

    Returns:
      :class:`ActionPlane`.
    """
    if not (isinstance(span_margin, (int, float)) and 0 <= span_margin <= 10):
        raise InputError(f"the span margin must be a number between 0 and 10, "
                         f"got {span_margin!r}.")
    saddle = check_flat_params(spec, theta_saddle, "the saddle")
    theta_min = check_flat_params(spec, theta_min, "the minimum")
    zero = np.zeros(spec.n_params)
    _, _, _, X, Y = _check_problem(spec, loss, zero, zero, zero, X, Y)
    u = theta_min - saddle
    D = float(np.linalg.norm(u))
    if D == 0.0:
        raise InputError("the minimum and the saddle are the same point; a plane needs two "
                         "distinct points.")
    u = u / D
    objective = flat_objective(spec, loss)
    grad_norm = float(jnp.linalg.norm(jax.grad(objective)(
        *(jnp.asarray(a, jnp.float64) for a in (saddle, X, Y)))))
    spectrum = hessian_spectrum(objective, saddle, X, Y, method=method, k=LANCZOS_PAIRS,
                                seed=seed)
    values = np.asarray(spectrum.eigenvalues)
    vectors = np.asarray(spectrum.eigenvectors)
    tol = NEGATIVE_TOL * float(np.max(np.abs(values))) + ABSOLUTE_TOL
    lambda_min = float(values[0])
    negative = lambda_min < -tol
    eigenvalue, v, overlap, skipped = _escape_direction(values, vectors, u, tol)
    w = v - (v @ u) * u
    w /= np.linalg.norm(w)
    notes = []
    if not negative:
        zero = float(np.max(np.abs(values))) <= ABSOLUTE_TOL
        notes.append(
            "the Hessian is zero at this point (a degenerate saddle such as the origin of a "
            "deep linear net): direction 2 is an arbitrary eigenvector, not an escape "
            "direction" if zero else
            f"the saddle has no negative Hessian eigenvalue (smallest {lambda_min:.3g}): "
            "direction 2 is the smallest eigenvalue's eigenvector, not an escape direction")
    if skipped:
        notes.append(f"the {'first ' + str(skipped) if skipped > 1 else 'smallest'} "
                     f"eigenvector{'s lie' if skipped > 1 else ' lies'} along the way to the "
                     f"minimum, so direction 2 is the eigenvector of eigenvalue "
                     f"{eigenvalue:.3g}")
    note = "; ".join(notes)
    if note:
        note = note[0].upper() + note[1:] + "."
    margin = float(span_margin)
    half = (0.5 + margin) * D
    plane = Plane(saddle, u, w, (-margin * D, (1.0 + margin) * D), (-half, half),
                  {"saddle": (0.0, 0.0), "minimum": (D, 0.0)})
    return ActionPlane(plane=plane, eigenvalue=float(eigenvalue), lambda_min=lambda_min,
                       negative=bool(negative), overlap=float(overlap), grad_norm=grad_norm,
                       method=spectrum.method, note=note)


def _escape_direction(values: np.ndarray, vectors: np.ndarray, u: np.ndarray,
                      tol: float) -> tuple[float, np.ndarray, float, int]:
    """``(eigenvalue, unit v, |⟨v, u⟩|, eigenvalues skipped)``, walking up the spectrum.

    Eigenvalues within ``tol`` of each other form one eigenspace E (basis Q); the vector
    of E least aligned with u is ``Q c`` with ``c`` orthogonal to ``Qᵀu`` when dim E ≥ 2
    (exactly orthogonal to u), else the single eigenvector.
    """
    start = 0
    while start < values.size:
        stop = start + 1
        while stop < values.size and values[stop] - values[start] <= tol:
            stop += 1
        Q = vectors[:, start:stop]
        a = Q.T @ u
        if Q.shape[1] == 1 or np.linalg.norm(a) == 0.0:
            c = np.zeros(Q.shape[1])
            c[0] = 1.0
        else:
            e = np.zeros_like(a)
            e[int(np.argmin(np.abs(a)))] = 1.0
            c = e - (e @ a) / (a @ a) * a
        v = Q @ c
        v /= np.linalg.norm(v)
        v *= np.sign(v[np.argmax(np.abs(v))])
        cos = float(v @ u)
        if math.sqrt(max(0.0, 1.0 - cos * cos)) >= MIN_ORTHOGONAL_PART:
            return float(values[start]), v, abs(cos), start
        start = stop
    raise InputError("every computed Hessian eigenvector lies along the way to the minimum; "
                     "use the exact method or another pair of points.")


def checkpoint_plane(weights, steps, chosen_steps, *, margin: float = 0.25) -> Plane:
    """The plane through three recorded checkpoints of a path ("any three checkpoints").

    :func:`compute.plane_through_points` of the rows recorded at ``chosen_steps = (a, b,
    c)``: the point at step a is the center (0, 0), step b sits at (1, 0) and step c at
    ``(γ, 1)``; marks are named ``"step a"`` etc.

    Args:
      weights: ``(R, n)`` recorded points; steps: ``(R,)`` their steps
        (``PathResult.weights`` and ``weight_steps``).
      chosen_steps: three distinct recorded steps.
      margin: ranges extend past the points by this fraction of their extent.

    Raises:
      InputError: a step that was not recorded, repeated steps, or three points on a line.
    """
    try:
        W = np.asarray(weights, dtype=np.float64)
        recorded = np.asarray(steps).reshape(-1)
    except (TypeError, ValueError):
        raise InputError("weights and steps must be arrays of numbers.") from None
    if W.ndim != 2 or W.shape[0] != recorded.size or W.shape[0] < 1:
        raise InputError(f"weights must be (R, n) rows recorded at R steps, got "
                         f"{W.shape} rows for {recorded.size} steps.")
    chosen = list(chosen_steps) if isinstance(chosen_steps, (list, tuple, np.ndarray)) else []
    if len(chosen) != 3 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer))
                               for s in chosen):
        raise InputError(f"choose exactly three checkpoint steps (whole numbers), got "
                         f"{chosen_steps!r}.")
    if len(set(int(s) for s in chosen)) != 3:
        raise InputError(f"the three checkpoint steps must be different, got {chosen}.")
    rows = []
    for s in chosen:
        hits = np.flatnonzero(recorded == int(s))
        if hits.size == 0:
            raise InputError(f"step {int(s)} was not recorded; pick recorded steps (every "
                             f"{_stride_text(recorded)} from {int(recorded[0])} to "
                             f"{int(recorded[-1])}).")
        rows.append(W[hits[0]])
    names = tuple(f"step {int(s)}" for s in chosen)
    return plane_through_points(*rows, margin=margin, names=names)


def _stride_text(recorded: np.ndarray) -> str:
    if recorded.size < 2:
        return "step"
    return f"{int(recorded[1] - recorded[0])} steps"
