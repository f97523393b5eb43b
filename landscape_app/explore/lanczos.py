"""Lanczos diagnostics: has the spectrum at the selected point converged?

Left: every Ritz value against the Lanczos step (grey), the k smallest and k largest
coloured; by Cauchy interlacing the outermost ones only move outwards, and a flat tail is
convergence. Middle: their residual bounds β_j |e_jᵀ s_i| (log scale) against the
tolerance. Right: each SLQ probe's smoothed density (thin), their mean and min–max band:
probes that disagree mean the density needs more probes. Where the model is small the
exact extremes and the exact smoothed density are drawn dashed for comparison.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from landscape_app import figures
from landscape_app.explore import ExploreView

__all__ = ["VIEW", "lanczos_figure"]

RITZ_STEPS = 80          # Lanczos steps of the Ritz history (capped at n; ≥ 4k)
SLQ_STEPS = 80           # Lanczos steps per SLQ probe (capped at n), as the spectrum card
MAX_PARAMS_EXACT = 600   # exact eigenvalues drawn for reference up to this many parameters
ROUNDING = 1e-16         # residual bounds are drawn no lower than this × max|θ|


def lanczos_figure(ritz: np.ndarray, extremes: np.ndarray, bounds: np.ndarray,
                   converged_at: np.ndarray, *, tol: float, zero_floor: float = 0.0,
                   grid: np.ndarray,
                   densities: np.ndarray, mean: np.ndarray, lower: np.ndarray,
                   upper: np.ndarray, exact_extremes: np.ndarray | None = None,
                   exact_density: np.ndarray | None = None, note: str = "") -> go.Figure:
    """Ritz values, residual bounds and SLQ probe densities of one Hessian.

    Args:
      ritz: (S, S) Ritz values after each step j (row j − 1: j values, then NaN).
      extremes, bounds: (S, 2k) the k smallest then k largest Ritz values per step and
        their residual bounds; converged_at: (2k,) first converged step (−1: never).
      tol, zero_floor: the test of ``converged_at``, ``bound ≤ tol · max(|θ|,
        zero_floor · max|θ_final|)``; the outermost values' targets are drawn dotted.
      grid: (G,) eigenvalue grid; densities: (P, G) each probe's density; mean, lower,
        upper: (G,) their mean, pointwise min and max.
      exact_extremes: (2k,) the exact eigenvalues matching ``extremes``' columns, or None;
      exact_density: (G,) the exact smoothed density on ``grid``, or None.
    """
    ritz = np.asarray(ritz, float)
    extremes, bounds = np.asarray(extremes, float), np.asarray(bounds, float)
    converged_at = np.asarray(converged_at, int)
    S = ritz.shape[0]
    k = extremes.shape[1] // 2
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08, subplot_titles=(
        "Ritz values by Lanczos step", "residual bound β_j |s_ji| (≥ 1e-16·max|θ|)",
        f"SLQ density of {len(densities)} probes"))
    steps = np.arange(1, S + 1)
    jj = np.repeat(steps, S).reshape(S, S)
    ok = np.isfinite(ritz)
    fig.add_trace(go.Scattergl(x=jj[ok], y=ritz[ok], mode="markers", name="Ritz values",
                               marker={"size": 3, "color": figures.PALETTE["zero"]},
                               hovertemplate="step %{x}<br>θ=%{y:.6g}<extra></extra>"),
                  row=1, col=1)
    colours = _column_colours(k)
    scale = float(np.nanmax(np.abs(extremes[-1]))) if np.isfinite(extremes[-1]).any() else 1
    floor = ROUNDING * (scale or 1.0)  # bounds below rounding level mean nothing: clip
    star_legend = True
    for c in range(2 * k):
        name = _column_name(c, k)
        show = c in (0, 2 * k - 1)
        line = {"color": colours[c], "width": 2 if show else 1}
        fig.add_trace(go.Scatter(x=steps, y=extremes[:, c], mode="lines", name=name,
                                 legendgroup=name, showlegend=show, line=line,
                                 hovertemplate=f"{name}<br>step %{{x}}<br>θ=%{{y:.8g}}"
                                               "<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=steps, y=np.maximum(bounds[:, c], floor), mode="lines",
                                 name=name,
                                 legendgroup=name, showlegend=False, line=line,
                                 hovertemplate=f"{name}<br>step %{{x}}<br>bound %{{y:.3g}}"
                                               "<extra></extra>"), row=1, col=2)
        j = int(converged_at[c])
        if j >= 1:
            fig.add_trace(go.Scatter(
                x=[j], y=[extremes[j - 1, c]], mode="markers", name="converged",
                legendgroup="converged", showlegend=star_legend,
                marker={"symbol": "star", "size": 10, "color": colours[c],
                        "line": {"width": 1, "color": "white"}},
                hovertemplate=f"{name} converged at step %{{x}}<extra></extra>"),
                row=1, col=1)
            star_legend = False
        if exact_extremes is not None and show:
            fig.add_hline(y=float(exact_extremes[c]), row=1, col=1,
                          line={"dash": "dash", "width": 1, "color": colours[c]})
    for c, shift in ((0, -1), (2 * k - 1, 1)):
        # the convergence test of the outermost values: bound ≤ tol · max(|θ|, floor · scale)
        target = tol * max(abs(float(extremes[-1, c])), zero_floor * scale)
        if target > 0 and np.isfinite(target):
            fig.add_hline(y=target, row=1, col=2,
                          line={"dash": "dot", "width": 1.5, "color": colours[c]})
            # a log axis takes annotation positions in decades
            fig.add_annotation(x=1, xref="x2 domain", xanchor="right", y=np.log10(target),
                               yref="y2", yshift=8 * shift, showarrow=False,
                               text=f"{_column_name(c, k)} target {figures._fmt(target, 2)}",
                               font={"size": 10, "color": colours[c]})
    grid = np.asarray(grid, float)
    for p, dens in enumerate(np.asarray(densities, float)):
        fig.add_trace(go.Scatter(x=grid, y=dens, mode="lines", name="one probe",
                                 legendgroup="probe", showlegend=p == 0, opacity=0.35,
                                 line={"width": 1, "color": figures.PALETTE["compare"]},
                                 hoverinfo="skip"), row=1, col=3)
    fig.add_trace(go.Scatter(x=np.r_[grid, grid[::-1]],
                             y=np.r_[np.asarray(upper, float), np.asarray(lower, float)[::-1]],
                             fill="toself", fillcolor="rgba(31, 78, 121, 0.15)",
                             line={"width": 0}, name="min–max over probes",
                             hoverinfo="skip"), row=1, col=3)
    fig.add_trace(go.Scatter(x=grid, y=np.asarray(mean, float), mode="lines",
                             name="mean (SLQ estimate)",
                             line={"color": figures.PALETTE["bar"], "width": 2.5},
                             hovertemplate="λ=%{x:.4g}<br>density %{y:.4g}<extra></extra>"),
                  row=1, col=3)
    if exact_density is not None:
        fig.add_trace(go.Scatter(x=grid, y=np.asarray(exact_density, float), mode="lines",
                                 name="exact eigenvalues, smoothed",
                                 line={"color": figures.PALETTE["ink"], "width": 1.5,
                                       "dash": "dash"}), row=1, col=3)
    figures._base_layout(fig, title=note or None)
    figures._left_subplot_titles(fig)
    fig.update_xaxes(title_text="Lanczos step j", row=1, col=1)
    fig.update_yaxes(title_text="θ", row=1, col=1)
    fig.update_xaxes(title_text="Lanczos step j", row=1, col=2)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=2)
    fig.update_xaxes(title_text="eigenvalue λ", row=1, col=3)
    fig.update_yaxes(title_text="density", row=1, col=3)
    return fig


def _column_name(c: int, k: int) -> str:
    if c < k:
        return "θ_min" if c == 0 else f"θ_min+{c}"
    top = 2 * k - 1 - c
    return "θ_max" if top == 0 else f"θ_max−{top}"


def _column_colours(k: int) -> list[str]:
    """λ_min's red fading inwards for the smallest k, λ_max's blue for the largest k."""
    low = [f"rgba(192, 57, 43, {1 - 0.6 * c / max(k - 1, 1):.2f})" for c in range(k)]
    high = [f"rgba(46, 134, 171, {1 - 0.6 * (k - 1 - c) / max(k - 1, 1):.2f})"
            for c in range(k)]
    return low + high


def _converged_text(at: int, steps: int) -> str:
    return f"step {at}" if at >= 1 else f"not within {steps} steps"


def render(payload: Mapping, view: Mapping) -> tuple[go.Figure, str]:
    at = np.asarray(payload["converged_at"], int)
    steps = int(payload["steps"])
    notes = [f"λ_min converged at {_converged_text(int(at[0]), steps)}, "
             f"λ_max at {_converged_text(int(at[-1]), steps)} "
             f"(bound ≤ {figures._fmt(payload['tol'], 1)}·|θ|)"]
    mean, err = np.asarray(payload["moment_mean"], float), np.asarray(payload["moment_stderr"],
                                                                       float)
    probe = (f"tr H / n ≈ {figures._fmt(mean[0])} ± {figures._fmt(err[0], 2)} over "
             f"{int(payload['probes'])} probes")
    if payload.get("trace_over_n") is not None:
        probe += f" (exact {figures._fmt(payload['trace_over_n'])})"
    exact = payload.get("exact_eigenvalues")
    exact_extremes = None
    if exact is not None:
        lam = np.sort(np.asarray(exact, float))
        k = int(np.asarray(payload["extreme_values"]).shape[1]) // 2
        idx = np.r_[np.arange(k), lam.size - k + np.arange(k)].clip(0, lam.size - 1)
        exact_extremes = lam[idx]
    where = "the selected plane point" if payload.get("plane_point") else (
        f"step {payload['step']}" if payload.get("step") is not None else "the selected point")
    fig = lanczos_figure(
        payload["ritz_values"], payload["extreme_values"], payload["residual_bounds"], at,
        tol=float(payload["tol"]), zero_floor=float(payload.get("zero_floor") or 0.0),
        grid=payload["grid"], densities=payload["densities"],
        mean=payload["density_mean"], lower=payload["density_min"],
        upper=payload["density_max"], exact_extremes=exact_extremes,
        exact_density=payload.get("exact_density"),
        note=f"Hessian at {where} · {int(payload['n_params'])} parameters · "
             f"{steps} Lanczos steps")
    return fig, " · ".join([*notes, probe])


def _work(rows: int, n: int, view: Mapping) -> float:
    """HVPs (≈ 4 m n multiply-adds each) of the Ritz run, the probes and the exact
    reference, plus the reorthogonalisation (steps² n) and the reference eigh (n³/3)."""
    k = int(view.get("k") or 10)
    probes = int(view.get("probes") or 8)
    steps = min(n, max(RITZ_STEPS, 4 * k))
    slq = min(n, SLQ_STEPS)
    exact = n if n <= MAX_PARAMS_EXACT else 0
    hvps = steps + probes * slq + exact
    return 4.0 * rows * n * hvps + 2.0 * n * (steps ** 2 + probes * slq ** 2) + exact ** 3 / 3


def _tables(payload: Mapping) -> dict[str, tuple[list[str], np.ndarray]]:
    values = np.asarray(payload["extreme_values"], float)
    bounds = np.asarray(payload["residual_bounds"], float)
    k = values.shape[1] // 2
    names = [_column_name(c, k) for c in range(2 * k)]
    step = np.arange(1, values.shape[0] + 1, dtype=float)[:, None]
    header = ["step", *names, *(f"bound {n}" for n in names)]
    moments = np.asarray(payload["moments"], float)
    probe = np.arange(moments.shape[0], dtype=float)[:, None]
    return {"ritz_history.csv": (header, np.hstack([step, values, bounds])),
            "slq_probe_moments.csv": (["probe", "sum w tau", "sum w tau^2"],
                                      np.hstack([probe, moments]))}


VIEW = ExploreView(
    key="lanczos", label="Lanczos diagnostics", task="lanczos_diagnostics", render=render,
    intro="Has the spectrum at the selected point converged? Left: Ritz values after each "
          "Lanczos step (the outermost only move outwards; stars mark where their residual "
          "bound met the tolerance). Right: each random probe's density: when they disagree, "
          "the estimate needs more probes.",
    controls=(("probes", "SLQ probes", "text", None,
               "random probes of the density (1 to 64); Lanczos k is set above"),),
    work=_work, tables=_tables, height="460px")
