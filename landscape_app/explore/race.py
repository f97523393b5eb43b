"""Optimiser races: several optimisers from the same start on one plane, in sync.

Left: the loss on the PCA plane of all racers' paths (centred at the shared start), each
racer's trail and a marker that moves with the animation (play / slider: every racer at
the same step). Middle: the loss curves, with each racer's escape from the plateau marked.
Right: the escape steps side by side.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from landscape_app import figures
from landscape_app.explore import ExploreView

__all__ = ["RACER_COLOURS", "VIEW", "iso_lines", "race_figure", "surface_image"]

RACER_COLOURS = ("#e4572e", "#2e86ab", "#f4b400", "#d81b60", "#2a9d8f", "#6a51a3")
FRAME_MS = 80
ISO_LEVELS = 14     # level lines over the race plane's loss


def race_figure(labels: Sequence[str], alpha: np.ndarray, beta: np.ndarray,
                surface: np.ndarray, trail_coords: np.ndarray, frame_steps: np.ndarray,
                frame_coords: np.ndarray, frame_loss: np.ndarray, curve_steps: np.ndarray,
                loss: np.ndarray, escape_step: Sequence[int | None],
                diverged_at: Sequence[int], *, note: str = "") -> go.Figure:
    """The race: plane with animated markers, loss curves, escape steps.

    Args:
      labels: K racer names. alpha (N_a,), beta (N_b,), surface (N_b, N_a): the loss on the
        race plane (drawn as log₁₀ when positive). trail_coords (K, R, 2): each racer's
        path on the plane (NaN after a divergence). frame_steps (F,), frame_coords (K, F, 2),
        frame_loss (K, F): the animation's frames. curve_steps (S,), loss (K, S): loss
        curves. escape_step: K escape steps (None: no escape); diverged_at: K (−1: finite).
    """
    alpha, beta = np.asarray(alpha, float), np.asarray(beta, float)
    trail = np.asarray(trail_coords, float)
    frames_xy = np.asarray(frame_coords, float)
    frame_loss = np.asarray(frame_loss, float)
    frame_steps = np.asarray(frame_steps, int)
    curve_steps = np.asarray(curve_steps, float)
    loss = np.asarray(loss, float)
    K = len(labels)
    fig = make_subplots(rows=1, cols=3, column_widths=[0.42, 0.36, 0.22],
                        horizontal_spacing=0.07, subplot_titles=(
                            "the racers on the PCA plane of their paths",
                            "loss (× escape from the plateau)", "escape step"))
    figures._left_subplot_titles(fig)
    z = np.asarray(surface, float)
    log = bool((np.isfinite(z) & (z > 0)).all())
    shown, _ = figures.display_values(z, log_scale=log)
    # plotly.js animates scatter and bar traces only: a contour trace vanishes while the
    # animation plays. The surface is a layout image (smoothed by the browser) under
    # iso-lines drawn as one scatter trace.
    fig.add_layout_image(surface_image(alpha, beta, shown), row=1, col=1)
    lines_x, lines_y = iso_lines(alpha, beta, shown, ISO_LEVELS)
    fig.add_trace(go.Scatter(x=lines_x, y=lines_y, mode="lines", hoverinfo="skip",
                             showlegend=False, name="level lines",
                             line={"color": "rgba(255,255,255,0.45)", "width": 0.8}),
                  row=1, col=1)
    colour = [RACER_COLOURS[k % len(RACER_COLOURS)] for k in range(K)]
    for k in range(K):
        fig.add_trace(go.Scatter(x=trail[k, :, 0], y=trail[k, :, 1], mode="lines",
                                 name=labels[k], legendgroup=str(k),
                                 line={"color": colour[k], "width": 2}), row=1, col=1)
    for k in range(K):
        fig.add_trace(go.Scatter(x=curve_steps, y=loss[k], mode="lines", name=labels[k],
                                 legendgroup=str(k), showlegend=False,
                                 line={"color": colour[k], "width": 2}), row=1, col=2)
        e = escape_step[k]
        if e is not None:
            at = int(np.argmin(np.abs(curve_steps - e)))
            fig.add_trace(go.Scatter(
                x=[e], y=[loss[k, at]], mode="markers", legendgroup=str(k), showlegend=False,
                name=f"{labels[k]} escapes", hovertemplate=f"{labels[k]}: escapes at step "
                                                         f"{e}<extra></extra>",
                marker={"symbol": "x", "size": 11, "color": colour[k],
                        "line": {"width": 1, "color": "white"}}), row=1, col=2)
    fig.add_trace(go.Scatter(x=[0.0], y=[0.0], mode="markers", name="start",
                             marker={"symbol": "circle", "size": 10,
                                     "color": figures.PALETTE["start"],
                                     "line": {"width": 1.2, "color": "white"}}), row=1, col=1)
    _escape_bars(fig, labels, escape_step, diverged_at, colour)
    # The moving markers: K on the plane, K on the loss curves; the frames update them.
    first = len(fig.data)
    for k in range(K):
        fig.add_trace(go.Scatter(x=frames_xy[k, :1, 0], y=frames_xy[k, :1, 1], mode="markers",
                                 legendgroup=str(k), showlegend=False, name=labels[k],
                                 marker={"size": 12, "color": colour[k],
                                         "line": {"width": 1.5, "color": "white"}}),
                      row=1, col=1)
    for k in range(K):
        fig.add_trace(go.Scatter(x=frame_steps[:1], y=frame_loss[k, :1], mode="markers",
                                 legendgroup=str(k), showlegend=False, name=labels[k],
                                 marker={"size": 9, "color": colour[k],
                                         "line": {"width": 1, "color": "white"}}),
                      row=1, col=2)
    # An animation step removes every non-scatter trace and redraws the traces its frame
    # names (plotly.js cartesian plotOne): the bars are named with an empty update so they
    # are drawn again. Frames hold plain lists (plotly.js decodes the typed arrays of the
    # figure's data, not of its frames).
    still = [k for k, trace in enumerate(fig.data) if trace.type != "scatter"]
    moving = list(range(first, first + 2 * K))
    fig.frames = [go.Frame(name=str(int(step)), traces=still + moving, data=[
        *(type(fig.data[k])() for k in still),
        *(go.Scatter(x=frames_xy[k, f:f + 1, 0].tolist(), y=frames_xy[k, f:f + 1, 1].tolist())
          for k in range(K)),
        *(go.Scatter(x=[int(step)], y=frame_loss[k, f:f + 1].tolist()) for k in range(K))])
        for f, step in enumerate(frame_steps)]
    play = {"frame": {"duration": FRAME_MS, "redraw": True}, "fromcurrent": True,
            "transition": {"duration": 0}, "mode": "immediate"}
    fig.update_layout(
        updatemenus=[{"type": "buttons", "direction": "left", "x": 0.0, "y": -0.16,
                      "xanchor": "left", "yanchor": "top", "showactive": False,
                      "pad": {"t": 0, "r": 6}, "buttons": [
                          {"label": "▶ play", "method": "animate", "args": [None, play]},
                          {"label": "❚❚", "method": "animate",
                           "args": [[None], {"mode": "immediate",
                                             "frame": {"duration": 0, "redraw": True}}]}]}],
        sliders=[{"active": 0, "x": 0.1, "len": 0.9, "y": -0.12, "yanchor": "top",
                  "pad": {"t": 0}, "currentvalue": {"prefix": "step ", "font": {"size": 11}},
                  "font": {"color": "rgba(0,0,0,0)"},  # no label under every frame's tick
                  "ticklen": 3, "minorticklen": 0,
                  "steps": [{"label": str(int(s)), "method": "animate",
                             "args": [[str(int(s))], {"mode": "immediate", "frame": {
                                 "duration": 0, "redraw": True}, "transition": {
                                 "duration": 0}}]} for s in frame_steps]}])
    finite = loss[np.isfinite(loss)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text="α", range=[alpha[0], alpha[-1]], showgrid=False,
                     zeroline=False, row=1, col=1)
    fig.update_yaxes(title_text="β", range=[beta[0], beta[-1]], showgrid=False,
                     zeroline=False, row=1, col=1)
    fig.update_xaxes(title_text="step", row=1, col=2)
    fig.update_xaxes(title_text="step", rangemode="tozero", row=1, col=3)
    figures._base_layout(fig, title=note or None)
    fig.update_layout(margin={"t": 84, "b": 110})
    return fig


def surface_image(alpha: np.ndarray, beta: np.ndarray, z: np.ndarray) -> dict:
    """A layout image of ``z (N_b, N_a)`` in the Viridis scale (a PNG data URL), one pixel
    per grid point, stretched over the grid's cells (axis coordinates x, y)."""
    finite = np.isfinite(z)
    lo, hi = (float(z[finite].min()), float(z[finite].max())) if finite.any() else (0.0, 1.0)
    t = np.clip((np.where(finite, z, hi) - lo) / ((hi - lo) or 1.0), 0.0, 1.0)
    stops = np.array([_hex_rgb(c) for c in plotly.colors.sequential.Viridis], float)
    knots = np.linspace(0.0, 1.0, stops.shape[0])
    rgb = np.stack([np.interp(t, knots, stops[:, c]) for c in range(3)], axis=-1)
    png = _png(np.round(rgb[::-1]).astype(np.uint8))     # PNG rows run top (β max) down
    da = (alpha[-1] - alpha[0]) / max(alpha.size - 1, 1)
    db = (beta[-1] - beta[0]) / max(beta.size - 1, 1)
    return {"source": "data:image/png;base64," + base64.b64encode(png).decode(),
            "x": float(alpha[0] - da / 2), "y": float(beta[-1] + db / 2),
            "sizex": float(alpha[-1] - alpha[0] + da), "sizey": float(beta[-1] - beta[0] + db),
            "xanchor": "left", "yanchor": "top", "sizing": "stretch", "layer": "below"}


