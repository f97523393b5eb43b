"""The optimiser-race view (Explore card): its task against plain numpy optimisers, its
escape steps against the numpy losses, the figure (surface image, level lines, synchronised
frames) and the wiring."""

from __future__ import annotations

import base64
import os
import zlib

import numpy as np
import plotly.graph_objects as go
import pytest

os.environ.setdefault("LANDSCAPE_TEST_TASKS", "1")

from compute import InputError  # noqa: E402
from landscape_app import callbacks as cb  # noqa: E402
from landscape_app import settings as S  # noqa: E402
from landscape_app.compute_server import TaskError  # noqa: E402
from landscape_app.explore import race  # noqa: E402
from tests.test_tasks import LINEAR, _data, _run, np_loss  # noqa: E402

D_X, D_1, D_Y = 8, 3, 4   # linear_teacher with LINEAR's one hidden layer of 3
RACE = dict(LINEAR, init_scale=0.05, steps=300,
            race="gd 0.05, momentum 0.02, momentum 0.02 0.5")  # the last with its own β


def numpy_race(theta0, X, Y, optimizer, lr, steps, momentum):
    """Losses (T+1,) and points (T+1, n): gd or heavy ball with closed-form gradients of
    L = (1/2m)‖X W₁ᵀ W₂ᵀ − Y‖²."""
    m = X.shape[0]
    theta = np.asarray(theta0, np.float64).copy()
    v = np.zeros_like(theta)
    losses, points = [], []
    for _ in range(steps + 1):
        W1 = theta[:D_1 * D_X].reshape(D_1, D_X)
        W2 = theta[D_1 * D_X:].reshape(D_Y, D_1)
        H = X @ W1.T
        R = H @ W2.T - Y
        losses.append(0.5 * np.sum(R * R) / m)
        points.append(theta.copy())
        g = np.concatenate([(W2.T @ R.T @ X / m).ravel(), (R.T @ H / m).ravel()])
        v = g + (momentum * v if optimizer == "momentum" else 0.0)
        theta = theta - lr * v
    return np.array(losses), np.array(points)


@pytest.fixture(scope="module")
def raced():
    payload = _run("race", **RACE)
    init = _run("path", **RACE)["init"]
    ds = _data(**RACE)
    beta = S.DEFAULTS["momentum"]
    refs = [numpy_race(init, ds.X, ds.Y, name, lr, RACE["steps"], b)
            for name, lr, b in (("gd", 0.05, beta), ("momentum", 0.02, beta),
                                ("momentum", 0.02, 0.5))]
    return payload, init, ds, refs


@pytest.mark.slow  # two optimisers' scans and the plane's surface (~6 s cold)
def test_racers_follow_numpy_optimisers_from_the_settings_start(raced):
    p, init, ds, refs = raced
    assert p["labels"] == ["gd η=0.05", f"momentum η=0.02 β={S.DEFAULTS['momentum']:g}",
                           "momentum η=0.02 β=0.5"]
    curve = np.asarray(p["curve_steps"])
    for k, (ref_loss, _) in enumerate(refs):
        np.testing.assert_allclose(p["loss"][k], ref_loss[curve], rtol=1e-8)
        assert p["loss"][k][0] == pytest.approx(np_loss(init, [D_X, D_1, D_Y], ds.X, ds.Y),
                                                rel=1e-12)
    np.testing.assert_array_equal(p["diverged_at"], [-1, -1, -1])


@pytest.mark.slow
def test_frames_are_the_numpy_points_on_the_race_plane(raced):
    p, init, _, refs = raced
    c = np.asarray(p["center"])
    D = np.column_stack([p["direction1"], p["direction2"]])
    np.testing.assert_allclose(c, init)
    np.testing.assert_allclose(D.T @ D, np.eye(2), atol=1e-12)
    frames = np.asarray(p["frame_steps"])
    assert frames[0] == 0 and frames[-1] == RACE["steps"] and len(frames) <= race_task_frames()
    for k, (ref_loss, points) in enumerate(refs):
        ab = np.linalg.lstsq(D, (points[frames] - c).T, rcond=None)[0].T
        np.testing.assert_allclose(p["frame_coords"][k], ab, atol=1e-5)
        np.testing.assert_allclose(p["frame_loss"][k], ref_loss[frames], rtol=1e-6)
    a, b = np.asarray(p["alpha"]), np.asarray(p["beta"])
    ds = _data(**RACE)
    for i, j in ((0, 0), (5, 17), (40, 40)):
        theta = c + a[j] * D[:, 0] + b[i] * D[:, 1]
        assert p["surface"][i, j] == pytest.approx(
            np_loss(theta, [D_X, D_1, D_Y], ds.X, ds.Y), rel=1e-5)


def race_task_frames() -> int:
    from landscape_app.explore.race_task import MAX_FRAMES

    return MAX_FRAMES


@pytest.mark.slow
def test_escape_steps_are_where_the_numpy_loss_leaves_for_good(raced):
    p, _, _, refs = raced
    for k, (ref_loss, _) in enumerate(refs):
        e, level = p["escape_step"][k], p["escape_level"][k]
        assert e is not None and e > 0
        assert np.all(ref_loss[e:] < level) and ref_loss[e - 1] >= level
    assert p["escape_step"][1] < p["escape_step"][0]   # momentum leaves the plateau first
    assert p["escape_step"][1] < p["escape_step"][2]   # and sooner with β = 0.9 than 0.5


