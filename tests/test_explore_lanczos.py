"""The Lanczos-diagnostics view of the Explore card: its task against a finite-difference
Hessian of the numpy loss, its figure on synthetic arrays, and its wiring."""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import plotly.graph_objects as go
import pytest

os.environ.setdefault("LANDSCAPE_TEST_TASKS", "1")

from landscape_app import callbacks as cb  # noqa: E402
from landscape_app import explore  # noqa: E402
from landscape_app import settings as S  # noqa: E402
from landscape_app.explore import lanczos  # noqa: E402
from tests.reference import fd_hessian  # noqa: E402
from tests.test_tasks import LINEAR, _data, _run, np_loss  # noqa: E402

SIZES = [8, 3, 4]  # linear_teacher 8 → 4 with LINEAR's one hidden layer of 3


@pytest.fixture(scope="module")
def task():
    s = dict(LINEAR, selected_step=60, k=2, probes=12)
    p = _run("lanczos_diagnostics", **s)
    ds = _data(**s)
    theta = np.asarray(p["point"], np.float64)
    H = fd_hessian(lambda t: np_loss(t, SIZES, ds.X, ds.Y), theta)
    return p, H


def test_task_ritz_history_matches_the_finite_difference_spectrum(task):
    p, H = task
    n = H.shape[0]
    lam = np.linalg.eigvalsh(H)
    scale = np.abs(lam).max()
    assert p["n_params"] == n == 36 and p["steps"] == n and p["step"] == 60
    ext = np.asarray(p["extreme_values"])
    assert ext.shape == (n, 4) and np.asarray(p["ritz_values"]).shape == (n, n)
    np.testing.assert_allclose(ext[-1], np.r_[lam[:2], lam[-2:]], atol=1e-6 * scale)
    np.testing.assert_allclose(np.sort(p["exact_eigenvalues"]), lam, atol=1e-6 * scale)
    assert lam[0] < -1e-3 * scale  # step 60 of a small init is near the origin saddle
    # each residual bound covers the distance to the nearest true eigenvalue
    err = np.min(np.abs(ext[..., None] - lam), axis=-1)
    ok = np.isfinite(err)
    assert np.all(err[ok] <= np.asarray(p["residual_bounds"])[ok] + 1e-6 * scale)
    at = np.asarray(p["converged_at"])
    assert np.all((at >= 1) & (at <= n))


