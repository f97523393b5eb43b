"""Minimum to minimum: a low-loss path between the minima two starts reach, and its barrier.

Left: the loss along the optimised path (nudged elastic band or Bézier curve) and along the
straight segment between the same two minima, against the position t along each; the
barrier is how far the path climbs above the higher minimum. Right: the loss on the plane
through the two minima and the path's farthest point, with both paths drawn on it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from landscape_app import figures
from landscape_app.explore import ExploreView

__all__ = ["VIEW", "connect_figure"]

CONNECT_IMAGES = 17        # NEB images (ends included) / Bézier samples of t per step
CONNECT_STEPS = 1000       # optimiser steps of the path
CONNECT_LR = 1e-2          # Adam's step size
CONNECT_POINTS = 101       # points at which a trained Bézier curve is drawn
PLANE_GRID = 41            # cells per side of the loss on the path's plane
CLASSIFY_MAX_PARAMS = 600  # the top of the path is classified up to this many parameters
_SADDLE_STEPS = 50         # saddle-finder steps from the top (compute's default)


def connect_figure(t: np.ndarray, loss: np.ndarray, straight_loss: np.ndarray, *,
                   peak: int, method: str, global_min: float | None = None,
                   alpha: np.ndarray | None = None, beta: np.ndarray | None = None,
                   surface: np.ndarray | None = None, path_coords: np.ndarray | None = None,
                   marks: Mapping[str, list[float]] | None = None,
                   note: str = "") -> go.Figure:
    """Loss along the path and the segment (left); the loss on the path's plane (right).

    Args:
      t (K,): position along the path in [0, 1] (arc length or curve parameter); loss,
        straight_loss (K,): the loss along the path and at ``(1 − t) θ_a + t θ_b``.
      peak: index of the path's highest point; method: ``"neb"`` or ``"bezier"``.
      global_min: L* drawn as a dotted line when known.
      alpha (G_a,), beta (G_b,), surface (G_b, G_a): the loss on the plane (optional);
        path_coords (K, 2): the path in its coordinates; marks: ``{name: (α, β)}``.
    """
    t, loss = np.asarray(t, float), np.asarray(loss, float)
    straight = np.asarray(straight_loss, float)
    plane = surface is not None and alpha is not None and beta is not None
    name = {"neb": "nudged elastic band", "bezier": "Bézier curve"}.get(method, method)
    titles = ("loss along the path (t: position from minimum A to B)",
              "loss on the plane of the two minima and the path")
    fig = make_subplots(rows=1, cols=2 if plane else 1, horizontal_spacing=0.12,
                        subplot_titles=titles[:2 if plane else 1])
    fig.add_trace(go.Scatter(x=t, y=straight, mode="lines", name="straight segment",
                             line={"color": figures.PALETTE["compare"], "width": 2,
                                   "dash": "dash"}), row=1, col=1)
    fig.add_trace(go.Scatter(x=t, y=loss, mode="lines+markers" if method == "neb" else "lines",
                             name=name, marker={"size": 5},
                             line={"color": figures.PALETTE["path"], "width": 2.5}),
                  row=1, col=1)
    ends = [0, t.size - 1]
    fig.add_trace(go.Scatter(x=t[ends], y=loss[ends], mode="markers", name="minima A, B",
                             marker={"size": 10, "color": figures.PALETTE["start"],
                                     "symbol": "circle", "line": {"width": 1.2,
                                                                   "color": "white"}}),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=[t[peak]], y=[loss[peak]], mode="markers", name="top of the path",
                             marker={"size": 13, "color": figures.PALETTE["critical"],
                                     "symbol": "star", "line": {"width": 1, "color": "white"}}),
                  row=1, col=1)
    if global_min is not None and np.isfinite(global_min):
        fig.add_hline(y=float(global_min), line={"dash": "dot", "color": figures.PALETTE[
            "global_min"]}, annotation_text="L*", annotation_position="bottom right",
            row=1, col=1)
    fig.update_xaxes(title_text="t", range=[-0.02, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    if plane:
        _plane_panel(fig, np.asarray(alpha, float), np.asarray(beta, float),
                     np.asarray(surface, float), path_coords, marks)
    figures._base_layout(fig, title=note or None)
    figures._left_subplot_titles(fig)
    return fig


def _plane_panel(fig: go.Figure, alpha: np.ndarray, beta: np.ndarray, surface: np.ndarray,
                 path_coords, marks) -> None:
    """log₁₀ loss heatmap with contours, the straight segment, the path and the marks."""
    z, _ = figures.display_values(surface, log_scale=True)
    fig.add_trace(go.Contour(
        x=alpha, y=beta, z=z, colorscale=figures.COLORSCALE, ncontours=24,
        contours={"coloring": "heatmap", "showlines": True},
        line={"width": 0.5, "color": "rgba(255,255,255,0.35)"},
        colorbar={"title": {"text": "log₁₀ loss"}, "thickness": 10},
        hovertemplate="α=%{x:.3g}<br>β=%{y:.3g}<br>log₁₀ loss=%{z:.3g}<extra></extra>",
        name="loss", showlegend=False), row=1, col=2)
    fig.add_trace(go.Scatter(x=[0.0, 1.0], y=[0.0, 0.0], mode="lines", showlegend=False,
                             name="straight segment",
                             line={"color": "white", "width": 2, "dash": "dash"}),
                  row=1, col=2)
    if path_coords is not None and len(path_coords):
        p = np.asarray(path_coords, float).reshape(-1, 2)
        fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines", showlegend=False,
                                 name="path", line={"color": figures.PALETTE["path"],
                                                    "width": 2.5}), row=1, col=2)
    styles = {"minimum A": ("circle", figures.PALETTE["start"]),
              "minimum B": ("circle", figures.PALETTE["start"]),
              "top of the path": ("star", figures.PALETTE["critical"])}
    for label, point in (marks or {}).items():
        symbol, colour = styles.get(label, ("x", figures.PALETTE["ink"]))
        fig.add_trace(go.Scatter(x=[float(point[0])], y=[float(point[1])], mode="markers",
                                 name=label, showlegend=False,
                                 marker={"symbol": symbol, "size": 12, "color": colour,
                                         "line": {"width": 1.2, "color": "white"}}),
                      row=1, col=2)
    fig.update_xaxes(title_text="α (minimum A → B)", range=[alpha[0], alpha[-1]],
                     showgrid=False, zeroline=False, row=1, col=2)
    fig.update_yaxes(title_text="β", range=[beta[0], beta[-1]], showgrid=False,
                     zeroline=False, row=1, col=2)


def render(payload: Mapping, view: Mapping) -> tuple[go.Figure, str]:
    method = str(payload["method"])
    fmt = figures._fmt
    barrier, straight = float(payload["barrier"]), float(payload["straight_barrier"])
    note = (f"seeds {payload['seed_a']} and {payload['seed_b']}: losses "
            f"{fmt(payload['loss_a'])} and {fmt(payload['loss_b'])}, "
            f"‖θ_B − θ_A‖ = {fmt(payload['distance'])}")
    parts = [f"barrier {fmt(barrier)} along the {method.upper() if method == 'neb' else method}"
             f" path vs {fmt(straight)} along the straight segment"]
    gmin = payload.get("global_min")
    if gmin is not None:
        parts.append(f"top − L* = {fmt(float(payload['peak_loss']) - float(gmin))}")
    verdict = payload.get("peak_verdict")
    if verdict:
        parts.append(f"top of the path → {verdict} at loss "
                     f"{fmt(payload.get('peak_critical_loss'))} "
                     f"({fmt(payload.get('peak_distance'), 2)} away)")
    off = payload.get("off_plane")
    if payload.get("surface") is not None and off is not None and off > 1e-9 * max(
            float(payload["distance"]), 1e-300):
        parts.append(f"right: the path's shadow on the plane (it runs up to {fmt(off, 2)} "
                     "off it)")
    force = payload.get("converged_force")
    if method == "neb" and force is not None and np.isfinite(force) and force > 1e-2:
        parts.append(f"band not converged (largest force {fmt(force, 2)} × the segment's "
                     "gradient): more steps or a smaller step size")
    fig = connect_figure(payload["t"], payload["loss"], payload["straight_loss"],
                         peak=int(payload["peak"]), method=method, global_min=gmin,
                         alpha=payload.get("alpha"), beta=payload.get("beta"),
                         surface=payload.get("surface"),
                         path_coords=payload.get("path_coords"), marks=payload.get("marks"),
                         note=note)
    return fig, " · ".join(parts)


def _work(rows: int, n: int, view: Mapping) -> float:
    """Two training runs (≈ 3 m n per step), the path (K images × steps × 3 m n), the
    plane's grid (G² m n) and, for small models, the saddle finder's exact Hessians."""
    steps = int(view.get("steps") or 0)
    train = 2 * 3.0 * steps * rows * n
    band = 3.0 * CONNECT_IMAGES * CONNECT_STEPS * rows * n
    plane = PLANE_GRID ** 2 * rows * n
    peak = _SADDLE_STEPS * (4.0 * rows * n * n + n ** 3) if n <= CLASSIFY_MAX_PARAMS else 0.0
    return train + band + plane + peak


def _tables(payload: Mapping) -> dict[str, tuple[list[str], np.ndarray]]:
    rows = np.stack([np.asarray(payload["t"], float), np.asarray(payload["loss"], float),
                     np.asarray(payload["straight_loss"], float)], axis=1)
    return {"minimum_path.csv": (["t", "path_loss", "straight_loss"], rows)}


VIEW = ExploreView(
    key="connect", label="Minimum to minimum", task="connect", render=render,
    intro="Train from two seeds, then bend a path between the two minima to keep the loss "
          "low (nudged elastic band, or a Bézier curve). Deep linear nets: the path stays at "
          "L* whenever the hidden layers are wider than the rank they need; on Świrszcz's "
          "D1 a real barrier remains, and its top is a critical point.",
    controls=(("seed_b", "Second seed", "text", None,
               "the second start; the first is the seed above"),
              ("connect_method", "Path", "radio",
               [("neb", "elastic band"), ("bezier", "Bézier curve")], None)),
    work=_work, tables=_tables, height="480px")
