"""Figure builders of the dashboard: numpy arrays in, ``plotly.graph_objects.Figure`` out.

Pure functions (no Dash, no compute, no I/O), so every view can be rebuilt from a cached
payload and unit-tested with synthetic arrays. Conventions (THEORY.md): a plane slice is
``loss[i, j]`` at ``(alpha[j], beta[i])``; paths are given in plane coordinates ``(T, 2)``;
steps are optimiser step indices.

One palette for the whole page (:data:`PALETTE`): the loss colour scale is Viridis (dark =
low); the path is vermilion; start teal, end vermilion, critical points gold, the selected
point magenta, the animation marker white; plateaus are shaded amber and the closed-form
global minimum L* is a dashed teal line wherever a loss axis is drawn.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "ANIMATION_MARKER_UID",
    "CURSOR_SHAPE_NAME",
    "PALETTE",
    "SELECTED_MARKER_UID",
    "CRITICAL_MARKER_UID",
    "SELECTED_SHAPE_NAME",
    "Cut",
    "animation_data",
    "apply_presentation",
    "contour",
    "cuts_1d",
    "display_values",
    "many_starts_histogram",
    "path_lift",
    "path_metrics",
    "placeholder",
    "spectrum",
    "standalone_html",
    "surface_3d",
    "theory_rows",
]

PALETTE: dict[str, str] = {
    "ink": "#1f2933",
    "muted": "#6b7785",
    "grid": "#e6e9ee",
    "loss": "#1f4e79",
    "grad": "#6a51a3",
    "lambda_min": "#c0392b",
    "lambda_max": "#2e86ab",
    "path": "#e4572e",
    "start": "#2a9d8f",
    "end": "#e4572e",
    "critical": "#f4b400",
    "selected": "#d81b60",
    "marker": "#ffffff",
    "global_min": "#2a9d8f",
    "saxe": "#e4572e",
    "compare": "#8a94a3",
    "plateau": "rgba(244, 180, 0, 0.16)",
    "overflow": "#ff2d55",
    "negative": "#c0392b",
    "zero": "#9aa5b1",
    "positive": "#2e86ab",
    "bar": "#1f4e79",
}
COLORSCALE = "Viridis"
FONT = "Inter, system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
FONT_SIZE = 12
PRESENTATION_FONT_SIZE = 17

ANIMATION_MARKER_UID = "anim-marker"
SELECTED_MARKER_UID = "selected-marker"
CRITICAL_MARKER_UID = "critical-marker"
CURSOR_SHAPE_NAME = "cursor"
SELECTED_SHAPE_NAME = "selected"

_MARK_STYLES: dict[str, dict] = {
    "start": {"label": "start", "color": PALETTE["start"], "symbol": "circle"},
    "init": {"label": "start", "color": PALETTE["start"], "symbol": "circle"},
    "end": {"label": "end", "color": PALETTE["end"], "symbol": "square"},
    "final": {"label": "end", "color": PALETTE["end"], "symbol": "square"},
    "critical": {"label": "critical point", "color": PALETTE["critical"], "symbol": "star"},
    "selected": {"label": "selected", "color": PALETTE["selected"], "symbol": "diamond"},
    "saddle": {"label": "plateau saddle", "color": PALETTE["critical"], "symbol": "star"},
    "center": {"label": "centre", "color": PALETTE["ink"], "symbol": "cross-thin"},
}


@dataclass(frozen=True)
class Cut:
    """One 1-D cut: loss ``(n,)`` at coordinates ``t`` ``(n,)`` along a named line."""

    name: str
    t: np.ndarray
    loss: np.ndarray
    xlabel: str = "t"


# --------------------------------------------------------------------------- helpers


_AXIS = {"gridcolor": PALETTE["grid"], "linecolor": "#cfd6de", "zerolinecolor": "#cfd6de",
         "ticks": "", "automargin": True, "title": {"standoff": 8}}
_SCENE_AXIS = {"backgroundcolor": "white", "gridcolor": PALETTE["grid"], "showbackground": True,
               "zerolinecolor": "#cfd6de", "linecolor": "#cfd6de"}
# A small template of our own: plotly's built-in ones are large and copying one into every
# figure costs tens of milliseconds per figure.
TEMPLATE = go.layout.Template(layout={
    "colorway": [PALETTE[k] for k in ("loss", "grad", "lambda_max", "saxe", "start",
                                      "critical", "selected")],
    "xaxis": _AXIS, "yaxis": _AXIS, "hovermode": "closest",
    "scene": {"xaxis": _SCENE_AXIS, "yaxis": _SCENE_AXIS, "zaxis": _SCENE_AXIS},
})


def _base_layout(fig: go.Figure, *, title: str | None = None, height: int | None = None) -> None:
    fig.update_layout(
        template=TEMPLATE,
        font={"family": FONT, "size": FONT_SIZE, "color": PALETTE["ink"]},
        title={"text": title or "", "x": 0.01, "xanchor": "left", "font": {"size": 14}},
        margin={"l": 56, "r": 16, "t": 64 if title else 40, "b": 44},
        paper_bgcolor="white",
        plot_bgcolor="white",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0.0,
                "xanchor": "left", "bgcolor": "rgba(255,255,255,0.7)",
                "font": {"size": 11}},
        hoverlabel={"font": {"family": FONT}},
        uirevision="keep",
    )
    fig.update_xaxes(exponentformat="power")
    fig.update_yaxes(exponentformat="power")
    if height:
        fig.update_layout(height=height)


def _floats(values: object) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _fmt(value: object, digits: int = 4) -> str:
    """Number to a short string (4 significant digits); ``None`` → "—"."""
    if value is None:
        return "—"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    if not np.isfinite(x):
        return str(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def display_values(loss: object, *, log_scale: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Loss values as drawn: ``(z, overflow)`` of the input's shape.

    ``overflow`` marks cells that are not finite (the loss overflowed or became NaN). With
    ``log_scale`` the finite values are drawn as log10(loss), non-positive ones floored at the
    smallest positive finite value (1e-300 when there is none). Overflow cells are clipped to
    the largest finite drawn value, so the colour scale spans only real numbers.
    """
    values = _floats(loss)
    overflow = ~np.isfinite(values)
    z = values.copy()
    finite = z[~overflow]
    if log_scale:
        positive = finite[finite > 0]
        floor = positive.min() if positive.size else 1e-300
        z = np.where(overflow, np.nan, np.log10(np.maximum(np.where(overflow, 1.0, z), floor)))
    cap = np.nanmax(z[~overflow]) if (~overflow).any() else 0.0
    z = np.where(overflow, cap, z)
    return z, overflow


