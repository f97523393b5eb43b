"""Morse-index maps against independent references: numpy finite-difference Hessians of a
numpy forward pass, and the closed form at the origin of a deep linear net (THEORY.md §1).

The Lanczos estimate is checked as what it is: the Hutchinson estimate ``mean_p z_pᵀ P z_p``
of ``tr P`` (P the projector on eigenvalues below −τ), exact per probe once the Krylov space
is exhausted, so its mean lies within a few standard errors of the count and its standard
error matches the Rademacher variance ``2 Σ_{i≠j} P_ij²`` of a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from compute import InputError, _index_map, make_model
from compute._index_map import (
    MAX_INDEX_MAP_LANCZOS_WORK,
    MAX_PARAMS_INDEX_MAP,
    coarse_to_fine_levels,
    lanczos_index_map_work,
    morse_index_map,
)
from tests.reference import fd_hessian


def _numpy_loss(theta, X, Y, sizes, loss):
    """tanh MLP with biases, written from THEORY.md's flat order (W row-major, then b)."""
    h, o = X, 0
    for k in range(len(sizes) - 1):
        rows, cols = sizes[k + 1], sizes[k]
        W = theta[o:o + rows * cols].reshape(rows, cols)
        o += rows * cols
        b = theta[o:o + rows]
        o += rows
        z = h @ W.T + b
        h = np.tanh(z) if k < len(sizes) - 2 else z
    if loss == "squared":
        return 0.5 * np.sum((h - Y) ** 2) / X.shape[0]
    return np.mean(np.logaddexp(0.0, -Y * h))  # logistic loss, targets ±1


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_index_matches_finite_difference_hessian(loss):
    rng = np.random.default_rng(7)
    sizes = (2, 3, 1)
    spec = make_model("mlp", 2, 1, [3], activation="tanh", bias=True)
    n = spec.n_params
    X = rng.standard_normal((12, 2))
    Y = rng.standard_normal((12, 1)) if loss == "squared" else np.sign(rng.standard_normal((12, 1)))
    center, d1, d2 = (rng.standard_normal(n) for _ in range(3))
    alphas, betas = np.linspace(-1.0, 1.0, 5), np.linspace(-0.5, 0.7, 4)  # not square
    result = morse_index_map(spec, loss, center, d1, d2, alphas, betas, X, Y)
    assert result["index"].shape == (4, 5) and result["lambda_min"].shape == (4, 5)
    cells = [(0, 0), (3, 4), (1, 2), (2, 0), (0, 3)]
    seen = set()
    for i, j in cells:
        theta = center + alphas[j] * d1 + betas[i] * d2
        lam = np.linalg.eigvalsh(fd_hessian(lambda t: _numpy_loss(t, X, Y, sizes, loss), theta))
        # generic points: no eigenvalue near the sign boundary, so the count is unambiguous
        assert np.min(np.abs(lam)) > 1e-4 * np.max(np.abs(lam))
        expected = int(np.sum(lam < 0))
        seen.add(expected)
        assert result["index"][i, j] == expected
        assert result["fraction"][i, j] == pytest.approx(expected / n)
        assert result["lambda_min"][i, j] == pytest.approx(lam[0], rel=1e-5, abs=1e-6)
        assert result["lambda_max"][i, j] == pytest.approx(lam[-1], rel=1e-5, abs=1e-6)
    assert len(seen) >= 2  # cells with different indices: the orientation is checked too
    assert result["index"].dtype.kind == "i"


