"""Loss surfaces: the loss on a grid of a plane ``center + α·d1 + β·d2``, and on 1-D cuts.

Two methods, picked by ``method="auto"``:

* ``"direct"`` (any network and loss): one compiled kernel evaluates the network at every
  grid point, ``vmap`` over a chunk of B points inside ``lax.map`` over chunks, samples as
  the last (vector) axis. Since every layer is affine in the plane coordinates,
  ``W_k(α, β) = C_k + α·D_k + β·E_k``, the first layer's pre-activations of all grid points
  are ``Z_0 + α·Z_1 + β·Z_2`` with ``Z_0 = C_1 Xᵀ + c_1`` etc. computed once (three
  d_1 × m products), so per point the first layer costs two multiply-adds per unit and
  sample instead of a d_1 × d_x product; deeper layers are per-point products (with a
  ReLU, each one product and one ``max``: biases ride along as per-unit offsets, see
  :func:`_direct_kernel`). Memory is
  bounded by ``memory_budget`` whatever the grid and the dataset: B is derived from it,
  and the samples are split into chunks (partial sums added) when one point alone would
  not fit.
* ``"polynomial"`` (identity activation, squared loss: deep linear nets, biases allowed):
  the end-to-end map ``P(α, β) = W_L(α, β)⋯W_1(α, β)`` is a matrix polynomial of degree L
  and the loss ``(1/2m)(tr(P XᵀX Pᵀ) − 2 tr(P XᵀY) + ‖Y‖²)`` a polynomial of degree 2L in
  (α, β). Its coefficients are computed once, in float64, from XᵀX, XᵀY and ‖Y‖² (biases by
  the usual augmentation ``[W b; 0 1]`` and ``[X 1]``), and the grid is evaluated from them
  by Horner's rule: exact up to rounding, and independent of m.

Compiled kernels are reused: :func:`_direct_kernel` keeps one jitted function per (model,
loss, masking) — a small documented module-level compile cache — and ``jax.jit`` reuses its
compilation for every call with the same shapes (grid chunk, sample chunk).
Non-finite losses (overflow far from the center) come back as inf/nan cells, not errors.

References:
  Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", arXiv:1712.09913.
  Goodfellow, Vinyals & Saxe 2015, arXiv:1412.6544 (1-D cuts).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from compute._errors import InputError
from compute._limits import MAX_CUT_POINTS, MAX_GRID, MAX_SAMPLES, MEMORY_BUDGET_BYTES
from compute._losses import LOSSES
from compute._models import ACTIVATIONS, ModelSpec, unflatten_params

__all__ = [
    "SURFACE_METHODS",
    "deep_linear_surface_polynomial",
    "evaluate_polynomial_surface",
    "loss_cut",
    "loss_surface",
    "surface_method",
]

SURFACE_METHODS = ("auto", "direct", "polynomial")
# Grid points per chunk are also capped so that one chunk's activations stay near this size.
# Measured on the 2-core CPU (10-16-16-16-4 ReLU MLP, m = 2000, float32, 101 × 101 grid, best
# of several rounds): 16 MiB (B = 131 points per chunk) 0.26–0.29 s, 8 MiB 0.28–0.30 s,
# 2 MiB 0.35–0.37 s; with one busy process on the other core 0.49 / 0.49 / 0.53 s; and in a
# fresh process 0.31–0.44 / 0.54–0.71 / 1.4–1.9 s: glibc's malloc returns freed buffers
# below its (adaptive) thresholds to the OS and page-faults them in again for every chunk,
# which large chunks avoid.
_CHUNK_TARGET_BYTES = 16 * 2**20
_MIN_BUDGET_BYTES = 2**16


def loss_surface(spec: ModelSpec, loss: str, center, d1, d2, alphas, betas, X, Y, *,
                 memory_budget: int = MEMORY_BUDGET_BYTES, method: str = "auto",
                 dtype=None) -> np.ndarray:
    """The loss on the grid ``center + alphas[j]·d1 + betas[i]·d2``.

    Args:
      spec, loss: the network and the loss name (``"squared"`` or ``"cross_entropy"``).
      center, d1, d2: flat ``(n_params,)`` vectors in THEORY.md's order.
      alphas, betas: 1-D grid coordinates, at most ``MAX_GRID`` each.
      X, Y: data, ``(m, d_x)`` and ``(m, d_y)``.
      memory_budget: bytes of working memory the evaluation may use.
      method: ``"auto"`` (polynomial for identity activation with squared loss, else
        direct), ``"direct"`` or ``"polynomial"``.
      dtype: compute precision of the direct method, float32 or float64; default: X's
        dtype if it is one of them, else float32. The polynomial method is float64.

    Returns:
      float64 array ``(len(betas), len(alphas))``: ``loss[i, j]`` at ``(alphas[j], betas[i])``.
    """
    alphas = _coordinates(alphas, "alphas", MAX_GRID)
    betas = _coordinates(betas, "betas", MAX_GRID)
    center, d1, d2, X, Y = _check_problem(spec, loss, center, d1, d2, X, Y)
    budget = _check_budget(memory_budget)
    chosen = surface_method(spec, loss, method, memory_budget=budget)
    if chosen == "polynomial":
        coeffs = _polynomial(spec, center, d1, d2, X, Y, budget)
        return evaluate_polynomial_surface(coeffs, alphas, betas)
    A, B = np.meshgrid(alphas, betas)
    points = np.stack([A.ravel(), B.ravel()], axis=1)
    values = _direct_losses(spec, loss, center, d1, d2, points, X, Y,
                            _compute_dtype(dtype, X), budget)
    return values.reshape(len(betas), len(alphas))


def loss_cut(spec: ModelSpec, loss: str, center, direction, ts, X, Y, *,
             memory_budget: int = MEMORY_BUDGET_BYTES, method: str = "auto",
             dtype=None) -> np.ndarray:
    """The loss along the line ``center + ts[k]·direction``: float64 array ``(len(ts),)``.

    Same arguments and methods as :func:`loss_surface`; at most ``MAX_CUT_POINTS`` points.
    """
    ts = _coordinates(ts, "ts", MAX_CUT_POINTS)
    center, d1, d2, X, Y = _check_problem(spec, loss, center, direction,
                                          np.zeros_like(np.asarray(center, np.float64)),
                                          X, Y)
    budget = _check_budget(memory_budget)
    if surface_method(spec, loss, method, memory_budget=budget) == "polynomial":
        coeffs = _polynomial(spec, center, d1, d2, X, Y, budget)
        return evaluate_polynomial_surface(coeffs, ts, np.zeros(1))[0]
    points = np.stack([ts, np.zeros_like(ts)], axis=1)
    return _direct_losses(spec, loss, center, d1, d2, points, X, Y,
                          _compute_dtype(dtype, X), budget)


def surface_method(spec: ModelSpec, loss: str, method: str = "auto", *,
                   memory_budget: int = MEMORY_BUDGET_BYTES) -> str:
    """The method :func:`loss_surface` uses: ``"direct"`` or ``"polynomial"``.

    ``"auto"`` takes the polynomial whenever it applies (identity activation, squared loss)
    and its coefficients fit in the memory budget.
    """
    if method not in SURFACE_METHODS:
        raise InputError(f"the surface method must be one of {', '.join(SURFACE_METHODS)}, "
                         f"got {method!r}.")
    applies = spec.activation == "identity" and loss == "squared"
    if method == "polynomial":
        if not applies:
            raise InputError("the polynomial surface needs a network without nonlinearity "
                             "(deep linear) and the squared loss; use method 'direct'.")
        return "polynomial"
    if method == "auto" and applies and _polynomial_bytes(spec) <= memory_budget:
        return "polynomial"
    return "direct"


def deep_linear_surface_polynomial(spec: ModelSpec, center, d1, d2, X, Y) -> np.ndarray:
    """Coefficients of the squared loss on a plane of a deep linear net, a polynomial.

    With ``W_k(α, β) = C_k + α·D_k + β·E_k`` (blocks of center, d1, d2) the end-to-end map
    ``P = W_L⋯W_1`` has degree L in (α, β), and

        L(α, β) = (1/2m) (tr(P XᵀX Pᵀ) − 2 tr(P XᵀY) + ‖Y‖_F²) = Σ_{p,q} c[p, q] α^p β^q,

    of degree 2L. Biases (identity-activation MLPs) enter by augmentation. All in float64.

    Returns:
      float64 array ``c`` of shape ``(2L + 1, 2L + 1)``, ``c[p, q]`` the coefficient of
      ``α^p β^q`` (zero where ``p + q > 2L``).
    """
    if spec.activation != "identity":
        raise InputError("the polynomial surface needs a network without nonlinearity "
                         "(deep linear); this one uses " + spec.activation + ".")
    center, d1, d2, X, Y = _check_problem(spec, "squared", center, d1, d2, X, Y)
    return _polynomial(spec, center, d1, d2, X, Y, None)


def evaluate_polynomial_surface(coeffs, alphas, betas) -> np.ndarray:
    """``loss[i, j] = Σ_{p,q} coeffs[p, q] · alphas[j]^p · betas[i]^q`` by Horner's rule.

    Returns float64 ``(len(betas), len(alphas))``.
    """
    c = np.asarray(coeffs, dtype=np.float64)
    if c.ndim != 2:
        raise InputError(f"polynomial coefficients must be a 2-D array, got shape {c.shape}.")
    a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    b = np.asarray(betas, dtype=np.float64).reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        inner = np.zeros((c.shape[1], a.size))          # inner[q, j] = Σ_p c[p, q] a_j^p
        for p in range(c.shape[0] - 1, -1, -1):
            inner = inner * a[None, :] + c[p, :, None]
        out = np.zeros((b.size, a.size))                # out[i, j] = Σ_q inner[q, j] b_i^q
        for q in range(c.shape[1] - 1, -1, -1):
            out = out * b[:, None] + inner[q][None, :]
    return out


# --------------------------------------------------------------------------- direct method


def _direct_losses(spec, loss, center, d1, d2, points, X, Y, dtype, budget) -> np.ndarray:
    """Mean loss at each of ``points`` (P, 2) by the compiled kernel; float64 ``(P,)``."""
    m = X.shape[0]
    itemsize = np.dtype(dtype).itemsize
    sample_chunk, n_sample_chunks, point_chunk = _chunk_plan(spec, m, len(points), itemsize,
                                                             budget)
    n_point_chunks = -(-len(points) // point_chunk)
    padded = np.zeros((n_point_chunks * point_chunk, 2))
    padded[:len(points)] = points
    ab = jnp.asarray(padded.reshape(n_point_chunks, point_chunk, 2), dtype=dtype)
    vectors = [jnp.asarray(v, dtype=dtype) for v in (center, d1, d2)]
    masked = n_sample_chunks * sample_chunk != m
    kernel = _direct_kernel(spec, loss, masked)
    total = np.zeros(len(points))
    for s in range(n_sample_chunks):
        rows = slice(s * sample_chunk, min(m, (s + 1) * sample_chunk))
        Xs, Ys = _pad_rows(X[rows], sample_chunk), _pad_rows(Y[rows], sample_chunk)
        mask = (np.arange(sample_chunk) < rows.stop - rows.start).astype(np.float64)
        sums = kernel(*vectors, ab, jnp.asarray(Xs, dtype), jnp.asarray(Ys, dtype),
                      jnp.asarray(mask, dtype))
        total += np.asarray(sums, dtype=np.float64).reshape(-1)[:len(points)]
    return total / m


@functools.lru_cache(maxsize=64)
def _direct_kernel(spec: ModelSpec, loss: str, masked: bool):
    """The jitted grid kernel of one (model, loss, masking); cached, since a new Python
    function would make ``jax.jit`` trace and compile again.

    ``kernel(center, d1, d2, ab, X, Y, mask)`` with ``ab`` (chunks, B, 2), ``X`` (s, d_x),
    ``Y`` (s, d_y), ``mask`` (s,) returns ``(chunks, B)`` sums over the s samples.

    With a ReLU (or identity) and biases, the hidden layers carry their bias as a per-unit
    offset instead of adding it to every sample: write ``h_{k−1} = g + o`` (o per unit); then
    ``z_k = W_k g + t_k`` with ``t_k = W_k o + b_k``, and ``relu(v + t) = max(v, −t) + t``
    gives ``h_k = g' + t_k`` with ``g' = max(W_k g, −t_k)``. Each hidden layer is then one
    product and one ``max``, with no broadcast add between them, which the compiler fuses
    into the product (on the 2-core CPU, 1.2–1.4× faster than ``relu(W h + b)``); the output
    layer's offset moves onto the targets, ``z − y = W_L g − (y − t_L)``. Same numbers up to
    rounding.
    """
    act = ACTIVATIONS[spec.activation]
    offsets = spec.bias and spec.activation in _OFFSET_ACTIVATIONS
    relu = spec.activation == "relu"

    def kernel(center, d1, d2, ab, X, Y, mask):
        C, D, E = (unflatten_params(spec, v) for v in (center, d1, d2))
        XT, YT = X.T, Y.T
        weights = mask if masked else None
        # First layer, all grid points at once: Z(α, β) = Z0 + α·Z1 + β·Z2, (d_1, s).
        Z0, Z1, Z2 = (_affine(layer, XT) for layer in (C[0], D[0], E[0]))
        later = list(zip(C[1:], D[1:], E[1:], strict=True))

        def at_point(a, b):
            z = Z0 + a * Z1 + b * Z2
            h, t = act(z), None                 # with offsets: the activation is h + t
            for i, (c_k, d_k, e_k) in enumerate(later):
                last = i == len(later) - 1
                W = c_k["W"] + a * d_k["W"] + b * e_k["W"]
                v = W @ h
                bias = c_k["b"] + a * d_k["b"] + b * e_k["b"] if "b" in c_k else None
                if offsets:                     # z = v + t_next
                    t_next = bias if t is None else bias + W @ t
                    if last:
                        return _summed_loss(loss, v, t_next, YT, weights)
                    h, t = (jnp.maximum(v, -t_next[:, None]) if relu else v), t_next
                else:
                    z = v if bias is None else v + bias[:, None]
                    if last:
                        break
                    h = act(z)
            return _summed_loss(loss, z, None, YT, weights)

        def chunk(ab_chunk):
            return jax.vmap(at_point)(ab_chunk[:, 0], ab_chunk[:, 1])

        return jax.lax.map(chunk, ab)

    return jax.jit(kernel)


def _affine(layer, XT):
    z = layer["W"] @ XT
    return z + layer["b"][:, None] if "b" in layer else z


def _summed_loss(loss: str, v, t, YT, weights):
    """``Σ_s w_s ℓ(v_s + t, y_s)`` over the samples (columns) of ``v`` (d_y, s).

    ``t`` (d_y,): a per-unit offset of the outputs, or None; ``weights`` (s,) or None
    (all 1). The squared loss is one reduction over units and samples,
    ``½ Σ (v − (y − t))²`` (two chained reductions run slower in the fused kernel).
    """
    if loss == "squared":
        r = v - YT if t is None else v - (YT - t[:, None])
        rr = r * r if weights is None else r * r * weights[None, :]
        return 0.5 * jnp.sum(rr)
    z = v if t is None else v + t[:, None]
    if z.shape[0] == 1:  # logistic loss, targets ±1 (compute._losses.cross_entropy_loss)
        per_sample = jax.nn.softplus(-YT[0] * z[0])
    else:
        per_sample = -jnp.sum(YT * jax.nn.log_softmax(z, axis=0), axis=0)
    return jnp.sum(per_sample) if weights is None else jnp.sum(per_sample * weights)


# Activations σ with σ(v + t) = σ̃(v, t) + t for a cheap σ̃: relu (max(v, −t)) and identity.
_OFFSET_ACTIVATIONS = ("relu", "identity")


def _chunk_plan(spec: ModelSpec, m: int, n_points: int, itemsize: int,
                budget: int) -> tuple[int, int, int]:
    """``(sample_chunk, n_sample_chunks, point_chunk)`` keeping the kernel within budget.

    Working memory is estimated per sample as the inputs, targets and the three first-layer
    pre-activations (fixed), plus, per grid point of a chunk, twice every layer's activations.
    """
    widths = spec.layer_sizes[1:]
    fixed = 2 * itemsize * (3 * widths[0] + spec.layer_sizes[0] + widths[-1] + 1)
    per_point = 2 * itemsize * sum(widths)
    sample_chunk = max(1, min(m, budget // (fixed + per_point)))
    n_sample_chunks = -(-m // sample_chunk)
    sample_chunk = -(-m // n_sample_chunks)             # even chunks, least padding
    room = max(0, budget - sample_chunk * fixed) // (sample_chunk * per_point)
    cache_cap = _CHUNK_TARGET_BYTES // (sample_chunk * itemsize * max(widths))
    point_chunk = max(1, min(n_points, room, cache_cap))
    n_point_chunks = -(-n_points // point_chunk)
    point_chunk = -(-n_points // n_point_chunks)        # even chunks, least padding
    return sample_chunk, n_sample_chunks, point_chunk


def _pad_rows(A: np.ndarray, rows: int) -> np.ndarray:
    if A.shape[0] == rows:
        return A
    out = np.zeros((rows, A.shape[1]), dtype=A.dtype)
    out[:A.shape[0]] = A
    return out


# --------------------------------------------------------------------------- polynomial


def _polynomial_bytes(spec: ModelSpec) -> int:
    """Float64 bytes of the largest coefficient arrays of the polynomial method."""
    L = spec.n_layers
    extra = 1 if spec.bias else 0
    d_y = spec.layer_sizes[-1] + extra
    widest = max(spec.layer_sizes) + extra
    d_x = spec.layer_sizes[0] + extra
    terms = (L + 1) ** 2
    return 8 * (3 * terms * d_y * widest + terms * terms + d_x * d_x)


def _augmented_layers(spec: ModelSpec, flat: np.ndarray, constant: float) -> list[np.ndarray]:
    """Each layer as one matrix, ``[[W, b], [0, constant]]`` when the net has biases."""
    mats = []
    for layer in unflatten_params(spec, flat):
        W = np.asarray(layer["W"], dtype=np.float64)
        if "b" in layer:
            top = np.concatenate([W, np.asarray(layer["b"], np.float64)[:, None]], axis=1)
            bottom = np.zeros((1, W.shape[1] + 1))
            bottom[0, -1] = constant
            W = np.concatenate([top, bottom], axis=0)
        mats.append(W)
    return mats


def _polynomial(spec, center, d1, d2, X, Y, budget) -> np.ndarray:
    if budget is not None and _polynomial_bytes(spec) > budget:
        raise InputError("the polynomial surface of this network does not fit in the memory "
                         "budget; use method 'direct'.")
    L = spec.n_layers
    C = _augmented_layers(spec, center, 1.0)
    D = _augmented_layers(spec, d1, 0.0)
    E = _augmented_layers(spec, d2, 0.0)
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    m, d_y = Y.shape
    if spec.bias:
        X = np.concatenate([X, np.ones((m, 1))], axis=1)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is a result: inf/NaN cells
        return _polynomial_coefficients(L, C, D, E, X, Y, m, d_y)


def _polynomial_coefficients(L, C, D, E, X, Y, m, d_y) -> np.ndarray:
    # P[i, j] = coefficient of α^i β^j of W_L⋯W_1 (rows: outputs), built from the output
    # side so the intermediate arrays stay d_y × d_k.
    P = np.zeros((L + 1, L + 1, d_y, C[-1].shape[1]))
    P[0, 0], P[1, 0], P[0, 1] = C[-1][:d_y], D[-1][:d_y], E[-1][:d_y]
    for c_k, d_k, e_k in zip(C[-2::-1], D[-2::-1], E[-2::-1], strict=True):
        nxt = P @ c_k
        nxt[1:] += P[:-1] @ d_k
        nxt[:, 1:] += P[:, :-1] @ e_k
        P = nxt
    Sxx, Sxy, yy = X.T @ X, X.T @ Y, float(np.sum(Y * Y))
    T = P @ Sxx                                          # (L+1, L+1, d_y, d_x)
    gram = np.einsum("ijac,klac->ijkl", T, P)            # tr(P_ij Sxx P_klᵀ)
    linear = np.einsum("ijac,ca->ij", P, Sxy)            # tr(P_ij Sxy)
    deg = 2 * L
    coeffs = np.zeros((deg + 1, deg + 1))
    i = np.arange(L + 1)
    pp = i[:, None, None, None] + i[None, None, :, None]
    qq = i[None, :, None, None] + i[None, None, None, :]
    np.add.at(coeffs, (pp, qq), gram)
    coeffs[:L + 1, :L + 1] -= 2.0 * linear
    coeffs[0, 0] += yy
    return coeffs / (2.0 * m)


# --------------------------------------------------------------------------- validation


def _coordinates(values, name: str, limit: int) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a list of numbers.") from None
    if arr.ndim != 1 or not 1 <= arr.size <= limit:
        raise InputError(f"{name} must be a 1-D list of 1 to {limit} numbers, "
                         f"got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or inf.")
    return arr


def _check_problem(spec: ModelSpec, loss: str, center, d1, d2, X, Y):
    if loss not in LOSSES:
        raise InputError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}.")
    vectors = []
    for name, v in (("the center", center), ("direction 1", d1), ("direction 2", d2)):
        arr = np.asarray(v, dtype=np.float64)
        if arr.shape != (spec.n_params,):
            raise InputError(f"{name} must be a flat vector of the model's {spec.n_params} "
                             f"parameters, got shape {arr.shape}.")
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{name} contains NaN or inf.")
        vectors.append(arr)
    data = []
    for name, A, width in (("X", X, spec.layer_sizes[0]), ("Y", Y, spec.layer_sizes[-1])):
        arr = np.asarray(A)
        if arr.dtype not in (np.float32, np.float64):  # keep float32/float64, else float64
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError):
                raise InputError(f"{name} must hold numbers.") from None
        if arr.ndim != 2 or arr.shape[1] != width:
            raise InputError(f"{name} must be a matrix with {width} columns for this model, "
                             f"got shape {arr.shape}.")
        if not 1 <= arr.shape[0] <= MAX_SAMPLES:
            raise InputError(f"{name} must have between 1 and {MAX_SAMPLES} rows, "
                             f"got {arr.shape[0]}.")
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{name} contains NaN or inf.")
        data.append(arr)
    if data[0].shape[0] != data[1].shape[0]:
        raise InputError(f"X has {data[0].shape[0]} rows but Y has {data[1].shape[0]}.")
    return (*vectors, *data)


def _check_budget(budget) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) \
            or budget < _MIN_BUDGET_BYTES:
        raise InputError(f"the memory budget must be an integer of at least "
                         f"{_MIN_BUDGET_BYTES} bytes, got {budget!r}.")
    return int(budget)


def _compute_dtype(dtype, X: np.ndarray):
    if dtype is None:
        return X.dtype.type if X.dtype in (np.float32, np.float64) else np.float32
    try:
        chosen = np.dtype(dtype)
    except TypeError:
        chosen = None
    if chosen not in (np.float32, np.float64):
        raise InputError(f"the precision must be float32 or float64, got {dtype!r}.")
    return chosen.type

