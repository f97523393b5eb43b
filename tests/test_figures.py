"""Figure builders (landscape_app/figures.py) on synthetic arrays.

References are computed here independently: the plotted arrays must equal the inputs (or
their log10), overflow markers must sit exactly on the non-finite cells, bilinear
interpolation must reproduce an affine function exactly, histogram counts are recounted by
hand from the bar edges.
"""

from __future__ import annotations

import re

import numpy as np
import plotly.graph_objects as go
import pytest

from landscape_app import figures


def _grid(rng, n_a=9, n_b=7):
    alpha = np.linspace(-1.0, 1.5, n_a)
    beta = np.linspace(-2.0, 0.5, n_b)
    loss = rng.uniform(0.1, 3.0, size=(n_b, n_a))
    return alpha, beta, loss


def _trace(fig: go.Figure, name: str):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, [t.name for t in fig.data]
    return found[0]


def _by_uid(fig: go.Figure, uid: str):
    found = [t for t in fig.data if t.uid == uid]
    assert len(found) == 1
    return found[0]


# --------------------------------------------------------------------------- contour


def test_contour_draws_the_loss_grid_as_given(rng):
    alpha, beta, loss = _grid(rng)
    fig = figures.contour(alpha, beta, loss)
    c = fig.data[0]
    assert isinstance(c, go.Contour)
    np.testing.assert_array_equal(np.asarray(c.x), alpha)
    np.testing.assert_array_equal(np.asarray(c.y), beta)
    np.testing.assert_array_equal(np.asarray(c.z), loss)
    assert "%{z" in c.hovertemplate  # hover shows the loss itself
    assert not _trace(fig, "overflow (0 cells)").visible


def test_contour_log_scale_draws_log10_and_keeps_the_loss_for_hover(rng):
    alpha, beta, loss = _grid(rng)
    fig = figures.contour(alpha, beta, loss, log_scale=True)
    np.testing.assert_allclose(np.asarray(fig.data[0].z), np.log10(loss), rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(fig.data[0].customdata), loss)
    assert "log" in fig.data[0].colorbar.title.text


def test_contour_clips_and_marks_non_finite_cells(rng):
    alpha, beta, loss = _grid(rng)
    bad = [(0, 0), (3, 5), (6, 8)]
    loss[0, 0], loss[3, 5], loss[6, 8] = np.inf, np.nan, -np.inf
    fig = figures.contour(alpha, beta, loss)
    z = np.asarray(fig.data[0].z, dtype=float)
    finite = np.isfinite(loss)
    np.testing.assert_array_equal(z[finite], loss[finite])
    for i, j in bad:
        assert z[i, j] == loss[finite].max()  # clipped to the top of the colour scale
    marks = _trace(fig, "overflow (3 cells)")
    assert marks.visible
    got = sorted(zip(np.asarray(marks.x), np.asarray(marks.y), strict=True))
    want = sorted((alpha[j], beta[i]) for i, j in bad)
    assert got == want


def test_contour_log_scale_with_overflow_and_zeros(rng):
    alpha, beta, loss = _grid(rng)
    loss[1, 1] = 0.0
    loss[2, 2] = np.inf
    z = np.asarray(figures.contour(alpha, beta, loss, log_scale=True).data[0].z, dtype=float)
    positive = loss[np.isfinite(loss) & (loss > 0)]
    assert z[1, 1] == pytest.approx(np.log10(positive.min()))  # floored, not -inf
    mask = np.isfinite(loss) & (loss > 0)
    assert z[2, 2] == pytest.approx(np.log10(loss[mask]).max())
    assert np.all(np.isfinite(z))


def test_contour_path_marks_selected_and_animation_marker(rng):
    alpha, beta, loss = _grid(rng)
    path = np.stack([np.linspace(-0.9, 1.2, 12), np.linspace(0.3, -1.8, 12)], axis=1)
    steps = np.arange(12) * 25
    marks = {"init": (-0.9, 0.3), "final": (1.2, -1.8), "saddle": (0.1, -0.4)}
    fig = figures.contour(alpha, beta, loss, path=path, path_steps=steps, marks=marks,
                          selected=(0.5, -1.0), others=[("gd path", path[::-1])])
    p = _trace(fig, "path")
    np.testing.assert_array_equal(np.asarray(p.x), path[:, 0])
    np.testing.assert_array_equal(np.asarray(p.y), path[:, 1])
    np.testing.assert_array_equal(np.asarray(p.customdata), steps)  # clicks report steps
    start, end = _trace(fig, "start"), _trace(fig, "end")
    assert (start.x[0], start.y[0]) == marks["init"]
    assert (end.x[0], end.y[0]) == marks["final"]
    assert start.marker.color != end.marker.color
    saddle = _trace(fig, "plateau saddle")
    assert (saddle.x[0], saddle.y[0]) == marks["saddle"]
    sel = _by_uid(fig, figures.SELECTED_MARKER_UID)
    assert (sel.x[0], sel.y[0]) == (0.5, -1.0)
    anim = [s for s in fig.layout.shapes if s.name == figures.ANIMATION_MARKER_UID]
    assert len(anim) == 1 and anim[0].visible and anim[0].layer == "above"
    assert (anim[0].xanchor, anim[0].yanchor) == (path[0, 0], path[0, 1])
    other = _trace(fig, "gd path")
    np.testing.assert_array_equal(np.asarray(other.x), path[::-1, 0])


