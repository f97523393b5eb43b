"""Conserved quantities: the balancedness matrices along the path and the symmetry's flat
directions in the end point's spectrum (deep linear and ReLU networks)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from landscape_app import figures
from landscape_app.explore import ExploreView

__all__ = ["VIEW", "balance_figure"]


def balance_figure(time: np.ndarray, drift: np.ndarray, *, lr: float,
                   time_half: np.ndarray | None = None, drift_half: np.ndarray | None = None,
                   abs_eigenvalues: np.ndarray | None = None, zero_tol: float | None = None,
                   symmetry_rank: int | None = None, note: str = "") -> go.Figure:
    """Left: Σ_k ‖D_k(t) − D_k(0)‖_F against time t = η·step, at η and η/2 (log scale).
    Right: the end point's |λ| in ascending order (log scale) with the zero tolerance τ and
    the number of flat directions the rescaling symmetry forces shaded."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
        "drift of the balancedness D_k along the path", "|λ| of the Hessian at the end"))
    def positive(t, y):
        """Drop the non-positive values a log axis cannot show (the drift is 0 at t = 0)."""
        t, y = np.asarray(t, float), np.asarray(y, float)
        keep = y > 0
        return t[keep], y[keep]

    x, y = positive(time, drift)
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"η = {lr:g}",
                             line={"color": figures.PALETTE["loss"], "width": 2.5}),
                  row=1, col=1)
    if time_half is not None and drift_half is not None:
        x, y = positive(time_half, drift_half)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"η/2 = {lr / 2:g}",
                                 line={"color": figures.PALETTE["lambda_max"], "width": 2,
                                       "dash": "dash"}), row=1, col=1)
    fig.update_yaxes(type="log", title_text="Σ‖D_k(t) − D_k(0)‖_F", row=1, col=1)
    fig.update_xaxes(title_text="time t = η · step", row=1, col=1)
    if abs_eigenvalues is not None and len(abs_eigenvalues):
        k, lam = positive(np.arange(1, len(abs_eigenvalues) + 1), abs_eigenvalues)
        fig.add_trace(go.Scatter(x=k, y=lam, mode="markers", name="|λ|",
                                 marker={"size": 5, "color": figures.PALETTE["bar"]}),
                      row=1, col=2)
        if zero_tol:
            # a trace, not add_hline: hline annotations land off their line on log axes
            fig.add_trace(go.Scatter(x=[0.5, len(abs_eigenvalues) + 0.5],
                                     y=[zero_tol, zero_tol], mode="lines",
                                     name="zero tolerance τ",
                                     line={"dash": "dot", "color": figures.PALETTE["muted"]}),
                          row=1, col=2)
        if symmetry_rank:
            fig.add_vrect(x0=0.5, x1=symmetry_rank + 0.5, fillcolor=figures.PALETTE["plateau"],
                          line_width=0, annotation_text=f"{symmetry_rank} symmetry directions",
                          annotation_position="top left", row=1, col=2)
        fig.update_yaxes(type="log", title_text="|λ|", row=1, col=2)
        fig.update_xaxes(title_text="eigenvalue (ascending |λ|)", row=1, col=2)
    figures._base_layout(fig, title=note or None)
    figures._left_subplot_titles(fig)
    fig.update_layout(legend={"y": -0.2, "yanchor": "top"}, margin={"b": 80})
    return fig


def render(payload: Mapping, view: Mapping) -> tuple[go.Figure, str]:
    drift = np.asarray(payload["drift"], float)
    notes = [f"‖D(0)‖ = {figures._fmt(payload.get('d0_norm'))}",
             f"final drift {figures._fmt(drift[-1])}"]
    half = payload.get("drift_half")
    if half is not None and len(half) and drift[-1] > 0:
        ratio = float(drift[-1] / max(float(np.asarray(half)[-1]), 1e-300))
        notes.append(f"η → η/2 divides it by {ratio:.2f} (gradient flow: 2 for an O(η) "
                     "integrator error)")
    rank = payload.get("symmetry_rank")
    if rank is not None:
        lam = np.asarray(payload["abs_eigenvalues"], float)
        zeros = int(np.sum(lam <= float(payload["zero_tol"])))
        notes.append(f"{zeros} of {lam.size} eigenvalues are zero; the symmetry forces "
                     f"{rank} (their vᵀHv/max|λ| ≤ "
                     f"{figures._fmt(payload.get('symmetry_curvature'), 2)})")
    fig = balance_figure(payload["time"], drift, lr=float(payload["lr"]),
                         time_half=payload.get("time_half"), drift_half=half,
                         abs_eigenvalues=payload.get("abs_eigenvalues"),
                         zero_tol=payload.get("zero_tol"), symmetry_rank=rank,
                         note=" · ".join(notes[:2]))
    return fig, " · ".join(notes[2:]) or "balancedness"


def _work(rows: int, n: int, view: Mapping) -> float:
    steps = int(view.get("steps") or 0)
    return 9.0 * steps * rows * n + (n ** 3 / 3 + 4 * n * rows * n if n <= 600 else 0)


def _tables(payload: Mapping) -> dict[str, tuple[list[str], np.ndarray]]:
    return {"balancedness.csv": (["time", "drift"], np.stack(
        [np.asarray(payload["time"], float), np.asarray(payload["drift"], float)], axis=1))}


VIEW = ExploreView(
    key="balance", label="Conserved quantities", task="balancedness", render=render,
    intro="Gradient flow conserves D_k = W_{k+1}ᵀW_{k+1} − W_kW_kᵀ (linear nets; its "
          "diagonal for ReLU nets). Gradient descent drifts by O(η): halving η over the same "
          "time halves the drift. Small initialisations start and stay balanced. The same "
          "symmetry makes flat directions in the spectrum at every critical point.",
    work=_work, tables=_tables)