def test_task_probe_spread_agrees_with_the_trace(task):
    p, H = task
    n, P = H.shape[0], 12
    assert p["probes"] == P and np.asarray(p["densities"]).shape == (P, p["grid"].size)
    # one Rademacher sample of zᵀHz/n has variance 2 Σ_{i≠j} H_ij² / n²
    sd = np.sqrt(2 * (np.sum(H ** 2) - np.sum(np.diag(H) ** 2)) / P) / n
    assert abs(p["moment_mean"][0] - np.trace(H) / n) < 3 * sd + 1e-6
    assert p["trace_over_n"] == pytest.approx(np.trace(H) / n, rel=1e-5)
    grid = np.asarray(p["grid"], np.float64)
    np.testing.assert_allclose(np.trapezoid(np.asarray(p["densities"], np.float64), grid,
                                            axis=1), 1.0, atol=1e-4)
    # the exact reference: the FD eigenvalues smoothed with the same σ, by numpy
    lam, sigma = np.linalg.eigvalsh(H), p["sigma"]
    ref = np.exp(-0.5 * ((grid[:, None] - lam) / sigma) ** 2).sum(1) / (
        n * sigma * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(p["exact_density"], ref, atol=1e-3 * ref.max())


def test_bad_settings_give_a_message():
    with pytest.raises(Exception) as info:
        _run("lanczos_diagnostics", **dict(LINEAR, probes=0))
    assert "probes" in str(info.value)
    assert S.validate_settings({**S.DEFAULTS, "probes": 65})[1].get("probes")


def _synthetic(S_=6, k=1, P=3, G=20):
    rng = np.random.default_rng(0)
    ritz = np.full((S_, S_), np.nan)
    for j in range(1, S_ + 1):
        ritz[j - 1, :j] = np.sort(rng.standard_normal(j))
    extremes = np.stack([ritz[:, 0], [ritz[j, j] for j in range(S_)]], axis=1)
    bounds = np.logspace(0, -12, S_)[:, None].repeat(2, axis=1)
    grid = np.linspace(-3, 3, G)
    densities = rng.uniform(0, 1, (P, G))
    return {"ritz_values": ritz, "extreme_values": extremes, "residual_bounds": bounds,
            "converged_at": np.array([5, -1]), "tol": 1e-8, "zero_floor": 1e-6,
            "steps": S_, "k": k, "grid": grid, "densities": densities,
            "density_mean": densities.mean(0), "density_min": densities.min(0),
            "density_max": densities.max(0), "moments": rng.standard_normal((P, 2)),
            "moment_mean": np.array([0.1, 1.0]), "moment_stderr": np.array([0.01, 0.1]),
            "probes": P, "n_params": 6, "step": 10, "plane_point": None, "seconds": 0.2,
            "exact_eigenvalues": np.linspace(-1, 2, 6), "trace_over_n": 0.5,
            "exact_density": densities.mean(0) * 0.9}


def test_figure_draws_the_arrays_it_is_given():
    p = _synthetic()
    fig, label = lanczos.render(p, {})
    assert isinstance(fig, go.Figure)
    ritz = next(t for t in fig.data if t.name == "Ritz values")
    ok = np.isfinite(p["ritz_values"])
    np.testing.assert_allclose(np.asarray(ritz.y), p["ritz_values"][ok])
    assert np.array_equal(np.asarray(ritz.x), np.repeat(np.arange(1, 7), 6).reshape(6, 6)[ok])
    lines = [t for t in fig.data if t.name == "θ_min" and t.mode == "lines"]
    np.testing.assert_allclose(lines[0].y, p["extreme_values"][:, 0])
    floor = 1e-16 * np.abs(p["extreme_values"][-1]).max()  # bounds drawn from rounding up
    np.testing.assert_allclose(lines[1].y, np.maximum(p["residual_bounds"][:, 0], floor))
    stars = [t for t in fig.data if t.name == "converged"]
    assert len(stars) == 1 and stars[0].x == (5,)  # θ_max never converged: no star
    mean = next(t for t in fig.data if t.name == "mean (SLQ estimate)")
    np.testing.assert_allclose(mean.y, p["density_mean"])
    probes = [t for t in fig.data if t.name == "one probe"]
    assert len(probes) == 3
    np.testing.assert_allclose(probes[2].y, p["densities"][2])
    assert "step 5" in label and "not within 6 steps" in label and "exact 0.5" in label


def test_build_explore_draws_a_payload_and_reports_failures(monkeypatch):
    view = {**S.DEFAULTS, "explore": "lanczos"}

    def fake(name, settings, progress=None):
        assert name == "lanczos_diagnostics"
        return _synthetic()

    monkeypatch.setattr(cb, "_cached_task", fake)
    fig, status = cb.build_explore(lanczos.VIEW, view)
    assert isinstance(fig, go.Figure) and len(fig.data) > 5
    assert "λ_min converged" in str(status)
    zf = zipfile.ZipFile(io.BytesIO(cb.csv_export(view)[0]))
    rows = np.loadtxt(zf.open("ritz_history.csv"), delimiter=",", skiprows=1)
    np.testing.assert_allclose(rows[:, 1:3], _synthetic()["extreme_values"], rtol=1e-9)

    def unavailable(name, settings, progress=None):
        raise cb.ServiceUnavailable("The compute service is not available yet (x).")

    monkeypatch.setattr(cb, "_cached_task", unavailable)
    fig, status = cb.build_explore(lanczos.VIEW, view)
    assert not any(isinstance(t, go.Scatter) for t in fig.data)
    assert "not available" in str(status)

    monkeypatch.setattr(cb, "_cached_task", lambda name, s, progress=None: {"steps": 3})
    fig, status = cb.build_explore(lanczos.VIEW, view)
    assert "could not be drawn" in str(status)


def test_view_is_registered_with_a_task_and_a_cost():
    assert explore.view_by_key("lanczos") is lanczos.VIEW
    from landscape_app import tasks

    assert tasks.TASKS["lanczos_diagnostics"].__module__.endswith("lanczos_task")
    view = {**S.DEFAULTS, "explore": "lanczos"}
    assert cb.is_fast("lanczos_diagnostics", view)
    big = {**view, "widths": [256, 256], "n_samples": 5000, "probes": 64}
    assert not cb.is_fast("lanczos_diagnostics", big)