def path_lift(loss: object, *, log_scale: bool = False) -> float:
    """How far (in drawn units) paths and markers float above a 3-D surface: 1% of its range."""
    z, _ = display_values(loss, log_scale=log_scale)
    return 0.01 * (float(np.ptp(z)) if z.size else 0.0) or 0.01


def _interp_grid(alpha: np.ndarray, beta: np.ndarray, z: np.ndarray,
                 points: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``z[i, j]`` (at ``alpha[j], beta[i]``) at ``points`` (n, 2)."""
    a = np.clip(points[:, 0], alpha[0], alpha[-1])
    b = np.clip(points[:, 1], beta[0], beta[-1])
    j = np.clip(np.searchsorted(alpha, a) - 1, 0, alpha.size - 2)
    i = np.clip(np.searchsorted(beta, b) - 1, 0, beta.size - 2)
    ta = (a - alpha[j]) / (alpha[j + 1] - alpha[j])
    tb = (b - beta[i]) / (beta[i + 1] - beta[i])
    return ((1 - ta) * (1 - tb) * z[i, j] + ta * (1 - tb) * z[i, j + 1]
            + (1 - ta) * tb * z[i + 1, j] + ta * tb * z[i + 1, j + 1])


def _mark_items(marks: Mapping[str, Sequence[float]] | None,
                ) -> list[tuple[str, dict, float, float]]:
    items = []
    for name, point in (marks or {}).items():
        if point is None:
            continue
        a, b = (float(v) for v in point)
        style = _MARK_STYLES.get(name, {"label": name, "color": PALETTE["ink"],
                                        "symbol": "circle-open" if name.startswith("step ")
                                        else "x"})
        items.append((name, style, a, b))
    return items


def _loss_label(log_scale: bool) -> str:
    return "log₁₀ loss" if log_scale else "loss"


def _decade_tick(values: np.ndarray) -> int:
    """Decades between labels of a log axis: at most about four labels per panel."""
    v = values[np.isfinite(values) & (values > 0)]
    decades = float(np.log10(v.max() / v.min())) if v.size else 1.0
    return max(1, int(np.ceil(decades / 4)))


def _left_subplot_titles(fig: go.Figure) -> None:
    """Subplot titles as small grey labels at the top left of each panel."""
    for ann in fig.layout.annotations:
        domain = None
        for axis in fig.layout:
            if axis.startswith("xaxis") and fig.layout[axis].domain is not None:
                d = fig.layout[axis].domain
                if d[0] <= ann.x <= d[1]:
                    domain = d
                    break
        ann.update(x=domain[0] if domain else 0.0, xanchor="left",
                   font={"size": 11.5, "color": PALETTE["muted"]})


def placeholder(message: str) -> go.Figure:
    """An empty figure that says why there is nothing to show (no axes, centred text)."""
    fig = go.Figure()
    _base_layout(fig)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(text="<br>".join(textwrap.wrap(html.escape(message), 56)) or " ",
                       x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font={"size": 13, "color": PALETTE["muted"]})
    return fig


# --------------------------------------------------------------------------- plane views


def contour(alpha: object, beta: object, loss: object, *, log_scale: bool = False,
            path: object | None = None, path_steps: object | None = None,
            marks: Mapping[str, Sequence[float]] | None = None,
            selected: Sequence[float] | None = None,
            others: Sequence[tuple[str, object]] = (),
            title: str | None = None) -> go.Figure:
    """Contour map of a plane slice with the path and marked points.

    Args:
      alpha: (N_a,) first plane coordinate; beta: (N_b,) second coordinate.
      loss: (N_b, N_a) loss at ``(alpha[j], beta[i])``; non-finite cells are clipped to the
        top of the colour scale and marked with red crosses ("overflow").
      log_scale: draw log10(loss) (hover still shows the loss).
      path: (T, 2) path in plane coordinates; path_steps: (T,) their step indices (clicking a
        path point reports its step in ``customdata``).
      marks: ``{name: (a, b)}``; "start"/"init", "end"/"final", "critical" get the page's
        symbols, anything else a cross.
      selected: (a, b) of the selected point (a magenta diamond, ``uid``
        :data:`SELECTED_MARKER_UID`; the trace exists, empty, when None).
      others: ``(name, (T, 2) path)`` pairs drawn in grey (e.g. another optimiser's path).

    Trace order: contour, overflow markers, other paths, path, one trace per mark, critical
    point (``uid`` :data:`CRITICAL_MARKER_UID`, filled in the browser), selected marker.
    The animation marker is the layout shape named :data:`ANIMATION_MARKER_UID` (a circle
    at ``xanchor, yanchor``, the path's start), moved in the browser.
    """
    alpha, beta, raw = _floats(alpha), _floats(beta), _floats(loss)
    z, overflow = display_values(raw, log_scale=log_scale)
    fig = go.Figure()
    # hover shows the loss: z itself, or (log scale, overflow) the raw values as customdata
    exact = not log_scale and not overflow.any()
    fig.add_trace(go.Contour(
        x=alpha, y=beta, z=z, customdata=None if exact else raw, colorscale=COLORSCALE,
        ncontours=24, contours={"coloring": "heatmap", "showlines": True},
        line={"width": 0.5, "color": "rgba(255,255,255,0.35)"},
        colorbar={"title": {"text": _loss_label(log_scale), "side": "right"}, "thickness": 12},
        hovertemplate="α=%{x:.3g}<br>β=%{y:.3g}<br>loss=%{" + ("z" if exact else "customdata")
                      + ":.4g}<extra></extra>",
        name="loss",
    ))
    ii, jj = np.nonzero(overflow)
    fig.add_trace(go.Scatter(
        x=alpha[jj], y=beta[ii], mode="markers", name=f"overflow ({ii.size} cells)",
        marker={"symbol": "x-thin", "size": 7, "line": {"width": 1.5,
                                                         "color": PALETTE["overflow"]}},
        hovertemplate="loss overflowed (not finite)<extra></extra>", visible=bool(ii.size),
        showlegend=bool(ii.size),
    ))
    for name, other in others:
        q = _floats(other).reshape(-1, 2)
        fig.add_trace(go.Scatter(x=q[:, 0], y=q[:, 1], mode="lines", name=name,
                                 line={"color": PALETTE["compare"], "width": 2, "dash": "dot"},
                                 hovertemplate=f"{html.escape(name)}<extra></extra>"))
    anim_xy = (None, None)
    if path is not None:
        p = _floats(path).reshape(-1, 2)
        steps = _floats(path_steps) if path_steps is not None else np.arange(len(p))
        fig.add_trace(go.Scatter(
            x=p[:, 0], y=p[:, 1], customdata=steps, mode="lines+markers", name="path",
            line={"color": PALETTE["path"], "width": 2.5},
            marker={"size": 4, "color": PALETTE["path"]},
            hovertemplate="step %{customdata:d}<br>α=%{x:.3g}, β=%{y:.3g}<extra>path</extra>",
        ))
        if len(p):
            anim_xy = (p[0, 0], p[0, 1])
    for _, style, a, b in _mark_items(marks):
        fig.add_trace(go.Scatter(
            x=[a], y=[b], mode="markers", name=style["label"],
            marker={"symbol": style["symbol"], "size": 14, "color": style["color"],
                    "line": {"width": 2, "color": style["color"]}
                    if style["symbol"].endswith(("-thin", "-open")) else
                    {"width": 1.5, "color": "white"}},
            hovertemplate=f"{html.escape(style['label'])}<br>α=%{{x:.3g}}, β=%{{y:.3g}}"
                          "<extra></extra>",
        ))
    fig.add_trace(go.Scatter(
        x=[], y=[], mode="markers", name="critical point", uid=CRITICAL_MARKER_UID,
        marker={"symbol": "star", "size": 17, "color": PALETTE["critical"],
                "line": {"width": 1.5, "color": PALETTE["ink"]}},
        hovertemplate="critical point found from the selected point<br>α=%{x:.3g}, "
                      "β=%{y:.3g}<extra></extra>"))
    fig.add_trace(go.Scatter(
        x=[selected[0]] if selected is not None else [],
        y=[selected[1]] if selected is not None else [], mode="markers", name="selected",
        uid=SELECTED_MARKER_UID, marker={"symbol": "diamond", "size": 15,
                                         "color": PALETTE["selected"],
                                         "line": {"width": 1.5, "color": "white"}},
        hovertemplate="selected<br>α=%{x:.3g}, β=%{y:.3g}<extra></extra>",
    ))
    # The animation marker is a layout shape (a 14-px circle anchored at a data point):
    # moving a shape redraws only the shapes, moving a trace would recompute the contours.
    fig.add_shape(type="circle", name=ANIMATION_MARKER_UID, xref="x", yref="y",
                  xsizemode="pixel", ysizemode="pixel", x0=-7, x1=7, y0=-7, y1=7,
                  xanchor=anim_xy[0] if anim_xy[0] is not None else 0.0,
                  yanchor=anim_xy[1] if anim_xy[1] is not None else 0.0,
                  visible=anim_xy[0] is not None, fillcolor=PALETTE["marker"],
                  line={"width": 2.5, "color": PALETTE["ink"]}, layer="above")
    _base_layout(fig, title=title)
    fig.update_layout(clickmode="event", hovermode="closest", margin={"r": 8, "t": 44})
    fig.update_xaxes(title_text="α (direction 1)", range=[alpha[0], alpha[-1]],
                     showgrid=False, zeroline=False)
    fig.update_yaxes(title_text="β (direction 2)", range=[beta[0], beta[-1]], showgrid=False,
                     zeroline=False, scaleanchor="x", scaleratio=1, constrain="domain")
    return fig


def surface_3d(alpha: object, beta: object, loss: object, *, log_scale: bool = False,
               path: object | None = None, path_loss: object | None = None,
               path_steps: object | None = None,
               marks: Mapping[str, Sequence[float]] | None = None,
               selected: Sequence[float] | None = None,
               title: str | None = None) -> go.Figure:
    """3-D surface of a plane slice with the path lifted onto it.

    Args as :func:`contour`; ``path_loss`` (T,) is the loss along the path (the true loss at
    those weights; the surface height at the projected point when omitted). Overflow cells
    are drawn at the top of the colour scale. The path and markers float ``path_lift`` above
    the surface. Trace order: surface, path, marks, selected marker, animation marker
    (``uid`` :data:`ANIMATION_MARKER_UID`).
    """
    alpha, beta, raw = _floats(alpha), _floats(beta), _floats(loss)
    z, overflow = display_values(raw, log_scale=log_scale)
    fig = go.Figure()
    exact = not log_scale and not overflow.any()
    fig.add_trace(go.Surface(
        x=alpha, y=beta, z=z, customdata=None if exact else raw, colorscale=COLORSCALE,
        name="loss", colorbar={"title": {"text": _loss_label(log_scale), "side": "right"},
                               "thickness": 12, "len": 0.75},
        hovertemplate="α=%{x:.3g}<br>β=%{y:.3g}<br>loss=%{" + ("z" if exact else "customdata")
                      + ":.4g}<extra></extra>",
        contours={"z": {"show": True, "usecolormap": True, "project": {"z": True},
                        "width": 1}},
        lighting={"ambient": 0.75, "diffuse": 0.6, "specular": 0.1, "roughness": 0.9},
    ))
    lift = path_lift(raw, log_scale=log_scale)
    anim = None
    if path is not None:
        p = _floats(path).reshape(-1, 2)
        if path_loss is not None:
            pz, _ = display_values(_floats(path_loss), log_scale=log_scale)
        else:
            pz = _interp_grid(alpha, beta, z, p) if len(p) else np.zeros(0)
        steps = _floats(path_steps) if path_steps is not None else np.arange(len(p))
        fig.add_trace(go.Scatter3d(
            x=p[:, 0], y=p[:, 1], z=pz + lift, customdata=steps, mode="lines", name="path",
            line={"color": PALETTE["path"], "width": 6},
            hovertemplate="step %{customdata:d}<extra>path</extra>",
        ))
        if len(p):
            anim = (p[0, 0], p[0, 1], pz[0] + lift)
    items = _mark_items(marks)
    if items:
        pts = np.array([[a, b] for _, _, a, b in items])
        heights = _interp_grid(alpha, beta, z, pts) + lift
        for (_, style, a, b), h in zip(items, heights, strict=True):
            fig.add_trace(go.Scatter3d(
                x=[a], y=[b], z=[h], mode="markers", name=style["label"],
                marker={"size": 6, "color": style["color"],
                        "symbol": "diamond" if style["symbol"] == "diamond" else "circle",
                        "line": {"width": 1, "color": "white"}},
            ))
    sel_z = (_interp_grid(alpha, beta, z, np.array([selected], dtype=np.float64))[0] + lift
             if selected is not None else None)
    fig.add_trace(go.Scatter3d(x=[], y=[], z=[], mode="markers", name="critical point",
                               uid=CRITICAL_MARKER_UID,
                               marker={"size": 7, "color": PALETTE["critical"]}))
    fig.add_trace(go.Scatter3d(
        x=[selected[0]] if selected is not None else [],
        y=[selected[1]] if selected is not None else [],
        z=[sel_z] if selected is not None else [], mode="markers", name="selected",
        uid=SELECTED_MARKER_UID, marker={"size": 7, "color": PALETTE["selected"],
                                         "symbol": "diamond"},
    ))
    fig.add_trace(go.Scatter3d(
        x=[anim[0]] if anim else [], y=[anim[1]] if anim else [],
        z=[anim[2]] if anim else [], mode="markers", name="now", uid=ANIMATION_MARKER_UID,
        marker={"size": 7, "color": PALETTE["marker"], "line": {"width": 2,
                                                                 "color": PALETTE["ink"]}},
        hoverinfo="skip", showlegend=False,
    ))
    _base_layout(fig, title=title)
    fig.update_layout(
        showlegend=False,
        margin={"l": 0, "r": 0, "t": 36 if title else 8, "b": 0},
        scene={"xaxis": {"title": {"text": "α"}}, "yaxis": {"title": {"text": "β"}},
               "zaxis": {"title": {"text": _loss_label(log_scale)}},
               "camera": {"eye": {"x": 1.45, "y": -1.45, "z": 0.95}},
               "aspectmode": "manual", "aspectratio": {"x": 1, "y": 1, "z": 0.7}},
    )
    if overflow.any():
        fig.add_annotation(text=f"{int(overflow.sum())} cells overflowed (drawn at the top)",
                           x=0.01, y=0.01, xref="paper", yref="paper", showarrow=False,
                           font={"color": PALETTE["overflow"]})
    return fig


def cuts_1d(cuts: Sequence[Cut], *, log_scale: bool = False,
            global_min: float | None = None, title: str | None = None) -> go.Figure:
    """1-D cuts side by side, one panel each, with L* as a dashed line when given."""
    cuts = list(cuts)
    if not cuts:
        return placeholder("No cuts to show.")
    fig = make_subplots(rows=1, cols=len(cuts), subplot_titles=[c.name for c in cuts],
                        horizontal_spacing=0.1)
    _left_subplot_titles(fig)
    colours = [PALETTE["loss"], PALETTE["saxe"], PALETTE["grad"]]
    for k, cut in enumerate(cuts):
        t, y = _floats(cut.t), _floats(cut.loss)
        fig.add_trace(go.Scatter(x=t, y=np.where(np.isfinite(y), y, np.nan), mode="lines",
                                 name=cut.name, line={"color": colours[k % 3], "width": 2},
                                 hovertemplate="t=%{x:.3g}<br>loss=%{y:.4g}<extra></extra>",
                                 showlegend=False), row=1, col=k + 1)
        if global_min is not None and len(t):
            fig.add_trace(go.Scatter(
                x=[t[0], t[-1]], y=[global_min, global_min], mode="lines",
                name=f"L* = {_fmt(global_min)}", showlegend=k == 0,
                line={"color": PALETTE["global_min"], "dash": "dash", "width": 1.5},
                hovertemplate="L* = %{y:.4g}<extra></extra>"), row=1, col=k + 1)
        fig.update_xaxes(title_text=cut.xlabel, row=1, col=k + 1)
        fig.update_yaxes(type="log" if log_scale else "linear", row=1, col=k + 1)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    _base_layout(fig, title=title)
    fig.update_layout(margin={"t": 48})
    return fig


# --------------------------------------------------------------------------- along the path


def path_metrics(loss: object, grad_norm: object | None = None, *,
                 steps: object | None = None,
                 lambda_steps: object | None = None, lambda_min: object | None = None,
                 lambda_max: object | None = None,
                 plateaus: Sequence[Mapping[str, float]] = (),
                 global_min: float | None = None, saxe: tuple[object, object] | None = None,
                 diverged_at: int | None = None, selected_step: int | None = None,
                 others: Sequence[tuple[str, object, object]] = (),
                 title: str | None = None) -> go.Figure:
    """Loss, gradient norm and λ_min/λ_max against step, sharing the step axis.

    Args:
      loss: (T,) loss per step; grad_norm: (T,) ‖∇L‖; steps: (T,) their step indices
        (0..T−1 when omitted).
      lambda_steps, lambda_min, lambda_max: (K,) extreme Hessian eigenvalues at some steps.
      plateaus: dicts with ``entry`` and ``exit`` steps (and ``level``), shaded amber across
        all panels as rectangles ``x0=entry, x1=exit``.
      global_min: L*, a dashed horizontal line in the loss panel.
      saxe: (steps, loss) of the Saxe et al. closed-form learning curve (dotted overlay).
      diverged_at: step where the loss stopped being finite (a red vertical line).
      selected_step: the selected point's step: a magenta line (layout shape 1, name
        :data:`SELECTED_SHAPE_NAME`). Shape 0 (name :data:`CURSOR_SHAPE_NAME`, hidden until
        the animation plays) is the animation's cursor, moved in the browser.
      others: ``(name, steps, loss)`` curves drawn in grey in the loss panel (another
        optimiser's run).

    Log scale on the loss/gradient axes when every drawn value is positive.
    """
    loss = _floats(loss)
    steps = _floats(steps) if steps is not None else np.arange(loss.size, dtype=np.float64)
    has_lambda = lambda_steps is not None and lambda_min is not None
    rows = 1 + (grad_norm is not None) + has_lambda
    titles = ["loss"] + (["gradient norm ‖∇L‖"] if grad_norm is not None else []) + (
        ["extreme Hessian eigenvalues"] if has_lambda else [])
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=titles)
    _left_subplot_titles(fig)
    shown = np.where(np.isfinite(loss), loss, np.nan)
    fig.add_trace(go.Scatter(x=steps, y=shown, mode="lines", name="loss",
                             line={"color": PALETTE["loss"], "width": 2},
                             hovertemplate="step %{x:d}<br>loss %{y:.5g}<extra></extra>"),
                  row=1, col=1)
    positive = bool(np.all(shown[np.isfinite(shown)] > 0))
    for name, o_steps, o_loss in others:
        o = _floats(o_loss)
        o = np.where(np.isfinite(o), o, np.nan)
        fig.add_trace(go.Scatter(x=_floats(o_steps), y=o, mode="lines", name=name,
                                 line={"color": PALETTE["compare"], "width": 2, "dash": "dot"}),
                      row=1, col=1)
        positive = positive and bool(np.all(o[np.isfinite(o)] > 0))
    if saxe is not None:
        s_t, s_l = _floats(saxe[0]), _floats(saxe[1])
        fig.add_trace(go.Scatter(x=s_t, y=s_l, mode="lines", name="Saxe et al. theory",
                                 line={"color": PALETTE["saxe"], "dash": "dot", "width": 2}),
                      row=1, col=1)
        positive = positive and bool(np.all(s_l[np.isfinite(s_l)] > 0))
    if global_min is not None and steps.size:
        fig.add_trace(go.Scatter(
            x=[steps[0], steps[-1]], y=[global_min, global_min], mode="lines",
            name=f"L* = {_fmt(global_min)}",
            line={"color": PALETTE["global_min"], "dash": "dash", "width": 1.5},
            hovertemplate="L* = %{y:.5g}<extra>closed form</extra>"), row=1, col=1)
        positive = positive and global_min > 0
    fig.update_yaxes(type="log" if positive else "linear", row=1, col=1,
                     dtick=_decade_tick(shown) if positive else None)
    row = 1
    if grad_norm is not None:
        row += 1
        g = _floats(grad_norm)
        g_shown = np.where(np.isfinite(g), g, np.nan)
        fig.add_trace(go.Scatter(x=steps[: g.size], y=g_shown, mode="lines", name="‖∇L‖",
                                 line={"color": PALETTE["grad"], "width": 1.5},
                                 hovertemplate="step %{x:d}<br>‖∇L‖ %{y:.3g}<extra></extra>"),
                      row=row, col=1)
        g_fin = g_shown[np.isfinite(g_shown)]
        g_log = bool(g_fin.size and np.all(g_fin > 0))
        fig.update_yaxes(type="log" if g_log else "linear",
                         dtick=_decade_tick(g_fin) if g_log else None, row=row, col=1)
    if has_lambda:
        row += 1
        ls = _floats(lambda_steps)
        fig.add_trace(go.Scatter(x=ls, y=_floats(lambda_min), mode="lines+markers",
                                 name="λ_min", line={"color": PALETTE["lambda_min"]},
                                 marker={"size": 4}), row=row, col=1)
        if lambda_max is not None:
            fig.add_trace(go.Scatter(x=ls, y=_floats(lambda_max), mode="lines+markers",
                                     name="λ_max", line={"color": PALETTE["lambda_max"]},
                                     marker={"size": 4}), row=row, col=1)
        fig.add_hline(y=0, line={"color": PALETTE["zero"], "width": 1}, row=row, col=1)
    fig.update_xaxes(title_text="step", row=rows, col=1)
    shapes = [{
        "type": "line", "name": CURSOR_SHAPE_NAME, "xref": "x", "yref": "paper",
        "x0": 0, "x1": 0, "y0": 0, "y1": 1, "visible": False,
        "line": {"color": PALETTE["ink"], "width": 1.5, "dash": "dot"},
    }, {
        "type": "line", "name": SELECTED_SHAPE_NAME, "xref": "x", "yref": "paper",
        "x0": selected_step or 0, "x1": selected_step or 0, "y0": 0, "y1": 1,
        "line": {"color": PALETTE["selected"], "width": 2},
        "visible": selected_step is not None,
    }]
    for p in plateaus:
        shapes.append({"type": "rect", "name": "plateau", "xref": "x", "yref": "paper",
                       "x0": float(p["entry"]), "x1": float(p["exit"]), "y0": 0, "y1": 1,
                       "fillcolor": PALETTE["plateau"], "line": {"width": 0},
                       "layer": "below"})
    if diverged_at is not None:
        shapes.append({"type": "line", "name": "diverged", "xref": "x", "yref": "paper",
                       "x0": diverged_at, "x1": diverged_at, "y0": 0, "y1": 1,
                       "line": {"color": PALETTE["overflow"], "width": 2}})
    if plateaus:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers",
                                 name=f"plateau{'s' * (len(plateaus) != 1)}",
                                 marker={"symbol": "square", "size": 12,
                                         "color": "rgba(244, 180, 0, 0.35)"}), row=1, col=1)
    _base_layout(fig, title=title)
    fig.layout.shapes = [*shapes, *fig.layout.shapes]  # cursor and selected line first
    fig.update_layout(hovermode="x unified", clickmode="event",
                      margin={"t": 58 if not title else 72})
    if diverged_at is not None:
        fig.add_annotation(text=f"diverged at step {diverged_at}", x=diverged_at, y=1,
                           xref="x", yref="paper", showarrow=False, yanchor="bottom",
                           font={"color": PALETTE["overflow"]})
    return fig


# --------------------------------------------------------------------------- curvature


def spectrum(eigenvalues: object, *, density: Mapping[str, object] | None = None,
             verdict: str | None = None, zero_tol: float | None = None,
             title: str | None = None) -> go.Figure:
    """Hessian spectrum: sorted eigenvalues (left) and their density (right).

    Args:
      eigenvalues: (n,) eigenvalues (sorted ascending here); coloured negative (< −tol, red),
        zero (|λ| ≤ tol, grey) and positive (blue). ``zero_tol`` defaults to
        1e-8 · max|λ|.
      density: ``{"grid": (g,), "values": (g,)}`` — the SLQ spectral density estimate; when
        absent the right panel is a normalised histogram of the eigenvalues.
      verdict: the classification text, shown in the title.
    """
    lam = np.sort(_floats(eigenvalues).ravel())
    lam = lam[np.isfinite(lam)]
    scale = float(np.max(np.abs(lam))) if lam.size else 0.0
    tol = zero_tol if zero_tol is not None else 1e-8 * scale
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.12,
                        subplot_titles=["eigenvalues (sorted)",
                                        "spectral density (SLQ)" if density else
                                        "eigenvalue histogram"])
    _left_subplot_titles(fig)
    groups = (("negative", lam < -tol), ("≈ 0", np.abs(lam) <= tol), ("positive", lam > tol))
    colours = {"negative": PALETTE["negative"], "≈ 0": PALETTE["zero"],
               "positive": PALETTE["positive"]}
    index = np.arange(lam.size)
    for name, mask in groups:
        fig.add_trace(go.Scatter(
            x=index[mask], y=lam[mask], mode="markers", name=f"{name} ({int(mask.sum())})",
            marker={"color": colours[name], "size": 6 if lam.size < 400 else 3},
            error_y={"type": "data", "symmetric": False, "array": np.zeros(int(mask.sum())),
                     "arrayminus": lam[mask], "width": 0, "thickness": 1,
                     "color": colours[name]} if lam.size <= 200 else None,
            hovertemplate="λ_%{x} = %{y:.4g}<extra></extra>"), row=1, col=1)
    fig.add_hline(y=0, line={"color": PALETTE["muted"], "width": 1}, row=1, col=1)
    if density:
        grid, values = _floats(density["grid"]), _floats(density["values"])
        fig.add_trace(go.Scatter(x=grid, y=values, mode="lines", name="SLQ density",
                                 fill="tozeroy", line={"color": PALETTE["lambda_max"]},
                                 fillcolor="rgba(46,134,171,0.2)", showlegend=False),
                      row=1, col=2)
    elif lam.size:
        counts, edges = np.histogram(lam, bins=min(40, max(5, lam.size // 2)), density=True)
        fig.add_trace(go.Bar(x=0.5 * (edges[:-1] + edges[1:]), y=counts,
                             width=np.diff(edges), name="histogram", showlegend=False,
                             marker={"color": PALETTE["lambda_max"], "opacity": 0.6}),
                      row=1, col=2)
    fig.add_vline(x=0, line={"color": PALETTE["muted"], "width": 1}, row=1, col=2)
    fig.update_xaxes(title_text="index", row=1, col=1)
    fig.update_yaxes(title_text="λ", row=1, col=1)
    fig.update_xaxes(title_text="λ", row=1, col=2)
    fig.update_yaxes(title_text="density", row=1, col=2)
    _base_layout(fig, title=title if title is not None else (verdict or None))
    fig.update_layout(bargap=0, margin={"t": 58})
    return fig


def many_starts_histogram(final_losses: object, *, global_min: float | None = None,
                          bins: int = 30, converged_fraction: float | None = None,
                          title: str | None = None) -> go.Figure:
    """Histogram of final losses over many random starts, with L* as a vertical line.

    Finite losses are binned with ``numpy.histogram(losses, bins)`` (bars, exact counts);
    non-finite ones (diverged runs) are counted in the legend, not binned.
    """
    losses = _floats(final_losses).ravel()
    finite = losses[np.isfinite(losses)]
    fig = go.Figure()
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        if hi - lo <= 1e-9 * max(1.0, abs(hi)):  # a spike (e.g. every start at L*)
            half = max(1e-3 * abs(hi), 1e-9)
            mid = 0.5 * (lo + hi)
            lo, hi = mid - half, mid + half
            bins += 1 - bins % 2  # odd: the spike sits inside the middle bin
        counts, edges = np.histogram(finite, bins=bins, range=(lo, hi))
        fig.add_trace(go.Bar(
            x=0.5 * (edges[:-1] + edges[1:]), y=counts, width=np.diff(edges),
            name=f"{finite.size} runs", marker={"color": PALETTE["bar"], "opacity": 0.85,
                                               "line": {"width": 0.5, "color": "white"}},
            customdata=np.stack([edges[:-1], edges[1:]], axis=1),
            hovertemplate="final loss in [%{customdata[0]:.4g}, %{customdata[1]:.4g})"
                          "<br>%{y} runs<extra></extra>"))
    diverged = int(losses.size - finite.size)
    if diverged:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{diverged} diverged",
                                 marker={"color": PALETTE["overflow"], "symbol": "x"}))
    if global_min is not None:
        fig.add_vline(x=global_min, line={"color": PALETTE["global_min"], "dash": "dash",
                                          "width": 2})
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"L* = "
                                 f"{_fmt(global_min)}", line={"color": PALETTE["global_min"],
                                                              "dash": "dash"}))
    if converged_fraction is not None:
        what = "reached L*" if global_min is not None else "ended at a stationary point"
        fig.add_annotation(text=f"{100 * converged_fraction:.0f}% {what}",
                           x=0.99, y=0.95, xref="paper", yref="paper", showarrow=False,
                           xanchor="right", font={"size": 13, "color": PALETTE["ink"]},
                           bgcolor="rgba(255,255,255,0.8)")
    _base_layout(fig, title=title)
    fig.update_layout(bargap=0.02, showlegend=True)
    fig.update_xaxes(title_text="final loss")
    fig.update_yaxes(title_text="runs")
    return fig


def theory_rows(theory: Mapping[str, object]) -> list[tuple[str, str, str]]:
    """Rows ``(quantity, value, meaning)`` of the theory panel from a theory payload."""
    rows: list[tuple[str, str, str]] = []
    if theory.get("global_min") is not None:
        rows.append(("L*", _fmt(theory["global_min"]),
                     "closed-form global minimum of the deep linear net (Kawaguchi 2016)"))
    if theory.get("final_loss") is not None:
        rows.append(("final loss", _fmt(theory["final_loss"]), "where the path ended"))
    if theory.get("gap") is not None:
        rows.append(("gap", _fmt(theory["gap"]), "final loss − L*"))
    induced = theory.get("induced_model_loss", theory.get("induced"))
    if induced is not None:
        meaning = ("best loss of the model linear in its own gradient features; equals the "
                   "loss at a critical point (Kawaguchi et al. 2019)")
        final = theory.get("final_loss")
        try:
            below = float(final) - float(induced)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            below = 0.0
        if below > 1e-6 * max(abs(float(final or 0.0)), 1e-12):  # type: ignore[arg-type]
            # θ itself is a candidate of the induced model, so its value is never above the
            # loss; it is below exactly when the gradient features still reduce the loss.
            meaning += (f"; here {_fmt(below)} below the final loss: the end point is not "
                        "exactly critical, the gradient features can still lower the loss")
        rows.append(("induced model", _fmt(induced), meaning))
    levels = theory.get("baldi_hornik") or theory.get("baldi_hornik_levels")
    if levels is not None and len(levels):  # type: ignore[arg-type]
        shown = ", ".join(_fmt(v) for v in list(levels)[:6])  # type: ignore[arg-type]
        more = " …" if len(levels) > 6 else ""  # type: ignore[arg-type]
        rows.append(("saddle levels", shown + more,
                     "losses of the Baldi–Hornik critical points (strict saddles)"))
    if theory.get("saxe") is not None or theory.get("saxe_loss") is not None:
        rows.append(("Saxe overlay", "drawn", "closed-form learning curve (Saxe et al. 2013), "
                     "dotted in the loss panel"))
    for note in theory.get("notes", []) or []:  # type: ignore[union-attr]
        rows.append(("note", "", str(note)))
    return rows


# --------------------------------------------------------------------------- animation & misc


def animation_data(path: object, path_loss: object, path_steps: object, *,
                   log_scale: bool = False, lift: float = 0.0) -> dict[str, list[float]]:
    """Frames of the client-side animation: the marker's (α, β, height) and step per frame.

    ``path`` (T, 2), ``path_loss`` (T,), ``path_steps`` (T,). The height is the drawn loss
    (log10 when ``log_scale``) plus ``lift``; non-finite losses are clipped like the surface.
    """
    p = _floats(path).reshape(-1, 2)
    z, _ = display_values(_floats(path_loss), log_scale=log_scale)
    return {"x": p[:, 0].tolist(), "y": p[:, 1].tolist(), "z": (z + lift).tolist(),
            "loss": [float(v) if np.isfinite(v) else None for v in _floats(path_loss)],
            "step": [int(s) for s in _floats(path_steps)]}


def apply_presentation(fig: go.Figure, on: bool) -> go.Figure:
    """Large type for presentation mode (in place; returns the figure)."""
    fig.update_layout(font={"size": PRESENTATION_FONT_SIZE if on else FONT_SIZE})
    return fig


def standalone_html(figs: Mapping[str, go.Figure], title: str = "Landscape") -> str:
    """One self-contained HTML page with every figure (plotly.js embedded: works offline)."""
    parts = []
    first = True
    for name, fig in figs.items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=first,
                                 config={"displaylogo": False}))
        first = False
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>body{{font-family:{FONT};margin:24px;color:{PALETTE['ink']}}}"
            f"h2{{font-size:16px;font-weight:600}}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{body}</body></html>")
