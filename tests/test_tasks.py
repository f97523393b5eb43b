"""The dashboard's tasks, run in this process: their numbers against independent numpy
references (forward passes, finite differences, THEORY.md's closed forms)."""

from __future__ import annotations

import io
import itertools
import os

import numpy as np
import pytest

os.environ.setdefault("LANDSCAPE_TEST_TASKS", "1")

from compute import InputError  # noqa: E402
from compute._datasets import load_dataset  # noqa: E402
from landscape_app import tasks  # noqa: E402
from landscape_app.compute_server import decode_payload, encode_payload  # noqa: E402
from landscape_app.settings import DEFAULTS, upload_dir  # noqa: E402
from tests.reference import np_forward, np_layers


def _run(name: str, **settings) -> dict:
    payload = tasks.run(name, {**DEFAULTS, **settings}, lambda f, text: None)
    return decode_payload(encode_payload(payload))  # every payload must survive the wire


# Small problems: few parameters, few samples, short paths (cheap to compile and run).
LINEAR = dict(dataset="linear_teacher", n_samples=40, widths=[3], steps=300, lr=0.05,
              init_scale=0.3, lambda_every=0)
MLP = dict(dataset="two_moons", n_samples=24, model="mlp", widths=[4], activation="tanh",
           bias=True, init="xavier", init_scale=1.0, steps=150, lr=0.1, lambda_every=0)


# --------------------------------------------------------------------------- numpy references


def _layers(theta, sizes, bias):
    return np_layers(np.asarray(theta, np.float64), sizes, bias)


def np_loss(theta, sizes, X, Y, *, bias=False, act="identity", loss="squared"):
    f = np_forward(theta, sizes, X, bias=bias, act=act)
    if loss == "squared":
        return 0.5 * np.sum((f - Y) ** 2) / X.shape[0]
    z = f - f.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -np.sum(Y * logp) / X.shape[0]


def np_grad(fn, theta, h=1e-6):
    theta = np.asarray(theta, np.float64)
    g = np.zeros_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        g[i] = (fn(theta + e) - fn(theta - e)) / (2 * h)
    return g


def np_linear_grad(theta, sizes, X, Y):
    """Exact gradient of the two-layer linear net's squared loss (W1: d1×dx, W2: dy×d1)."""
    (W1, _), (W2, _) = _layers(theta, sizes, False)
    R = (X @ W1.T @ W2.T - Y) / X.shape[0]
    gW2 = R.T @ (X @ W1.T)
    gW1 = (R @ W2).T @ X
    return np.concatenate([gW1.ravel(), gW2.ravel()])


def np_hessian(grad, theta, h=1e-5):
    theta = np.asarray(theta, np.float64)
    cols = []
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        cols.append((grad(theta + e) - grad(theta - e)) / (2 * h))
    H = np.array(cols)
    return 0.5 * (H + H.T)


def np_global_min(X, Y, p):
    """THEORY.md §1: L* = (‖Y‖² − Σ_{i≤r} λ_i(C (XᵀX)⁻¹ Cᵀ)) / 2m, r = min(p, d_y)."""
    C = Y.T @ X
    lam = np.sort(np.linalg.eigvalsh(C @ np.linalg.solve(X.T @ X, C.T)))[::-1]
    r = min(p, Y.shape[1])
    return (np.sum(Y ** 2) - lam[:r].sum()) / (2 * X.shape[0]), lam


def _data(**settings):
    s = {**DEFAULTS, **settings}
    return load_dataset(s["dataset"], seed=s["data_seed"], n_samples=s["n_samples"],
                        noise=s["noise"], one_hot=not s["signed_targets"],
                        preprocess=s["preprocess"])


# --------------------------------------------------------------------------- path


