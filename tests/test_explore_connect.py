"""The minimum-to-minimum view of the Explore card: its task against numpy losses and the
deep-linear closed forms, its figure on synthetic arrays, and its wiring.

Closed form used (THEORY.md §1 plus a topological argument): for a one-hidden-layer linear
net with width p = d_y = r (here 4), every global minimum has W_2 W_1 = M of rank 4, so the
square W_2 is invertible and the minima split by the sign of det W_2. Two minima with the
same sign are joined at L* (the path stays on the minima); between opposite signs a path
must pass a singular W_2, where rank(W_2 W_1) ≤ 3 and the loss is at least the rank-3
optimum L*_3: the lowest barrier is L*_3 − L*_4, and the top is a strict saddle.
"""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import plotly.graph_objects as go
import pytest

os.environ.setdefault("LANDSCAPE_TEST_TASKS", "1")

import compute  # noqa: E402
from landscape_app import callbacks as cb  # noqa: E402
from landscape_app import explore  # noqa: E402
from landscape_app import settings as S  # noqa: E402
from landscape_app.explore import connect  # noqa: E402
from tests.test_tasks import _data, _run, np_loss  # noqa: E402

BASE = dict(dataset="linear_teacher", n_samples=40, widths=[4], steps=1000, lr=0.05,
            init_scale=0.3, lambda_every=0, explore="connect", seed=0)
SIZES = [8, 4, 4]
SAME, OPPOSITE = 1, 2  # second seeds whose minimum has the same / opposite sign of det W_2


@pytest.fixture(scope="module")
def runs():
    return {seed_b: _run("connect", **dict(BASE, seed_b=seed_b)) for seed_b in (SAME, OPPOSITE)}


def _det_w2(theta):
    return np.linalg.det(np.asarray(theta)[32:].reshape(4, 4))


