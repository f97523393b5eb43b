"""The Explore card (issue 8): the Morse-index map and conserved-quantities views, their
tasks against numpy references, and the card's wiring (one view at a time, coarse first)."""

from __future__ import annotations

import os

import numpy as np
import plotly.graph_objects as go
import pytest

os.environ.setdefault("LANDSCAPE_TEST_TASKS", "1")

from landscape_app import callbacks as cb  # noqa: E402
from landscape_app import explore  # noqa: E402
from landscape_app import settings as S  # noqa: E402
from landscape_app.explore import balance, index_map  # noqa: E402
from tests.reference import fd_hessian  # noqa: E402
from tests.test_tasks import LINEAR, _data, _run, np_loss  # noqa: E402

# --------------------------------------------------------------------------- index map


def test_index_map_task_matches_finite_difference_hessians_at_sampled_cells():
    s = dict(LINEAR, plane="random", center="init", span=1.5, imap_grid=5, n_samples=20,
             init_scale=0.5)
    p = _run("index_map", **s)
    ds = _data(**s)
    sizes = [8, 3, 4]
    index, lam = np.asarray(p["index"]), np.asarray(p["lambda_min"])
    assert index.shape == (5, 5) and p["n_params"] == 8 * 3 + 3 * 4

    def loss(t):
        return np_loss(t, sizes, ds.X, ds.Y)

    rng = np.random.default_rng(0)
    checked = 0
    for cell in rng.choice(25, size=6, replace=False):
        i, j = divmod(int(cell), 5)
        theta = p["center"] + p["alpha"][j] * p["direction1"] + p["beta"][i] * p["direction2"]
        ev = np.linalg.eigvalsh(fd_hessian(loss, theta))
        scale = np.abs(ev).max()
        if np.any((ev < -1e-7 * scale) & (ev > -1e-3 * scale)):
            continue  # too close to zero for a finite-difference count
        assert index[i, j] == np.sum(ev < -1e-3 * scale)
        assert lam[i, j] == pytest.approx(ev[0], rel=1e-4, abs=1e-6 * scale)
        checked += 1
    assert checked >= 4
    assert len(set(index.ravel())) >= 2  # the slice crosses regions of different index


def test_index_map_of_a_one_hidden_layer_origin_has_the_closed_form_index():
    """At the origin of a one-hidden-layer linear net the eigenvalues are ±σ_j(YᵀX)/m, each
    d₁ times (THEORY.md): its index is d₁ · rank(YᵀX). A 3 × 3 map centred there has that
    index in the middle cell."""
    s = dict(LINEAR, plane="random", center="init", init="zero", init_scale=0.0, span=0.5,
             imap_grid=3, n_samples=20)
    p = _run("index_map", **s)
    ds = _data(**s)
    sv = np.linalg.svd(ds.Y.T @ ds.X, compute_uv=False)
    rank = int(np.sum(sv > 1e-9 * sv[0]))
    assert p["index"][1, 1] == 3 * rank
    assert p["lambda_min"][1, 1] == pytest.approx(-sv[0] / ds.X.shape[0], rel=1e-8)


def test_index_map_refuses_too_much_work_with_a_message():
    with pytest.raises(Exception) as info:
        _run("index_map", dataset="linear_teacher", widths=[64, 64], plane="random",
             center="init", imap_grid=101, n_samples=2000, steps=10)
    assert "index map" in str(info.value) and "operations" in str(info.value)


def test_index_map_figure_and_coarse_pass():
    a, b = np.linspace(-1, 1, 4), np.linspace(-2, 2, 3)
    idx = np.array([[0, 1, 1, 2], [0, 0, 1, -1], [0, 0, 0, 0]])
    lam = np.where(idx < 0, np.nan, -idx.astype(float))
    fig = index_map.index_map_figure(a, b, idx, lam, n_params=10,
                                     path=np.array([[0.0, 0.0], [0.5, 1.0]]),
                                     marks={"final": [0.5, 1.0]})
    heat = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert len(heat) == 2
    z = np.asarray(heat[0].z, float)
    assert np.isnan(z[1, 3]) and z[0, 3] == 2 and np.array_equal(heat[1].x, a)
    assert np.allclose(np.asarray(heat[1].z, float)[0], [0, -1, -1, -2])
    assert index_map.coarse_view({"imap_grid": 31})["imap_grid"] == index_map.COARSE_GRID
    assert index_map.coarse_view({"imap_grid": 13}) is None


# --------------------------------------------------------------------------- conserved