def test_contour_without_path_has_empty_markers(rng):
    alpha, beta, loss = _grid(rng)
    fig = figures.contour(alpha, beta, loss)
    assert not [s for s in fig.layout.shapes if s.name == figures.ANIMATION_MARKER_UID][0].visible
    assert len(_by_uid(fig, figures.SELECTED_MARKER_UID).x) == 0


# --------------------------------------------------------------------------- 3-D surface


def test_surface_draws_the_grid_and_lifts_the_path(rng):
    alpha, beta, loss = _grid(rng)
    path = np.stack([np.linspace(-1, 1, 5), np.linspace(-2, 0, 5)], axis=1)
    path_loss = np.array([2.0, 1.5, 1.0, 0.6, 0.5])
    fig = figures.surface_3d(alpha, beta, loss, path=path, path_loss=path_loss)
    s = fig.data[0]
    assert isinstance(s, go.Surface)
    np.testing.assert_array_equal(np.asarray(s.z), loss)
    lift = 0.01 * (loss.max() - loss.min())
    p = _trace(fig, "path")
    np.testing.assert_allclose(np.asarray(p.z), path_loss + lift, rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(p.x), path[:, 0])
    anim = _by_uid(fig, figures.ANIMATION_MARKER_UID)
    assert anim.z[0] == pytest.approx(path_loss[0] + lift)


def test_surface_marks_sit_on_the_surface(rng):
    """Marks at grid nodes get the node's height (bilinear interpolation is exact there)."""
    alpha, beta, loss = _grid(rng)
    fig = figures.surface_3d(alpha, beta, loss, marks={"init": (alpha[2], beta[4])})
    lift = 0.01 * (loss.max() - loss.min())
    assert _trace(fig, "start").z[0] == pytest.approx(loss[4, 2] + lift)


def test_bilinear_interpolation_is_exact_for_affine_functions(rng):
    alpha = np.sort(rng.uniform(-3, 3, 8))
    beta = np.sort(rng.uniform(-2, 2, 6))
    z = 0.7 * alpha[None, :] - 1.3 * beta[:, None] + 0.25
    pts = np.stack([rng.uniform(alpha[0], alpha[-1], 50), rng.uniform(beta[0], beta[-1], 50)],
                   axis=1)
    got = figures._interp_grid(alpha, beta, z, pts)
    np.testing.assert_allclose(got, 0.7 * pts[:, 0] - 1.3 * pts[:, 1] + 0.25, rtol=1e-12,
                               atol=1e-12)


# --------------------------------------------------------------------------- cuts


def test_cuts_one_panel_each_with_global_minimum():
    t = np.linspace(-1, 1, 21)
    cuts = [figures.Cut("along d1", t, t**2 + 0.5, "α"),
            figures.Cut("start → end", t, (t - 0.5) ** 2 + 0.5, "fraction")]
    fig = figures.cuts_1d(cuts, global_min=0.5)
    lines = [tr for tr in fig.data if tr.name in ("along d1", "start → end")]
    assert len(lines) == 2
    np.testing.assert_array_equal(np.asarray(lines[0].y), t**2 + 0.5)
    assert lines[0].xaxis != lines[1].xaxis
    lstar = [tr for tr in fig.data if tr.name and tr.name.startswith("L*")]
    assert lstar and all(np.allclose(np.asarray(tr.y), 0.5) for tr in lstar)


# --------------------------------------------------------------------------- path metrics


