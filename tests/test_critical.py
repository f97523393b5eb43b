"""Critical-point verdicts at the points whose nature theory settles, and the saddle finder."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import compute
from compute._critical import VERDICTS, classify_critical_point, unit_balancing
from compute._datasets import load_dataset
from compute._hessian import hessian_matrix
from compute._saddle import find_critical_point
from compute._theory import deep_linear_global_minimizer, swirszcz_points
from tests.reference import fd_hessian, np_squared_loss


def _np_linear_loss(theta, X, Y, sizes):
    return np_squared_loss(theta, sizes, X, Y)


@pytest.fixture(scope="module")
def teacher():
    ds = load_dataset("linear_teacher", d_x=5, d_y=3, n_samples=40, seed=1)
    return ds.X, ds.Y


def _linear(X, Y, widths):
    spec = compute.make_model("linear", X.shape[1], Y.shape[1], widths)
    return spec, compute.flat_objective(spec)


def _sigma_eigen(X, Y):
    C = Y.T @ X
    G_inv = np.linalg.inv(X.T @ X)
    lam, U = np.linalg.eigh(C @ G_inv @ C.T)
    return C, G_inv, lam[::-1], U[:, ::-1]


# --- toy objectives: one per verdict --------------------------------------------------

def _toy(f):
    return lambda t, X, Y: f(t)


@pytest.mark.parametrize("f, verdict", [
    (lambda t: t[0] ** 2 + 3 * t[1] ** 2, "strict local minimum"),
    (lambda t: t[0] ** 2 - t[1] ** 2, "strict saddle"),
    (lambda t: -t[0] ** 2 - 2 * t[1] ** 2, "local maximum"),
    (lambda t: t[0] ** 2 + t[1] ** 3, "degenerate saddle"),
    (lambda t: t[0] ** 2 + t[1] ** 4, "degenerate, inconclusive"),
    (lambda t: -t[0] ** 2 + t[1] ** 4, "strict saddle"),
])
def test_toy_verdicts(f, verdict):
    dummy = jnp.zeros((1, 1))
    point = classify_critical_point(_toy(f), jnp.zeros(2), dummy, dummy)
    assert point.verdict == verdict
    assert point.verdict in VERDICTS
    if verdict == "degenerate saddle":
        d, s = point.descent_direction, point.descent_step
        assert float(f(jnp.asarray(s * d))) < -0.5 * point.descent_drop < 0


def test_not_critical_points_downhill():
    f = lambda t: (t[0] - 1) ** 2 + t[1] ** 2
    dummy = jnp.zeros((1, 1))
    point = classify_critical_point(_toy(f), jnp.zeros(2), dummy, dummy)
    assert point.verdict == "not critical"
    np.testing.assert_allclose(point.descent_direction, [1.0, 0.0])
    assert point.grad_norm == pytest.approx(2.0)


def test_tolerances_are_relative_to_the_scales():
    f = lambda t: t[0] ** 2 + 3 * t[1] ** 2 + 2.0
    dummy = jnp.zeros((1, 1))
    theta = jnp.array([1e-9, 0.0])
    small = classify_critical_point(_toy(f), theta, dummy, dummy)
    big = classify_critical_point(_toy(lambda t: 1e4 * f(t)), theta, dummy, dummy)
    assert small.verdict == big.verdict == "strict local minimum"
    assert big.eig_tol == pytest.approx(1e4 * small.eig_tol)
    assert big.grad_tol == pytest.approx(1e4 * small.grad_tol)
    assert small.eig_tol == pytest.approx(1e-6 * 6.0)


# --- deep linear nets: THEORY.md §1 ---------------------------------------------------

@pytest.mark.parametrize("widths", [(3, 3), (2, 2, 2), (3, 3, 3, 3, 3)])
def test_origin_of_deep_linear_net_is_a_degenerate_saddle(teacher, widths):
    # no closed-form L* is passed: the verdict rests on the probe alone (with 5 hidden
    # layers the loss leaves the origin like s⁶, flat to rounding at the smallest steps)
    X, Y = teacher
    spec, obj = _linear(X, Y, widths)
    theta = jnp.zeros(spec.n_params)
    np.testing.assert_array_equal(np.asarray(hessian_matrix(obj, theta, X, Y)), 0.0)
    point = classify_critical_point(obj, theta, X, Y, spec=spec)
    assert point.grad_norm == 0.0
    assert point.verdict == "degenerate saddle"
    assert np.all(point.eigenvalues == 0)
    step = point.descent_step * point.descent_direction
    base = _np_linear_loss(np.zeros(spec.n_params), X, Y, spec.layer_sizes)
    assert _np_linear_loss(step, X, Y, spec.layer_sizes) < base - 0.5 * point.descent_drop


def test_origin_of_one_hidden_layer_is_a_strict_saddle(teacher):
    X, Y = teacher
    d_1 = 4
    spec, obj = _linear(X, Y, (d_1,))
    point = classify_critical_point(obj, jnp.zeros(spec.n_params), X, Y, spec=spec)
    assert point.verdict == "strict saddle"
    sigma = np.linalg.svd(Y.T @ X, compute_uv=False) / X.shape[0]
    nonzero = np.concatenate([np.repeat(sigma, d_1), -np.repeat(sigma, d_1)])
    expected = np.sort(np.r_[nonzero, np.zeros(spec.n_params - nonzero.size)])
    np.testing.assert_allclose(point.eigenvalues, expected, atol=1e-10)
    assert point.index == pytest.approx(d_1 * sigma.size / spec.n_params)


def test_baldi_hornik_saddle_is_strict_with_the_predicted_loss(teacher):
    X, Y = teacher
    m = X.shape[0]
    C, G_inv, lam, U = _sigma_eigen(X, Y)
    spec, obj = _linear(X, Y, (2,))
    for subset, verdict in (((0, 2), "strict saddle"), ((1, 2), "strict saddle"),
                            ((0, 1), "non-strict local minimum")):
        UI = U[:, list(subset)]
        theta = np.concatenate([(UI.T @ C @ G_inv).ravel(), UI.ravel()])
        point = classify_critical_point(obj, theta, X, Y, spec=spec)
        predicted = (np.sum(Y**2) - lam[list(subset)].sum()) / (2 * m)
        assert point.loss == pytest.approx(predicted, rel=1e-10)
        assert point.grad_norm < 1e-10
        assert point.verdict == verdict
        if verdict == "strict saddle":
            assert point.eigenvalues[0] < -1e-3 * np.abs(point.eigenvalues).max()


def _bh_point(X, Y, subset, a=1.0):
    """Baldi–Hornik point of THEORY.md §2, moved along the orbit W_1 → a W_1, W_2 → W_2 / a."""
    C, G_inv, _, U = _sigma_eigen(X, Y)
    UI = U[:, list(subset)]
    return np.concatenate([(a * UI.T @ C @ G_inv).ravel(), (UI / a).ravel()])


@pytest.mark.parametrize("subset", [(0, 1), (0, 2), (1, 2)])
def test_verdicts_do_not_depend_on_the_point_of_the_rescaling_orbit(teacher, subset):
    """Far along the orbit (a = 30, 300) or with targets in other units (Y × 10³) the
    negative eigenvalues of a Baldi–Hornik saddle are ~10⁻⁸ of λ_max, below a tolerance
    relative to λ_max, yet the point is the same saddle: the count of negative eigenvalues
    must be the one of a finite-difference Hessian at the balanced point (Sylvester)."""
    X, Y = teacher
    spec, obj = _linear(X, Y, (2,))
    sizes = spec.layer_sizes
    H = fd_hessian(lambda t: _np_linear_loss(t, X, Y, sizes), _bh_point(X, Y, subset))
    scale = np.abs(np.linalg.eigvalsh(H)).max()
    expected = int(np.sum(np.linalg.eigvalsh(H) < -1e-4 * scale))
    verdict = "non-strict local minimum" if subset == (0, 1) else "strict saddle"
    assert (expected == 0) == (subset == (0, 1))
    for a, units in ((30.0, 1.0), (300.0, 1.0), (1.0, 1e3)):
        theta = _bh_point(X, Y * units, subset, a)
        point = classify_critical_point(obj, theta, X, Y * units, spec=spec)
        assert point.verdict == verdict, (a, units)
        assert point.n_negative == expected, (a, units)
        assert any("far from balanced" in note for note in point.notes)
        assert point.loss == pytest.approx(
            _np_linear_loss(theta, X, Y * units, sizes), rel=1e-10)
    # the balancing itself: same function, every hidden unit's in- and out-norms equal
    theta = _bh_point(X, Y, subset, 30.0)
    s = unit_balancing(spec, theta)
    W1, W2 = (s * theta)[:10].reshape(2, 5), (s * theta)[10:].reshape(3, 2)
    np.testing.assert_allclose(np.linalg.norm(W1, axis=1), np.linalg.norm(W2, axis=0),
                               rtol=1e-9)
    np.testing.assert_allclose(W2 @ W1, theta[10:].reshape(3, 2) @ theta[:10].reshape(2, 5),
                               rtol=1e-12)
    assert unit_balancing(spec, s * theta) is None


def test_a_non_critical_point_far_along_the_orbit_is_not_critical(teacher):
    """The global minimum with W_2 nudged is not critical wherever on its orbit it sits
    (‖θ‖ is then dominated by W_1, ‖H‖ by the W_2 block: a gradient tolerance relative to
    ‖H‖‖θ‖ alone would call it critical); the descent direction reported for θ goes down."""
    X, Y = teacher
    spec, obj = _linear(X, Y, (2,))
    sizes = spec.layer_sizes
    for a in (1.0, 30.0, 300.0):
        theta = _bh_point(X, Y, (0, 1), a)
        theta[10:] += 3e-3 / a
        point = classify_critical_point(obj, theta, X, Y, spec=spec)
        assert point.verdict == "not critical", a
        base = _np_linear_loss(theta, X, Y, sizes)
        step = 1e-4 / np.linalg.norm(np.asarray(point.descent_direction))
        assert _np_linear_loss(theta + step * point.descent_direction, X, Y, sizes) < base


def test_closed_form_global_minimum_is_a_minimum(teacher):
    X, Y = teacher
    widths = (4, 4)
    spec, obj = _linear(X, Y, widths)
    theta = deep_linear_global_minimizer(X, Y, widths, seed=2)
    _, _, lam, _ = _sigma_eigen(X, Y)
    L_star = (np.sum(Y**2) - lam[:3].sum()) / (2 * X.shape[0])  # r = min(4, d_y = 3)
    for global_min in (L_star, None):
        point = classify_critical_point(obj, theta, X, Y, spec=spec, global_min=global_min)
        assert point.loss == pytest.approx(L_star, rel=1e-10)
        assert point.eigenvalues[0] > -point.eig_tol  # PSD
        assert point.n_zero > 0 and point.n_negative == 0
        assert point.verdict == "non-strict local minimum"
        assert any("rescaling symmetry" in note for note in point.notes)


def test_known_global_minimum_is_evidence_only_where_local_minima_are_global():
    # spec=None: the caller vouches that every local minimum is global (as for deep linear
    # nets), so a flat point above the known minimum is a saddle even when no probe finds
    # the way down (here x² + y⁸ rises along every probed ray)
    f = lambda t, X, Y: 1.0 + t[0] ** 2 + t[1] ** 8
    dummy = jnp.zeros((1, 1))
    point = classify_critical_point(f, jnp.zeros(2), dummy, dummy, global_min=0.5)
    assert point.verdict == "degenerate saddle"
    assert point.descent_direction is None
    assert point.gap_to_global_min == pytest.approx(0.5)
    assert classify_critical_point(f, jnp.zeros(2), dummy, dummy).verdict == (
        "degenerate, inconclusive")
    # a ReLU net can have bad local minima: its global minimum value decides nothing
    d1 = swirszcz_points()["d1_local"]
    ds = load_dataset("swirszcz_d1")
    spec = compute.make_model("mlp", 1, 1, (1,), activation="relu")
    point = classify_critical_point(compute.flat_objective(spec), d1.theta, ds.X, ds.Y,
                                    spec=spec, global_min=14 / 10)
    assert point.verdict == "non-strict local minimum"
    assert point.gap_to_global_min == pytest.approx(0.4)


# --- Świrszcz et al. D1: a non-global local minimum on a ReLU kink --------------------

def test_swirszcz_d1_local_minimum_is_classified_a_local_minimum():
    point_data = swirszcz_points()["d1_local"]
    ds = load_dataset("swirszcz_d1")
    spec = compute.make_model("mlp", 1, 1, (1,), activation="relu")
    obj = compute.flat_objective(spec)
    theta = point_data.theta
    np.testing.assert_array_equal(theta, [1.0, -3.0, 1.0, 0.0])  # (w, b, v, c), THEORY §3
    point = classify_critical_point(obj, theta, ds.X, ds.Y, spec=spec)
    assert 2 * 5 * point.loss == pytest.approx(18.0)
    assert point.verdict == "non-strict local minimum"
    assert point.n_zero == 1 and point.n_negative == 0
    assert any("rescaling symmetry" in note for note in point.notes)
    assert any("kink" in note for note in point.notes)
    # independent check that nothing nearby is lower (numpy, relu'(0) irrelevant here)
    x, y = ds.X[:, 0], ds.Y[:, 0]
    rng = np.random.default_rng(0)
    for radius in (1e-3, 1e-2, 1e-1):
        d = rng.standard_normal((2000, 4))
        t = theta + radius * d / np.linalg.norm(d, axis=1, keepdims=True)
        pred = t[:, 2:3] * np.maximum(t[:, :1] * x + t[:, 1:2], 0) + t[:, 3:4]
        assert np.min(np.sum((pred - y) ** 2, axis=1)) >= 18.0 - 1e-9


# --- the saddle finder -----------------------------------------------------------------

@pytest.mark.parametrize("method", ["levenberg_marquardt", "newton_abs"])
@pytest.mark.parametrize("units", [1.0, 1e-5])
def test_saddle_finder_converges_to_a_baldi_hornik_saddle(teacher, method, units):
    # units: X and Y in other units scale L, ∇L and H by units²; the finder must not
    # mistake the smaller gradients for convergence
    X, Y = (units * a for a in teacher)
    m = X.shape[0]
    C, G_inv, lam, U = _sigma_eigen(X, Y)
    spec, obj = _linear(X, Y, (2,))
    UI = U[:, [0, 2]]
    saddle = np.concatenate([(UI.T @ C @ G_inv).ravel(), UI.ravel()])
    start = saddle + 0.03 * np.random.default_rng(3).standard_normal(saddle.size)
    theta, info = find_critical_point(obj, start, X, Y, method=method, spec=spec)
    assert info.converged and info.grad_norm <= info.tol
    assert info.grad_norm_history[0] > 1e3 * info.grad_norm
    assert info.loss == pytest.approx((np.sum(Y**2) - lam[[0, 2]].sum()) / (2 * m), rel=1e-9)
    assert info.classification.verdict == "strict saddle"
    # the product W2 W1 (invariant under the symmetry) is the saddle's U_I U_Iᵀ C (XᵀX)⁻¹
    W1, W2 = theta[:10].reshape(2, 5), theta[10:].reshape(3, 2)
    np.testing.assert_allclose(W2 @ W1, UI @ UI.T @ C @ G_inv, atol=1e-8)


def test_saddle_finder_rejects_unknown_method(teacher):
    X, Y = teacher
    _, obj = _linear(X, Y, (2,))
    with pytest.raises(compute.InputError, match="method"):
        find_critical_point(obj, np.zeros(16), X, Y, method="gradient")


def test_non_finite_points_get_no_verdict():
    dummy = jnp.zeros((1, 1))
    f = lambda t, X, Y: jnp.exp(1e3 * t[0]) + t[1] ** 2
    with pytest.raises(compute.InputError, match="not finite"):
        classify_critical_point(f, jnp.array([1.0, 0.0]), dummy, dummy)


def test_a_dead_relu_unit_with_the_mean_output_is_a_local_minimum():
    """THEORY.md §3: a hidden layer inactive on every sample, output bias at mean(y), is a
    local minimum, although raising the unit's bias far enough wakes it and lowers the loss
    (a drop at a finite distance, not a descent direction)."""
    from compute._datasets import load_dataset

    ds = load_dataset("swirszcz_d1")
    X, Y = ds.X, ds.Y
    spec = compute.make_model("mlp", 1, 1, (1,), activation="relu")
    theta = np.array([0.3, -2.0, 1.7, float(Y.mean())])        # w, b, v, c
    assert np.all(0.3 * X[:, 0] - 2.0 < 0)                      # dead on every sample
    objective = compute.flat_objective(spec, "squared")
    cp = compute.classify_critical_point(objective, theta, X, Y, spec=spec, seed=0)
    assert cp.verdict == "non-strict local minimum"
    assert cp.loss == pytest.approx(np.sum((Y - Y.mean()) ** 2) / (2 * len(Y)))
    # a bad one: THEORY.md's global minimum (w, b, v, c) = (−1, 0, 3, 0) is lower (14 / 2m)
    assert float(objective(np.array([-1.0, 0.0, 3.0, 0.0]), X, Y)) == pytest.approx(1.4)
    assert cp.loss > 1.4 + 0.5


def test_a_cross_entropy_minimum_is_a_manifold_of_minima():
    """Softmax cross-entropy sees logits only up to a shift common to all classes, so an
    affine two-class model realised by a 2-2-2 MLP with biases (identity activation) has 9
    flat directions at its minimum: 4 of the hidden layer's rescaling, 2 of the hidden bias
    absorbed by the output bias, 3 of the logit shift. The minimum comes from scipy's
    multinomial logistic regression (convex), written into the MLP with W_1 = I, b_1 = 0."""
    from scipy.optimize import minimize

    ds = load_dataset("two_moons", seed=0, noise=0.3)
    X, Y = ds.X, ds.Y

    def np_cross_entropy(w):        # the class-1 logit minus the class-0 logit: a·x + c
        z = X @ w[:2] + w[2]
        return float(np.mean(np.logaddexp(0, z) - Y[:, 1] * z))

    w = minimize(np_cross_entropy, np.zeros(3), method="BFGS", options={"gtol": 1e-12}).x
    theta = np.r_[np.eye(2).ravel(), 0.0, 0.0, np.r_[0.0, 0.0, w[:2]], 0.0, w[2]]
    spec = compute.make_model("mlp", 2, 2, (2,), activation="identity")
    obj = compute.flat_objective(spec, "cross_entropy")
    point = classify_critical_point(obj, theta, X, Y, spec=spec, loss="cross_entropy")
    assert point.loss == pytest.approx(np_cross_entropy(w), rel=1e-12)
    assert point.verdict == "non-strict local minimum"
    assert point.n_zero == 9 and point.n_negative == 0
    assert any("shift common to all logits" in note for note in point.notes)
    # without the loss's name the logit shift is not known to be a symmetry
    assert classify_critical_point(obj, theta, X, Y, spec=spec).verdict == (
        "degenerate, inconclusive")
