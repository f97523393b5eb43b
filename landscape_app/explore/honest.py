"""Honest slices: the path's true loss next to what the contour under it shows.

A path drawn on a plane sits at its projected points; the contours there are the loss of
the projection, not of the path. This view draws both along the path, and how far off the
plane the path really is, so a disagreement between path and contours has its reason on
screen. The "action" plane (saddle, minimum, escape direction) and the checkpoint plane
keep the path close to its slice.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from landscape_app import figures
from landscape_app.explore import ExploreView

__all__ = ["VIEW", "honest_figure"]

SLICE_COLOUR = "#e4572e"


def honest_figure(steps: np.ndarray, true_loss: np.ndarray, slice_loss: np.ndarray,
                  distance: np.ndarray, *, center_distance: np.ndarray | None = None,
                  marks: Mapping[str, int | None] | None = None,
                  note: str = "") -> go.Figure:
    """Left: the true loss L(θ_t) and the slice loss at the projected point against the
    step (log scale when both are positive over more than two decades). Right: the
    distance off the plane ‖θ_t − proj‖ next to the distance from the plane's centre
    ‖θ_t − c‖ (parameter units): where the first is small against the second, the slice
    is faithful.

    Args:
      steps (T,), true_loss (T,), slice_loss (T,), distance (T,): along the path;
      center_distance (T,): ‖θ_t − c‖. marks: ``{name: step}`` drawn as vertical lines
      (e.g. the saddle, the checkpoints).
    """
    steps = np.asarray(steps, float)
    true_loss, slice_loss = np.asarray(true_loss, float), np.asarray(slice_loss, float)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, column_widths=[0.58, 0.42],
                        subplot_titles=("loss along the path: true vs. what the slice shows",
                                        "distance off the plane vs. from its centre"))
    figures._left_subplot_titles(fig)   # before the step marks add annotations of their own
    fig.add_trace(go.Scatter(x=steps, y=true_loss, mode="lines", name="true loss L(θ_t)",
                             line={"color": figures.PALETTE["loss"], "width": 2.5}),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=steps, y=slice_loss, mode="lines",
                             name="slice loss at the drawn point",
                             line={"color": SLICE_COLOUR, "width": 2, "dash": "dash"},
                             fill="tonexty", fillcolor="rgba(228, 87, 46, 0.12)"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(
        x=steps, y=np.asarray(distance, float), mode="lines", name="off the plane ‖θ − proj‖",
        line={"color": figures.PALETTE["grad"], "width": 2.5},
        hovertemplate="step %{x}<br>off the plane %{y:.3g}<extra></extra>"), row=1, col=2)
    if center_distance is not None:
        fig.add_trace(go.Scatter(
            x=steps, y=np.asarray(center_distance, float), mode="lines",
            name="from the centre ‖θ − c‖",
            line={"color": figures.PALETTE["muted"], "width": 1.5, "dash": "dot"},
            hovertemplate="step %{x}<br>from the centre %{y:.3g}<extra></extra>"),
            row=1, col=2)
    both = np.concatenate([true_loss, slice_loss])
    both = both[np.isfinite(both)]
    if both.size and both.min() > 0 and both.max() / both.min() > 100:
        fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="distance (parameter units)", rangemode="tozero", row=1, col=2)
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="step", row=1, col=2)
    for name, step in (marks or {}).items():
        if step is None:
            continue
        line = {"dash": "dot", "color": figures.PALETTE["muted"], "width": 1}
        fig.add_vline(x=float(step), line=line, annotation_text=name,
                      annotation_font={"size": 10, "color": figures.PALETTE["muted"]},
                      row=1, col=1)
        fig.add_vline(x=float(step), line=line, row=1, col=2)
    figures._base_layout(fig, title=note or None)
    fig.update_layout(margin={"t": 84}, legend={"traceorder": "normal"})
    return fig


def _summary(payload: Mapping) -> tuple[str, str]:
    """(figure title, status label)."""
    true_loss = np.asarray(payload["true_loss"], float)
    slice_loss = np.asarray(payload["slice_loss"], float)
    rel = np.asarray(payload["relative_distance"], float)
    gap = np.abs(true_loss - slice_loss)
    finite = np.isfinite(gap)
    scale = np.nanmax(np.abs(true_loss[finite])) if finite.any() else 0.0
    worst = float(gap[finite].max()) if finite.any() else float("nan")
    share = f"{100 * worst / scale:.0f}% of the largest loss" if scale > 0 else "—"
    plane = str(payload.get("plane", ""))
    title = (f"plane: {plane} · largest gap {figures._fmt(worst)} ({share}) · median "
             f"relative distance {figures._fmt(float(np.nanmedian(rel)) if rel.size else None, 2)}")
    ratio = payload.get("explained_variance")
    if ratio is not None and len(ratio) == 2:
        title += (f" · PCA explains {100 * float(ratio[0]):.0f}% + "
                  f"{100 * float(ratio[1]):.0f}%")
    label = payload.get("plane_note") or ("the path lies in the plane" if worst <= 1e-9 * max(
        scale, 1e-300) else "gap = true − slice loss, shaded")
    return title, label


def render(payload: Mapping, view: Mapping) -> tuple[go.Figure, str]:
    marks: dict[str, int | None] = {}
    if payload.get("saddle_step") is not None:
        marks["saddle"] = int(payload["saddle_step"])
    for step in payload.get("checkpoint_steps") or []:
        marks[f"step {int(step)}"] = int(step)
    title, label = _summary(payload)
    fig = honest_figure(payload["steps"], payload["true_loss"], payload["slice_loss"],
                        payload["distance"], center_distance=payload.get("center_distance"),
                        marks=marks, note=title)
    return fig, label


def _work(rows: int, n: int, view: Mapping) -> float:
    """Two losses per recorded point (≤ 1001 points), plus the action plane's Hessian."""
    steps = int(view.get("steps") or 0)
    points = min(steps + 1, 1001)
    hessian = n * 4.0 * rows * n + n ** 3 / 3 if view.get("plane") in ("action", "hessian") \
        else 0.0
    return 2 * points * 2.0 * rows * n + hessian


def _tables(payload: Mapping) -> dict[str, tuple[list[str], np.ndarray]]:
    keys = ["steps", "alpha", "beta", "true_loss", "slice_loss", "distance",
            "relative_distance"]
    return {"honest_slice.csv": (["step", *keys[1:]], np.stack(
        [np.asarray(payload[k], float) for k in keys], axis=1))}


VIEW = ExploreView(
    key="honest", label="Honest slice", task="honest_slice", render=render,
    intro="A path drawn on a plane sits at its projected points, and the contours there show "
          "the loss of the projection, not of the path. Here are both along the path, and how "
          "far off the plane it really is: where they differ, the contours mislead. The "
          "'action' plane (saddle → minimum and the escape direction) and the three-point "
          "plane through chosen steps keep the path close to its slice (Plane card).",
    work=_work, tables=_tables)