def test_path_metrics_plateaus_lstar_and_cursor():
    steps = np.arange(0, 1001, 5)
    loss = 0.2 + np.exp(-steps / 300.0)
    grad = np.exp(-steps / 500.0)
    plateaus = [{"entry": 100, "exit": 350, "level": 0.9}, {"entry": 600, "exit": 700}]
    fig = figures.path_metrics(loss, grad, steps=steps, lambda_steps=[0, 500, 1000],
                               lambda_min=[-1.0, -0.1, 0.2], lambda_max=[3.0, 4.0, 5.0],
                               plateaus=plateaus, global_min=0.2, selected_step=450,
                               diverged_at=None)
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert [(r.x0, r.x1) for r in rects] == [(100, 350), (600, 700)]
    assert all(r.yref == "paper" and r.y0 == 0 and r.y1 == 1 for r in rects)
    cursor, selected = fig.layout.shapes[0], fig.layout.shapes[1]
    assert cursor.name == figures.CURSOR_SHAPE_NAME and cursor.visible is False
    assert selected.name == figures.SELECTED_SHAPE_NAME
    assert (selected.x0, selected.x1, selected.visible) == (450, 450, True)
    lstar = _trace(fig, "L* = 0.2")
    assert list(lstar.y) == [0.2, 0.2] and list(lstar.x) == [0, 1000]
    np.testing.assert_array_equal(np.asarray(_trace(fig, "loss").y), loss)
    np.testing.assert_array_equal(np.asarray(_trace(fig, "loss").x), steps)
    np.testing.assert_array_equal(np.asarray(_trace(fig, "λ_min").y), [-1.0, -0.1, 0.2])
    assert fig.layout.yaxis.type == "log"  # every loss and L* positive


def test_path_metrics_linear_axis_when_loss_reaches_zero_and_divergence_line():
    loss = np.array([1.0, 0.5, 0.0, np.inf])
    fig = figures.path_metrics(loss, None, diverged_at=3)
    assert fig.layout.yaxis.type == "linear"
    y = np.asarray(_trace(fig, "loss").y, dtype=float)
    assert np.isnan(y[3])  # the non-finite value is a gap, not a spike
    diverged = [s for s in fig.layout.shapes if s.name == "diverged"]
    assert diverged and diverged[0].x0 == 3
    assert fig.layout.shapes[1].visible is False  # no selected point


def test_path_metrics_saxe_and_comparison_curves():
    steps = np.arange(100)
    fig = figures.path_metrics(np.linspace(1, 0.1, 100), saxe=(steps, np.linspace(1, 0.2, 100)),
                               others=[("gd", steps, np.linspace(1, 0.3, 100))])
    np.testing.assert_allclose(np.asarray(_trace(fig, "Saxe et al. theory").y),
                               np.linspace(1, 0.2, 100))
    np.testing.assert_allclose(np.asarray(_trace(fig, "gd").y), np.linspace(1, 0.3, 100))


# --------------------------------------------------------------------------- spectrum


def test_spectrum_sorts_and_splits_eigenvalues_by_sign(rng):
    lam = np.concatenate([rng.uniform(-2, -0.1, 4), [1e-12, -1e-12, 0.0],
                          rng.uniform(0.1, 5, 9)])
    rng.shuffle(lam)
    fig = figures.spectrum(lam, zero_tol=1e-9)
    groups = {t.name.split(" (")[0]: t for t in fig.data if t.xaxis == "x"}
    assert len(groups["negative"].y) == 4 and len(groups["≈ 0"].y) == 3
    assert len(groups["positive"].y) == 9
    xs = np.concatenate([np.asarray(groups[k].x) for k in groups])
    ys = np.concatenate([np.asarray(groups[k].y, dtype=float) for k in groups])
    np.testing.assert_array_equal(ys[np.argsort(xs)], np.sort(lam))  # index → sorted value
    assert all(v < -1e-9 for v in groups["negative"].y)


def test_spectrum_density_and_histogram_fallback(rng):
    lam = rng.normal(size=40)
    grid = np.linspace(-3, 3, 50)
    values = np.exp(-grid**2 / 2) / np.sqrt(2 * np.pi)
    fig = figures.spectrum(lam, density={"grid": grid, "values": values})
    dens = _trace(fig, "SLQ density")
    np.testing.assert_allclose(np.asarray(dens.y), values)
    fig = figures.spectrum(lam)
    bars = _trace(fig, "histogram")
    x, w, h = np.asarray(bars.x), np.asarray(bars.width), np.asarray(bars.y)
    assert np.sum(h * w) == pytest.approx(1.0)  # a normalised density
    lo, hi = x - w / 2, x + w / 2
    counts = np.array([np.sum((lam >= a) & ((lam < b) | ((b == hi[-1]) & (lam <= b))))
                       for a, b in zip(lo, hi, strict=True)])
    np.testing.assert_allclose(h, counts / (lam.size * w))


# --------------------------------------------------------------------------- many starts


