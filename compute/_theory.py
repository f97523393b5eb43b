"""The theory numbers the dashboard shows next to the measured ones (THEORY.md §1, §3, §4).

* Deep linear nets (Kawaguchi 2016; Baldi & Hornik 1989): the closed-form global minimum
  (reduced-rank regression), weights attaining it, the one-hidden-layer critical points
  (Baldi–Hornik saddles), the Hessian spectrum at the origin and the direction along which
  the loss leaves the origin.
* Świrszcz, Czarnecki & Pascanu (2016): the named minima of D1–D3 as flat weight vectors.
* Kawaguchi, Huang & Kaelbling (2019): the induced-model value
  ``min_α (1/2m) ‖J α − y‖²`` that equals the loss at every differentiable critical point.

Conventions (THEORY.md): rows are samples, ``C = YᵀX`` (d_y × d_x),
``Σ = C (XᵀX)⁻¹ Cᵀ`` with eigenvalues ``λ_1 ≥ … ≥ λ_{d_y}``, loss ``(1/2m) ‖f(X) − Y‖²``.
Host-side numpy in float64 except the Jacobian of :func:`induced_model_loss`.

References:
  Kawaguchi, "Deep Learning without Poor Local Minima", NeurIPS 2016 (arXiv:1605.07110).
  Baldi & Hornik, "Neural networks and principal component analysis", Neural Networks 1989.
  Świrszcz, Czarnecki & Pascanu, "Local minima in training of neural networks" (2016,
  arXiv:1611.06310). Kawaguchi, Huang & Kaelbling, "Every Local Minimum Value is the Global
  Minimum Value of Induced Model in Nonconvex Machine Learning", Neural Computation 2019
  (arXiv:1904.03673).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from compute._errors import InputError
from compute._limits import MAX_BALDI_HORNIK_POINTS, MAX_CONDITION, MEMORY_BUDGET_BYTES
from compute._models import ModelSpec, forward, unflatten_params

__all__ = [
    "BaldiHornikPoint",
    "SwirszczPoint",
    "deep_linear_global_minimum",
    "deep_linear_global_minimizer",
    "baldi_hornik_saddles",
    "origin_hessian_eigenvalues_one_hidden",
    "balanced_top_singular_direction",
    "flat_predictor",
    "induced_model_loss",
    "swirszcz_points",
]



@dataclass(frozen=True)
class _Regression:
    C: np.ndarray          # (d_y, d_x)
    B: np.ndarray          # (d_x, d_y) = (XᵀX)⁻¹ Cᵀ, the least-squares weights transposed
    lam: np.ndarray        # (d_y,) eigenvalues of Σ, descending
    U: np.ndarray          # (d_y, d_y) eigenvectors of Σ (columns), same order


def _data(X, Y) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise InputError(f"X and Y must be (m, d_x) and (m, d_y) with the same m, got "
                         f"{X.shape} and {Y.shape}.")
    return X, Y


def _regression(X, Y) -> _Regression:
    X, Y = _data(X, Y)
    with np.errstate(over="ignore", invalid="ignore"):
        G = X.T @ X
    if not np.all(np.isfinite(G)):
        raise InputError("XᵀX overflows float64 (the inputs are too large): the deep-linear "
                         "closed forms need rescaled data.")
    cond = np.linalg.cond(G)
    if not np.isfinite(cond) or cond > MAX_CONDITION:
        raise InputError(f"XᵀX is singular (condition number {cond:.1e}): the deep-linear "
                         "closed forms need m ≥ d_x samples with independent input columns.")
    C = Y.T @ X
    B = np.linalg.solve(G, C.T)
    Sigma = C @ B
    lam, U = np.linalg.eigh(0.5 * (Sigma + Sigma.T))
    order = np.argsort(lam)[::-1]
    return _Regression(C, B, lam[order], U[:, order])


def _rank_cap(hidden_widths: Sequence[int], d_y: int) -> int:
    widths = [int(w) for w in hidden_widths]
    if any(w < 1 for w in widths):
        raise InputError(f"hidden widths must be positive integers, got {tuple(widths)}.")
    return min([d_y, *widths])


def deep_linear_global_minimum(X, Y, hidden_widths: Sequence[int] = ()) -> float:
    """The global minimum ``L*`` of a deep linear net's squared loss (THEORY.md §1).

    ``L* = (‖Y‖_F² − Σ_{i≤r} λ_i) / (2m)`` with ``r = min(min hidden width, d_y)`` and
    ``λ_i`` the eigenvalues of ``Σ = C (XᵀX)⁻¹ Cᵀ``: reduced-rank regression; with no
    hidden layer it is ordinary least squares. Independent of depth beyond the bottleneck.
    Evaluated as the residual ``‖Y − X M_rᵀ‖²/(2m)`` of the optimal product M_r, not by the
    subtraction above, which cancels catastrophically when the fit is nearly exact.

    Raises:
      InputError: XᵀX singular (condition number > 1e12).
    """
    reg = _regression(X, Y)
    r = _rank_cap(hidden_widths, reg.lam.size)
    return _residual_loss(X, Y, _product_optimum(reg, r))


def _residual_loss(X, Y, M: np.ndarray) -> float:
    """``‖Y − X Mᵀ‖_F² / (2m)``: the squared loss of the linear map M (d_y × d_x), ≥ 0."""
    X, Y = _data(X, Y)
    residual = Y - X @ M.T
    return float(np.sum(residual * residual) / (2 * X.shape[0]))


def _product_optimum(reg: _Regression, r: int) -> np.ndarray:
    """``U_r U_rᵀ C (XᵀX)⁻¹`` (d_y × d_x): the best product of rank ≤ r."""
    Ur = reg.U[:, :r]
    return Ur @ (Ur.T @ reg.B.T)


def _factor(M: np.ndarray, widths: Sequence[int], r: int, rng) -> list[np.ndarray]:
    """Balanced factors ``W_L ⋯ W_1 = M`` through hidden widths ≥ r (rank M ≤ r)."""
    L = len(widths) + 1
    if L == 1:
        return [M]
    P, s, Qt = np.linalg.svd(M, full_matrices=False)
    r = min(r, s.size)  # rank M ≤ min(d_x, d_y): fewer singular values than r when d_x < d_y
    root = s[:r] ** (1.0 / L)
    sizes = [M.shape[1], *widths, M.shape[0]]
    layers = []
    for k in range(L):
        W = np.zeros((sizes[k + 1], sizes[k]))
        if k == 0:
            W[:r] = root[:, None] * Qt[:r]
        elif k == L - 1:
            W[:, :r] = P[:, :r] * root[None, :]
        else:
            W[:r, :r] = np.diag(root)
        layers.append(W)
    if rng is not None:  # move along the symmetry orbit: W_k → R W_k, W_{k+1} → W_{k+1} Rᵀ
        for k in range(L - 1):
            q, rr = np.linalg.qr(rng.standard_normal((sizes[k + 1], sizes[k + 1])))
            R = q * np.sign(np.diag(rr))
            layers[k] = R @ layers[k]
            layers[k + 1] = layers[k + 1] @ R.T
    return layers


def deep_linear_global_minimizer(X, Y, hidden_widths: Sequence[int] = (),
                                 seed: int | None = 0) -> np.ndarray:
    """Flat weights (n,) of a deep linear net attaining :func:`deep_linear_global_minimum`.

    The product ``W_L ⋯ W_1 = U_r U_rᵀ C (XᵀX)⁻¹`` is split into balanced factors
    (``S^{1/L}`` on each layer of its SVD, zero-padded to the widths), then each hidden
    layer is rotated by a seeded random orthogonal matrix (``seed=None``: no rotation), a
    move along the rescaling symmetry that leaves the loss unchanged. Flat order: W_1
    row-major, W_2, … (THEORY.md).
    """
    reg = _regression(X, Y)
    r = _rank_cap(hidden_widths, reg.lam.size)
    rng = None if seed is None else np.random.default_rng(seed)
    layers = _factor(_product_optimum(reg, r), hidden_widths, r, rng)
    return np.concatenate([W.ravel() for W in layers])


@dataclass(frozen=True, eq=False)
class BaldiHornikPoint:
    """A critical point of a one-hidden-layer linear net (Baldi & Hornik 1989).

    ``subset``: the indices I of Σ's eigenvectors (0 = largest eigenvalue); ``theta``:
    flat weights (W_1 then W_2); ``loss = (‖Y‖² − Σ_{i∈I} λ_i)/(2m)``; ``is_global_min``:
    I is the top r (every other subset is a strict saddle).
    """

    subset: tuple[int, ...]
    theta: np.ndarray
    loss: float
    is_global_min: bool


def baldi_hornik_saddles(X, Y, d_1: int) -> list[BaldiHornikPoint]:
    """Every r-subset critical point of the d_x–d_1–d_y linear net, lowest loss first.

    For each r-subset I (``r = min(d_1, d_y)``) of the eigenvectors ``U`` of Σ:
    ``W_2 = [U_I, 0]`` (d_y × d_1) and ``W_1 = [U_Iᵀ C (XᵀX)⁻¹; 0]`` (d_1 × d_x); the zero
    padding (when d_1 > r) keeps the point critical. The first one (I = top r) is the
    global minimum.

    Raises:
      InputError: more than ``MAX_BALDI_HORNIK_POINTS`` subsets, or XᵀX singular.
    """
    reg = _regression(X, Y)
    d_y, d_x = reg.C.shape
    r = _rank_cap([d_1], d_y)
    d_1 = int(d_1)
    count = math.comb(d_y, r)
    if count > MAX_BALDI_HORNIK_POINTS:
        raise InputError(f"{count} Baldi–Hornik points (choose {r} of {d_y}); the limit is "
                         f"{MAX_BALDI_HORNIK_POINTS}: use fewer outputs or a width ≥ d_y.")
    points = []
    for subset in itertools.combinations(range(d_y), r):
        UI = reg.U[:, list(subset)]
        W2 = np.zeros((d_y, d_1))
        W2[:, :r] = UI
        W1 = np.zeros((d_1, d_x))
        W1[:r] = UI.T @ reg.B.T
        points.append(BaldiHornikPoint(subset, np.concatenate([W1.ravel(), W2.ravel()]),
                                       _residual_loss(X, Y, W2 @ W1),
                                       subset == tuple(range(r))))
    return sorted(points, key=lambda p: (p.loss, p.subset))


def origin_hessian_eigenvalues_one_hidden(X, Y, d_1: int) -> np.ndarray:
    """Hessian eigenvalues (ascending) at the origin of a d_x–d_1–d_y linear net.

    ``±σ_j(C)/m`` for each singular value of ``C = YᵀX``, each repeated d_1 times, plus
    zeros up to ``n = d_1 (d_x + d_y)`` (THEORY.md §1): at θ = 0 the Hessian couples
    W_1 and W_2 only, through ``−(1/m) tr(δW_2 δW_1 Cᵀ)``.
    """
    X, Y = _data(X, Y)
    m, d_x = X.shape
    d_y = Y.shape[1]
    sigma = np.linalg.svd(Y.T @ X, compute_uv=False) / m
    n = int(d_1) * (d_x + d_y)
    values = np.concatenate([np.repeat(sigma, d_1), -np.repeat(sigma, d_1)])
    return np.sort(np.concatenate([values, np.zeros(n - values.size)]))


def balanced_top_singular_direction(X, Y, layer_sizes: Sequence[int]) -> np.ndarray:
    """Unit flat vector (n,) along which a deep linear net leaves its origin fastest.

    With ``C = YᵀX = Σ_j σ_j u_j v_jᵀ``: ``W_1 = e_1 v_1ᵀ``, ``W_k = e_1 e_1ᵀ`` in between,
    ``W_L = u_1 e_1ᵀ``, normalised. At the origin ``L(t d) = L(0) − (σ_1/m)(t/√L)^L + O(t^{2L})``
    (L = H + 1 layers), so with H ≥ 2 hidden layers the loss drops although gradient and
    Hessian vanish (THEORY.md §1).
    """
    X, Y = _data(X, Y)
    sizes = [int(s) for s in layer_sizes]
    if sizes[0] != X.shape[1] or sizes[-1] != Y.shape[1]:
        raise InputError(f"layer sizes {tuple(sizes)} do not match d_x={X.shape[1]}, "
                         f"d_y={Y.shape[1]}.")
    U, _, Vt = np.linalg.svd(Y.T @ X)
    u1, v1 = U[:, 0], Vt[0]
    blocks = []
    for k in range(len(sizes) - 1):
        rows, cols = sizes[k + 1], sizes[k]
        left = u1 if k == len(sizes) - 2 else np.eye(rows)[0]
        right = v1 if k == 0 else np.eye(cols)[0]
        blocks.append(np.outer(left, right).ravel())
    d = np.concatenate(blocks)
    return d / np.linalg.norm(d)


def flat_predictor(spec: ModelSpec) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``predict(theta, X) -> (m, d_y)``: the network's outputs from flat parameters."""

    def predict(theta, X):
        return forward(spec, unflatten_params(spec, theta), X)

    return predict