@pytest.mark.parametrize("seed_b", [SAME, OPPOSITE])
def test_task_matches_numpy_and_the_closed_form(runs, seed_b):
    p = runs[seed_b]
    ds = _data(**BASE)
    loss = lambda theta: np_loss(theta, SIZES, ds.X, ds.Y)
    l4 = compute.deep_linear_global_minimum(ds.X, ds.Y, (4,))
    l3 = compute.deep_linear_global_minimum(ds.X, ds.Y, (3,))
    thetas, t = np.asarray(p["thetas"]), np.asarray(p["t"])
    a, b = thetas[0], thetas[-1]
    np.testing.assert_allclose(p["loss"], [loss(th) for th in thetas], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(p["straight_loss"], [loss((1 - s) * a + s * b) for s in t],
                               rtol=1e-10, atol=1e-14)
    assert p["loss_a"] == pytest.approx(l4, abs=1e-9) and p["loss_b"] == pytest.approx(l4,
                                                                                     abs=1e-9)
    assert p["global_min"] == pytest.approx(l4, rel=1e-12)
    assert p["distance"] == pytest.approx(np.linalg.norm(b - a), rel=1e-12)
    straight_top = max(loss((1 - s) * a + s * b) for s in np.linspace(0, 1, 11)) - l4
    assert straight_top > 0.1  # the segment between the minima climbs clearly
    same_sign = _det_w2(a) * _det_w2(b) > 0
    assert same_sign == (seed_b == SAME), "the seeds no longer pick these components"
    if same_sign:
        assert max(p["loss"]) - l4 <= 1e-6 * straight_top
        assert p["peak_verdict"] == "non-strict local minimum"
    else:
        assert p["barrier"] == pytest.approx(l3 - l4, rel=1e-6)
        assert p["peak_verdict"] == "strict saddle"
        assert p["peak_critical_loss"] == pytest.approx(l3, rel=1e-8)
    # the plane: θ_a at (0, 0), θ_b at (1, 0); the loss at sampled cells; the projection
    center, d1, d2 = (np.asarray(p[k]) for k in ("center", "direction1", "direction2"))
    np.testing.assert_allclose(center, a, atol=1e-14)
    np.testing.assert_allclose(d1, b - a, atol=1e-14)
    surface, alpha, beta = np.asarray(p["surface"]), np.asarray(p["alpha"]), np.asarray(p["beta"])
    for i, j in ((0, 0), (7, 30), (40, 40), (20, 11)):
        ref = loss(center + alpha[j] * d1 + beta[i] * d2)
        assert surface[i, j] == pytest.approx(ref, rel=1e-5)
    D = np.stack([d1, d2], axis=1)
    coords = np.linalg.lstsq(D, (thetas - center).T, rcond=None)[0].T
    np.testing.assert_allclose(p["path_coords"], coords, atol=1e-5 * np.abs(coords).max())


def test_bad_settings_give_a_message():
    with pytest.raises(Exception) as info:
        _run("connect", **dict(BASE, seed_b=0))
    assert "second start's seed" in str(info.value)
    assert S.validate_settings({**S.DEFAULTS, "seed_b": -1})[1].get("seed_b")
    assert S.validate_settings({**S.DEFAULTS, "connect_method": "string"})[1].get(
        "connect_method")


def _synthetic(K=9, G=5):
    t = np.linspace(0, 1, K)
    loss = 1.0 + np.sin(np.pi * t) * 0.3
    return {"t": t, "loss": loss, "straight_loss": 1.0 + np.sin(np.pi * t), "peak": K // 2,
            "peak_loss": float(loss[K // 2]), "barrier": 0.3, "straight_barrier": 1.0,
            "loss_a": 1.0, "loss_b": 1.0, "distance": 2.5, "global_min": 0.5,
            "method": "neb", "seed_a": 0, "seed_b": 1, "converged_force": 0.5,
            "peak_verdict": "strict saddle", "peak_critical_loss": 1.29,
            "peak_distance": 0.01, "alpha": np.linspace(-0.5, 1.5, G),
            "beta": np.linspace(-0.25, 1.25, G), "surface": np.arange(1.0, G * G + 1).reshape(G, G),
            "path_coords": np.stack([t, np.sin(np.pi * t)], axis=1),
            "marks": {"minimum A": [0.0, 0.0], "minimum B": [1.0, 0.0],
                      "top of the path": [0.5, 1.0]}}


def test_figure_draws_the_arrays_it_is_given():
    p = _synthetic()
    fig, label = connect.render(p, {})
    assert isinstance(fig, go.Figure)
    band = next(tr for tr in fig.data if tr.name == "nudged elastic band")
    np.testing.assert_allclose(band.x, p["t"])
    np.testing.assert_allclose(band.y, p["loss"])
    straight = next(tr for tr in fig.data if tr.name == "straight segment")
    np.testing.assert_allclose(straight.y, p["straight_loss"])
    top = next(tr for tr in fig.data if tr.name == "top of the path" and tr.xaxis == "x")
    assert top.x == (0.5,) and top.y[0] == pytest.approx(p["peak_loss"])
    heat = next(tr for tr in fig.data if isinstance(tr, go.Contour))
    np.testing.assert_allclose(heat.z, np.log10(p["surface"]))
    path = next(tr for tr in fig.data if tr.name == "path")
    np.testing.assert_allclose(np.c_[path.x, path.y], p["path_coords"])
    assert "barrier 0.3" in label and "strict saddle" in label and "not converged" in label
    # without a plane there is one panel
    flat = {k: v for k, v in p.items() if k not in ("alpha", "beta", "surface")}
    fig, _ = connect.render({**flat, "method": "bezier", "converged_force": float("nan")}, {})
    assert not any(isinstance(tr, go.Contour) for tr in fig.data)
    assert any(tr.name == "Bézier curve" for tr in fig.data)


def test_build_explore_draws_a_payload_and_reports_failures(monkeypatch):
    view = {**S.DEFAULTS, "explore": "connect"}

    def fake(name, settings, progress=None):
        assert name == "connect"
        return _synthetic()

    monkeypatch.setattr(cb, "_cached_task", fake)
    fig, status = cb.build_explore(connect.VIEW, view)
    assert isinstance(fig, go.Figure) and len(fig.data) >= 8
    assert "barrier" in str(status)
    zf = zipfile.ZipFile(io.BytesIO(cb.csv_export(view)[0]))
    rows = np.loadtxt(zf.open("minimum_path.csv"), delimiter=",", skiprows=1)
    p = _synthetic()
    np.testing.assert_allclose(rows, np.c_[p["t"], p["loss"], p["straight_loss"]], rtol=1e-9)

    def unavailable(name, settings, progress=None):
        raise cb.ServiceUnavailable("The compute service is not available yet (x).")

    monkeypatch.setattr(cb, "_cached_task", unavailable)
    fig, status = cb.build_explore(connect.VIEW, view)
    assert not any(isinstance(tr, go.Scatter) for tr in fig.data)
    assert "not available" in str(status)

    monkeypatch.setattr(cb, "_cached_task", lambda name, s, progress=None: {"t": [0, 1]})
    fig, status = cb.build_explore(connect.VIEW, view)
    assert "could not be drawn" in str(status)


def test_view_is_registered_with_a_task_and_a_cost():
    assert explore.view_by_key("connect") is connect.VIEW
    from landscape_app import tasks

    assert tasks.TASKS["connect"].__module__.endswith("connect_task")
    small = {**S.DEFAULTS, "explore": "connect", "dataset": "swirszcz_d1", "model": "mlp",
             "widths": [1], "steps": 200}
    assert cb.is_fast("connect", small)
    big = {**S.DEFAULTS, "explore": "connect", "widths": [256, 256], "n_samples": 5000}
    assert not cb.is_fast("connect", big)