def test_many_starts_histogram_counts_and_global_minimum(rng):
    losses = np.concatenate([rng.uniform(0.0, 0.01, 50), rng.uniform(0.2, 0.25, 30),
                             [np.inf, np.nan]])
    fig = figures.many_starts_histogram(losses, global_min=0.0, bins=20,
                                        converged_fraction=50 / 82)
    bars = [t for t in fig.data if isinstance(t, go.Bar)][0]
    h = np.asarray(bars.y)
    bounds = np.asarray(bars.customdata, dtype=float)  # [lo, hi) of each bar (hover text)
    np.testing.assert_allclose(np.asarray(bars.x), bounds.mean(axis=1))
    finite = losses[np.isfinite(losses)]
    edges = np.concatenate([bounds[:, 0], bounds[-1:, 1]])
    manual = [int(np.sum((finite >= edges[k]) & ((finite < edges[k + 1]) | (
        (k == len(h) - 1) & (finite <= edges[k + 1]))))) for k in range(len(h))]
    assert list(h) == manual and sum(h) == 80
    assert edges[0] == pytest.approx(finite.min()) and edges[-1] == pytest.approx(finite.max())
    assert any(t.name == "2 diverged" for t in fig.data)
    vlines = [s for s in fig.layout.shapes if s.type == "line"]
    assert vlines and vlines[0].x0 == 0.0 and vlines[0].x1 == 0.0
    assert any("61%" in a.text for a in fig.layout.annotations)


def test_many_starts_histogram_of_a_spike():
    """Every start at L* up to rounding: one bar holding all of them, around L*."""
    lstar = 1.934272645602515
    losses = lstar + np.array([0.0, 4e-16, -4e-16, 2e-16] * 16)
    fig = figures.many_starts_histogram(losses, global_min=lstar)
    h = np.asarray(fig.data[0].y)
    assert h.sum() == 64 and h.max() == 64
    k = int(np.argmax(h))
    lo, hi = np.asarray(fig.data[0].customdata, dtype=float)[k]
    assert lo <= losses.min() and losses.max() <= hi and hi - lo < 1e-3


# --------------------------------------------------------------------------- misc


def test_animation_data_frames(rng):
    path = rng.normal(size=(6, 2))
    ploss = np.array([3.0, 2.0, np.inf, 1.0, 0.5, 0.4])
    steps = np.array([0, 10, 20, 30, 40, 50])
    data = figures.animation_data(path, ploss, steps, log_scale=True, lift=0.1)
    np.testing.assert_array_equal(data["x"], path[:, 0])
    assert data["step"] == steps.tolist()
    assert data["loss"][2] is None and data["loss"][0] == 3.0
    assert data["z"][0] == pytest.approx(np.log10(3.0) + 0.1)
    assert data["z"][2] == pytest.approx(np.log10(3.0) + 0.1)  # overflow clipped to the top


def test_display_values_all_non_finite():
    z, overflow = figures.display_values(np.full((3, 3), np.nan), log_scale=True)
    assert overflow.all() and np.all(np.isfinite(z))


def test_theory_rows_format_numbers():
    rows = figures.theory_rows({"global_min": 0.012345678, "gap": 1.5e-9,
                                "baldi_hornik_levels": [0.5, 0.25], "saxe_loss": [1.0],
                                "induced_model_loss": None, "notes": ["deep linear only"]})
    table = {q: v for q, v, _ in rows}
    assert table["L*"] == "0.01235"
    assert table["gap"] == "1.500e-09"
    assert table["saddle levels"] == "0.5, 0.25"
    assert "induced model" not in table and table["Saxe overlay"] == "drawn"
    assert figures.theory_rows({}) == []


def test_presentation_mode_font():
    fig = figures.placeholder("x")
    assert figures.apply_presentation(fig, True).layout.font.size == \
        figures.PRESENTATION_FONT_SIZE
    assert figures.apply_presentation(fig, False).layout.font.size == figures.FONT_SIZE


def test_standalone_html_embeds_plotly_and_every_figure(rng):
    alpha, beta, loss = _grid(rng)
    page = figures.standalone_html({"contour": figures.contour(alpha, beta, loss),
                                    "<cuts>": figures.placeholder("none")})
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing loaded: works offline
    assert page.count("Plotly.newPlot") == 2
    assert len(page) > 1_000_000  # plotly.js itself is inside
    assert "&lt;cuts&gt;" in page and "<cuts>" not in page


def test_induced_model_below_the_loss_is_explained():
    rows = dict((r[0], r[2]) for r in figures.theory_rows(
        {"final_loss": 0.5, "induced_model_loss": 0.5 - 1e-10}))
    assert "not exactly critical" not in rows["induced model"]
    rows = dict((r[0], r[2]) for r in figures.theory_rows(
        {"final_loss": 0.5, "induced_model_loss": 0.4}))
    assert "0.1 below the final loss" in rows["induced model"]
    assert "not exactly critical" in rows["induced model"]
