"""Minimum-to-minimum paths (compute/_connect.py) against independent references.

References: the numpy loss of tests/reference.py at every reported point; the deep-linear
global minimum L* (closed form, THEORY.md §1); and a closed form for Świrszcz's D1
(THEORY.md §3), derived here:

    A 1-unit ReLU net f(x) = v relu(w x + b) + c with w = 0 is constant in x, so its loss
    is at least the best constant fit's, L_c = (1/2m) Σ (y_i − ȳ)². The bad minimum has
    w = 1 > 0 and the good one w = −1 < 0, so every continuous path between them crosses
    w = 0 and climbs to at least L_c. A path reaching no higher exists: at fixed w the
    outputs are linear in (v, c), so sliding (v, c) straight to (0, ȳ) keeps the loss
    (convex in the outputs) below max(L_end, L_c); with v = 0 the loss ignores w and b,
    so w can turn from 1 to −1 at L_c; then slide to the good minimum. Hence the lowest
    barrier from the bad minimum is exactly L_c − 18/(2m) (= 2.12 − 1.8 = 0.32 for D1),
    and the top of such a path is a critical point whose outputs are all ȳ.
"""

from __future__ import annotations

import numpy as np
import pytest

import compute
from compute import InputError, MinimumPath, classify_path_peak, minimum_energy_path
from compute._connect import MAX_PATH_IMAGES
from compute._datasets import load_dataset
from tests.reference import np_forward, np_squared_loss

SW_SIZES = (1, 1, 1)
DL_SIZES = (3, 3, 2)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def d1():
    """Świrszcz D1: data, model, the bad (local) and good (global) minima."""
    ds = load_dataset("swirszcz_d1")
    spec = compute.make_model("mlp", 1, 1, (1,), activation="relu")
    points = compute.swirszcz_points()
    return ds.X, ds.Y, spec, points["d1_local"].theta, points["d1_global"].theta


@pytest.fixture(scope="module")
def d1_paths(d1):
    X, Y, spec, bad, good = d1
    return {
        "neb": minimum_energy_path(spec, "squared", bad, good, X, Y, method="neb",
                                   n_images=17, steps=2000, lr=1e-2),
        "bezier": minimum_energy_path(spec, "squared", bad, good, X, Y, method="bezier",
                                      n_images=16, steps=1000, lr=1e-2, n_points=101),
    }


@pytest.fixture(scope="module")
def deep_linear():
    """A 3–3–2 linear net on a linear teacher and two global minima from different seeds."""
    ds = load_dataset("linear_teacher", d_x=3, d_y=2, n_samples=40, seed=1)
    spec = compute.make_model("linear", 3, 2, (3,))
    ends = []
    for seed in (0, 1):
        start = compute.initial_point(spec, seed=seed, dtype=np.float64)
        ends.append(compute.run_path(spec, "squared", start, ds.X, ds.Y, optimizer="gd",
                                     lr=0.1, steps=3000).final)
    l_star = compute.deep_linear_global_minimum(ds.X, ds.Y, (3,))
    return ds.X, ds.Y, spec, ends[0], ends[1], l_star


@pytest.fixture(scope="module")
def dl_paths(deep_linear):
    X, Y, spec, a, b, _ = deep_linear
    return {method: minimum_energy_path(spec, "squared", a, b, X, Y, method=method,
                                        n_images=9, steps=1000, lr=1e-2)
            for method in ("neb", "bezier")}


def _d1_loss(theta, X, Y):
    return np_squared_loss(theta, SW_SIZES, X, Y, act="relu", bias=True)