def test_bad_races_are_messages(monkeypatch):
    with pytest.raises(InputError, match="same label"):
        _run("race", **dict(RACE, race="gd 0.05, gd 0.05", steps=5))
    for text in ("lbfgs 0.1", "gd", ", ".join(["gd 0.1"] * 7), "gd -1"):
        clean, errors = S.validate_settings({"race": text})
        assert "race" in errors and clean["race"] == S.DEFAULTS["race"]


def _payload(K=2, F=4, S_=5):
    a = np.linspace(-1, 1, 5)
    return {
        "labels": ["gd η=0.1", "adam η=0.01"][:K], "alpha": a, "beta": a,
        "surface": np.add.outer(a ** 2, a ** 2) + 0.1,
        "trail_coords": np.zeros((K, F, 2)), "frame_steps": np.arange(F) * 10,
        "frame_coords": np.stack([np.column_stack([np.linspace(0, 1, F), np.zeros(F)])] * K),
        "frame_loss": np.ones((K, F)), "curve_steps": np.arange(S_) * 10,
        "loss": np.vstack([np.linspace(2, 1, S_), np.linspace(2, 0.5, S_)])[:K],
        "escape_step": [20, None][:K], "diverged_at": [-1, 7][:K], "escape_fraction": 0.1,
        "explained_variance": np.array([0.7, 0.2]), "seconds": 0.4,
    }


def test_race_figure_draws_its_input_with_frames_in_sync():
    p = _payload()
    fig, status = race.render(p, {})
    assert status == "gd η=0.1: escapes at step 20 · adam η=0.01: diverged at step 7"
    assert len(fig.frames) == 4 and len(fig.layout.images) == 1
    names = [t.name for t in fig.data]
    loss_traces = [t for t in fig.data if t.name in p["labels"] and t.xaxis == "x2"
                   and t.mode == "lines"]
    np.testing.assert_array_equal(loss_traces[1].y, p["loss"][1])
    bar = next(t for t in fig.data if t.type == "bar")
    assert list(bar.x) == [20, 0] and list(bar.text) == ["20", "diverged at 7"]
    assert "level lines" in names
    frame = fig.frames[2]
    moving = [fig.data[i] for i in frame.traces if fig.data[i].type == "scatter"]
    assert len(moving) == 4 and all(m.mode == "markers" for m in moving)
    xs = [d.x[0] for d in frame.data if d.type == "scatter"]
    assert xs[:2] == pytest.approx([2 / 3, 2 / 3]) and xs[2:] == [20, 20]   # one step for all
    assert any(fig.data[i].type == "bar" for i in frame.traces)  # bars redrawn each step


def test_surface_image_and_level_lines():
    a = np.linspace(0.0, 4.0, 5)
    b = np.linspace(-1.0, 1.0, 3)
    z = np.tile(a, (b.size, 1))                     # z = α: level lines are vertical
    image = race.surface_image(a, b, z)
    png = base64.b64decode(image["source"].split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    idat = png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(3, 1 + 5 * 3)
    pixels = raw[:, 1:].reshape(3, 5, 3)
    viridis_first, viridis_last = (68, 1, 84), (253, 231, 37)  # #440154, #fde725
    np.testing.assert_array_equal(pixels[:, 0], [viridis_first] * 3)
    np.testing.assert_array_equal(pixels[:, -1], [viridis_last] * 3)
    assert image["x"] == pytest.approx(-0.5) and image["sizex"] == pytest.approx(5.0)
    assert image["y"] == pytest.approx(1.5) and image["sizey"] == pytest.approx(3.0)
    for levels, expected in ((4, [0.8, 1.6, 2.4, 3.2]), (3, [1.0, 2.0, 3.0])):
        xs, ys = race.iso_lines(a, b, z, levels)   # 3: the levels fall on grid values
        assert sorted({round(x, 9) for x in xs if x is not None}) == expected
    assert {y for y in ys if y is not None} <= {-1.0, 0.0, 1.0}


def test_build_explore_draws_the_race_and_reports_failures(monkeypatch):
    view = {**S.DEFAULTS, "explore": "race"}
    monkeypatch.setattr(cb, "_cached_task", lambda name, settings, progress=None: _payload())
    fig, status = cb.build_explore(race.VIEW, view)
    assert isinstance(fig, go.Figure) and len(fig.frames) == 4
    assert "escapes at step 20" in str(status)

    def refuse(name, settings, progress=None):
        assert name == "race"
        raise TaskError("racer 2: the learning rate must be a finite number.", "input")

    monkeypatch.setattr(cb, "_cached_task", refuse)
    fig, status = cb.build_explore(race.VIEW, view)
    assert "racer 2" in str(status) and "status-error" in str(status)


def test_race_tables_and_work():
    tables = race.VIEW.tables(_payload())
    header, rows = tables["race_loss.csv"]
    assert header == ["step", "loss gd η=0.1", "loss adam η=0.01"] and rows.shape == (5, 3)
    _, escapes = tables["race_escape.csv"]
    assert escapes[0, 1] == 20 and np.isnan(escapes[1, 1]) and escapes[1, 2] == 7
    three = race.VIEW.work(40, 36, {"steps": 3000, "race": "gd 0.1, adam 0.1, momentum 0.1"})
    one = race.VIEW.work(40, 36, {"steps": 3000, "race": "gd 0.1"})
    assert three > 2.5 * one