def iso_lines(alpha: np.ndarray, beta: np.ndarray, z: np.ndarray,
              levels: int) -> tuple[list, list]:
    """Level lines of ``z (N_b, N_a)`` at ``levels`` evenly spaced values (marching squares):
    ``(x, y)`` lists of segments separated by None, for one scatter trace."""
    xs: list = []
    ys: list = []
    finite = np.isfinite(z)
    if not finite.all() or z.shape[0] < 2 or z.shape[1] < 2:
        return xs, ys
    for level in np.linspace(z.min(), z.max(), levels + 2)[1:-1]:
        for (xa, ya), (xb, yb) in _level_segments(alpha, beta, z, level):
            xs += [xa, xb, None]
            ys += [ya, yb, None]
    return xs, ys


def _level_segments(alpha, beta, z, level):
    """Marching squares for one level: the segments crossing each grid cell."""
    c00, c10 = z[:-1, :-1], z[:-1, 1:]    # (β_i, α_j), (β_i, α_j+1)
    c01, c11 = z[1:, :-1], z[1:, 1:]      # (β_i+1, α_j), (β_i+1, α_j+1)
    A0, A1 = alpha[:-1][None, :], alpha[1:][None, :]
    B0, B1 = beta[:-1][:, None], beta[1:][:, None]

    def cross(za, zb):  # corners at or above the level are "above"
        mask = (za >= level) != (zb >= level)
        with np.errstate(divide="ignore", invalid="ignore"):
            return mask, (level - za) / (zb - za)

    # Edges: bottom (c00 → c10), right (c10 → c11), top (c01 → c11), left (c00 → c01).
    edges = []
    for (za, zb), point in (
            ((c00, c10), lambda f: (A0 + f * (A1 - A0), B0 + 0 * f)),
            ((c10, c11), lambda f: (A1 + 0 * f, B0 + f * (B1 - B0))),
            ((c01, c11), lambda f: (A0 + f * (A1 - A0), B1 + 0 * f)),
            ((c00, c01), lambda f: (A0 + 0 * f, B0 + f * (B1 - B0)))):
        mask, frac = cross(za, zb)
        edges.append((mask, *point(np.where(mask, frac, 0.0))))
    count = sum(e[0].astype(int) for e in edges)
    for i, j in zip(*np.nonzero(count == 2), strict=True):
        ends = [(float(e[1][i, j]), float(e[2][i, j])) for e in edges if e[0][i, j]]
        yield ends[0], ends[1]
    for i, j in zip(*np.nonzero(count == 4), strict=True):   # a saddle cell: pair by centre
        p = [(float(e[1][i, j]), float(e[2][i, j])) for e in edges]
        centre = 0.25 * (c00[i, j] + c10[i, j] + c01[i, j] + c11[i, j])
        if (centre >= level) == (c00[i, j] >= level):
            yield p[0], p[1]
            yield p[2], p[3]
        else:
            yield p[0], p[3]
            yield p[1], p[2]


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)