@pytest.mark.parametrize("rank", [2, 1])
def test_index_at_origin_of_one_hidden_layer_linear_net(rank):
    """THEORY.md §1: at θ = 0 the Hessian has ±σ_j(C)/m, each d_1 times, so the index is
    d_1 · rank(C) with C = YᵀX, and λ_min = −σ_1(C)/m."""
    rng = np.random.default_rng(3)
    d_x, d_1, d_y, m = 3, 4, 2, 20
    spec = make_model("linear", d_x, d_y, [d_1])
    X = rng.standard_normal((m, d_x))
    B = rng.standard_normal((d_x, rank)) @ rng.standard_normal((rank, d_y))
    Y = X @ B + (0.1 * rng.standard_normal((m, d_y)) if rank == d_y else 0.0)
    C = Y.T @ X
    sigma = np.linalg.svd(C, compute_uv=False)
    assert np.linalg.matrix_rank(C) == rank
    n = spec.n_params
    d1, d2 = rng.standard_normal(n), rng.standard_normal(n)
    result = morse_index_map(spec, "squared", np.zeros(n), d1, d2, [-0.3, 0.0, 0.3],
                             [0.0, 0.2], X, Y)
    assert result["index"][0, 1] == d_1 * rank
    assert result["lambda_min"][0, 1] == pytest.approx(-sigma[0] / m, rel=1e-10)
    assert result["lambda_max"][0, 1] == pytest.approx(sigma[0] / m, rel=1e-10)


def test_origin_of_two_hidden_layer_linear_net_has_index_zero():
    """THEORY.md §1: with two hidden layers the Hessian at the origin is exactly 0."""
    rng = np.random.default_rng(4)
    spec = make_model("linear", 2, 2, [3, 3])
    X = rng.standard_normal((10, 2))
    Y = X @ rng.standard_normal((2, 2))
    n = spec.n_params
    result = morse_index_map(spec, "squared", np.zeros(n), rng.standard_normal(n),
                             rng.standard_normal(n), [0.0, 1.0], [0.0], X, Y)
    assert result["index"][0, 0] == 0
    assert result["lambda_min"][0, 0] == 0.0 and result["lambda_max"][0, 0] == 0.0
    assert result["index"][0, 1] > 0  # away from it, negative curvature appears


def test_explicit_tolerance_counts_only_below_minus_tol():
    rng = np.random.default_rng(5)
    spec = make_model("linear", 3, 2, [4])
    X = rng.standard_normal((20, 3))
    Y = X @ rng.standard_normal((3, 2))
    sigma = np.linalg.svd(Y.T @ X, compute_uv=False) / 20  # |negative eigenvalues| at θ = 0
    n = spec.n_params
    zero, d = np.zeros(n), rng.standard_normal(n)
    between = 0.5 * (sigma[0] + sigma[1])
    result = morse_index_map(spec, "squared", zero, d, d, [0.0], [0.0], X, Y, tol=between)
    assert result["index"][0, 0] == 4  # only −σ_1/m, d_1 = 4 times, lies below −tol


def test_refuses_large_models_and_bad_input():
    spec = make_model("mlp", 20, 2, [30], activation="tanh")
    assert spec.n_params > MAX_PARAMS_INDEX_MAP
    n = spec.n_params
    X, Y = np.zeros((4, 20)), np.zeros((4, 2))
    with pytest.raises(InputError, match="limited to"):
        morse_index_map(spec, "squared", np.zeros(n), np.ones(n), np.ones(n), [0.0], [0.0],
                        X, Y, method="exact")
    small = make_model("mlp", 2, 1, [3], activation="tanh")
    k = small.n_params
    with pytest.raises(InputError, match="tolerance"):
        morse_index_map(small, "squared", np.zeros(k), np.ones(k), np.ones(k), [0.0], [0.0],
                        np.zeros((4, 2)), np.zeros((4, 1)), tol=-1.0)
    with pytest.raises(InputError):
        morse_index_map(small, "squared", np.zeros(k + 1), np.ones(k), np.ones(k), [0.0],
                        [0.0], np.zeros((4, 2)), np.zeros((4, 1)))
    big = make_model("mlp", 10, 1, [20], activation="tanh")  # 241 parameters
    b = big.n_params
    with pytest.raises(InputError, match="operations"):
        morse_index_map(big, "squared", np.zeros(b), np.ones(b), np.ones(b),
                        np.linspace(0, 1, 201), np.linspace(0, 1, 201),
                        np.zeros((10_000, 10)), np.zeros((10_000, 1)))


