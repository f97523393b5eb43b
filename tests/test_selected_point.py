"""A selected point (α, β) of the plane, off the path (issue 5): settings, tasks, callback."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("LANDSCAPE_TEST_TASKS", "1")

from landscape_app import callbacks as cb  # noqa: E402
from landscape_app import settings as S  # noqa: E402
from landscape_app import tasks  # noqa: E402
from tests.test_tasks import LINEAR, MLP, _data, _run, np_loss  # noqa: E402

# --------------------------------------------------------------------------- settings


def test_selected_alpha_beta_are_validated_like_floats():
    clean, errors = S.validate_settings({"selected_alpha": "0.25", "selected_beta": -1})
    assert errors == {} and clean["selected_alpha"] == 0.25 and clean["selected_beta"] == -1.0
    assert S.DEFAULTS["selected_alpha"] is None and S.DEFAULTS["selected_beta"] is None
    big = S.LIMITS.MAX_SPAN * 2
    for bad in (float("nan"), float("inf"), "x", big, -big, True, [1]):
        clean, errors = S.validate_settings({"selected_alpha": bad, "selected_beta": 0.0})
        assert "selected_alpha" in errors and clean["selected_alpha"] is None
        assert clean["selected_beta"] is None  # a half point is dropped, with a message
    clean, errors = S.validate_settings({"selected_alpha": "", "selected_beta": None})
    assert errors == {} and clean["selected_alpha"] is None
    clean, errors = S.validate_settings({"selected_alpha": 0.5})
    assert set(errors) == {"selected_alpha", "selected_beta"}
    assert clean["selected_alpha"] is None and clean["selected_beta"] is None


def test_selected_centre_accepts_a_plane_point_and_round_trips_the_url():
    raw = {"center": "selected", "selected_alpha": 0.125, "selected_beta": -0.5}
    clean, errors = S.validate_settings(raw)
    assert errors == {} and clean["center"] == "selected"
    query = S.settings_to_query(clean)
    assert "selected_alpha=0.125" in query and "selected_beta=-0.5" in query
    back, errors = S.validate_settings(S.settings_from_query("?" + query))
    assert errors == {} and back == clean
    _, errors = S.validate_settings({"center": "selected"})
    assert "center" in errors


def test_plane_point_is_part_of_the_keys_that_use_it():
    base = dict(S.DEFAULTS)
    point = {**base, "selected_alpha": 0.1, "selected_beta": 0.2}
    other = {**base, "selected_alpha": 0.1, "selected_beta": 0.3}
    for task in ("spectrum", "critical_point"):
        assert S.canonical_key(task, point) != S.canonical_key(task, other)
        assert S.canonical_key(task, point) != S.canonical_key(task, base)
        # the point lies on the plane: the plane's settings count too
        assert S.canonical_key(task, point) != \
            S.canonical_key(task, {**point, "plane": "random"})
        assert S.canonical_key(task, base) == S.canonical_key(task, {**base, "plane": "random"})
    # the surface only depends on it when centred there
    assert S.canonical_key("surface", point) == S.canonical_key("surface", other)
    sel = {**point, "center": "selected"}
    assert S.canonical_key("surface", sel) != \
        S.canonical_key("surface", {**other, "center": "selected"})
    for task in ("path", "many_starts", "theory"):
        assert S.canonical_key(task, point) == S.canonical_key(task, base)


# --------------------------------------------------------------------------- tasks


@pytest.mark.parametrize("setup, center, sizes, kw", [
    (LINEAR, "final", [8, 3, 4], {}),
    (LINEAR, "init", [8, 3, 4], {}),
    (MLP, "final", [2, 4, 2], {"bias": True, "act": "tanh", "loss": "squared"}),
])
def test_spectrum_at_a_plane_point_matches_numpy(setup, center, sizes, kw):
    """The spectrum's loss at (α, β) equals a numpy forward pass at
    centre + α·d1 + β·d2, with the centre and directions the surface task reported."""
    plane = "random" if center == "init" else "pca"
    a, b = 0.3, -0.2
    common = dict(setup, plane=plane, center=center, span=0.5, grid=9)
    surface = _run("surface", **common)
    spec = _run("spectrum", **common, selected_alpha=a, selected_beta=b)
    ds = _data(**setup)
    d1 = surface["direction1"].astype(np.float64)
    d2 = surface["direction2"].astype(np.float64)
    point = surface["center"] + a * d1 + b * d2
    expected = np_loss(point, sizes, ds.X, ds.Y, **kw)
    assert spec["loss"] == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(spec["point"], point, rtol=1e-5, atol=1e-6)
    assert spec["step"] is None and spec["plane_point"] == [a, b]
    # the path point stays the default
    assert _run("spectrum", **common)["step"] is not None


def test_centre_selected_moves_the_plane_to_the_plane_point():
    a, b = 0.25, 0.1
    common = dict(LINEAR, plane="random", span=0.5, grid=9)
    base = _run("surface", **common, center="final")
    moved = _run("surface", **common, center="selected", selected_alpha=a,
                 selected_beta=b)
    d1 = base["direction1"].astype(np.float64)
    d2 = base["direction2"].astype(np.float64)
    np.testing.assert_allclose(moved["center"], base["center"] + a * d1 + b * d2,
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(moved["direction1"], base["direction1"])
    ds = _data(**LINEAR)
    assert moved["loss"][4, 4] == pytest.approx(
        np_loss(moved["center"], [8, 3, 4], ds.X, ds.Y), rel=1e-5)
    assert moved["marks"]["selected"] == pytest.approx([0.0, 0.0], abs=1e-9)
    # the spectrum at the same settings is at the new centre
    spec = _run("spectrum", **common, center="selected", selected_alpha=a, selected_beta=b)
    np.testing.assert_allclose(spec["point"], moved["center"], rtol=1e-9)
    crit = _run("critical_point", **common, center="selected", selected_alpha=a,
                selected_beta=b)
    np.testing.assert_allclose(crit["start"], moved["center"], rtol=1e-9)
    assert crit["start_step"] is None and crit["start_plane_point"] == [a, b]


def test_pca_window_follows_a_selected_centre():
    a, b = 0.05, -0.02
    common = dict(LINEAR, plane="pca", span=1.0, grid=9)
    base = _run("surface", **common, center="final")
    moved = _run("surface", **common, center="selected", selected_alpha=a, selected_beta=b)
    assert float(moved["alpha"][0]) == pytest.approx(float(base["alpha"][0]) - a, abs=1e-5)
    assert float(moved["beta"][-1]) == pytest.approx(float(base["beta"][-1]) - b, abs=1e-5)
    assert tasks.has_plane_point({"selected_alpha": a, "selected_beta": b})


# --------------------------------------------------------------------------- callback


ANIM = {"x": [0.0, 1.0, 2.0], "y": [0.0, 0.5, 0.0], "step": [0, 50, 100]}


def test_contour_click_off_the_path_selects_the_plane_point():
    off = {"points": [{"curveNumber": 0, "x": 1.8, "y": 0.2, "customdata": 0.7}]}
    assert cb.selection_from_click(off, ANIM, {"center": "final"}) == ("", "1.8", "0.2")
    # on a start-centred plane the centre's path point (step 0) goes with it
    assert cb.selection_from_click(off, ANIM, {"center": "init"}) == ("0", "1.8", "0.2")
    # a plane already centred at a plane point: the click adds to it
    view = {"center": "selected", "selected_step": 50, "selected_alpha": 1.0,
            "selected_beta": -1.0}
    assert cb.selection_from_click(off, ANIM, view) == ("50", "2.8", "-0.8")
    # the values it writes are valid settings
    step, a, b = cb.selection_from_click(off, ANIM, {"center": "final"})
    clean, errors = S.validate_settings({"selected_step": step, "selected_alpha": a,
                                         "selected_beta": b})
    assert errors == {} and (clean["selected_alpha"], clean["selected_beta"]) == (1.8, 0.2)


def test_path_click_keeps_selecting_a_step_and_clears_the_plane_point():
    on_path = {"points": [{"curveNumber": 3, "x": 1.0, "y": 0.5, "customdata": 50}]}
    assert cb.selection_from_click(on_path, ANIM, {"center": "final"}) == ("50", "", "")
    assert cb.selection_from_click({"points": []}, ANIM, {}) is None
    assert cb.selection_from_click(None, ANIM, {}) is None
    junk = {"points": [{"curveNumber": 0, "x": "a", "y": 0.2}]}
    assert cb.selection_from_click(junk, ANIM, {}) is None


def test_selected_marker_shows_the_plane_point():
    view = {"selected_step": 50, "selected_alpha": 0.4, "selected_beta": -0.3,
            "center": "final"}
    assert cb._selected_point(view, ANIM) == (0.4, -0.3)
    assert cb._selected_point({**view, "center": "selected"}, ANIM) == (0.0, 0.0)
    assert cb._selected_point({"selected_step": 50}, ANIM) == (1.0, 0.5)
