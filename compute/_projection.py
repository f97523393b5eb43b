"""A path seen on a plane: projection coordinates, distance off the plane, and the PCA plane.

The surface view draws the loss on the plane ``c + α d₁ + β d₂``. To draw a path on it, each
recorded point ``w`` gets the least-squares coordinates ``(α, β)`` of ``w − c`` in the basis
``(d₁, d₂)`` (which need not be orthogonal or unit) and its distance from the plane, so the
view can say how far the path strays from the slice it is drawn on. The plane a path
actually travels is its PCA plane (Li et al. 2018): the top two principal directions of the
points relative to the final point.

These are host-side float64 numpy computations (a path has at most a few thousand rows).

References:
  Li, Xu, Taylor, Studer & Goldstein, "Visualizing the Loss Landscape of Neural Nets",
  NeurIPS 2018, arXiv:1712.09913, §7.
"""

from __future__ import annotations

import numpy as np

from compute._errors import InputError

__all__ = ["pca_plane", "project_onto_plane"]


def project_onto_plane(weights, center, d1, d2) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares plane coordinates of points and their distance off the plane.

    With ``D = [d₁ d₂]`` (n × 2), each row ``w`` gets ``(α, β) = argmin ‖w − c − D(α, β)ᵀ‖``
    (solved through a QR factorisation of D) and ``distance = ‖w − c − D(α, β)ᵀ‖``.

    Args:
      weights: ``(T, n)`` points (or one point ``(n,)``).
      center, d1, d2: ``(n,)`` the plane; d1 and d2 must be linearly independent.

    Returns:
      ``(coords (T, 2), distance (T,))`` in float64.
    """
    W = np.asarray(weights, dtype=np.float64)
    if W.ndim == 1:
        W = W[None, :]
    c, D = _plane_basis(center, d1, d2, W.shape[1])
    Q, R = np.linalg.qr(D)
    if abs(R[1, 1]) <= 1e-12 * max(abs(R[0, 0]), np.finfo(float).tiny) or R[0, 0] == 0:
        raise InputError("the plane's two directions are zero or parallel; pick two "
                         "independent directions.")
    offsets = W - c
    inner = offsets @ Q                       # (T, 2) coordinates in the orthonormal basis
    coords = np.linalg.solve(R, inner.T).T    # back to the (d1, d2) basis
    residual = offsets - inner @ Q.T
    return coords, np.linalg.norm(residual, axis=1)


def pca_plane(weights, *, center="final") -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                     np.ndarray]:
    """The plane spanned by a path's top two principal directions (Li et al. 2018).

    The rows ``w_t − c`` (c the final point by default, as in the paper; ``"mean"`` for the
    centroid, or any ``(n,)`` point) are decomposed as ``U S Vᵀ``; ``d₁, d₂`` are the first
    two rows of ``Vᵀ`` (unit, orthogonal), signed so that the first point has non-negative
    coordinates, and the explained variance ratios are ``s_k² / Σ_j s_j²``.

    Args:
      weights: ``(T, n)`` recorded points, T ≥ 2, n ≥ 2.

    Returns:
      ``(center (n,), d1 (n,), d2 (n,), explained_variance_ratio (2,))``.
    """
    W = np.asarray(weights, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] < 2 or W.shape[1] < 2:
        raise InputError(f"a PCA plane needs at least 2 recorded points of at least 2 "
                         f"parameters, got shape {W.shape}.")
    if not np.all(np.isfinite(W)):
        raise InputError("the path contains NaN or inf; use the finite part of the path.")
    if isinstance(center, str):
        if center == "final":
            c = W[-1].copy()
        elif center == "mean":
            c = W.mean(axis=0)
        else:
            raise InputError(f"center must be 'final', 'mean' or a point, got {center!r}.")
    else:
        c = np.asarray(center, dtype=np.float64).reshape(-1)
        if c.shape != (W.shape[1],):
            raise InputError(f"center must have {W.shape[1]} entries, got {c.size}.")
    M = W - c
    if M.shape[0] < M.shape[1]:  # Gram route: never forms a (T, n) factor besides M
        eigenvalues, U = np.linalg.eigh(M @ M.T)
        order = np.argsort(eigenvalues)[::-1]
        s2 = np.clip(eigenvalues[order], 0.0, None)
        U = U[:, order[:2]]
        directions = (M.T @ U).T
        norms = np.linalg.norm(directions, axis=1)
    else:
        _, s, Vt = np.linalg.svd(M, full_matrices=False)
        s2, directions = s ** 2, Vt[:2].copy()
        norms = np.ones(2)
    total = float(np.sum(s2))
    if total == 0.0:
        raise InputError("the path does not move, so it has no PCA plane.")
    if norms[1] <= 1e-12 * norms[0]:  # the path is a straight line: any orthogonal d2
        directions[1] = _orthogonal_to(directions[0] / norms[0])
        norms[1] = 1.0
    directions = directions / norms[:, None]
    for k in range(2):
        if M[0] @ directions[k] < 0:
            directions[k] = -directions[k]
    ratio = s2[:2] / total
    return c, directions[0], directions[1], ratio


def _plane_basis(center, d1, d2, n: int) -> tuple[np.ndarray, np.ndarray]:
    vectors = [np.asarray(v, dtype=np.float64).reshape(-1) for v in (center, d1, d2)]
    for name, v in zip(("center", "d1", "d2"), vectors, strict=True):
        if v.shape != (n,):
            raise InputError(f"{name} must have {n} entries (one per parameter), got {v.size}.")
        if not np.all(np.isfinite(v)):
            raise InputError(f"{name} contains NaN or inf.")
    return vectors[0], np.column_stack(vectors[1:])


def _orthogonal_to(v: np.ndarray) -> np.ndarray:
    e = np.zeros_like(v)
    e[int(np.argmin(np.abs(v)))] = 1.0
    e -= (e @ v) * v
    return e / np.linalg.norm(e)