@pytest.mark.parametrize("n", [2, 11, 12, 31, 41, 60, 61, 101, 201])
def test_coarse_to_fine_levels(n):
    levels = coarse_to_fine_levels(n)
    assert levels[-1] == n and 1 <= len(levels) <= 3
    assert all(a < b for a, b in zip(levels, levels[1:], strict=False))
    if n > 11:
        assert levels[0] <= 16
    for coarse, fine in zip(levels, levels[1:], strict=False):
        if (fine - 1) % (coarse - 1) == 0:  # nested: coarse points are fine points
            g, G = np.linspace(-1, 1, coarse), np.linspace(-1, 1, fine)
            assert all(np.min(np.abs(G - x)) < 1e-12 for x in g)
    assert coarse_to_fine_levels(61) == (11, 31, 61)


def test_coarse_to_fine_levels_rejects_bad_sizes():
    with pytest.raises(InputError):
        coarse_to_fine_levels(0)
    with pytest.raises(InputError):
        coarse_to_fine_levels(61, levels=0)


# --------------------------------------------------------------------------- Lanczos estimate


def _projector_below(H, tau):
    """Spectral projector of the symmetric H on its eigenvalues below −τ, and those
    eigenvalues (numpy ``eigh``)."""
    lam, U = np.linalg.eigh(0.5 * (H + H.T))
    V = U[:, lam < -tau]
    return V @ V.T, lam


def _rademacher_stderr(P, probes):
    """Standard error of the mean of ``zᵀPz`` over Rademacher probes: the variance of one
    sample is ``2 Σ_{i≠j} P_ij²``."""
    off = np.sum(P * P) - np.sum(np.diag(P) ** 2)
    return np.sqrt(2.0 * off / probes)


def _second_difference(f, theta, u, v, h=1e-3):
    """``uᵀ ∇²f(θ) v`` by central differences of f along u and v (O(h²) accurate)."""
    return (f(theta + h * u + h * v) - f(theta + h * u - h * v) - f(theta - h * u + h * v)
            + f(theta - h * u - h * v)) / (4 * h * h)


def test_lanczos_with_a_full_krylov_space_is_hutchinson_of_the_exact_projector():
    """steps = n: each probe's quadrature is exactly zᵀPz (P from a finite-difference
    Hessian of a numpy loss), the Ritz extremes are the eigenvalue extremes."""
    rng = np.random.default_rng(11)
    sizes = (2, 4, 3, 1)
    spec = make_model("mlp", 2, 1, [4, 3], activation="tanh", bias=True)
    n = spec.n_params
    assert n == 31
    X, Y = rng.standard_normal((15, 2)), rng.standard_normal((15, 1))
    center, d1, d2 = (0.5 * rng.standard_normal(n) for _ in range(3))
    alphas, betas = np.array([-0.8, 0.0, 0.9]), np.array([-0.5, 0.6])
    probes = 24
    est = morse_index_map(spec, "squared", center, d1, d2, alphas, betas, X, Y,
                          method="lanczos", lanczos_steps=n, probes=probes, seed=3,
                          rel_tol=1e-6)
    exact = morse_index_map(spec, "squared", center, d1, d2, alphas, betas, X, Y)
    assert est["method"] == "lanczos" and exact["method"] == "exact"
    assert est["lanczos_steps"] == n and est["probes"] == probes
    assert est["index_estimate"].shape == (2, 3) and est["index"].dtype.kind == "i"
    counts = set()
    for i in range(2):
        for j in range(3):
            theta = center + alphas[j] * d1 + betas[i] * d2
            H = fd_hessian(lambda t: _numpy_loss(t, X, Y, sizes, "squared"), theta)
            lam = np.linalg.eigvalsh(H)
            scale = np.max(np.abs(lam))
            tau = 1e-6 * scale
            # no eigenvalue within the differences' error (≪ 1e-6·scale) of −τ: a clear count
            assert np.min(np.abs(lam + tau)) > 1e-6 * scale
            P, _ = _projector_below(H, tau)
            count = int(round(np.trace(P)))
            counts.add(count)
            se = est["index_stderr"][i, j]
            assert abs(est["index_estimate"][i, j] - count) <= 4 * se + 1e-6
            assert 0.4 < se / _rademacher_stderr(P, probes) < 2.5
            assert est["index_low"][i, j] <= est["index_estimate"][i, j] \
                <= est["index_high"][i, j]
            assert est["lambda_min"][i, j] == pytest.approx(lam[0], rel=1e-5)
            assert est["lambda_max"][i, j] == pytest.approx(lam[-1], rel=1e-5)
            # the dense path (itself checked against finite differences above) to rounding
            assert est["lambda_min"][i, j] == pytest.approx(exact["lambda_min"][i, j], rel=1e-8)
            assert est["lambda_max"][i, j] == pytest.approx(exact["lambda_max"][i, j], rel=1e-8)
    assert len(counts) >= 2
    assert np.allclose(est["fraction"], est["index_estimate"] / n)