def induced_model_loss(predict: Callable[[jax.Array, jax.Array], jax.Array], theta, X, Y, *,
                       rcond: float = 1e-8, dtype=jnp.float64) -> float:
    """The induced-model value ``min_α (1/2m) ‖J α − y‖²`` of THEORY.md §4.

    ``J`` (m·d_y, n) is the Jacobian of the stacked outputs ``f(x_i; θ)_c`` (row-major,
    like ``Y.ravel()``) w.r.t. θ: the model linear in its own gradient features. It equals
    the squared loss at every differentiable critical point of a net whose last layer is
    linear, and is lower elsewhere. The least-squares solve is a truncated SVD that drops
    singular values below ``rcond · s_max`` (an ill-conditioned J otherwise gives a
    spuriously low value).

    Args:
      predict: ``predict(theta, X) -> (m, d_y)`` (e.g. :func:`flat_predictor`).

    Raises:
      InputError: J would exceed the memory budget.
    """
    theta = jnp.asarray(theta, dtype)
    X = jnp.asarray(X, dtype)
    Yn = np.asarray(Y, dtype=np.float64)
    if Yn.ndim == 1:
        Yn = Yn[:, None]
    m = Yn.shape[0]
    rows, n = Yn.size, int(theta.shape[0])
    if rows * n * 8 * 3 > MEMORY_BUDGET_BYTES:
        raise InputError(f"the Jacobian would be {rows} × {n}, beyond the memory budget; use "
                         "fewer samples or a smaller model for the induced-model value.")
    flat = lambda t: predict(t, X).reshape(-1)
    jac = jax.jacrev(flat) if rows < n else jax.jacfwd(flat)
    J = np.asarray(jax.jit(jac)(theta), dtype=np.float64)
    U, s, _ = np.linalg.svd(J, full_matrices=False)
    keep = s > rcond * (s[0] if s.size else 0.0)
    y = Yn.reshape(-1)
    Uk = U[:, keep]
    residual = y - Uk @ (Uk.T @ y)
    return float(residual @ residual / (2 * m))