@pytest.mark.slow
def test_balancedness_task_drift_is_first_order_in_the_step_and_flat_modes_counted():
    s = dict(LINEAR, widths=[3, 3], steps=400, lr=0.05, init_scale=0.3)
    p = _run("balancedness", **s)
    ds = _data(**s)
    # independent: D_k from the recorded end point by numpy, against the drift reported
    assert p["time"][-1] == pytest.approx(0.05 * 400)
    ratio = p["drift"][-1] / p["drift_half"][-1]
    assert 1.6 < ratio < 2.4, ratio  # O(η): halving η halves the drift over the same time
    assert p["symmetry_rank"] == 3 * 3 + 3 * 3
    # vᵀHv along the symmetry: small only if the end point is (nearly) critical
    assert p["grad_norm_end"] < 1e-3
    assert p["symmetry_curvature"] < 1e-3
    lam = np.asarray(p["abs_eigenvalues"])
    assert lam.size == 8 * 3 + 3 * 3 + 3 * 4
    # the Hessian at the recorded end point, by finite differences of a numpy loss
    sizes = [8, 3, 3, 4]
    path = _run("path", **s)
    theta = np.asarray(path["final"], np.float64)
    ev = np.sort(np.abs(np.linalg.eigvalsh(fd_hessian(
        lambda t: np_loss(t, sizes, ds.X, ds.Y), theta))))
    assert np.allclose(lam[-5:], ev[-5:], rtol=1e-4)


def test_balancedness_of_a_tanh_net_is_refused_with_a_message():
    with pytest.raises(Exception) as info:
        _run("balancedness", dataset="two_moons", n_samples=20, model="mlp", widths=[3],
             activation="tanh", steps=20)
    assert "rescaling symmetry" in str(info.value)


def test_balance_figure_draws_both_step_sizes_and_the_spectrum():
    t = np.linspace(0, 1, 5)
    fig = balance.balance_figure(t, t ** 2, lr=0.1, time_half=t, drift_half=t ** 2 / 2,
                                 abs_eigenvalues=np.array([1e-14, 1e-13, 0.5, 2.0]),
                                 zero_tol=1e-8, symmetry_rank=2)
    lines = [tr for tr in fig.data if tr.mode == "lines"]
    assert [tr.name for tr in lines] == ["η = 0.1", "η/2 = 0.05", "zero tolerance τ"]
    assert np.allclose(lines[1].y, (t ** 2 / 2)[1:]) and np.allclose(lines[1].x, t[1:])
    assert np.allclose(lines[2].y, 1e-8)
    dots = [tr for tr in fig.data if tr.mode == "markers"]
    assert np.allclose(dots[0].y, [1e-14, 1e-13, 0.5, 2.0])


# --------------------------------------------------------------------------- the card


def test_every_view_has_a_task_settings_and_a_selector_entry():
    from landscape_app import tasks

    keys = [v.key for v in explore.VIEWS]
    assert len(set(keys)) == len(keys)
    for v in explore.VIEWS:
        assert v.key in S.EXPLORE_VIEWS and v.task in S.TASK_NAMES and v.task in tasks.TASKS
        for field, *_ in v.controls:
            assert field in S.DEFAULTS
    assert S.validate_settings({"explore": "nonsense"})[1]


def test_only_the_chosen_view_is_shown():
    styles = cb.explore_styles("balance")
    shown = [s["display"] for s in styles]
    assert shown[0] == "none" and shown.count("block") == 1
    assert shown[1 + [v.key for v in explore.VIEWS].index("balance")] == "block"
    assert [s["display"] for s in cb.explore_styles("none")][0] == "block"
    assert [s["display"] for s in cb.explore_styles({"x": 1})][0] == "block"  # hostile


def test_explore_keys_follow_the_view_and_the_coarse_pass():
    view = {**S.DEFAULTS, "explore": "index_map", "imap_grid": 31}
    full, coarse = cb.KEY_FNS["index_map"](view), cb.KEY_FNS["index_map_coarse"](view)
    assert full != coarse and coarse is not None
    assert cb.KEY_FNS["index_map_coarse"]({**view, "explore": "none"}) is None
    assert cb.KEY_FNS["index_map_coarse"]({**view, "imap_grid": 11}) is None
    assert cb.KEY_FNS["index_map"]({**view, "lr": 0.01}) != full
    # the view selector itself changes no computation
    assert cb.KEY_FNS["plane"](view) == cb.KEY_FNS["plane"]({**view, "explore": "balance"})
    big = {**view, "imap_grid": 101, "widths": [16, 16], "n_samples": 2000}
    assert not cb.is_fast("index_map", big) and cb.is_fast("index_map", {**view,
                                                                          "imap_grid": 5})


def test_build_explore_draws_a_payload_and_reports_failures(monkeypatch):
    payload = {"alpha": np.linspace(-1, 1, 3), "beta": np.linspace(-1, 1, 3),
               "index": np.zeros((3, 3), int), "lambda_min": np.ones((3, 3)),
               "n_params": 7, "seconds": 0.5}

    def fake(name, settings, progress=None):
        assert name == "index_map"
        return dict(payload)

    monkeypatch.setattr(cb, "_cached_task", fake)
    view = {**S.DEFAULTS, "explore": "index_map"}
    fig, status = cb.build_explore(index_map.VIEW, view)
    assert isinstance(fig, go.Figure) and len(fig.data) == 2
    assert "full grid" in str(status)
    fig, status = cb.build_explore(index_map.VIEW, index_map.coarse_view(
        {**view, "imap_grid": 41}))
    assert "coarse" in str(status)

    def broken(name, settings, progress=None):
        return {"alpha": [1.0]}  # an incomplete payload: a message, not a crash

    monkeypatch.setattr(cb, "_cached_task", broken)
    fig, status = cb.build_explore(index_map.VIEW, view)
    assert "could not be drawn" in str(status)


