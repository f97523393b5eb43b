"""What kind of point is this? Gradient, Hessian spectrum and higher-order probes → a verdict.

Verdicts (:data:`VERDICTS`) and the rule that picks one, with ``τ_g`` the gradient and
``τ`` the eigenvalue tolerance (both relative, see :func:`classify_critical_point`):

1. ``‖∇L‖ > τ_g`` → **not critical**.
2. Some ``λ < −τ``: **strict saddle** if some ``λ > τ`` too, or if the loss rises along a
   probed direction; **local maximum** if every ``λ < −τ``; otherwise (negative
   semidefinite with zero modes, no rise found) **degenerate, inconclusive**.
3. Every ``λ > τ`` → **strict local minimum**.
4. PSD with zero modes (``|λ| ≤ τ``), in this order:
   a. the loss drops along a probed direction (null-space eigenvectors, random mixtures
      of them, the balanced top-singular direction of a deep linear net, random
      directions; at step sizes ``‖θ‖·2^{−11} … ‖θ‖``, accepted only if the loss never
      rose above L(θ) at a smaller step of the same ray, and did not stay equal to L(θ)
      over the three smallest steps: a drop beyond such a plateau, e.g. where a dead ReLU
      unit wakes, is at a finite distance) → **degenerate saddle**, with the direction;
   b. a known global minimum ``L*`` of a model whose local minima are all global (deep
      linear nets, Kawaguchi 2016) lies below the loss → **degenerate saddle** (a descent
      path exists, none was found by probing);
   c. the loss equals that ``L*`` → **non-strict local minimum** (a global one);
   d. the whole null space lies along the model's continuous symmetries (rescaling of
      ReLU / linear hidden units, dead ReLU units, parameters that leave the outputs on the
      data unchanged, or for softmax cross-entropy unchanged up to a common logit shift),
      so the minimum is a manifold whose transverse Hessian is positive definite
      (Morse–Bott) → **non-strict local minimum**;
   e. otherwise → **degenerate, inconclusive** (e.g. ``x² + y⁴``: a minimum only a
      fourth-order argument can show).

The tolerances are relative to ‖H‖ and ‖θ‖, which a rescaling of hidden units changes
while leaving the function, the loss and the Hessian's inertia alone; so a point far from
balanced along its rescaling orbit is classified at the balanced point of that orbit
(:func:`unit_balancing`), and the verdict is the same wherever on the orbit θ sits.

"non-strict local minimum" is a seventh verdict beyond the issue's six: a PSD Hessian with
symmetry zero modes at a true minimum (the global minimum of a deep linear net, Świrszcz's
D1 local minimum) is neither strict nor inconclusive.

References:
  Kawaguchi, NeurIPS 2016 (arXiv:1605.07110); Ge, Huang, Jin & Yuan, "Escaping from saddle
  points" (2015) for strict saddles; Świrszcz, Czarnecki & Pascanu (2016).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from compute._errors import InputError
from compute._hessian import (
    NON_FINITE_MESSAGE,
    Objective,
    Spectrum,
    _hvp_batch_size,
    hessian_spectrum,
)
from compute._limits import MAX_PARAMS_EXACT_HESSIAN
from compute._models import ModelSpec, forward, unflatten_params
from compute._theory import balanced_top_singular_direction

__all__ = ["VERDICTS", "CriticalPoint", "classify_critical_point", "default_tolerance",
           "unit_balancing"]

VERDICTS = (
    "not critical",
    "strict local minimum",
    "non-strict local minimum",
    "strict saddle",
    "degenerate saddle",
    "degenerate, inconclusive",
    "local maximum",
)
_N_SCALES = 12          # probe steps ‖θ‖·2^{-11} … ‖θ‖
_MAX_NULL_PROBES = 32   # null-space eigenvectors probed one by one
_FLAT_START = 3         # a ray flat over its 3 smallest steps (a factor 4 in distance) runs
                        # along a plateau: a drop past it is no descent at θ
_N_MIXTURES = 16        # random mixtures of null-space eigenvectors
_N_RANDOM = 8           # random directions in the whole space
_MAX_TANGENT_ENTRIES = 4_000_000  # entries of the symmetry tangents / output Jacobian built
_HOMOGENEOUS = ("identity", "relu", "leaky_relu")  # σ(c z) = c σ(z) for c > 0
_PIECEWISE_LINEAR = ("relu", "leaky_relu")  # kinks: a ray can be flat, then drop
_BALANCE_TRIGGER = 4.0  # classify at the balanced point when a unit is off by more than this
_BALANCE_SWEEPS = 200


@dataclass(frozen=True, eq=False)
class CriticalPoint:
    """The verdict at a point and the evidence for it.

    Attributes:
      verdict: one of :data:`VERDICTS`.
      loss, grad_norm: ``L(θ)`` and ``‖∇L(θ)‖``.
      eigenvalues: the Hessian eigenvalues used (ascending; all, or Lanczos' two ends).
      index: fraction of negative eigenvalues (``λ < −τ``) among all n (estimated by SLQ
        when the spectrum is partial, else a lower bound; see notes).
      grad_tol, eig_tol: the tolerances τ_g and τ used.
      n_negative, n_zero, n_positive: counts among ``eigenvalues``.
      descent_direction: unit (n,) vector along which the loss drops (or None);
        ``descent_step``/``descent_drop``: the step size and the loss decrease found.
      global_min: the known global minimum value, if one was given.
      notes: why, and what to keep in mind (symmetry zero modes, ReLU kinks, gaps).
    """

    verdict: str
    loss: float
    grad_norm: float
    eigenvalues: np.ndarray
    index: float | None
    grad_tol: float
    eig_tol: float
    n_params: int
    n_negative: int
    n_zero: int
    n_positive: int
    descent_direction: np.ndarray | None = None
    descent_step: float | None = None
    descent_drop: float | None = None
    global_min: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def gap_to_global_min(self) -> float | None:
        return None if self.global_min is None else self.loss - self.global_min


def default_tolerance(dtype) -> float:
    """Relative tolerance of the verdicts: 1e-6 in float64, 1e-3 in float32."""
    return 1e-6 if jnp.dtype(dtype) == jnp.float64 else 1e-3


@partial(jax.jit, static_argnames=("objective",))
def _value_and_grad(objective, theta, X, Y):
    return jax.value_and_grad(objective)(theta, X, Y)


@partial(jax.jit, static_argnames=("objective", "batch_size"))
def _ray_losses(objective, theta, X, Y, directions, steps, batch_size):
    """``L(θ + s d)`` for every direction (D, n) and step (S,) → (D, S)."""
    def along(d):
        return jax.vmap(lambda s: objective(theta + s * d, X, Y))(steps)

    return jax.lax.map(along, directions, batch_size=batch_size)


def _probe(objective, theta, X, Y, directions: np.ndarray, sign: float, loss: float, *,
           flat_start: int = 0):
    """Best ray along which ``sign · L`` drops without first rising: (direction, step, drop).

    ``flat_start > 0`` skips rays on which the loss equals L(θ) (to rounding) at the
    ``flat_start`` smallest steps: θ then sits on a plateau that is flat to rounding (a dead
    ReLU unit, say), and a drop further out lies past a kink at a finite distance, which
    makes θ a (non-strict) local minimum rather than a saddle.
    """
    if directions.shape[0] == 0:
        return None
    dtype = theta.dtype
    radius = max(float(jnp.linalg.norm(theta)), 1.0)
    steps = radius * 2.0 ** np.arange(-(_N_SCALES - 1), 1)
    batch = max(1, _hvp_batch_size(theta.shape[0], X, Y) // _N_SCALES)
    values = sign * np.asarray(_ray_losses(objective, theta, X, Y,
                                           jnp.asarray(directions, dtype),
                                           jnp.asarray(steps, dtype), batch))
    base = sign * loss
    noise = 1e3 * float(jnp.finfo(dtype).eps) * max(abs(loss), float(jnp.finfo(dtype).tiny))
    best = None
    for d, row in zip(directions, values, strict=True):
        rose = np.nonzero(~(row <= base + noise))[0]  # a rise, or NaN/inf
        if flat_start and np.all(np.abs(row[:flat_start] - base) <= noise):
            continue
        usable = row[: rose[0]] if rose.size else row
        if usable.size:
            j = int(np.argmin(usable))
            drop = base - float(usable[j])
            if drop > noise and (best is None or drop > best[2]):
                best = (d, float(steps[j]), drop)
    return best


def _directions(null: np.ndarray, n: int, rng, extra: list[np.ndarray]) -> np.ndarray:
    """± null eigenvectors, ± random null mixtures, ± extras, ± random unit vectors."""
    dirs = [null[:, i] for i in range(min(null.shape[1], _MAX_NULL_PROBES))]
    if null.shape[1] > 1:
        mix = null @ rng.standard_normal((null.shape[1], _N_MIXTURES))
        dirs += list((mix / np.linalg.norm(mix, axis=0)).T)
    dirs += extra
    rand = rng.standard_normal((_N_RANDOM, n))
    dirs += list(rand / np.linalg.norm(rand, axis=1, keepdims=True))
    dirs = np.array(dirs).reshape(-1, n)
    return np.concatenate([dirs, -dirs])


def _orbit_tangent(n: int, offsets, W: np.ndarray, b: np.ndarray | None, Wn: np.ndarray,
                   a: int, c: int) -> np.ndarray:
    """Tangent (n,) of ``W_k → A W_k, b_k → A b_k, W_{k+1} → W_{k+1} A⁻¹`` at A = I, for
    the generator ``A = I + ε e_a e_cᵀ`` (offsets: where W_k, b_k, W_{k+1} start)."""
    w0, b0, v0 = offsets
    rows, cols = W.shape
    t = np.zeros(n)
    t[w0 + a * cols: w0 + (a + 1) * cols] = W[c]
    if b is not None:
        t[b0 + a] = b[c]
    t[v0 + c: v0 + Wn.size: rows] = -Wn[:, a]  # column c of W_{k+1}
    return t


def _relu_kinks(spec: ModelSpec, theta: np.ndarray, X: np.ndarray) -> int:
    """How many hidden pre-activations of a ReLU net are exactly 0 on a data point."""
    if spec.activation != "relu":
        return 0
    h, kinks = np.asarray(X, dtype=np.float64), 0
    for layer in unflatten_params(spec, jnp.asarray(theta))[:-1]:
        z = h @ np.asarray(layer["W"]).T + (np.asarray(layer["b"]) if "b" in layer else 0.0)
        kinks += int(np.sum(np.abs(z) <= 1e-12 * max(float(np.max(np.abs(z))), 1e-300)))
        h = np.maximum(z, 0)
    return kinks


def _symmetry_tangents(spec: ModelSpec, theta: np.ndarray):
    """Tangents (n, t) of the model's continuous symmetry orbit at θ, with their names.

    Identity activation: ``h_k → A h_k`` (``W_k → A W_k, b_k → A b_k,
    W_{k+1} → W_{k+1} A⁻¹``), tangents for ``A = I + ε e_a e_cᵀ``; relu / leaky_relu: the
    same with diagonal A (per-unit rescaling). None (an empty matrix) beyond
    ``_MAX_TANGENT_ENTRIES``.
    """
    n = spec.n_params
    act = spec.activation
    names: set[str] = set()
    count = sum(spec.layer_sizes[k + 1] ** (2 if act == "identity" else 1)
                for k in range(spec.depth))
    if act not in ("identity", "relu", "leaky_relu") or count * n > _MAX_TANGENT_ENTRIES:
        return np.zeros((n, 0)), names
    params = [{k: np.asarray(v, dtype=np.float64) for k, v in layer.items()}
              for layer in unflatten_params(spec, jnp.asarray(theta))]
    starts, o = [], 0
    for (rows, cols), b in spec.layer_shapes():
        starts.append((o, o + rows * cols if b is not None else None))
        o += rows * cols + (b or 0)
    tangents = []
    for k in range(spec.depth):
        W, Wn, b = params[k]["W"], params[k + 1]["W"], params[k].get("b")
        tangent = partial(_orbit_tangent, n, (*starts[k], starts[k + 1][0]), W, b, Wn)
        rows = W.shape[0]
        if act == "identity":
            tangents += [tangent(a, c) for a in range(rows) for c in range(rows)]
            names.add("the rescaling symmetry of linear hidden layers "
                      "(A W_k, W_{k+1} A⁻¹ for invertible A)")
        else:
            tangents += [tangent(j, j) for j in range(rows)]
            names.add("the rescaling symmetry of ReLU units "
                      "(incoming weights × c, outgoing weights ÷ c)")
    return (np.array(tangents).T if tangents else np.zeros((n, 0))), names


def _output_fibre_tangent(spec: ModelSpec, theta, X, dtype, rng, *, centred: bool = False
                          ) -> np.ndarray | None:
    """null(J) (n, k) if the outputs' fibre is a manifold near θ, else None.

    J (m·d_y, n) is the Jacobian of the outputs on the data (``centred``: of the outputs
    minus their mean over the d_y classes, all that softmax cross-entropy sees, since a
    shift common to every logit of a sample leaves it unchanged). If its rank is the same at θ
    and at three random points 10⁻⁴‖θ‖ away, the set of parameters with the same outputs
    is a manifold near θ with tangent space null(J) (constant-rank theorem), and the loss
    is constant on it. None when J is too large or the rank changes (e.g. at the origin
    of a deep linear net, or across a ReLU kink).
    """
    n = spec.n_params
    if X.shape[0] * spec.layer_sizes[-1] * n > _MAX_TANGENT_ENTRIES:
        return None
    Xj = jnp.asarray(X, dtype)

    def outputs(t):
        out = forward(spec, unflatten_params(spec, t), Xj)
        return (out - jnp.mean(out, axis=1, keepdims=True) if centred else out).reshape(-1)

    jac = jax.jit(jax.jacfwd(outputs))

    def rank_and_null(t):
        J = np.asarray(jac(jnp.asarray(t, dtype)), dtype=np.float64)
        _, s, Vt = np.linalg.svd(J, full_matrices=True)
        rank = int(np.sum(s > 1e-9 * s[0])) if s.size and s[0] > 0 else 0
        return rank, Vt[rank:].T

    theta = np.asarray(theta, dtype=np.float64)
    rank, null = rank_and_null(theta)
    radius = 1e-4 * max(float(np.linalg.norm(theta)), 1.0)
    for _ in range(3):
        u = rng.standard_normal(n)
        if rank_and_null(theta + radius * u / np.linalg.norm(u))[0] != rank:
            return None
    return null


def _explained_dimensions(null: np.ndarray, T: np.ndarray) -> int:
    """How many directions of span(null) lie in span(T) (cosines of principal angles ≈ 1)."""
    if null.shape[1] == 0 or T.shape[1] == 0:
        return 0
    U, s, _ = np.linalg.svd(T, full_matrices=False)
    Q = U[:, s > 1e-10 * s[0]] if s.size and s[0] > 0 else U[:, :0]
    if Q.shape[1] == 0:
        return 0
    cosines = np.linalg.svd(Q.T @ null, compute_uv=False)
    return int(np.sum(cosines > 1 - 1e-6))


def unit_balancing(spec: ModelSpec, theta) -> np.ndarray | None:
    """Multipliers s (n,) that move θ along its rescaling orbit to the balanced point s ⊙ θ.

    For a positively homogeneous activation (identity, relu, leaky_relu) scaling hidden unit
    j's incoming weights and bias by c > 0 and its outgoing weights by 1/c leaves the
    function unchanged. Alternating sweeps choose each c so that the unit's incoming
    (‖w_in‖² + b²) and outgoing norms are equal, which minimises ``Σ_k ‖W_k‖²`` over these
    rescalings. Every such map D = diag(s) is a symmetry of the loss, so
    ``∇L(θ) = D ∇L(Dθ)`` and ``H(θ) = D H(Dθ) D``: θ and Dθ are critical together and their
    Hessians have the same inertia (Sylvester), but the eigenvalues' *scale* is not
    invariant: at an unbalanced θ (a unit ×30 in, ÷30 out; data in other units than the
    weights) a negative eigenvalue can be ~10⁻⁷ of λ_max although it is ~10⁻² at Dθ.

    Returns None when every unit's scale is within a factor ``_BALANCE_TRIGGER`` of 1 (or
    the activation is not homogeneous, or there is no hidden layer).
    """
    if spec.activation not in _HOMOGENEOUS or spec.depth < 1 or not np.all(np.isfinite(theta)):
        return None
    layers = [{k: np.array(v, dtype=np.float64) for k, v in layer.items()}
              for layer in unflatten_params(spec, jnp.asarray(theta))]
    scales = [np.ones(spec.layer_sizes[k + 1]) for k in range(spec.depth)]
    for _ in range(_BALANCE_SWEEPS):
        worst = 0.0
        for k in range(spec.depth):
            inc = np.sum(layers[k]["W"] ** 2, axis=1) + layers[k].get("b", 0.0) ** 2
            out = np.sum(layers[k + 1]["W"] ** 2, axis=0)
            live = (inc > 0) & (out > 0)
            c = np.ones_like(inc)
            c[live] = (out[live] / inc[live]) ** 0.25  # √(‖w_out‖ / ‖w_in‖)
            layers[k]["W"] *= c[:, None]
            if "b" in layers[k]:
                layers[k]["b"] *= c
            layers[k + 1]["W"] /= c[None, :]
            scales[k] *= c
            worst = max(worst, float(np.max(np.abs(np.log(c)))))
        if worst < 1e-6:
            break
    if max(float(np.max(np.abs(np.log(c)))) for c in scales) <= np.log(_BALANCE_TRIGGER):
        return None
    units = [np.ones(spec.layer_sizes[0]), *scales, np.ones(spec.layer_sizes[-1])]
    parts = []  # W_k → diag(c_k) W_k diag(c_{k−1})⁻¹, b_k → diag(c_k) b_k, in flat order
    for k, (_, b) in enumerate(spec.layer_shapes()):
        parts.append((units[k + 1][:, None] / units[k][None, :]).ravel())
        if b is not None:
            parts.append(units[k + 1])
    return np.concatenate(parts)


def classify_critical_point(objective: Objective, theta, X, Y, *,
                            spectrum: Spectrum | None = None, global_min: float | None = None,
                            grad_tol: float | None = None, eig_tol: float | None = None,
                            spec: ModelSpec | None = None, loss: str | None = None,
                            method: str = "auto", k: int = 5, seed: int = 0,
                            dtype=jnp.float64) -> CriticalPoint:
    """Classify θ as a critical point (see the module docstring for the rule).

    Args:
      objective: ``objective(theta, X, Y) -> scalar``.
      theta: flat parameters (n,); X, Y: the data.
      spectrum: a :class:`Spectrum` at θ to reuse (else computed with ``method``, ``k``).
      global_min: the known global minimum value. Used as evidence (rules 4b/4c) only
        when every local minimum of the model is global: deep linear nets, i.e. when
        ``spec`` is a linear net or ``spec`` is None (the caller vouches for it).
      grad_tol: τ_g; default ``r · max(|L|, ‖H‖₂ ‖θ‖)`` with r = :func:`default_tolerance`.
      eig_tol: τ; default ``r · max|λ|`` (eigenvalues within ±τ count as zero).
      spec: the model, for symmetry zero modes, ReLU kinks and deep-linear probes. With
        default tolerances and a homogeneous activation, a θ far from balanced is
        classified at the balanced point of its rescaling orbit (:func:`unit_balancing`;
        the same function, loss and inertia), where these relative tolerances mean what
        they say; ``eigenvalues`` and the tolerances are then that point's, ``grad_norm``
        and the descent direction θ's, and a note says so.
      loss: the loss's name, for its own symmetry: softmax cross-entropy
        (``"cross_entropy"``, d_y ≥ 2) is unchanged by a shift common to all logits.
      seed: seeds the random probe directions.

    Returns:
      :class:`CriticalPoint`.

    Raises:
      InputError: the loss or its gradient is not finite at θ (no verdict for such points).
    """
    scales = (unit_balancing(spec, np.asarray(theta))
              if spec is not None and grad_tol is None and eig_tol is None else None)
    if scales is None:
        return _classify(objective, theta, X, Y, spectrum=spectrum, global_min=global_min,
                         grad_tol=grad_tol, eig_tol=eig_tol, spec=spec, loss_name=loss,
                         method=method, k=k, seed=seed, dtype=dtype)
    if spectrum is not None:  # the caller's spectrum is θ's: compute the same kind there
        method = spectrum.method
        k = k if spectrum.complete else max(1, spectrum.eigenvalues.size // 2)
    theta = jnp.asarray(theta, dtype)
    grad_norm = float(jnp.linalg.norm(_value_and_grad(objective, theta, jnp.asarray(X, dtype),
                                                      jnp.asarray(Y, dtype))[1]))
    balanced = _classify(objective, theta * jnp.asarray(scales, dtype), X, Y, spectrum=None,
                         global_min=global_min, grad_tol=None, eig_tol=None, spec=spec,
                         loss_name=loss, method=method, k=k, seed=seed, dtype=dtype)
    return _unbalanced(balanced, scales, grad_norm)


def _classify(objective: Objective, theta, X, Y, *, spectrum: Spectrum | None,
              global_min: float | None, grad_tol: float | None, eig_tol: float | None,
              spec: ModelSpec | None, loss_name: str | None, method: str, k: int,
              seed: int, dtype) -> CriticalPoint:
    """:func:`classify_critical_point` at θ as it is (no balancing)."""
    theta = jnp.asarray(theta, dtype)
    X = jnp.asarray(X, dtype)
    Y = jnp.asarray(Y, dtype)
    n = int(theta.shape[0])
    value, grad = _value_and_grad(objective, theta, X, Y)
    loss, grad_norm = float(value), float(jnp.linalg.norm(grad))
    if not (np.isfinite(loss) and np.isfinite(grad_norm)):
        raise InputError(NON_FINITE_MESSAGE)
    if spectrum is None:
        lanczos = method == "lanczos" or (method == "auto" and n > MAX_PARAMS_EXACT_HESSIAN)
        spectrum = hessian_spectrum(objective, theta, X, Y, method=method, k=k, seed=seed,
                                    density=lanczos, dtype=dtype)
    lam = np.asarray(spectrum.eigenvalues, dtype=np.float64)
    r = default_tolerance(dtype)
    scale = spectrum.scale
    eig_tol = r * scale if eig_tol is None else float(eig_tol)
    if grad_tol is None:
        grad_tol = r * max(abs(loss), scale * float(jnp.linalg.norm(theta)))
    notes: list[str] = []
    neg, pos = lam < -eig_tol, lam > eig_tol
    zero = ~neg & ~pos
    n_neg, n_pos, n_zero = int(neg.sum()), int(pos.sum()), int(zero.sum())
    index = _index(spectrum, lam, eig_tol, n, notes)
    trusted_min = global_min is not None and (spec is None or spec.kind == "linear")
    if global_min is not None:
        notes.append(f"loss − known global minimum = {loss - global_min:.3e}.")
    vecs = None if spectrum.eigenvectors is None else np.asarray(spectrum.eigenvectors)
    null = vecs[:, zero] if vecs is not None else np.zeros((n, 0))
    # the smallest computed eigenvalues include every |λ| ≤ τ one
    null_known = spectrum.complete or (lam.size > 0 and lam[: max(1, lam.size // 2)].max()
                                       > eig_tol)
    rng = np.random.default_rng(seed)
    result = partial(CriticalPoint, loss=loss, grad_norm=grad_norm, eigenvalues=lam,
                     index=index, grad_tol=float(grad_tol), eig_tol=float(eig_tol),
                     n_params=n, n_negative=n_neg, n_zero=n_zero, n_positive=n_pos,
                     global_min=global_min, notes=notes)

    if grad_norm > grad_tol:
        notes.insert(0, f"‖∇L‖ = {grad_norm:.2e} > τ_g = {grad_tol:.1e}.")
        g = np.asarray(grad, dtype=np.float64)
        return result(verdict="not critical", descent_direction=-g / grad_norm)

    kinks = _relu_kinks(spec, np.asarray(theta), np.asarray(X)) if spec is not None else 0
    if kinks:
        notes.append(f"{kinks} pre-activation(s) sit exactly on a ReLU kink (0 on a data "
                     "point): derivatives use relu'(0) = 0; the one-sided directions were "
                     "probed by evaluating the loss.")
    T, sym_names = (_symmetry_tangents(spec, np.asarray(theta))
                    if spec is not None and n_zero else (np.zeros((n, 0)), set()))
    explained = _explained_dimensions(null, T)
    if explained:
        notes.append(f"{n_zero} zero eigenvalue(s) (|λ| ≤ {eig_tol:.1e}), {explained} of "
                     f"them along {' and '.join(sorted(sym_names))}: these flat directions "
                     "are expected.")

    def with_direction(verdict, found, why):
        notes.insert(0, why)
        if found is None:
            return result(verdict=verdict)
        d, step, drop = found
        return result(verdict=verdict, descent_direction=np.asarray(d), descent_step=step,
                      descent_drop=drop)

    if n_neg:
        most_negative = (vecs[:, int(np.argmin(lam))], None, None) if vecs is not None else None
        top_known = spectrum.complete or lam.size > 1
        if n_pos:
            return with_direction("strict saddle", most_negative,
                                  f"λ_min = {lam.min():.3e} < −τ and λ_max = {lam.max():.3e} > τ.")
        if n_zero == 0 and top_known:
            return result(verdict="local maximum")
        rise = _probe(objective, theta, X, Y, _directions(null, n, rng, []), -1.0, loss)
        if rise is not None:
            return with_direction("strict saddle", most_negative,
                                  f"λ_min = {lam.min():.3e} < −τ and the loss rises by "
                                  f"{rise[2]:.2e} along a null direction.")
        notes.insert(0, "negative semidefinite with zero modes and no rise found: possibly a "
                        "non-strict local maximum.")
        return result(verdict="degenerate, inconclusive")
    if n_zero == 0:
        notes.insert(0, f"every eigenvalue > τ = {eig_tol:.1e} (λ_min = {lam.min():.3e}).")
        return result(verdict="strict local minimum")

    extra = []
    if spec is not None and spec.kind == "linear" and spec.depth >= 1:
        extra.append(balanced_top_singular_direction(np.asarray(X), np.asarray(Y),
                                                     spec.layer_sizes))
    # Only a piecewise-linear net has plateaus flat to rounding with a drop past a kink; an
    # analytic loss (e.g. a deep linear net at its origin, L − L(θ + s d) ∝ s^L) that first
    # looks flat and then drops is descending to high order.
    flat = spec is None or spec.activation in _PIECEWISE_LINEAR
    found = _probe(objective, theta, X, Y, _directions(null, n, rng, extra), 1.0, loss,
                   flat_start=_FLAT_START if flat else 0)
    if found is not None:
        return with_direction("degenerate saddle", found,
                              f"PSD Hessian with {n_zero} zero eigenvalue(s), but the loss "
                              f"drops by {found[2]:.2e} at step {found[1]:.2e} along a probed "
                              "direction.")
    # Relative to the loss's own scale (that of the zero parameters, ‖Y‖²/2m for a linear
    # net), so that L ≈ L* ≈ 0 (a nearly exact fit) compares rounding with rounding.
    loss_scale = abs(float(objective(jnp.zeros_like(theta), X, Y))) if trusted_min else 0.0
    loss_tol = r * max(abs(loss), abs(global_min or 0.0), loss_scale,
                       float(jnp.finfo(dtype).tiny))
    if trusted_min and loss > global_min + loss_tol:
        return with_direction("degenerate saddle", None,
                              "PSD Hessian with zero modes and no descent found by probing, "
                              "but the loss is above the known global minimum and every "
                              "local minimum of a deep linear net is global (Kawaguchi 2016).")
    if trusted_min and abs(loss - global_min) <= loss_tol:
        return with_direction("non-strict local minimum", None,
                              "PSD Hessian with zero modes at the known global minimum value.")
    certified = null_known and vecs is not None and explained == n_zero
    if null_known and vecs is not None and not certified and spec is not None:
        softmax = loss_name == "cross_entropy" and spec.layer_sizes[-1] >= 2
        fibre = _output_fibre_tangent(spec, np.asarray(theta), np.asarray(X), dtype, rng,
                                      centred=softmax)
        certified = fibre is not None and _explained_dimensions(null, fibre) == n_zero
        if certified:
            notes.append("every zero mode keeps the outputs on the data unchanged"
                         + (" up to a shift common to all logits (softmax ignores it)"
                            if softmax else "")
                         + ", and the set of such parameters is a manifold here.")
    if certified:
        return with_direction("non-strict local minimum", None,
                              f"PSD Hessian whose {n_zero} zero mode(s) all run along a "
                              "manifold of equal loss (symmetries or unchanged outputs), and "
                              "no descent found by probing: a manifold of minima, positive "
                              "definite across it (Morse–Bott).")
    return with_direction("degenerate, inconclusive", None,
                          f"PSD Hessian with {n_zero - explained} zero mode(s) that no "
                          "symmetry explains, and no descent found by probing.")


def _unbalanced(point: CriticalPoint, scales: np.ndarray, grad_norm: float) -> CriticalPoint:
    """The verdict at the balanced point s ⊙ θ, restated for θ (see :func:`unit_balancing`).

    A ray ``s ⊙ θ + t d`` is ``s ⊙ (θ + t d / s)`` and the loss is the same on both, so the
    descent direction at θ is ``d / s`` (normalised, its step rescaled).
    """
    direction, step = point.descent_direction, point.descent_step
    if direction is not None:
        d = np.asarray(direction) / scales
        length = float(np.linalg.norm(d))
        direction = d / length
        step = None if step is None else step * length
    lo, hi = float(np.min(scales)), float(np.max(scales))
    note = (f"θ is far from balanced along its rescaling orbit (per-unit scalings "
            f"{lo:.2g}–{hi:.2g}): classified at the balanced point, which has the same "
            f"function, loss and Hessian inertia; there ‖∇L‖ = {point.grad_norm:.2e}, and "
            "the eigenvalues and tolerances shown are its own.")
    return dataclasses.replace(point, grad_norm=grad_norm, descent_direction=direction,
                               descent_step=step, notes=[*point.notes, note])


def _index(spectrum: Spectrum, lam: np.ndarray, eig_tol: float, n: int,
           notes: list[str]) -> float:
    """Fraction of eigenvalues below −τ: exact, SLQ estimate, or a lower bound."""
    n_neg = int(np.sum(lam < -eig_tol))
    if spectrum.complete:
        return n_neg / n
    if spectrum.slq_nodes is not None:
        w = np.where(spectrum.slq_nodes < -eig_tol, spectrum.slq_weights, 0.0)
        notes.append("index estimated by stochastic Lanczos quadrature.")
        return float(np.mean(np.sum(w, axis=1)))
    notes.append("index is a lower bound: only the ends of the spectrum were computed.")
    return n_neg / n