def _check_against_numpy(path: MinimumPath, a, b, np_loss):
    """Every reported number recomputed in numpy from the reported points."""
    K = path.t.size
    assert path.thetas.shape == (K, a.size) and path.loss.shape == (K,)
    assert path.t[0] == 0.0 and path.t[-1] == pytest.approx(1.0, abs=1e-15)
    assert np.all(np.diff(path.t) >= 0)
    np.testing.assert_allclose(path.thetas[0], a, rtol=0, atol=1e-15)
    np.testing.assert_allclose(path.thetas[-1], b, rtol=0, atol=1e-15)
    ref = np.array([np_loss(theta) for theta in path.thetas])
    np.testing.assert_allclose(path.loss, ref, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(path.straight_t, path.t)
    straight = np.array([np_loss((1 - t) * a + t * b) for t in path.t])
    np.testing.assert_allclose(path.straight_loss, straight, rtol=1e-10, atol=1e-14)
    assert path.barrier == pytest.approx(ref.max() - max(ref[0], ref[-1]), abs=1e-10)
    assert path.straight_barrier == pytest.approx(
        straight.max() - max(straight[0], straight[-1]), abs=1e-10)
    assert path.barrier >= -1e-12
    assert ref[path.peak] == ref.max()
    np.testing.assert_array_equal(path.peak_theta, path.thetas[path.peak])
    # the optimised path never climbs above the straight segment
    assert ref.max() <= straight.max() + 1e-9


# --------------------------------------------------------------------------- Świrszcz D1


@pytest.mark.parametrize("method", ["neb", "bezier"])
def test_d1_path_losses_match_numpy(d1, d1_paths, method):
    X, Y, _, bad, good = d1
    path = d1_paths[method]
    assert path.method == method
    _check_against_numpy(path, bad, good, lambda theta: _d1_loss(theta, X, Y))
    if method == "bezier":  # the reported points lie on the quadratic Bézier curve
        t = path.t[:, None]
        curve = (1 - t) ** 2 * bad + 2 * t * (1 - t) * path.control + t ** 2 * good
        np.testing.assert_allclose(path.thetas, curve, rtol=0, atol=1e-12)


def test_d1_barrier_matches_the_closed_form(d1, d1_paths):
    X, Y, _, bad, good = d1
    m = X.shape[0]
    constant_fit = float(np.sum((Y - Y.mean()) ** 2)) / (2 * m)  # 21.2 / 10
    bad_loss = 18.0 / (2 * m)                                     # THEORY.md §3
    assert _d1_loss(bad, X, Y) == pytest.approx(bad_loss, abs=1e-12)
    lowest = constant_fit - bad_loss                              # 0.32, module docstring
    neb, bezier = d1_paths["neb"], d1_paths["bezier"]
    assert neb.barrier == pytest.approx(lowest, abs=2e-3)
    assert neb.barrier > 0.25                       # a real barrier
    assert neb.straight_barrier > lowest + 0.1      # the segment climbs clearly higher
    # no continuous path can do better than the closed form; the curve is in between
    assert lowest - 1e-2 <= bezier.barrier <= bezier.straight_barrier + 1e-12


def test_d1_peak_is_classified_on_the_constant_fit(d1, d1_paths):
    X, Y, spec, bad, _ = d1
    peak = classify_path_peak(spec, "squared", d1_paths["neb"], X, Y, max_steps=30)
    assert peak.verdict in compute.VERDICTS
    # the top of the lowest path is a critical point whose outputs are all ȳ
    out = np_forward(peak.theta, SW_SIZES, X, act="relu", bias=True)
    np.testing.assert_allclose(out, np.full_like(out, Y.mean()), atol=1e-6)
    assert peak.loss == pytest.approx(float(np.sum((Y - Y.mean()) ** 2)) / (2 * X.shape[0]),
                                      abs=1e-8)
    eps = 1e-6
    grad = [(_d1_loss(peak.theta + eps * e, X, Y) - _d1_loss(peak.theta - eps * e, X, Y))
            / (2 * eps) for e in np.eye(peak.theta.size)]
    assert np.max(np.abs(grad)) < 1e-6
    assert peak.converged and peak.grad_norm < 1e-6
    # a critical point with a flat (dead or silenced) unit: its Hessian has zero modes, so
    # neither of the non-degenerate verdicts "strict local minimum" / "local maximum" fits
    assert peak.verdict not in ("not critical", "strict local minimum", "local maximum")
    w, b = peak.theta[0], peak.theta[1]
    if np.all(w * X[:, 0] + b < 0):
        # the unit is dead on every sample, the output bias at ȳ: a local minimum
        # (THEORY.md §3, dead units), flat until the unit wakes at a finite distance
        assert peak.verdict == "non-strict local minimum"
    np.testing.assert_array_equal(peak.start, d1_paths["neb"].peak_theta)
    assert peak.distance == pytest.approx(np.linalg.norm(peak.theta - peak.start), abs=1e-12)


# --------------------------------------------------------------------------- deep linear


@pytest.mark.slow
@pytest.mark.parametrize("method, relative", [("neb", 1e-6), ("bezier", 1e-2)])
def test_deep_linear_minima_connect_without_barrier(deep_linear, dl_paths, method, relative):
    """Every local minimum of a deep linear net is global (Kawaguchi 2016) and here the
    set of global minima is connected (hidden width 3 > rank 2): a path stays at L*.
    A quadratic Bézier curve cannot lie in that set exactly, so it gets a looser bound."""
    X, Y, spec, a, b, l_star = deep_linear
    np_loss = lambda theta: np_squared_loss(theta, DL_SIZES, X, Y)
    for end in (a, b):
        assert np_loss(end) == pytest.approx(l_star, abs=1e-10)
    assert np.linalg.norm(a - b) > 0.5  # two different minima
    straight_above = np_loss(0.5 * (a + b)) - l_star
    assert straight_above > 0.1  # the segment between them climbs clearly
    path = dl_paths[method]
    _check_against_numpy(path, a, b, np_loss)
    above = max(np_loss(theta) for theta in path.thetas) - l_star
    assert above <= relative * straight_above


@pytest.mark.slow
def test_deep_linear_peak_is_a_global_minimum(deep_linear, dl_paths):
    X, Y, spec, _, _, l_star = deep_linear
    peak = classify_path_peak(spec, "squared", dl_paths["neb"], X, Y, global_min=l_star)
    assert peak.verdict == "non-strict local minimum"
    assert peak.loss == pytest.approx(l_star, abs=1e-10)


@pytest.mark.slow
def test_deep_linear_minima_in_two_components_keep_the_rank_drop_barrier():
    """With hidden width p = r = d_y = 2 the global minima {W_2 W_1 = M} split by the sign
    of det W_2 (a 2 × 2 factor that must be invertible). Flipping one hidden unit's sign
    (W_1 row, W_2 column) gives an exact global minimum in the other component. A path
    between them must pass a singular W_2, where rank(W_2 W_1) ≤ 1 and the loss is at
    least the rank-1 optimum L*_1 (THEORY.md §1 with r = 1): the lowest barrier is
    L*_1 − L*_2, and its top a Baldi–Hornik point, a strict saddle."""
    ds = load_dataset("linear_teacher", d_x=3, d_y=2, n_samples=40, seed=1)
    spec = compute.make_model("linear", 3, 2, (2,))
    a = compute.deep_linear_global_minimizer(ds.X, ds.Y, (2,), seed=0)
    flip = np.r_[-np.ones(3), np.ones(3), -1.0, 1.0, -1.0, 1.0]  # W_1 row 0, W_2 column 0
    b = flip * a
    l2 = compute.deep_linear_global_minimum(ds.X, ds.Y, (2,))
    l1 = compute.deep_linear_global_minimum(ds.X, ds.Y, (1,))
    np_loss = lambda theta: np_squared_loss(theta, (3, 2, 2), ds.X, ds.Y)
    assert np_loss(a) == pytest.approx(l2, abs=1e-12) and np_loss(b) == pytest.approx(l2,
                                                                                     abs=1e-12)
    W2a, W2b = a[6:].reshape(2, 2), b[6:].reshape(2, 2)
    assert np.linalg.det(W2a) * np.linalg.det(W2b) < 0  # two components
    neb = minimum_energy_path(spec, "squared", a, b, ds.X, ds.Y, method="neb", n_images=9,
                              steps=1000)
    _check_against_numpy(neb, a, b, np_loss)
    assert neb.barrier == pytest.approx(l1 - l2, rel=1e-6)
    peak = classify_path_peak(spec, "squared", neb, ds.X, ds.Y, global_min=l2)
    assert peak.verdict == "strict saddle"
    assert peak.loss == pytest.approx(l1, rel=1e-8)
    bezier = minimum_energy_path(spec, "squared", a, b, ds.X, ds.Y, method="bezier",
                                 n_images=8, steps=1000)
    # a grid of 101 points on the curve can miss its exact top by a little, never by 5%
    assert 0.95 * (l1 - l2) <= bezier.barrier <= bezier.straight_barrier + 1e-12


# --------------------------------------------------------------------------- options


def test_progress_reports_fractions_and_leaves_the_path_unchanged(d1):
    X, Y, spec, bad, good = d1
    seen: list[float] = []
    kwargs = dict(method="bezier", n_images=4, steps=40, lr=1e-2, n_points=5, seed=3)
    with_progress = minimum_energy_path(spec, "squared", bad, good, X, Y,
                                        progress=seen.append, **kwargs)
    plain = minimum_energy_path(spec, "squared", bad, good, X, Y, **kwargs)
    assert len(seen) >= 2 and seen[-1] == 1.0 and np.all(np.diff(seen) > 0)
    np.testing.assert_allclose(with_progress.thetas, plain.thetas, rtol=1e-12, atol=1e-14)
    assert with_progress.history.shape == (41,)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("change, words", [
    (dict(theta_a=np.zeros(3)), "flat vector of 4"),
    (dict(theta_b=np.array([1.0, np.nan, 0.0, 0.0])), "NaN"),
    (dict(theta_b=np.array([1.0, -3.0, 1.0, 0.0])), "same"),
    (dict(X=np.zeros((5, 2))), "shape"),
    (dict(Y=np.zeros((4, 1))), "shape"),
    (dict(X=np.full((5, 1), np.inf)), "NaN or inf"),
    (dict(theta_a=np.full(4, 1e200)), "not finite on the straight segment"),
    (dict(method="string"), "method"),
    (dict(n_images=2), "n_images"),
    (dict(n_images=MAX_PATH_IMAGES + 1), "n_images"),
    (dict(n_images=5.0), "n_images"),
    (dict(steps=0), "steps"),
    (dict(steps=10**9), "steps"),
    (dict(lr=0.0), "learning rate"),
    (dict(lr=float("nan")), "learning rate"),
    (dict(spring=-1.0), "spring"),
    (dict(n_points=2), "n_points"),
    (dict(seed=-1), "seed"),
    (dict(dtype="int32"), "dtype"),
])
def test_bad_input_raises(d1, change, words):
    X, Y, spec, bad, good = d1
    args = dict(theta_a=bad, theta_b=good, X=X, Y=Y)
    args.update({k: change.pop(k) for k in list(change) if k in args})
    with pytest.raises(InputError, match=words):
        minimum_energy_path(spec, "squared", args["theta_a"], args["theta_b"], args["X"],
                            args["Y"], **change)


def test_bad_loss_name_raises(d1):
    X, Y, spec, bad, good = d1
    with pytest.raises(InputError, match="loss"):
        minimum_energy_path(spec, "hinge", bad, good, X, Y, steps=1)


def test_too_many_points_for_memory_raise():
    spec = compute.make_model("mlp", 200, 1, (500,))  # 101 001 parameters
    X, Y = np.zeros((2, 200)), np.zeros((2, 1))
    a = np.zeros(spec.n_params)
    with pytest.raises(InputError, match="MiB"):
        minimum_energy_path(spec, "squared", a, a + 1.0, X, Y, n_images=MAX_PATH_IMAGES)


def test_classify_path_peak_bad_input(d1, d1_paths):
    X, Y, spec, _, _ = d1
    path = d1_paths["neb"]
    with pytest.raises(InputError, match="MinimumPath"):
        classify_path_peak(spec, "squared", "not a path", X, Y)
    other = compute.make_model("mlp", 1, 1, (2,), activation="relu")
    with pytest.raises(InputError, match="model that made it"):
        classify_path_peak(other, "squared", path, X, Y)
    big = compute.make_model("mlp", 100, 1, (100,), activation="relu")  # 10 201
    with pytest.raises(InputError, match="exact Hessian"):
        classify_path_peak(big, "squared", path, X, Y)
    with pytest.raises(InputError, match="max_steps"):
        classify_path_peak(spec, "squared", path, X, Y, max_steps=-1)