def test_exports_include_the_view_and_the_mesh(monkeypatch):
    pytest.importorskip("landscape_app.mesh_export", reason="mesh export not written yet")
    a = np.linspace(-1, 1, 3)
    payloads = {
        "surface": {"alpha": a, "beta": a, "loss": np.arange(9.0).reshape(3, 3)},
        "balancedness": {"time": np.arange(3.0), "drift": np.array([0.0, 1e-3, 2e-3]),
                         "lr": 0.1},
    }

    def fake(name, settings, progress=None):
        if name not in payloads:
            raise cb.ServiceUnavailable("no")
        return dict(payloads[name])

    monkeypatch.setattr(cb, "_cached_task", fake)
    view = {**S.DEFAULTS, "explore": "balance"}
    arrays = cb.export_arrays(view)[0]
    assert np.array_equal(arrays["balancedness_drift"], payloads["balancedness"]["drift"])
    import io
    import zipfile

    zf = zipfile.ZipFile(io.BytesIO(cb.csv_export(view)[0]))
    rows = np.loadtxt(zf.open("balancedness.csv"), delimiter=",", skiprows=1)
    assert np.allclose(rows[:, 1], payloads["balancedness"]["drift"])
    text, error = cb.mesh_text(view, "obj")
    assert error == "" and text.count("\nv ") + text.startswith("v ") == 9


# --------------------------------------------------------------------------- settings


def test_race_and_checkpoints_settings_parse_round_trip_and_refuse_bad_text():
    clean, errors = S.validate_settings({"race": "GD 0.05; adam:1e-2 , momentum=0.1, "
                                                 "Nesterov 0.1 0.5, momentum 0.1:0"})
    assert errors == {}
    assert S.parse_racers(clean["race"]) == [("gd", 0.05, None), ("adam", 0.01, None),
                                             ("momentum", 0.1, None), ("nesterov", 0.1, 0.5),
                                             ("momentum", 0.1, 0.0)]
    for bad in ("", "gd", "gd 0", "gd nan", "rmsprop 0.1", "gd 0.1 0.2", 42, ["gd 0.1"],
                "adam 0.01 0.9", "momentum 0.1 1", "momentum 0.1 -0.1", "momentum 0.1 nan",
                "momentum 0.1 0.5 0.5", "gd " + "1" * (64 * 6),
                ", ".join(["gd 0.1"] * 7), "gd " + "9" * 300):
        clean, errors = S.validate_settings({"race": bad})
        assert "race" in errors and clean["race"] == S.DEFAULTS["race"], bad
    # Six racers of long numbers: the canonical text (longer than the input) parses again.
    long = ", ".join(["nesterov .12345678901234 .123456789012"] * 6)
    clean, errors = S.validate_settings({"race": long})
    assert errors == {} and len(clean["race"]) > len(long)
    again, errors = S.validate_settings(clean)
    assert errors == {} and again["race"] == clean["race"]
    assert S.parse_racers(again["race"]) == [("nesterov", 0.12345678901234, 0.123456789012)] * 6
    assert S.parse_racers("momentum 0.1 -0") == S.parse_racers("momentum 0.1 -0.0") \
        == [("momentum", 0.1, 0.0)]
    assert S.format_racers(S.parse_racers("momentum 0.1 -0.0")) == "momentum 0.1 0.0"
    clean, errors = S.validate_settings({"checkpoints": "0, 300 2000"})
    assert errors == {} and S.parse_checkpoints(clean["checkpoints"]) == [0, 300, 2000]
    for bad in ("1, 1, 2", "1, 2", "a, b, c", "1.5, 2, 3", "-1, 2, 3", 7):
        assert "checkpoints" in S.validate_settings({"checkpoints": bad})[1], bad
    clean, errors = S.validate_settings({"checkpoints": "0, 10, 5000", "steps": 100})
    assert "checkpoints" in errors and clean["checkpoints"] == ""
    view = {**S.DEFAULTS, "race": "adam 0.001, gd 0.1", "explore": "race",
            "checkpoints": "0, 5, 9"}
    back, errors = S.validate_settings(S.settings_from_query(S.settings_to_query(view)))
    assert errors == {} and back == S.validate_settings(view)[0]


def test_planes_built_from_the_path_key_on_the_path():
    base = {**S.DEFAULTS, "center": "init"}
    for plane in ("pca", "points", "action"):
        view = {**base, "plane": plane}
        for task in ("surface", "index_map", "cut"):
            assert S.canonical_key(task, view) != S.canonical_key(task, {**view, "lr": 0.01})
    view = {**base, "plane": "random"}
    assert S.canonical_key("surface", view) == S.canonical_key("surface", {**view, "lr": 0.01})
    view = {**base, "plane": "points"}
    assert S.canonical_key("surface", view) != S.canonical_key(
        "surface", {**view, "checkpoints": "0, 5, 9"})
    assert S.canonical_key("surface", {**view, "plane": "pca"}) == S.canonical_key(
        "surface", {**view, "plane": "pca", "checkpoints": "0, 5, 9"})