@pytest.mark.parametrize("vmapped", [False, True])
def test_lanczos_at_the_origin_of_a_wide_linear_net_has_the_closed_form_index(vmapped,
                                                                             monkeypatch):
    """THEORY.md §1 at θ = 0 of a one-hidden-layer linear net (600 parameters, so auto
    picks Lanczos): the Hessian is −(1/m)·C coupling W₂ and W₁, with eigenvalues
    ±σ_j(C)/m (d₁ times each) and zeros. Its 2·rank + 1 distinct eigenvalues are fewer
    than the steps, so the quadrature is exact: the estimate is Hutchinson's of d₁·rank.
    ``vmapped``: the accelerators' path (vmapped chunks of cells), forced on the CPU."""
    if vmapped:
        monkeypatch.setattr(_index_map, "_SEQUENTIAL_LANCZOS_PLATFORMS", ())
    rng = np.random.default_rng(12)
    d_x, d_1, d_y, m = 12, 40, 3, 25
    spec = make_model("linear", d_x, d_y, [d_1])
    n = spec.n_params
    assert n == 600 > MAX_PARAMS_INDEX_MAP
    X, Y = rng.standard_normal((m, d_x)), rng.standard_normal((m, d_y))
    C = Y.T @ X
    sigma = np.linalg.svd(C, compute_uv=False)
    # the closed-form Hessian: L ≈ const − (1/m)⟨W₂W₁, C⟩ + O(θ⁴) near 0, so
    # ∂²L/∂(W₁)_{ai}∂(W₂)_{ka} = −C_{ki}/m (flat order: W₁ row-major, then W₂)
    H = np.zeros((n, n))
    w2 = d_1 * d_x
    for a in range(d_1):
        for k in range(d_y):
            H[a * d_x:(a + 1) * d_x, w2 + k * d_1 + a] = -C[k] / m
    H = H + H.T
    P, lam = _projector_below(H, 1e-2 * sigma[0] / m)
    assert np.allclose(lam[[0, -1]], [-sigma[0] / m, sigma[0] / m], rtol=1e-12)
    assert round(np.trace(P)) == d_1 * d_y
    probes = 16
    d1, d2 = rng.standard_normal(n), rng.standard_normal(n)
    result = morse_index_map(spec, "squared", np.zeros(n), d1, d2, [0.0, 0.5], [0.0], X, Y,
                             lanczos_steps=12, probes=probes)
    assert result["method"] == "lanczos"
    assert result["relative_tolerance"] == pytest.approx(1e-2)
    se = result["index_stderr"][0, 0]
    assert abs(result["index_estimate"][0, 0] - d_1 * d_y) <= 4 * se
    assert 0.4 < se / _rademacher_stderr(P, probes) < 2.5
    assert result["lambda_min"][0, 0] == pytest.approx(-sigma[0] / m, rel=1e-10)
    assert result["lambda_max"][0, 0] == pytest.approx(sigma[0] / m, rel=1e-10)


