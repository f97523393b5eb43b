"""Saddle passages: the plateaus of a training path, and the saddles they sit next to.

A gradient path that passes near a saddle slows down there: the gradient norm collapses
while the loss stays put, then grows again as the path leaves along a negative-curvature
direction. :func:`find_plateaus` finds those stretches on a recorded path; for deep linear
nets :func:`match_baldi_hornik_levels` compares their loss levels with the critical values
of THEORY.md §1 (:func:`deep_linear_saddle_levels`), and
:func:`locate_plateau_critical_points` runs the saddle finder from each plateau and
classifies the critical point it reaches.

References:
  Baldi & Hornik, "Neural networks and principal component analysis: learning from
  examples without local minima", Neural Networks 2(1), 1989.
  Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of learning in deep
  linear neural networks", arXiv:1312.6120.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from compute._errors import InputError

__all__ = [
    "Plateau",
    "deep_linear_saddle_levels",
    "find_plateaus",
    "locate_plateau_critical_points",
    "match_baldi_hornik_levels",
]

GRAD_FRACTION = 0.05   # "low gradient": below this fraction of the path's largest ‖∇L‖
LOSS_FRACTION = 0.02   # "well above the end": more than this fraction of the loss range
MAX_LEVEL_SUBSETS = 4096


@dataclass(frozen=True)
class Plateau:
    """One slow stretch ``[entry, exit)`` of a path (steps).

    Attributes:
      entry: first step on the plateau; exit: first step after it.
      loss: the loss level (median over the stretch).
      grad_norm: the smallest gradient norm on it, at step ``closest_step`` (the point of
        the path nearest the critical point).
      lambda_min: λ_min at the tracked step nearest ``closest_step`` inside the stretch
        (NaN when none was tracked there).
      matched_level, level_index, level_error: the nearest predicted saddle loss, its
        index in the level list and the relative gap (set by
        :func:`match_baldi_hornik_levels`; NaN / -1 when unmatched).
      critical_theta, critical_point: the point ``(n,)`` the saddle finder reached from
        here and its report (a ``compute.CriticalPointSearch`` whose ``classification``
        holds the verdict), set by :func:`locate_plateau_critical_points`; else None.
    """

    entry: int
    exit: int
    loss: float
    grad_norm: float
    closest_step: int
    lambda_min: float = math.nan
    matched_level: float = math.nan
    level_index: int = -1
    level_error: float = math.nan
    critical_theta: np.ndarray | None = None
    critical_point: object = None

    @property
    def length(self) -> int:
        return self.exit - self.entry


def find_plateaus(loss, grad_norm, *, reference_loss: float | None = None, lambda_min=None,
                  lambda_steps=None, grad_fraction: float = GRAD_FRACTION,
                  loss_fraction: float = LOSS_FRACTION, min_length: int | None = None,
                  smooth: int | None = None) -> list[Plateau]:
    """The plateaus of a path: low gradient norm while the loss is still well above its end.

    With ``L_end`` = ``reference_loss`` (e.g. the known global minimum) or else the median of
    the last 1 % of the finite losses, ``span = max_t L_t − L_end`` and ``ĝ`` the gradient
    norm after a running median over ``smooth`` steps, step t is *slow* when

        ĝ_t < grad_fraction · max_t ĝ_t   and   L_t − L_end > loss_fraction · span.

    Runs of slow steps separated by fewer than ``min_length // 2`` steps are merged, and runs
    shorter than ``min_length`` are dropped. Both thresholds are relative to the path's own
    scales, so they do not depend on the units of the loss or the learning rate.

    Args:
      loss, grad_norm: ``(T+1,)`` per-step values (only the finite prefix is used).
      reference_loss: the loss the path should end at, if known.
      lambda_min, lambda_steps: tracked λ_min values and their steps (optional).
      min_length: default ``max(3, T // 200)``. smooth: odd window, default
        ``2 · (T // 2000) + 1``.

    Returns:
      The plateaus in step order.
    """
    loss = np.asarray(loss, dtype=np.float64).reshape(-1)
    grad = np.asarray(grad_norm, dtype=np.float64).reshape(-1)
    if loss.shape != grad.shape:
        raise InputError(f"loss and grad_norm must have the same length, got {loss.size} "
                         f"and {grad.size}.")
    if not (0 < grad_fraction < 1 and 0 < loss_fraction < 1):
        raise InputError("grad_fraction and loss_fraction must lie in (0, 1).")
    bad = ~(np.isfinite(loss) & np.isfinite(grad))
    n = int(np.argmax(bad)) if bad.any() else loss.size
    if n < 3:
        return []
    loss, grad = loss[:n], grad[:n]
    if min_length is None:
        min_length = max(3, n // 200)
    if smooth is None:
        smooth = 2 * (n // 2000) + 1
    if int(smooth) < 1 or int(min_length) < 1:
        raise InputError("smooth and min_length must be positive integers.")
    end = (float(np.median(loss[-max(1, n // 100):])) if reference_loss is None
           else float(reference_loss))
    span = float(loss.max()) - end
    if not span > 0:
        return []
    g = _running_median(grad, int(smooth))
    slow = (g < grad_fraction * g.max()) & (loss - end > loss_fraction * span)
    runs = _merge_runs(_runs(slow), gap=int(min_length) // 2)
    lam, lam_steps = _tracked(lambda_min, lambda_steps)
    plateaus = []
    for entry, exit_ in runs:
        if exit_ - entry < min_length:
            continue
        closest = entry + int(np.argmin(grad[entry:exit_]))
        inside = (lam_steps >= entry) & (lam_steps < exit_) & np.isfinite(lam)
        lam_here = math.nan
        if inside.any():
            idx = np.flatnonzero(inside)
            lam_here = float(lam[idx[np.argmin(np.abs(lam_steps[idx] - closest))]])
        plateaus.append(Plateau(entry=int(entry), exit=int(exit_),
                                loss=float(np.median(loss[entry:exit_])),
                                grad_norm=float(grad[closest]), closest_step=closest,
                                lambda_min=lam_here))
    return plateaus


def deep_linear_saddle_levels(X, Y, hidden_widths: Sequence[int], *,
                              max_subsets: int = MAX_LEVEL_SUBSETS
                              ) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Critical loss values of a deep linear net other than the global minimum (THEORY.md §1).

    With ``C = YᵀX``, ``Σ = C (XᵀX)⁻¹ Cᵀ`` (eigenvalues λ_1 ≥ … ≥ λ_{d_y}), ``p`` the
    narrowest hidden width and ``r = min(p, d_y)``, every subset ``I`` of Σ's eigenvectors
    with ``|I| ≤ r`` gives a critical point (Baldi & Hornik 1989) of loss

        L_I = (‖Y‖_F² − Σ_{i∈I} λ_i) / (2m);

    all but the top-r subset are saddles; ``I = ∅`` is the origin. When there are more than
    ``max_subsets`` subsets, only the nested ones ``{1, …, k}``, ``k < r`` (the plateaus
    that gradient descent from a small init visits: strong modes first) are listed.

    Returns:
      ``(levels, subsets)``: levels in decreasing order and the 0-based eigenvalue indices
      of each.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    m, d_y = Y.shape
    gram = X.T @ X
    if np.linalg.cond(gram) > 1e12:
        raise InputError("XᵀX is (nearly) singular, so the deep linear critical values are not "
                         "defined; use data with linearly independent input columns.")
    C = Y.T @ X
    lam = np.sort(np.linalg.eigvalsh(C @ np.linalg.solve(gram, C.T)))[::-1]
    p = min(hidden_widths) if len(hidden_widths) else d_y
    r = min(p, d_y)
    total = sum(math.comb(d_y, k) for k in range(r + 1))
    if total <= max_subsets:
        subsets = [sub for k in range(r + 1) for sub in itertools.combinations(range(d_y), k)]
        subsets.remove(tuple(range(r)))
    else:
        subsets = [tuple(range(k)) for k in range(r)]
    norm_y = float(np.sum(Y ** 2))
    levels = np.array([(norm_y - lam[list(sub)].sum()) / (2 * m) for sub in subsets])
    order = np.argsort(-levels, kind="stable")
    return levels[order], [subsets[i] for i in order]


def match_baldi_hornik_levels(plateaus: Sequence[Plateau], levels, *,
                              rtol: float = 0.02) -> list[Plateau]:
    """Pair each plateau with the nearest predicted saddle loss.

    A plateau matches level ``ℓ`` when ``|L_plateau − ℓ| ≤ rtol · |ℓ|``; it then carries
    ``matched_level = ℓ``, ``level_index`` (into ``levels``) and ``level_error`` (the relative
    gap). Unmatched plateaus keep NaN / -1 but still report the nearest gap.

    Args:
      levels: e.g. from :func:`deep_linear_saddle_levels` or
        :func:`compute._theory.baldi_hornik_saddles`.
    """
    levels = np.asarray(levels, dtype=np.float64).reshape(-1)
    out = []
    for plateau in plateaus:
        if levels.size == 0:
            out.append(plateau)
            continue
        gaps = np.abs(plateau.loss - levels) / np.maximum(np.abs(levels), 1e-300)
        k = int(np.argmin(gaps))
        if gaps[k] <= rtol:
            out.append(replace(plateau, matched_level=float(levels[k]), level_index=k,
                               level_error=float(gaps[k])))
        else:
            out.append(replace(plateau, level_error=float(gaps[k])))
    return out


def locate_plateau_critical_points(plateaus: Sequence[Plateau], weights, weight_steps,
                                   objective: Callable, X, Y, **finder_options
                                   ) -> list[Plateau]:
    """Run the saddle finder from the recorded point nearest each plateau's slowest step.

    Uses ``compute._saddle.find_critical_point(objective, theta, X, Y, **finder_options)``
    (the curvature module; pass ``spec=`` and ``global_min=`` for a sharper verdict) and
    stores the point it reaches in ``critical_theta`` and its report (loss, ‖∇L‖,
    classification) in ``critical_point``.

    Args:
      weights, weight_steps: the recorded path (``PathResult.weights`` / ``weight_steps``).
    """
    try:
        from compute._saddle import find_critical_point
    except ImportError:
        raise InputError("the saddle finder (compute._saddle) is not available in this "
                         "build.") from None
    weights = np.asarray(weights)
    weight_steps = np.asarray(weight_steps)
    if weights.ndim != 2 or weights.shape[0] != weight_steps.shape[0] or weights.shape[0] == 0:
        raise InputError("weights must be (R, n) rows recorded at weight_steps (R,).")
    out = []
    for plateau in plateaus:
        row = int(np.argmin(np.abs(weight_steps - plateau.closest_step)))
        theta, report = find_critical_point(objective, weights[row], X, Y, **finder_options)
        out.append(replace(plateau, critical_theta=np.asarray(theta), critical_point=report))
    return out


# --------------------------------------------------------------------------- helpers


def _running_median(x: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or x.size < window:
        return x
    half = window // 2
    padded = np.pad(x, half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, window), axis=1)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open ``[start, stop)`` runs of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def _merge_runs(runs: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for start, stop in runs:
        if merged and start - merged[-1][1] < gap:
            merged[-1][1] = stop
        else:
            merged.append([start, stop])
    return [(a, b) for a, b in merged]


def _tracked(lambda_min, lambda_steps) -> tuple[np.ndarray, np.ndarray]:
    if lambda_min is None or lambda_steps is None:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    lam = np.asarray(lambda_min, dtype=np.float64).reshape(-1)
    steps = np.asarray(lambda_steps).reshape(-1)
    if lam.shape != steps.shape:
        raise InputError("lambda_min and lambda_steps must have the same length.")
    return lam, steps