@dataclass(frozen=True, eq=False)
class SwirszczPoint:
    """A named minimum of Świrszcz et al. (2016) as 1-hidden-layer ReLU MLP weights.

    ``theta`` is in the flat order of ``make_model("mlp", 1, 1, (hidden,))``: W_1 (h × 1)
    = w, b_1 = b, W_2 (1 × h) = v, b_2 = c. ``paper_loss`` is the paper's plain sum of
    squares; ``loss = paper_loss / (2m)`` is ours (THEORY.md).
    """

    name: str
    dataset: str
    hidden: int
    theta: np.ndarray
    paper_loss: float
    role: str
    m: int

    @property
    def loss(self) -> float:
        return self.paper_loss / (2 * self.m)


_SWIRSZCZ = (
    # name, dataset, m, role, paper loss, w, b, v, c  (THEORY.md §3)
    ("d1_local", "swirszcz_d1", 5, "local", 18.0, [1.0], [-3.0], [1.0], 0.0),
    ("d1_global", "swirszcz_d1", 5, "global", 14.0, [-1.0], [0.0], [3.0], 0.0),
    ("d2_global", "swirszcz_d2", 6, "global", 0.0, [-5.0, 1.0], [1.0, -8.0], [1.0, -1.0], -1.0),
    ("d2_local", "swirszcz_d2", 6, "local", 8.0 / 3.0, [-3.0, 1.0], [13.0 / 3.0, -10.0],
     [1.0, -1.0], -3.0),
    ("d3_better", "swirszcz_d3", 6, "better", 1.0 / 6.0, [-1.5, -1.5, 1.5],
     [1.0, 0.0, -79.0 / 6.0], [1.0, 1.0, -1.0], -1.0),
    ("d3_worse", "swirszcz_d3", 6, "worse", 2.0 / 3.0, [-2.0, 1.0, 1.0],
     [11.0 / 3.0, -10.0, -11.0], [1.0, -1.0, -1.0], -3.0),
)


def swirszcz_points() -> dict[str, SwirszczPoint]:
    """The named points of THEORY.md §3 (D1 local/global, D2 global/local, D3 better/worse).

    Use with ``load_dataset(point.dataset)`` and ``make_model("mlp", 1, 1, (point.hidden,),
    activation="relu")``. They sit on ReLU kinks; derivatives use relu'(0) = 0.
    """
    out = {}
    for name, data, m, role, paper, w, b, v, c in _SWIRSZCZ:
        theta = np.array([*w, *b, *v, c], dtype=np.float64)
        out[name] = SwirszczPoint(name, data, len(w), theta, paper, role, m)
    return out