@pytest.mark.slow
def test_lanczos_brackets_the_exact_count_of_a_600_parameter_mlp():
    """steps < n: the mean Chebyshev–Markov–Stieltjes bracket holds the Hutchinson estimate,
    so the count of ``jax.hessian``'s eigenvalues (that Hessian checked against second
    differences of the numpy loss) lies in it up to the probes' noise; the Ritz extremes
    lie inside, and near, the spectrum's."""
    import jax

    from compute import flat_objective

    rng = np.random.default_rng(13)
    sizes = (3, 20, 20, 2)
    spec = make_model("mlp", 3, 2, [20, 20], activation="tanh", bias=True)
    n = spec.n_params
    assert MAX_PARAMS_INDEX_MAP < n < 700
    X, Y = rng.standard_normal((30, 3)), rng.standard_normal((30, 2))
    center = 0.5 * rng.standard_normal(n)
    d1, d2 = rng.standard_normal(n), rng.standard_normal(n)
    d1, d2 = (d / np.linalg.norm(d) * np.linalg.norm(center) for d in (d1, d2))
    alphas, betas = np.array([-0.5, 0.5]), np.array([0.0, 0.7])
    result = morse_index_map(spec, "squared", center, d1, d2, alphas, betas, X, Y, seed=1)
    assert result["method"] == "lanczos" and result["lanczos_steps"] == 64
    hessian = jax.jit(jax.hessian(flat_objective(spec, "squared")))
    f = lambda t: _numpy_loss(t, X, Y, sizes, "squared")
    for i, j in [(0, 0), (1, 1)]:
        theta = center + alphas[j] * d1 + betas[i] * d2
        H = np.asarray(hessian(theta, X, Y))
        for _ in range(3):  # the reference Hessian against the numpy loss
            u, v = (w / np.linalg.norm(w) for w in rng.standard_normal((2, n)))
            assert u @ H @ v == pytest.approx(_second_difference(f, theta, u, v), rel=1e-5,
                                              abs=1e-7 * np.linalg.norm(H, 2))
        lam = np.linalg.eigvalsh(0.5 * (H + H.T))
        scale = np.max(np.abs(lam))
        count = np.sum(lam < -result["relative_tolerance"] * scale)
        se = result["index_stderr"][i, j]
        low, high = result["index_low"][i, j], result["index_high"][i, j]
        assert low - 4 * se <= count <= high + 4 * se
        assert high - low < 0.15 * n  # the default threshold is resolved by 64 nodes
        # Ritz values lie inside the spectrum; the extreme ones have converged
        assert lam[0] - 1e-9 * scale <= result["lambda_min"][i, j] <= lam[0] + 1e-6 * scale
        assert lam[-1] - 1e-6 * scale <= result["lambda_max"][i, j] <= lam[-1] + 1e-9 * scale