def _png(rgb: np.ndarray) -> bytes:
    """A truecolour PNG of ``rgb (h, w, 3)`` uint8 (no dependency beyond zlib)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[r].tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def _escape_bars(fig: go.Figure, labels, escape_step, diverged_at, colour) -> None:
    """Horizontal bars of the escape steps, one per racer (top to bottom in order), each
    labelled with its racer and step (or why it has none)."""
    values, texts = [], []
    for e, d in zip(escape_step, diverged_at, strict=True):
        if d is not None and d >= 0:
            values.append(0)
            texts.append(f"diverged at {d}")
        elif e is None:
            values.append(0)
            texts.append("no escape")
        else:
            values.append(e)
            texts.append(str(e))
    rows = list(range(len(values)))
    fig.add_trace(go.Bar(x=values, y=rows, orientation="h", text=texts, width=0.4,
                         textposition="outside", marker={"color": list(colour)},
                         showlegend=False, name="escape step", cliponaxis=False,
                         textfont={"size": 11}, customdata=list(labels),
                         hovertemplate="%{customdata}: %{text}<extra></extra>"), row=1, col=3)
    for r, label in zip(rows, labels, strict=True):  # annotations outlast the animation
        fig.add_annotation(x=0.0, y=r - 0.42, text=label, showarrow=False, xanchor="left",
                           font={"size": 10.5, "color": figures.PALETTE["muted"]},
                           row=1, col=3)
    fig.update_xaxes(range=[0, 1.35 * max([1, *values])], row=1, col=3)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False,
                     range=[len(rows) - 0.5, -0.9], row=1, col=3)


def _status(payload: Mapping) -> str:
    parts = []
    for label, e, d in zip(payload["labels"], payload["escape_step"], payload["diverged_at"],
                           strict=True):
        if d is not None and d >= 0:
            parts.append(f"{label}: diverged at step {d}")
        elif e is None:
            parts.append(f"{label}: no escape")
        else:
            parts.append(f"{label}: escapes at step {e}")
    return " · ".join(parts)


def render(payload: Mapping, view: Mapping) -> tuple[go.Figure, str]:
    ratio = payload.get("explained_variance")
    note = "escape: the loss stays below plateau − " \
           f"{100 * float(payload.get('escape_fraction', 0.1)):.0f}% of (plateau − final)"
    if ratio is not None and len(ratio) == 2:
        note += f" · PCA explains {100 * float(ratio[0]):.0f}% + {100 * float(ratio[1]):.0f}%"
    fig = race_figure(payload["labels"], payload["alpha"], payload["beta"], payload["surface"],
                      payload["trail_coords"], payload["frame_steps"], payload["frame_coords"],
                      payload["frame_loss"], payload["curve_steps"], payload["loss"],
                      payload["escape_step"], payload["diverged_at"], note=note)
    return fig, _status(payload)


def _work(rows: int, n: int, view: Mapping) -> float:
    """Each racer's path (3 m·P per step) and the plane's loss grid."""
    text = str(view.get("race") or "")
    racers = max(1, len([e for e in text.replace(";", ",").split(",") if e.strip()]))
    steps = int(view.get("steps") or 0)
    return racers * 3.0 * steps * rows * n + 41 ** 2 * float(rows) * n


def _tables(payload: Mapping) -> dict[str, tuple[list[str], np.ndarray]]:
    steps = np.asarray(payload["curve_steps"], float)
    loss = np.asarray(payload["loss"], float)
    header = ["step", *(f"loss {label}" for label in payload["labels"])]
    tables = {"race_loss.csv": (header, np.column_stack([steps, loss.T]))}
    rows = [[k, np.nan if e is None else e, d] for k, (e, d) in enumerate(
        zip(payload["escape_step"], payload["diverged_at"], strict=True))]
    tables["race_escape.csv"] = (["racer", "escape_step", "diverged_at"],
                                 np.asarray(rows, float))
    return tables


VIEW = ExploreView(
    key="race", label="Optimiser race", task="race", render=render,
    intro="Several optimisers from the same start (the settings' initial point), on the PCA "
          "plane of their paths, animated step by step in sync. Near a saddle they sit on the "
          "same plateau; momentum and Adam leave it sooner. The escape step is when a racer "
          "has left the plateau for good.",
    controls=(("race", "Racers", "text", None,
               "optimiser and step size, comma-separated (up to 6); a momentum or nesterov "
               "racer may add its own β: gd 0.05, momentum 0.02 0.99, adam 0.01"),),
    work=_work, tables=_tables, height="520px")
