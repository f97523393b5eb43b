"""The honest-slice view (Explore card): its task against numpy losses at the path's points
and at their projections, the action and checkpoint planes, the figure and the wiring."""

from __future__ import annotations

import os

import numpy as np
import plotly.graph_objects as go
import pytest

os.environ.setdefault("LANDSCAPE_TEST_TASKS", "1")

from compute import InputError  # noqa: E402
from landscape_app import callbacks as cb  # noqa: E402
from landscape_app import settings as S  # noqa: E402
from landscape_app.compute_server import TaskError  # noqa: E402
from landscape_app.explore import honest  # noqa: E402
from landscape_app.figures import contour  # noqa: E402
from tests.test_tasks import LINEAR, _data, _run, np_loss  # noqa: E402

SIZES = [8, 3, 4]  # linear_teacher: 8 inputs, 4 outputs; LINEAR has one hidden layer of 3


def _loss(theta, ds):
    return np_loss(np.asarray(theta, np.float64), SIZES, ds.X, ds.Y)


def test_true_and_slice_losses_match_numpy_on_the_pca_plane():
    s = dict(LINEAR, plane="pca", center="final")
    p = _run("honest_slice", **s)
    path = _run("path", **s)
    surface = _run("surface", **s, grid=3)   # the same plane: its centre and directions
    ds = _data(**s)
    steps = np.asarray(p["steps"])
    np.testing.assert_array_equal(steps, path["weight_steps"])
    assert p["true_loss"][0] == pytest.approx(_loss(path["init"], ds), rel=1e-12)
    assert p["true_loss"][-1] == pytest.approx(_loss(path["final"], ds), rel=1e-12)
    W = np.asarray(path["weights"], np.float64)           # float32 for display
    rows = np.linspace(0, steps.size - 1, 7).astype(int)
    np.testing.assert_allclose(p["true_loss"][rows], [_loss(W[r], ds) for r in rows],
                               rtol=1e-5)
    c = np.asarray(surface["center"], np.float64)
    d1 = np.asarray(surface["direction1"], np.float64)
    d2 = np.asarray(surface["direction2"], np.float64)
    a, b = np.asarray(p["alpha"], np.float64), np.asarray(p["beta"], np.float64)
    np.testing.assert_allclose(p["slice_loss"][rows],
                               [_loss(c + a[r] * d1 + b[r] * d2, ds) for r in rows], rtol=1e-4)
    # numpy's least squares of the recorded point on the plane gives the same coordinates
    D = np.column_stack([d1, d2])
    ab = np.linalg.lstsq(D, (W[rows] - c).T, rcond=None)[0].T
    np.testing.assert_allclose(np.column_stack([a[rows], b[rows]]), ab, atol=1e-4)
    # the centre (the final point) lies in the plane: no gap and no distance there
    assert p["relative_distance"][-1] == pytest.approx(0.0, abs=1e-6)
    assert p["slice_loss"][-1] == pytest.approx(p["true_loss"][-1], rel=1e-9)
    assert p["max_gap"] == pytest.approx(np.max(np.abs(p["true_loss"] - p["slice_loss"])))
    np.testing.assert_allclose(p["center_distance"][rows], np.linalg.norm(W[rows] - c, axis=1),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # trains, finds plateaus and the saddle's exact Hessian (~5 s cold)
def test_action_plane_holds_the_saddle_and_the_end():
    s = dict(LINEAR, plane="action", init_scale=0.02, steps=600, lr=0.05)
    p = _run("honest_slice", **s)
    ds = _data(**s)
    steps = np.asarray(p["steps"])
    saddle = int(p["saddle_step"])
    assert 0 < saddle < steps[-1]
    for row in (int(np.flatnonzero(steps == saddle)[0]), steps.size - 1):
        assert p["distance"][row] == pytest.approx(0.0, abs=1e-6)
        assert p["slice_loss"][row] == pytest.approx(p["true_loss"][row], rel=1e-9)
    path = _run("path", **s)
    assert p["true_loss"][-1] == pytest.approx(_loss(path["final"], ds), rel=1e-12)
    assert isinstance(p["plane_note"], str)


def test_checkpoint_plane_passes_through_the_chosen_steps():
    s = dict(LINEAR, plane="points", checkpoints="0, 120, 300")
    p = _run("honest_slice", **s)
    assert p["checkpoint_steps"] == [0, 120, 300]
    steps = np.asarray(p["steps"])
    for step in (0, 120, 300):
        row = int(np.flatnonzero(steps == step)[0])
        assert p["distance"][row] == pytest.approx(0.0, abs=1e-6)
        assert p["slice_loss"][row] == pytest.approx(p["true_loss"][row], rel=1e-9)
    assert np.max(p["distance"]) > 1e-4   # the rest of the path leaves that plane


def test_the_surface_marks_the_checkpoints_where_numpy_projects_them():
    s = dict(LINEAR, plane="points", checkpoints="0, 120, 300")
    p = _run("surface", **s)
    path = _run("path", **s)
    c = np.asarray(p["center"], np.float64)
    D = np.column_stack([p["direction1"], p["direction2"]]).astype(np.float64)
    steps = list(np.asarray(path["weight_steps"]))
    for step in (0, 120, 300):
        w = np.asarray(path["weights"][steps.index(step)], np.float64)
        ab, *_ = np.linalg.lstsq(D, w - c, rcond=None)
        np.testing.assert_allclose(p["marks"][f"step {step}"], ab, atol=1e-4)
        assert p["mark_distance"][f"step {step}"] == pytest.approx(0.0, abs=1e-4)
    assert p["checkpoint_steps"] == [0, 120, 300]
    assert cb._plane_title(s, p) == "plane through steps 0, 120 and 300, centred at step 0"
    fig = contour(p["alpha"], p["beta"], p["loss"], marks=p["marks"])
    drawn = {t.name: (t.x[0], t.y[0]) for t in fig.data
             if isinstance(t, go.Scatter) and t.mode == "markers" and len(t.x)}
    for step in (0, 120, 300):
        assert drawn[f"step {step}"] == pytest.approx(tuple(p["marks"][f"step {step}"]))


def test_a_path_that_does_not_move_is_a_message_not_a_crash():
    with pytest.raises(InputError, match="does not move"):
        _run("honest_slice", **dict(LINEAR, plane="pca", init="zero", init_scale=0.0))
    clean, errors = S.validate_settings({"checkpoints": "5, 5, 5"})
    assert "checkpoints" in errors and clean["checkpoints"] == ""


def test_honest_figure_draws_its_input():
    steps = np.arange(0, 50, 10)
    true_loss = np.array([4.0, 3.0, 1.0, 0.5, 0.4])
    slice_loss = np.array([2.0, 2.5, 1.0, 0.5, 0.4])
    off = np.array([0.9, 0.5, 0.0, 0.01, 0.0])
    centre = np.array([3.0, 2.0, 1.0, 0.5, 0.0])
    fig = honest.honest_figure(steps, true_loss, slice_loss, off, center_distance=centre,
                               marks={"saddle": 20})
    assert len(fig.data) == 4
    np.testing.assert_array_equal(fig.data[0].y, true_loss)
    np.testing.assert_array_equal(fig.data[1].y, slice_loss)
    np.testing.assert_array_equal(fig.data[2].y, off)
    np.testing.assert_array_equal(fig.data[3].y, centre)
    np.testing.assert_array_equal(fig.data[0].x, steps)
    assert any(a.text == "saddle" for a in fig.layout.annotations)
    assert fig.layout.yaxis.type != "log"   # one decade: linear axis


def _payload():
    return {"steps": np.arange(3) * 5, "alpha": np.zeros(3), "beta": np.zeros(3),
            "true_loss": np.array([3.0, 2.0, 1.0]), "slice_loss": np.array([1.0, 2.0, 1.0]),
            "distance": np.array([1.0, 0.0, 0.0]),
            "relative_distance": np.array([1.0, 0.0, 0.0]),
            "center_distance": np.array([1.0, 0.5, 0.0]), "max_gap": 2.0, "plane": "action",
            "plane_note": "The Hessian is zero at this point.", "saddle_step": 5,
            "explained_variance": None, "seconds": 0.3}


def test_build_explore_draws_the_view_and_reports_failures(monkeypatch):
    view = {**S.DEFAULTS, "explore": "honest"}
    monkeypatch.setattr(cb, "_cached_task", lambda name, settings, progress=None: _payload())
    fig, status = cb.build_explore(honest.VIEW, view)
    assert isinstance(fig, go.Figure) and len(fig.data) == 4
    assert "Hessian is zero" in str(status) and "status-ok" in str(status)

    def refuse(name, settings, progress=None):
        assert name == "honest_slice"
        raise TaskError("the path does not move, so it has no PCA plane.", "input")

    monkeypatch.setattr(cb, "_cached_task", refuse)
    fig, status = cb.build_explore(honest.VIEW, view)
    assert "does not move" in str(status) and "status-error" in str(status)
    monkeypatch.setattr(cb, "_cached_task", lambda name, settings, progress=None: {"steps": [1]})
    fig, status = cb.build_explore(honest.VIEW, view)
    assert "could not be drawn" in str(status)


def test_honest_view_tables_and_work():
    tables = honest.VIEW.tables(_payload())
    header, rows = tables["honest_slice.csv"]
    assert header[0] == "step" and rows.shape == (3, 7)
    np.testing.assert_array_equal(rows[:, 3], [3.0, 2.0, 1.0])
    small = honest.VIEW.work(40, 36, {"steps": 300, "plane": "pca"})
    assert small < honest.VIEW.work(40, 36, {"steps": 300, "plane": "action"})