def test_auto_method_and_lanczos_input_errors():
    rng = np.random.default_rng(14)
    at_limit = make_model("linear", 9, 1, [50])          # 500 parameters: exact
    above = make_model("linear", 166, 1, [3])            # 501 parameters: Lanczos
    assert at_limit.n_params == MAX_PARAMS_INDEX_MAP == above.n_params - 1
    for spec, method in ((at_limit, "exact"), (above, "lanczos")):
        n, d_x = spec.n_params, spec.layer_sizes[0]
        out = morse_index_map(spec, "squared", rng.standard_normal(n), np.ones(n), np.ones(n),
                              [0.0], [0.0], rng.standard_normal((3, d_x)),
                              rng.standard_normal((3, 1)), lanczos_steps=4, probes=2)
        assert out["method"] == method
    small = make_model("mlp", 2, 1, [3], activation="tanh")
    k = small.n_params
    args = (small, "squared", np.zeros(k), np.ones(k), np.ones(k), [0.0], [0.0],
            np.zeros((4, 2)), np.zeros((4, 1)))
    for bad, match in [({"method": "dense"}, "method"),
                       ({"method": "lanczos", "lanczos_steps": k + 1}, "Lanczos steps"),
                       ({"method": "lanczos", "lanczos_steps": 0}, "Lanczos steps"),
                       ({"method": "lanczos", "probes": 0}, "probes"),
                       ({"method": "lanczos", "probes": 65}, "probes"),
                       ({"method": "lanczos", "seed": -1}, "seed"),
                       ({"method": "lanczos", "rel_tol": -1e-3}, "relative tolerance")]:
        with pytest.raises(InputError, match=match):
            morse_index_map(*args, **bad)
    n = above.n_params  # one cell's Lanczos basis (32 × 501 numbers) exceeds 64 KiB
    with pytest.raises(InputError, match="memory budget"):
        morse_index_map(above, "squared", np.zeros(n), np.ones(n), np.ones(n), [0.0], [0.0],
                        np.zeros((3, 166)), np.zeros((3, 1)), memory_budget=2**16)
    big = make_model("mlp", 10, 1, [50], activation="tanh")  # 601 parameters
    b = big.n_params
    cells, m = 201 * 201, 10_000
    assert lanczos_index_map_work(cells, 8, 64, b, m) > MAX_INDEX_MAP_LANCZOS_WORK
    with pytest.raises(InputError, match="operations"):
        morse_index_map(big, "squared", np.zeros(b), np.ones(b), np.ones(b),
                        np.linspace(0, 1, 201), np.linspace(0, 1, 201),
                        np.zeros((m, 10)), np.zeros((m, 1)))


# --------------------------------------------------------------------------- dashboard


def test_dashboard_task_estimates_the_closed_form_index_above_the_exact_limit():
    """The Explore view's task on a 720-parameter one-hidden-layer linear net centred at
    the origin (THEORY.md §1: index d₁ · rank(YᵀX), λ_min = −σ₁(YᵀX)/m there): the payload
    says "lanczos", carries the standard error, and the view draws the estimate with it."""
    from compute._datasets import load_dataset
    from landscape_app import tasks
    from landscape_app.compute_server import decode_payload, encode_payload
    from landscape_app.explore import index_map
    from landscape_app.settings import DEFAULTS

    s = {**DEFAULTS, "dataset": "linear_teacher", "n_samples": 40, "widths": [60],
         "steps": 10, "lambda_every": 0, "plane": "random", "center": "init", "init": "zero",
         "init_scale": 0.0, "span": 0.5, "imap_grid": 3, "explore": "index_map"}
    p = decode_payload(encode_payload(tasks.run("index_map", s, lambda f, t="": None)))
    ds = load_dataset("linear_teacher", seed=s["data_seed"], n_samples=40)
    C = np.asarray(ds.Y).T @ np.asarray(ds.X)
    sigma = np.linalg.svd(C, compute_uv=False)
    rank = int(np.sum(sigma > 1e-9 * sigma[0]))
    m = np.asarray(ds.X).shape[0]
    assert p["method"] == "lanczos" and p["n_params"] == 60 * (ds.X.shape[1] + ds.Y.shape[1])
    assert p["n_params"] > MAX_PARAMS_INDEX_MAP
    assert sigma[rank - 1] > 1e-2 * sigma[0]  # every negative eigenvalue is above the cut
    se = p["index_stderr"][1, 1]
    assert 0 < se and abs(p["index_estimate"][1, 1] - 60 * rank) <= 4 * se
    assert p["lambda_min"][1, 1] == pytest.approx(-sigma[0] / m, rel=1e-8)
    assert np.array_equal(p["index"], np.rint(p["index_estimate"]))
    fig, status = index_map.render(p, s)
    assert "estimated by stochastic Lanczos quadrature (± s.e.)" in status
    heat = fig.data[0]
    assert np.allclose(np.asarray(heat.z, float), p["index_estimate"])
    assert np.allclose(np.asarray(heat.customdata, float), p["index_stderr"])
    assert "±" in heat.hovertemplate and "estimated" in fig.layout.annotations[0].text
    header, rows = index_map._tables(p)["index_map.csv"]
    assert header[-2:] == ["index_estimate", "index_stderr"]
    assert np.allclose(rows[:, -1], p["index_stderr"].ravel())