def test_path_losses_match_numpy_forward_passes():
    p = _run("path", **LINEAR)
    ds = _data(**LINEAR)
    sizes = p["layer_sizes"]
    assert sizes == [8, 3, 4] and p["n_params"] == 8 * 3 + 3 * 4
    assert p["steps"][0] == 0 and p["steps"][-1] == 300
    assert p["loss"][0] == pytest.approx(np_loss(p["init"], sizes, ds.X, ds.Y), rel=1e-12)
    assert p["loss"][-1] == pytest.approx(np_loss(p["final"], sizes, ds.X, ds.Y), rel=1e-12)
    g0 = np.linalg.norm(np_linear_grad(p["init"], sizes, ds.X, ds.Y))
    assert p["grad_norm"][0] == pytest.approx(g0, rel=1e-10)
    for row in (0, len(p["weight_steps"]) // 2, -1):  # float32 display copies
        step = p["weight_steps"][row]
        expected = np_loss(p["weights"][row], sizes, ds.X, ds.Y)
        assert p["loss"][step] == pytest.approx(expected, rel=1e-5)
    assert p["weights"].dtype == np.float32 and p["diverged_at"] == -1
    L_star, _ = np_global_min(ds.X, ds.Y, 3)
    assert p["global_min"] == pytest.approx(L_star, rel=1e-10)
    assert np.all(p["loss"] >= L_star - 1e-12)
    for plateau in p["plateaus"]:
        assert 0 <= plateau["entry"] < plateau["exit"] <= 300
        assert plateau["level"] > L_star


@pytest.mark.parametrize("loss, signed", [("squared", False), ("cross_entropy", False)])
def test_mlp_path_loss_matches_numpy(loss, signed):
    p = _run("path", **MLP, loss=loss, signed_targets=signed)
    ds = _data(**MLP, signed_targets=signed)
    sizes = p["layer_sizes"]
    assert sizes == [2, 4, 2]
    for key in ("init", "final"):
        expected = np_loss(p[key], sizes, ds.X, ds.Y, bias=True, act="tanh", loss=loss)
        assert p["loss"][0 if key == "init" else -1] == pytest.approx(expected, rel=1e-12)
    fd = np_grad(lambda t: np_loss(t, sizes, ds.X, ds.Y, bias=True, act="tanh", loss=loss),
                 p["init"])
    assert p["grad_norm"][0] == pytest.approx(np.linalg.norm(fd), rel=1e-6)
    assert p["global_min"] is None  # no closed form for an MLP


def test_long_path_curves_are_thinned_but_exact_where_sent():
    p = _run("path", **{**LINEAR, "steps": 6000})
    ds = _data(**LINEAR)
    steps = p["steps"]
    assert steps.size <= 5001 and steps[0] == 0 and steps[-1] == 6000
    assert np.all(np.diff(steps) > 0) and p["loss"].shape == steps.shape
    assert p["weights"].shape[0] <= 1001 and p["weight_steps"][-1] == 6000
    shared = np.intersect1d(steps, p["weight_steps"])[[0, -1]]
    for step in shared:  # the sent loss at a step is the loss of the sent weights there
        row = int(np.flatnonzero(p["weight_steps"] == step)[0])
        expected = np_loss(p["weights"][row], [8, 3, 4], ds.X, ds.Y)
        assert p["loss"][np.flatnonzero(steps == step)[0]] == pytest.approx(expected, rel=1e-5)


def test_divergent_path_is_reported_not_raised():
    p = _run("path", **{**LINEAR, "lr": 50.0})
    assert p["diverged_at"] > 0
    ds = _data(**LINEAR)
    assert np.isfinite(np_loss(p["final"], p["layer_sizes"], ds.X, ds.Y))


# --------------------------------------------------------------------------- curvature


def test_spectrum_at_the_one_hidden_layer_origin_is_theorys_strict_saddle():
    """THEORY.md §1: at the origin, eigenvalues ±σ_j(C)/m, each d_1 times, plus zeros."""
    s = dict(LINEAR, init="zero", selected_step=0, k=5)
    p = _run("spectrum", **s)
    ds = _data(**s)
    m, d1 = ds.X.shape[0], 3
    sigma = np.linalg.svd(ds.Y.T @ ds.X, compute_uv=False) / m
    expected = np.sort(np.concatenate([np.repeat(sigma, d1), -np.repeat(sigma, d1),
                                       np.zeros(p["n_params"] - 2 * d1 * sigma.size)]))
    assert p["method"] == "exact" and p["complete"]
    np.testing.assert_allclose(p["eigenvalues"], expected, atol=1e-9 * sigma.max())
    assert p["verdict"] == "strict saddle"
    assert p["grad_norm"] == pytest.approx(0.0, abs=1e-12) and p["step"] == 0
    assert p["n_negative"] == d1 * sigma.size
    assert p["density"]["grid"].shape == p["density"]["values"].shape


def test_spectrum_at_the_final_point_matches_a_finite_difference_hessian():
    p = _run("spectrum", **LINEAR)
    ds = _data(**LINEAR)
    sizes = [8, 3, 4]
    theta = p["point"]
    assert p["loss"] == pytest.approx(np_loss(theta, sizes, ds.X, ds.Y), rel=1e-12)
    H = np_hessian(lambda t: np_linear_grad(t, sizes, ds.X, ds.Y), theta)
    expected = np.linalg.eigvalsh(H)
    np.testing.assert_allclose(p["eigenvalues"], expected, atol=1e-7 * np.abs(expected).max())
    assert p["verdict"] in ("non-strict local minimum", "degenerate saddle", "not critical",
                            "degenerate, inconclusive")
    L_star, _ = np_global_min(ds.X, ds.Y, 3)
    assert p["global_min"] == pytest.approx(L_star, rel=1e-10)
    # Kawaguchi et al. 2019: the induced-model value never exceeds the loss
    assert p["induced_model_loss"] <= p["loss"] * (1 + 1e-9)


@pytest.mark.slow  # compiling the Lanczos kernels takes seconds on a cold cache
def test_lanczos_spectrum_gives_the_extremes():
    p = _run("spectrum", **MLP, spectrum_method="lanczos", k=2)
    ds = _data(**MLP)
    sizes = [2, 4, 2]
    H = np_hessian(lambda t: np_grad(
        lambda u: np_loss(u, sizes, ds.X, ds.Y, bias=True, act="tanh"), t, 1e-5), p["point"],
        1e-4)
    exact = np.linalg.eigvalsh(H)
    assert p["method"] == "lanczos"
    scale = np.abs(exact).max()
    assert p["eigenvalues"][0] == pytest.approx(exact[0], abs=1e-4 * scale)
    assert p["eigenvalues"][-1] == pytest.approx(exact[-1], abs=1e-4 * scale)


def test_critical_point_search_reaches_a_critical_point():
    p = _run("critical_point", **LINEAR, selected_step=100)
    ds = _data(**LINEAR)
    g = np_linear_grad(p["point"], [8, 3, 4], ds.X, ds.Y)
    assert np.linalg.norm(g) == pytest.approx(p["grad_norm"], abs=1e-8)
    assert p["loss"] == pytest.approx(np_loss(p["point"], [8, 3, 4], ds.X, ds.Y), rel=1e-12)


# --------------------------------------------------------------------------- many starts, theory


def test_many_starts_never_beat_the_global_minimum():
    p = _run("many_starts", **LINEAR, n_starts=6)
    ds = _data(**LINEAR)
    L_star, _ = np_global_min(ds.X, ds.Y, 3)
    assert p["global_min"] == pytest.approx(L_star, rel=1e-10)
    assert p["final_losses"].shape == (6,) and np.all(p["final_losses"] >= L_star - 1e-12)
    gap0 = p["loss_curves"][:, 0] - L_star
    expected = (p["final_losses"] - L_star) <= 1e-3 * gap0
    assert np.array_equal(p["converged"], expected)
    assert p["converged_fraction"] == pytest.approx(expected.mean())
    # start i is the path of seed + i: its first loss is the numpy loss of that init
    first = _run("path", **LINEAR)
    assert p["loss_curves"][0, 0] == pytest.approx(first["loss"][0], rel=1e-6)


def test_theory_payload_matches_the_closed_forms():
    p = _run("theory", **LINEAR)
    ds = _data(**LINEAR)
    m = ds.X.shape[0]
    L_star, lam = np_global_min(ds.X, ds.Y, 3)
    assert p["global_min"] == pytest.approx(L_star, rel=1e-10)
    assert p["gap"] == pytest.approx(p["final_loss"] - L_star, abs=1e-12)
    levels = sorted((np.sum(ds.Y ** 2) - lam[list(sub)].sum()) / (2 * m)
                    for k in range(4) for sub in itertools.combinations(range(4), k)
                    if sub != (0, 1, 2))
    np.testing.assert_allclose(sorted(p["baldi_hornik_levels"]), levels, rtol=1e-10)
    assert p["saxe_loss"] is None  # inputs not whitened: the note says so
    assert any("Saxe" in note or "whiten" in note for note in p["notes"])


def test_theory_saxe_curve_on_whitened_data_starts_at_the_initial_loss_scale():
    p = _run("theory", **{**LINEAR, "preprocess": "whiten", "init_scale": 0.01, "steps": 400})
    assert p["saxe_steps"][0] == 0 and p["saxe_steps"][-1] == 400
    ds = _data(**LINEAR, preprocess="whiten")
    # t = 0: L(0) = ‖Y‖²/2m − ½Σ s² + ½Σ (s − u0)² ≈ ‖Y‖²/2m for a small start
    assert p["saxe_loss"][0] == pytest.approx(np.sum(ds.Y ** 2) / (2 * ds.X.shape[0]),
                                              rel=0.05)
    assert p["saxe_loss"][-1] >= p["global_min"] - 1e-9


# --------------------------------------------------------------------------- surfaces


@pytest.mark.parametrize("center", ["init", "final"])
def test_surface_center_and_corner_match_numpy(center):
    p = _run("surface", **LINEAR, plane="random", center=center, grid=11, span=0.5)
    ds = _data(**LINEAR)
    sizes = [8, 3, 4]
    path = _run("path", **LINEAR)
    theta = path["init"] if center == "init" else path["final"]
    np.testing.assert_allclose(p["center"], theta)
    assert p["loss"].shape == (11, 11) and p["loss"].dtype == np.float32
    assert p["loss"][5, 5] == pytest.approx(np_loss(theta, sizes, ds.X, ds.Y), rel=1e-5)
    d1, d2 = p["direction1"].astype(np.float64), p["direction2"].astype(np.float64)
    a, b = float(p["alpha"][0]), float(p["beta"][-1])
    corner = np_loss(theta + a * d1 + b * d2, sizes, ds.X, ds.Y)
    assert p["loss"][-1, 0] == pytest.approx(corner, rel=1e-4)


@pytest.mark.parametrize("plane", ["filter", "layer", "hessian"])
def test_mlp_surface_in_blocks_matches_numpy(plane):
    """The direct (non-polynomial) surface, evaluated in padded row blocks."""
    p = _run("surface", **{**MLP, "plane": plane, "center": "init", "grid": 9, "span": 0.7})
    ds = _data(**MLP)
    sizes = [2, 4, 2]
    theta = p["center"]
    f = lambda t: np_loss(t, sizes, ds.X, ds.Y, bias=True, act="tanh")
    assert p["loss"].shape == (9, 9)
    assert p["loss"][4, 4] == pytest.approx(f(theta), rel=1e-5)
    assert p["loss_at_center"] == pytest.approx(f(theta), rel=1e-12)
    d1, d2 = p["direction1"].astype(np.float64), p["direction2"].astype(np.float64)
    for i, j in [(0, 0), (8, 3), (5, 8)]:
        point = theta + float(p["alpha"][j]) * d1 + float(p["beta"][i]) * d2
        assert p["loss"][i, j] == pytest.approx(f(point), rel=1e-4)


def test_pca_surface_projects_the_path():
    p = _run("surface", **LINEAR, plane="pca", grid=9)
    path = _run("path", **LINEAR)
    D = np.column_stack([p["direction1"], p["direction2"]]).astype(np.float64)
    coords, *_ = np.linalg.lstsq(D, (path["weights"].astype(np.float64) - p["center"]).T,
                                 rcond=None)
    np.testing.assert_allclose(p["path_coords"], coords.T, atol=1e-4)
    assert 0 <= p["explained_variance"].sum() <= 1 + 1e-9
    assert p["path_distance"].shape == (len(path["weight_steps"]),)
    assert p["alpha"][0] <= coords[0].min() and p["alpha"][-1] >= coords[0].max()


def test_points_plane_contains_its_three_points():
    p = _run("surface", **LINEAR, plane="points", grid=9)
    for name in ("init", "saddle", "final"):
        assert p["mark_distance"][name] < 1e-6 * (1 + np.linalg.norm(p["center"]))
    assert 0 < p["saddle_step"] < 300


def test_cut_through_init_and_final_matches_numpy():
    p = _run("cut", **LINEAR, plane="hessian", grid=11)
    ds = _data(**LINEAR)
    sizes = [8, 3, 4]
    n = p["line_t"].size
    i0, i1 = (n - 1) // 4, 3 * (n - 1) // 4
    assert p["line_t"][i0] == 0 and p["line_t"][i1] == 1
    assert p["line_loss"][i0] == pytest.approx(np_loss(p["init"], sizes, ds.X, ds.Y),
                                               rel=1e-5)
    assert p["line_loss"][i1] == pytest.approx(np_loss(p["final"], sizes, ds.X, ds.Y),
                                               rel=1e-5)
    # the Hessian plane's first direction is λ_min's eigenvector: curvature along it
    H = np_hessian(lambda t: np_linear_grad(t, sizes, ds.X, ds.Y), p["center"])
    d1 = p["direction1"].astype(np.float64)
    assert d1 @ H @ d1 == pytest.approx(np.linalg.eigvalsh(H)[0],
                                        abs=1e-4 * np.abs(np.linalg.eigvalsh(H)).max())


# --------------------------------------------------------------------------- requests


def test_bad_requests_raise_input_errors():
    with pytest.raises(InputError, match="unknown task"):
        tasks.run("rm -rf", DEFAULTS, lambda f, t: None)
    with pytest.raises(InputError, match="grid"):
        tasks.run("path", {"grid": "huge"}, lambda f, t: None)
    with pytest.raises(InputError, match="malformed"):
        tasks.run("dataset_info", {"digest": "../../etc", "suffix": ".csv"}, lambda f, t: None)


def test_dataset_info_and_cross_entropy_on_uploads():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((12, 2))
    Y = np.eye(3)[rng.integers(0, 3, 12)]
    buffer = io.BytesIO()
    np.savez(buffer, X=X, Y=Y)
    data = buffer.getvalue()
    import hashlib
    import json

    digest = hashlib.sha256(data).hexdigest()
    (upload_dir() / f"{digest}.npz").write_bytes(data)
    info = tasks.run("dataset_info", {"digest": digest, "suffix": ".npz"}, lambda f, t: None)
    assert (info["rows"], info["d_x"], info["d_y"], info["targets"]) == (12, 2, 3, "one_hot")
    (upload_dir() / f"{digest}.json").write_text(json.dumps({**info, "filename": "c.npz"}))
    p = _run("path", dataset=f"upload:{digest}", loss="cross_entropy", model="mlp",
             widths=[3], activation="tanh", steps=20, lambda_every=0, init="xavier",
             init_scale=1.0)
    expected = np_loss(p["init"], [2, 3, 3], X, Y, bias=True, act="tanh", loss="cross_entropy")
    assert p["loss"][0] == pytest.approx(expected, rel=1e-12)
    # real-valued targets with cross-entropy: refused with a sentence
    Yr = rng.standard_normal((12, 1))
    buffer = io.BytesIO()
    np.savez(buffer, X=X, Y=Yr)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    (upload_dir() / f"{digest}.npz").write_bytes(data)
    (upload_dir() / f"{digest}.json").write_text(json.dumps(
        {"rows": 12, "d_x": 2, "d_y": 1, "targets": "one_hot", "filename": "r.npz"}))
    with pytest.raises(InputError, match="real-valued targets"):
        tasks.run("path", {**DEFAULTS, "dataset": f"upload:{digest}", "loss": "cross_entropy",
                           "steps": 5}, lambda f, t: None)


# --------------------------------------------------------------------------- theory on bad data


def test_theory_turns_a_linear_algebra_failure_into_an_input_message(monkeypatch):
    def no_convergence(*args, **kwargs):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(tasks, "_induced_model_loss", no_convergence)
    with pytest.raises(InputError, match="could not be evaluated for these data") as info:
        _run("theory", **LINEAR)
    assert "rescale" in str(info.value) and "SVD" not in str(info.value)


def test_theory_refuses_a_non_finite_global_minimum(monkeypatch):
    monkeypatch.setattr(tasks, "_global_min", lambda s, problem: float("inf"))
    with pytest.raises(InputError, match="L\\* is not finite"):
        _run("theory", **LINEAR)
