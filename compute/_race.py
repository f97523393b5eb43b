"""Optimiser races: several optimisers from one start, on one plane, with escape times.

Every racer (an optimiser and its step size) runs :func:`compute.run_path` from the same
``θ_0`` for the same number of steps, recording its weights at the same steps, so the
paths can be animated frame by frame in sync. The plane they are drawn on is the PCA plane
of all the (non-diverged) racers' recorded points together, centred at the start
(:func:`compute.pca_plane`), and each racer's points get their least-squares coordinates on
it and their distance off it (:func:`compute.project_onto_plane`).

Escape time (:func:`escape_step`): how long a racer sits on the saddle's plateau. With
``L_0 … L_{D−1}`` the racer's finite losses (D = the divergence step, else T + 1),
``L_end = L_{D−1}`` and ``f = escape_fraction``:

* with an explicit ``escape_level`` ℓ*, the escape step is the first t with ``L_t < ℓ*``;
* otherwise the plateau level ℓ is the loss of the racer's first plateau
  (:func:`compute.find_plateaus`), unless the racer had already dropped below
  ``L_0 − f (L_0 − L_end)`` before that plateau began (then it is a later saddle, and
  ℓ = L_0, the shared start, with the plateau beginning at step 0); with no plateau,
  ℓ = L_0. The threshold is ``τ = ℓ − f (ℓ − L_end)`` and the escape step is the first step
  t at or after the plateau's entry from which every later finite loss stays below τ.
  A racer whose total drop ``ℓ − L_end`` is at most ``MIN_ESCAPE_DROP · max(|ℓ|, |L_end|)``
  (it ends where it stalled, or climbed) never escaped: its escape step is None.

Escape steps of different step sizes compare in steps; ``lr × step`` is the gradient-flow
time of THEORY.md §2 for ``gd``.

References:
  Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of learning in deep
  linear neural networks", arXiv:1312.6120 (plateau lengths ∝ (1/s) ln(s/u_0)).
  Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", arXiv:1712.09913 (PCA
  planes of trajectories).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from compute._errors import InputError
from compute._limits import MAX_PATH_WEIGHT_BYTES, MAX_RACERS, MAX_SPAN, MAX_STEPS
from compute._models import ModelSpec
from compute._optimisers import check_path_options
from compute._paths import PathResult, run_path
from compute._planes import Plane
from compute._plateaus import find_plateaus
from compute._projection import pca_plane, project_onto_plane

__all__ = ["ESCAPE_FRACTION", "Race", "Racer", "escape_step", "optimiser_race"]

ESCAPE_FRACTION = 0.1    # escaped once 10 % of the way from the plateau to the final loss
MIN_ESCAPE_DROP = 1e-3   # a smaller relative drop is no escape
DEFAULT_FRAMES = 500     # recorded (synchronised) weight rows per racer, about
RACER_KEYS = ("optimizer", "lr", "momentum", "label")
RANGE_MARGIN = 0.15      # the plane's ranges extend this fraction past the racers' points


@dataclass(frozen=True, eq=False)
class Racer:
    """One racer's run and where it went on the race plane.

    Attributes:
      label: the name shown for it (default ``"gd η=0.1"`` and the like).
      optimizer, lr, momentum: its options (momentum only matters for momentum/nesterov).
      path: its :class:`compute.PathResult` (loss and gradient-norm curves ``(T+1,)``,
        weights ``(R_k, n)`` at ``weight_steps``, ``diverged_at``).
      coords: ``(R_k, 2)`` plane coordinates of its recorded points; distance: ``(R_k,)``
        their distance off the plane.
      plateau_level: ℓ (NaN with an explicit escape level); escape_level: the threshold τ
        (or ℓ*); escape_step: the escape step, None when it never escaped.
    """

    label: str
    optimizer: str
    lr: float
    momentum: float
    path: PathResult
    coords: np.ndarray
    distance: np.ndarray
    plateau_level: float
    escape_level: float
    escape_step: int | None

    @property
    def loss(self) -> np.ndarray:
        return self.path.loss

    @property
    def grad_norm(self) -> np.ndarray:
        return self.path.grad_norm

    @property
    def diverged_at(self) -> int:
        return self.path.diverged_at


@dataclass(frozen=True, eq=False)
class Race:
    """Several racers from one start (K racers, R synchronised frames).

    Attributes:
      racers: the :class:`Racer` s, in the order given.
      plane: the PCA plane of the racers' points, centred at θ_0 (unit orthogonal
        directions: coordinates are parameter distances); ranges cover the non-diverged
        racers' points; marks ``start`` and each racer's ``end: label``.
      explained_variance: ``(2,)`` the variance ratios of the two PCA directions.
      frame_steps: ``(R,)`` the steps every racer recorded (0, k, 2k, …, T).
      frame_coords: ``(K, R, 2)`` each racer's coordinates at ``frame_steps`` (NaN from its
        divergence on); frame_distance: ``(K, R)`` its distance off the plane there.
      theta0: ``(n,)`` the shared start. steps: T. escape_fraction: f.
      seconds: wall-clock time of the race.
    """

    racers: tuple[Racer, ...]
    plane: Plane
    explained_variance: np.ndarray
    frame_steps: np.ndarray
    frame_coords: np.ndarray
    frame_distance: np.ndarray
    theta0: np.ndarray
    steps: int
    escape_fraction: float
    seconds: float

    @property
    def escape_steps(self) -> list[int | None]:
        return [r.escape_step for r in self.racers]

    @property
    def diverged_at(self) -> list[int]:
        return [r.diverged_at for r in self.racers]

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.racers]


def optimiser_race(spec: ModelSpec, loss: str, theta0, X, Y, racers: Sequence[Mapping],
                   steps: int, *, escape_level: float | None = None,
                   escape_fraction: float = ESCAPE_FRACTION, weight_stride: int | None = None,
                   batch: int | None = None, seed: int = 0,
                   progress: Callable[[float], None] | None = None) -> Race:
    """Race optimisers from the same start on one plane.

    Args:
      spec, loss: the network and the loss name.
      theta0: ``(n,)`` the shared start (e.g. near a saddle); its dtype is the runs' dtype.
      X, Y: data ``(m, d_x)``, ``(m, d_y)``.
      racers: 1 to ``MAX_RACERS`` dicts ``{"optimizer": name, "lr": η, "momentum": β
        (optional, default 0.9), "label": text (optional)}``; the optimisers of
        :mod:`compute._optimisers`, each run by :func:`compute.run_path`.
      steps: T, optimiser steps of every racer.
      escape_level: a loss level ℓ*; escaping means first dropping below it. None: each
        racer's own plateau (module docstring).
      escape_fraction: f of the plateau-based escape level, in (0, 1).
      weight_stride: record weights every this many steps (default: about
        ``DEFAULT_FRAMES`` rows, all racers' weights within ``MAX_PATH_WEIGHT_BYTES``).
      batch: minibatch size of every racer (None: full batch; ``sgd`` racers default to
        ``min(32, m)``); the minibatches are drawn from ``seed``, the same for every racer.
      progress: called with the fraction done (0 < f ≤ 1).

    Returns:
      :class:`Race`. A diverging racer is reported (``diverged_at ≥ 0``), not raised.
    """
    start = time.perf_counter()
    options = _check_racers(racers, steps, X, batch)
    if escape_level is not None and not _finite_number(escape_level):
        raise InputError(f"the escape level must be a finite number, got {escape_level!r}.")
    if not (_finite_number(escape_fraction) and 0 < escape_fraction < 1):
        raise InputError(f"the escape fraction must be a number in (0, 1), "
                         f"got {escape_fraction!r}.")
    theta = np.asarray(theta0)
    n = spec.n_params
    itemsize = theta.dtype.itemsize if theta.dtype in (np.float32, np.float64) else 4
    stride = _race_stride(weight_stride, int(steps), n, len(options), itemsize)
    paths = []
    for k, opt in enumerate(options):
        report = None
        if progress is not None:
            report = lambda f, k=k: progress((k + f) / len(options))  # noqa: E731
        paths.append(run_path(spec, loss, theta0, X, Y, optimizer=opt["optimizer"],
                              lr=opt["lr"], momentum=opt["momentum"], steps=int(steps),
                              batch=batch, seed=seed, weight_stride=stride,
                              progress=report))
    origin = np.asarray(paths[0].weights[0], dtype=np.float64)
    center, d1, d2, ratio = _race_pca(paths, origin)
    frame_steps = np.arange(0, int(steps) + 1, stride, dtype=np.int64)
    if frame_steps[-1] != int(steps):
        frame_steps = np.append(frame_steps, int(steps))
    K, R = len(paths), frame_steps.size
    frame_coords = np.full((K, R, 2), np.nan)
    frame_distance = np.full((K, R), np.nan)
    done = []
    for k, (opt, path) in enumerate(zip(options, paths, strict=True)):
        coords, distance = project_onto_plane(path.weights, center, d1, d2)
        rows = np.searchsorted(frame_steps, path.weight_steps)
        on_frame = (rows < R) & (frame_steps[np.minimum(rows, R - 1)] == path.weight_steps)
        frame_coords[k, rows[on_frame]] = coords[on_frame]
        frame_distance[k, rows[on_frame]] = distance[on_frame]
        level, threshold, escaped = escape_step(path.loss, path.grad_norm, level=escape_level,
                                                fraction=escape_fraction)
        done.append(Racer(label=opt["label"], optimizer=opt["optimizer"], lr=opt["lr"],
                          momentum=opt["momentum"], path=path, coords=coords,
                          distance=distance, plateau_level=level, escape_level=threshold,
                          escape_step=escaped))
    plane = _race_plane(center, d1, d2, done)
    return Race(racers=tuple(done), plane=plane, explained_variance=ratio,
                frame_steps=frame_steps, frame_coords=frame_coords,
                frame_distance=frame_distance, theta0=origin, steps=int(steps),
                escape_fraction=float(escape_fraction), seconds=time.perf_counter() - start)


def escape_step(loss, grad_norm, *, level: float | None = None,
                fraction: float = ESCAPE_FRACTION) -> tuple[float, float, int | None]:
    """A path's escape from its (first) saddle plateau; see the module docstring.

    Args:
      loss, grad_norm: ``(T+1,)`` per-step curves (NaN/inf after a divergence).
      level: an explicit loss level ℓ*: escape is the first step below it.
      fraction: f, the share of the drop ``ℓ − L_end`` that counts as having left.

    Returns:
      ``(plateau_level ℓ, threshold τ, escape step or None)``; ℓ is NaN with ``level``.
    """
    L = np.asarray(loss, dtype=np.float64).reshape(-1)
    g = np.asarray(grad_norm, dtype=np.float64).reshape(-1)
    bad = ~(np.isfinite(L) & np.isfinite(g))
    D = int(np.argmax(bad)) if bad.any() else L.size
    if level is not None:
        below = np.flatnonzero(L[:D] < level)
        return math.nan, float(level), (int(below[0]) if below.size else None)
    if D == 0:
        return math.nan, math.nan, None
    L, g = L[:D], g[:D]
    end = float(L[-1])
    plateau, entry = float(L[0]), 0
    plateaus = find_plateaus(L, g)
    if plateaus:
        first = plateaus[0]
        left_start = L[0] - fraction * (L[0] - end)
        if not np.any(L[:first.entry] < left_start):
            plateau, entry = first.loss, first.entry
    drop = plateau - end
    threshold = plateau - fraction * drop
    if not drop > MIN_ESCAPE_DROP * max(abs(plateau), abs(end), np.finfo(float).tiny):
        return plateau, threshold, None
    above = np.flatnonzero(L[entry:] >= threshold)
    return plateau, threshold, entry + (int(above[-1]) + 1 if above.size else 0)


# --------------------------------------------------------------------------- helpers


def _check_racers(racers, steps, X, batch) -> list[dict]:
    if isinstance(racers, (str, bytes, Mapping)) or not isinstance(racers, Sequence):
        raise InputError("racers must be a list of dicts like {'optimizer': 'gd', 'lr': 0.1}.")
    if not 1 <= len(racers) <= MAX_RACERS:
        raise InputError(f"a race needs 1 to {MAX_RACERS} racers, got {len(racers)}.")
    try:
        m = int(np.shape(X)[0])
    except (TypeError, IndexError):
        raise InputError("X must be a matrix with one sample per row.") from None
    out = []
    for i, racer in enumerate(racers, start=1):
        if not isinstance(racer, Mapping):
            raise InputError(f"racer {i} must be a dict like {{'optimizer': 'gd', 'lr': 0.1}}, "
                             f"got {type(racer).__name__}.")
        unknown = sorted(set(map(str, racer)) - set(RACER_KEYS))
        if unknown:
            raise InputError(f"racer {i} has unknown option(s) {', '.join(unknown)}; use "
                             f"{', '.join(RACER_KEYS)}.")
        if "optimizer" not in racer or "lr" not in racer:
            raise InputError(f"racer {i} needs an 'optimizer' and an 'lr'.")
        optimizer, lr = racer["optimizer"], racer["lr"]
        momentum = racer.get("momentum", 0.9)
        try:
            check_path_options(optimizer=optimizer, lr=lr, steps=steps, batch=batch,
                               n_samples=max(m, 1), momentum=momentum, noise=0.0)
        except InputError as err:
            raise InputError(f"racer {i}: {err}") from None
        label = racer.get("label")
        if label is None:
            label = f"{optimizer} η={float(lr):g}"
            if optimizer in ("momentum", "nesterov"):
                label += f" β={float(momentum):g}"
        elif not isinstance(label, str) or not 0 < len(label) <= 80:
            raise InputError(f"racer {i}'s label must be text of 1 to 80 characters.")
        out.append({"optimizer": optimizer, "lr": float(lr), "momentum": float(momentum),
                    "label": label})
    labels = [o["label"] for o in out]
    if len(set(labels)) != len(labels):
        raise InputError("two racers have the same label (or the same optimizer and step "
                         "size); give each a different one.")
    return out


def _race_stride(stride, steps: int, n: int, K: int, itemsize: int) -> int:
    """One weight stride for every racer: about DEFAULT_FRAMES rows, all racers' rows
    within MAX_PATH_WEIGHT_BYTES."""
    max_rows = max(2, MAX_PATH_WEIGHT_BYTES // (K * n * itemsize) - 1)
    least = max(1, -(-steps // (max_rows - 1)))
    if stride is None:
        return max(least, -(-steps // DEFAULT_FRAMES))
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) \
            or not 1 <= stride <= MAX_STEPS:
        raise InputError(f"the weight stride must be an integer between 1 and {MAX_STEPS}, "
                         f"got {stride!r}.")
    if stride < least:
        raise InputError(f"{K} racers of {n} parameters need a weight stride of at least "
                         f"{least}, got {stride}.")
    return int(stride)


def _race_pca(paths: list[PathResult], origin: np.ndarray):
    """The PCA plane of the non-diverged racers' points (all racers' if every one
    diverged), centred at the start."""
    kept = [p.weights for p in paths if p.diverged_at < 0] or [p.weights for p in paths]
    W = np.concatenate([np.asarray(w, dtype=np.float64) for w in kept])
    if W.shape[0] < 2 or not np.any(W != origin):
        raise InputError("no racer moved from the start (a critical point?); nudge the start "
                         "off it, e.g. along a Hessian eigenvector.")
    return pca_plane(W, center=origin)


def _race_plane(center, d1, d2, racers: list[Racer]) -> Plane:
    kept = [r.coords for r in racers if r.diverged_at < 0] or [r.coords for r in racers]
    C = np.concatenate(kept)
    C = C[np.all(np.isfinite(C), axis=1)]
    ranges = []
    for j in range(2):
        lo, hi = min(0.0, float(C[:, j].min())), max(0.0, float(C[:, j].max()))
        pad = RANGE_MARGIN * max(hi - lo, 1e-12)
        ranges.append((max(lo - pad, -MAX_SPAN), min(hi + pad, MAX_SPAN)))
    marks = {"start": (0.0, 0.0)}
    for r in racers:
        if r.coords.shape[0] and np.all(np.isfinite(r.coords[-1])):
            marks[f"end: {r.label}"] = (float(r.coords[-1, 0]), float(r.coords[-1, 1]))
    return Plane(center, d1, d2, ranges[0], ranges[1], marks)


def _finite_number(value) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
