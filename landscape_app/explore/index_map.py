"""Morse-index map: the number of negative Hessian eigenvalues over the current slice.

Each cell of the plane gets the Hessian's index (count of λ < −τ) and λ_min; saddles and
their basins show up as coloured regions, the path drawn on top. Exact (a dense Hessian
per cell) up to ``MAX_PARAMS_INDEX_MAP`` parameters; above, the index is estimated by
stochastic Lanczos quadrature (``LANCZOS_PROBES`` probes of ``LANCZOS_STEPS`` steps per
cell, shown with its standard error) and λ_min is the smallest Ritz value. Streamed coarse
to fine: an 11 × 11 map first, then the full grid.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from landscape_app import figures
from landscape_app.explore import ExploreView
from landscape_app.settings import LIMITS

__all__ = ["VIEW", "coarse_view", "index_map_figure"]

COARSE_GRID = 11  # cells per side of the first pass; nested in 21, 31, 41, 61, 101 grids
MAX_PARAMS_EXACT = LIMITS.MAX_PARAMS_INDEX_MAP  # exact Hessians up to here, Lanczos above
LANCZOS_STEPS = 64   # Gauss nodes per probe above MAX_PARAMS_EXACT (capped at n)
LANCZOS_PROBES = 8   # Rademacher probes per cell


def index_map_figure(alpha: np.ndarray, beta: np.ndarray, index: np.ndarray,
                     lambda_min: np.ndarray, *, n_params: int,
                     path: np.ndarray | None = None,
                     marks: Mapping[str, list[float]] | None = None,
                     note: str = "", stderr: np.ndarray | None = None,
                     threshold: float | None = None) -> go.Figure:
    """Two heatmaps of a plane: Morse index (left) and λ_min (right).

    Args:
      alpha (N_a,), beta (N_b,): plane coordinates; index (N_b, N_a): negative eigenvalues
        at ``(alpha[j], beta[i])`` (−1 where the Hessian was not finite); lambda_min
        (N_b, N_a): the smallest eigenvalue (NaN where not finite).
      n_params: parameters n (the index is out of n).
      path: (T, 2) the path in plane coordinates; marks: ``{name: (α, β)}``.
      stderr: (N_b, N_a) standard errors when ``index`` is an estimate (stochastic Lanczos
        quadrature, real-valued): the hover shows ``≈ index ± s.e.``, the titles say
        "estimated", λ_min is the smallest Ritz value.
      threshold: the relative threshold r of the count (λ < −r·max|λ|), for the title.
    """
    alpha, beta = np.asarray(alpha, float), np.asarray(beta, float)
    index = np.asarray(index, float)
    index = np.where(index < 0, np.nan, index)
    lam = np.asarray(lambda_min, float)
    top = int(np.ceil(np.nanmax(index))) if np.isfinite(index).any() else 0
    below = f"λ < −{threshold:.2g}·max|λ|" if threshold is not None and np.isfinite(
        threshold) and threshold > 0 else "negative eigenvalues"
    if stderr is None:
        titles = (f"Morse index ({below} of {n_params})", "λ_min of the Hessian")
        hover, custom = "index %{z:d}", None
    else:
        titles = (f"Morse index, estimated ({below} of {n_params})",
                  "λ_min (smallest Ritz value)")
        hover, custom = "index ≈ %{z:.1f} ± %{customdata:.1f} (s.e.)", np.asarray(stderr, float)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14, subplot_titles=titles)
    fig.add_trace(go.Heatmap(
        x=alpha, y=beta, z=index, zmin=-0.5, zmax=top + 0.5, colorscale=_index_scale(top),
        customdata=custom,
        colorbar={"title": {"text": "index"}, "x": 0.43, "thickness": 10,
                  "tickvals": list(range(top + 1)) if top <= 12 else None},
        hovertemplate=f"α=%{{x:.3g}}<br>β=%{{y:.3g}}<br>{hover}<extra></extra>",
        name="index"), row=1, col=1)
    bound = float(np.nanmax(np.abs(lam))) if np.isfinite(lam).any() else 1.0
    fig.add_trace(go.Heatmap(
        x=alpha, y=beta, z=lam, zmid=0.0, zmin=-bound, zmax=bound, colorscale="RdBu",
        colorbar={"title": {"text": "λ_min"}, "thickness": 10},
        hovertemplate="α=%{x:.3g}<br>β=%{y:.3g}<br>λ_min=%{z:.3g}<extra></extra>",
        name="λ_min"), row=1, col=2)
    for col in (1, 2):
        if path is not None and len(path):
            p = np.asarray(path, float).reshape(-1, 2)
            fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines", name="path",
                                     showlegend=col == 1,
                                     line={"color": figures.PALETTE["path"], "width": 2}),
                          row=1, col=col)
        for _, style, a, b in figures._mark_items(marks):
            fig.add_trace(go.Scatter(
                x=[a], y=[b], mode="markers", name=style["label"], showlegend=col == 1,
                marker={"symbol": style["symbol"], "size": 11, "color": style["color"],
                        "line": {"width": 1.2, "color": "white"}}), row=1, col=col)
    figures._base_layout(fig, title=note or None)
    figures._left_subplot_titles(fig)
    fig.update_layout(legend={"y": -0.18, "yanchor": "top"}, margin={"b": 70})
    fig.update_xaxes(title_text="α", range=[alpha[0], alpha[-1]], showgrid=False,
                     zeroline=False)
    fig.update_yaxes(title_text="β", range=[beta[0], beta[-1]], showgrid=False,
                     zeroline=False)
    return fig


_INDEX_COLOURS = ("#e8ecf1", "#f4b400", "#e4572e", "#b2182b", "#6a1b4d", "#2d0b2f")


def _index_scale(top: int) -> list:
    """Index 0 (convex: a minimum's basin) light grey, then warmer per index: one colour per
    index up to 5, a ramp from amber to dark purple beyond."""
    n = top + 1
    if top < len(_INDEX_COLOURS):
        scale = []
        for k in range(n):
            scale += [[k / n, _INDEX_COLOURS[k]], [(k + 1) / n, _INDEX_COLOURS[k]]]
        return scale
    return [[0.0, _INDEX_COLOURS[0]], [1 / n, _INDEX_COLOURS[0]], [1 / n, "#fed976"],
            [0.55, "#e4572e"], [1.0, "#2d0b2f"]]


def render(payload: Mapping, view: Mapping) -> tuple[go.Figure, str]:
    index = np.asarray(payload["index"])
    grid = index.shape[0]
    level = "coarse pass, full grid follows" if view.get("explore_pass") == "coarse" \
        else "full grid"
    if payload.get("method") == "lanczos":
        return _render_estimate(payload, grid, level)
    counts = np.bincount(index[index >= 0].ravel()) if (index >= 0).any() else np.zeros(1)
    share = ", ".join(f"index {k}: {100 * c / index.size:.0f}%"
                      for k, c in enumerate(counts) if c)
    fig = index_map_figure(payload["alpha"], payload["beta"], index, payload["lambda_min"],
                           n_params=int(payload["n_params"]), path=payload.get("path_coords"),
                           marks=payload.get("marks"),
                           note=f"{grid} × {grid} cells ({level}) · {share}")
    return fig, f"{grid}×{grid} exact Hessians ({level})"


def _render_estimate(payload: Mapping, grid: int, level: str) -> tuple[go.Figure, str]:
    """A map whose index was estimated by stochastic Lanczos quadrature (``method``
    "lanczos"): the real-valued estimate with its standard error."""
    estimate = np.asarray(payload.get("index_estimate", payload["index"]), float)
    stderr = np.asarray(payload.get("index_stderr", np.full(estimate.shape, np.nan)), float)
    threshold = payload.get("relative_tolerance")
    if np.isfinite(estimate).any():
        summary = (f"index ≈ {np.nanmin(estimate):.0f} to {np.nanmax(estimate):.0f}, median "
                   f"s.e. {np.nanmedian(stderr):.1f}")
    else:
        summary = "no cell with a finite Hessian"
    fig = index_map_figure(
        payload["alpha"], payload["beta"], estimate, payload["lambda_min"],
        n_params=int(payload["n_params"]), path=payload.get("path_coords"),
        marks=payload.get("marks"), stderr=stderr,
        threshold=float(threshold) if threshold is not None else None,
        note=f"{grid} × {grid} cells ({level}) · {summary} · {payload.get('probes', '?')} "
             f"probes × {payload.get('lanczos_steps', '?')} Lanczos steps")
    return fig, (f"{grid}×{grid} cells: Morse index estimated by stochastic Lanczos "
                 f"quadrature (± s.e.) ({level})")


def coarse_view(view: Mapping) -> Mapping | None:
    """The first, 11 × 11 pass of a larger map (None when the map is that small already)."""
    grid = int(view.get("imap_grid") or 0)
    if grid <= COARSE_GRID + 4:
        return None
    return {**view, "imap_grid": COARSE_GRID, "explore_pass": "coarse"}


def _work(rows: int, n: int, view: Mapping) -> float:
    """Exact: n Hessian-vector products and an eigensolve per cell. Lanczos: per cell and
    probe, ``steps`` products (≈ 4 m n multiply-adds each) and the full
    reorthogonalisation (≈ 4 n steps²). Measured: ~95 ms a cell for 522 parameters, m = 200
    (2.8e8 multiply-adds by this count) on the 2-core CPU."""
    cells = int(view.get("imap_grid") or 31) ** 2
    if n <= MAX_PARAMS_EXACT:
        return cells * float(n) * n * (n + rows) / 8
    steps = min(n, LANCZOS_STEPS)
    return cells * LANCZOS_PROBES * (4.0 * rows * n * steps + 4.0 * n * steps ** 2)


def _tables(payload: Mapping) -> dict[str, tuple[list[str], np.ndarray]]:
    aa, bb = np.meshgrid(payload["alpha"], payload["beta"])
    header = ["alpha", "beta", "index", "lambda_min"]
    columns = [aa, bb, payload["index"], payload["lambda_min"]]
    if payload.get("method") == "lanczos":
        header += ["index_estimate", "index_stderr"]
        columns += [payload["index_estimate"], payload["index_stderr"]]
    rows = np.stack([np.asarray(c, float).ravel() for c in columns], axis=1)
    return {"index_map.csv": (header, rows)}


VIEW = ExploreView(
    key="index_map", label="Morse-index map", task="index_map", render=render,
    intro="Each cell of the current plane coloured by its Morse index (the number of "
          "negative eigenvalues of the exact Hessian there; above "
          f"{MAX_PARAMS_EXACT} parameters an estimate by stochastic Lanczos quadrature, "
          "± its standard error) and by λ_min. Grey cells are "
          "locally convex. Most of a network's landscape is not: near a minimum with flat "
          "directions (a deep linear net's rescaling symmetry) the Hessian turns indefinite "
          "as soon as one leaves the valley of minima, so only the valley floor has index 0.",
    controls=(("imap_grid", "Cells per side", "text", None,
               "the map streams from 11 × 11 to this"),),
    work=_work, coarse=coarse_view, tables=_tables)
