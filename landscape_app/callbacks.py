"""The dashboard's callbacks: read the controls, validate, ask the cache, draw.

Thin by design: :func:`landscape_app.settings.validate_settings` cleans what the browser
sent, :func:`landscape_app.cache.cached_task` returns a payload (a cache read when the view
was seen before, otherwise a job on the compute server), and :mod:`landscape_app.figures`
draws it. The callback bodies are plain functions of plain values (unit-tested directly);
:func:`register_callbacks` wires them to a Dash app.

Data flow:
  url ⇄ controls → ``settings-store`` (clean settings + ``compare``/``many_starts``/
  ``critical``) → one
  callback per card. A card's callback computes in the request when the work is small
  (:func:`is_fast`) and otherwise hands the job to its background twin (progress bar, cancel
  button) through ``<panel>-job``. Display-only changes are ``Patch`` es: the selected point
  and the animation marker move in the browser (``assets/landscape.js``), with no server round
  trip per frame.

Every error a user can cause ends up as a message next to the control or on the card; a bug
is logged here and shown as one sentence, never a traceback.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import functools
import hashlib
import io
import json
import logging
import math
import os
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

import numpy as np
import plotly.graph_objects as go
from dash import ALL, Input, Output, Patch, State, ctx, dcc, html, no_update, set_props
from dash.exceptions import PreventUpdate

from landscape_app import explore, figures, presets
from landscape_app import settings as schema
from landscape_app.layout import BOOL_FIELDS, CONTROL_FIELDS, EXTRA_FIELDS, JOB_PANELS, TEXT_FIELDS

__all__ = [
    "Outcome",
    "control_values",
    "fetch",
    "is_fast",
    "page_query",
    "register_callbacks",
]

log = logging.getLogger("landscape.callbacks")

# Estimated multiply-adds a request may do in the foreground (a few hundred ms on the 2-core
# reference CPU once compiled); anything bigger runs as a background job with a progress bar.
FAST_WORK = 3e8
MAX_DOWNLOAD_POINTS = 200_000
# Background jobs (each its own process) running at once on this machine; a job started
# beyond this answers "the server is busy" at once instead of computing.
MAX_BACKGROUND_JOBS = 4
UI_KEYS = ("preset", "present")
VIEW_KEYS = ("compare", "many_starts", "critical")
SETTINGS_FIELDS = tuple(schema.DEFAULTS)
UNAVAILABLE = "not available yet"
GRAPHS = ("surface", "contour", "path", "cuts", "spectrum", "starts")


# --------------------------------------------------------------------------- services


class ServiceUnavailable(Exception):
    """A piece of the service layer (cache, compute server, tasks) is not installed yet."""


def _cached_task(name: str, settings: Mapping, progress: Callable | None = None) -> dict:
    try:
        from landscape_app.cache import cached_task
    except ImportError as exc:
        raise ServiceUnavailable(f"The compute service is {UNAVAILABLE} ({exc.name}).") \
            from None
    return cached_task(name, dict(settings), progress=progress)


def _task_error_type() -> type[Exception]:
    try:
        from landscape_app.compute_server import TaskError
    except ImportError:  # pragma: no cover - the service layer is part of the product
        return ServiceUnavailable
    return TaskError


@dataclass
class Outcome:
    """A task's payload, or why there is none (``kind``: input, timeout, internal,
    unavailable); ``wall`` is the seconds this request waited."""

    payload: dict | None = None
    error: str | None = None
    kind: str | None = None
    wall: float = 0.0

    @property
    def ok(self) -> bool:
        return self.payload is not None


def task_settings(view: Mapping) -> dict:
    """The settings fields of a view (drops ``compare``, ``many_starts``, ``critical``)."""
    return {k: view[k] for k in SETTINGS_FIELDS if k in view}


def fetch(name: str, view: Mapping, progress: Callable | None = None) -> Outcome:
    """Run (or read from the cache) task ``name`` for ``view``; never raises."""
    start = time.perf_counter()
    task_error = _task_error_type()
    try:
        payload = _cached_task(name, task_settings(view), progress)
    except ServiceUnavailable as exc:
        return Outcome(error=str(exc), kind="unavailable", wall=time.perf_counter() - start)
    except task_error as exc:
        kind = getattr(exc, "kind", "internal")
        message = getattr(exc, "message", str(exc))
        return Outcome(error=message, kind=kind, wall=time.perf_counter() - start)
    except Exception:  # noqa: BLE001 - a bug: log it, show one sentence
        log.exception("task %s failed", name)
        return Outcome(error=f"The {name} computation failed (internal error; see the server "
                             "log).", kind="internal", wall=time.perf_counter() - start)
    if not isinstance(payload, Mapping):
        return Outcome(error=f"The {name} computation returned nothing usable.",
                       kind="internal", wall=time.perf_counter() - start)
    return Outcome(payload=dict(payload), wall=time.perf_counter() - start)


def status_line(outcome: Outcome, label: str = "") -> list:
    """Children of a card's status line: compute time, device, wait; or the error."""
    if not outcome.ok:
        cls = "status-error" if outcome.kind != "unavailable" else "status-muted"
        return [html.Span(outcome.error or "failed", className=cls)]
    p = outcome.payload or {}
    parts = []
    if label:
        parts.append(label)
    seconds = p.get("seconds")
    if isinstance(seconds, int | float):
        parts.append(f"computed in {_secs(seconds)}")
    device = p.get("device")
    if device:
        parts.append(f"on {_device_short(device)}")
    parts.append(f"served in {_secs(outcome.wall)}")
    return [html.Span(" · ".join(parts), className="status-ok")]


def _secs(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def _device_short(device: object) -> str:
    text = str(device.get("kind", device)) if isinstance(device, Mapping) else str(device)
    return text.split(":")[0].strip() or "?"


def device_badge(device: object) -> tuple[str, str]:
    """(text, class) of the header badge for a payload's ``device``."""
    if isinstance(device, Mapping):
        platform = str(device.get("platform", ""))
        kind = str(device.get("kind") or device.get("name") or "")
        count = device.get("count")
    else:
        platform, kind, count = str(device), "", None
    text = f"{platform} {kind}".lower()
    gpu = any(w in text for w in ("gpu", "cuda", "rocm", "nvidia"))
    label = "GPU" if gpu else "CPU"
    if kind and kind.lower() not in ("cpu", "gpu", platform.lower()):
        label += f" · {kind}"
    if isinstance(count, int) and count > 1 and gpu:
        label += f" ×{count}"
    return label, "badge badge-device " + ("badge-gpu" if gpu else "badge-cpu")


# --------------------------------------------------------------------------- cost model


def _problem_size(view: Mapping) -> tuple[int, int, int, int]:
    """``(m, rows a path step touches, rows of the Hessian work, parameters P)`` of a clean
    view: a deep linear net with the squared loss needs only its d_x + d_y sufficient rows
    for full-batch work (``compute.sufficient_data``). (200, 200, 200, 64) if unknown."""
    try:
        rows, d_x, d_y, _ = schema.dataset_shape(view)
        bias = bool(view.get("bias")) and view.get("model") == "mlp"
        return (rows, schema.path_rows(view, rows, d_x, d_y),
                schema.full_batch_rows(view, rows, d_x, d_y),
                schema.n_params([d_x, *view["widths"], d_y], bias))
    except Exception:  # noqa: BLE001 - a missing upload etc.: assume small
        return 200, 200, 200, 64


def path_is_cached(view: Mapping) -> bool:
    """Whether the path of ``view`` was trained already (its result is in the cache)."""
    try:
        from landscape_app.cache import is_cached
    except ImportError:
        return False
    try:
        return is_cached("path", task_settings(view))
    except Exception:  # noqa: BLE001 - not known to be trained
        return False


def estimated_work(task: str, view: Mapping, path_trained: bool = False) -> float:
    """Rough multiply-adds of ``task`` (forward + backward ≈ 3 × m × P per gradient);
    ``path_trained``: the theory task reuses an already trained path."""
    # Estimate from the validated settings: a raw view from a hostile client (widths as text,
    # say) must not make a large job look small and bypass the background route.
    view = {**view, **schema.validate_settings(task_settings(view))[0]}
    rows, step_rows, hessian_rows, P = _problem_size(view)
    per = float(rows * P)
    per_step = float(step_rows * P)
    steps = int(view.get("steps") or 0)
    lam = (steps // view["lambda_every"]) * 40 * 4 * per_step if view.get("lambda_every") \
        else 0.0
    path = 3 * steps * per_step + lam
    needs_path = view.get("plane") in ("pca", "points", "action") or view.get("center") in (
        "final", "selected")
    hvps = P if P <= 4000 else 4 * int(view.get("k") or 10) + 100
    spectrum = 4 * hvps * hessian_rows * P + min(P, 4000) ** 3 / 3  # H (or Lanczos) + eigh
    # Hessian-eigenvector planes diagonalise the Hessian at the centre first.
    plane = spectrum if view.get("plane") in ("hessian", "action") else 0.0
    if task == "path":
        return path
    if task == "surface":
        return int(view.get("grid") or 41) ** 2 * per + (path if needs_path else 0.0) + plane
    if task == "cut":
        return 2 * 201 * per + path + plane
    if task == "spectrum":
        return spectrum + path
    if task == "many_starts":
        return int(view.get("n_starts") or 1) * path
    if task == "critical_point":
        return 1e9 + path  # an iterative search: never in the request
    if task == "theory":  # trains the path (unless it is trained), then closed forms
        return per + (0.0 if path_trained else path)
    for v in explore.VIEWS:
        if task == v.task:
            return v.work(rows, P, view) + (path if needs_path or task != "index_map" else 0.0)
    return per


def is_fast(task: str, view: Mapping) -> bool:
    """Whether ``task`` is small enough to answer within the request (the theory task
    counts its path unless that is trained already)."""
    if task == "many_starts":
        return False
    if estimated_work(task, view) <= FAST_WORK:
        return True
    return task == "theory" and path_is_cached(view) \
        and estimated_work(task, view, path_trained=True) <= FAST_WORK


def too_large_message(task: str, view: Mapping, coarse: bool = False) -> str:
    """The status of a card with no background job whose work is too large for the
    request (a coarse pass, the theory card)."""
    head = (f"Too large for a quick pass: about {estimated_work(task, view):.2g} "
            "multiply-adds")
    if coarse:
        return f"{head}; the full view runs in the background."
    if task == "theory":
        return (f"{head}, training the path included; the theory values are computed once "
                "the path card has trained the path.")
    return f"{head}; choose a smaller view."


# --------------------------------------------------------------------------- URL & controls


def page_query(view: Mapping, ui: Mapping | None = None) -> str:
    """The URL query (no ``?``) of a view and the UI state: settings that differ from the
    defaults, then ``compare``, ``starts``, ``preset``, ``present`` when set."""
    query = schema.settings_to_query(view)
    extra = []
    if view.get("compare"):
        extra.append(("compare", view["compare"]))
    if view.get("many_starts"):
        extra.append(("starts", "1"))
    if view.get("critical"):
        extra.append(("critical", "1"))
    ui = ui or {}
    if ui.get("preset"):
        extra.append(("preset", ui["preset"]))
    if ui.get("present"):
        extra.append(("present", "1"))
    tail = urlencode(extra)
    return "&".join(p for p in (query, tail) if p)


def parse_page_query(search: str | None) -> tuple[dict, dict, dict]:
    """(raw settings, view extras, ui) from a URL query; never raises."""
    search = search if isinstance(search, str) else ""
    raw = schema.settings_from_query(search)
    try:
        parsed = parse_qs(search[:8192].lstrip("?"), keep_blank_values=True, max_num_fields=200)
    except ValueError:
        parsed = {}

    def last(key: str) -> str | None:
        values = parsed.get(key)
        return values[-1] if values else None

    compare = last("compare")
    extras = {"compare": compare if compare in _OPTIMISERS else None,
              "many_starts": last("starts") in ("1", "true"),
              "critical": last("critical") in ("1", "true")}
    preset = last("preset")
    ui = {"preset": preset if presets.get(preset or "") else None,
          "present": last("present") in ("1", "true")}
    return raw, extras, ui


_OPTIMISERS = ("gd", "momentum", "nesterov", "adam", "sgd")


def _format_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(_format_text(v) for v in value)
    if isinstance(value, float):
        return repr(value) if abs(value) >= 1e-4 or value == 0 else f"{value:g}"
    return str(value)


def control_values(raw: Mapping) -> list:
    """Values of the controls (in :data:`CONTROL_FIELDS` order) showing ``raw`` settings.

    Text boxes show the raw text (a bad value stays visible next to its message); checkboxes
    ``["on"]``/``[]``; dropdowns and radios the value itself.
    """
    merged = {**schema.DEFAULTS, **{k: v for k, v in raw.items() if k in schema.DEFAULTS}}
    values = []
    for name in CONTROL_FIELDS:
        value = merged[name]
        if name in TEXT_FIELDS:
            values.append(_format_text(value))
        elif name in BOOL_FIELDS:
            on = value is True or (isinstance(value, str) and value.lower() in ("1", "true"))
            values.append(["on"] if on else [])
        else:
            values.append(value)
    return values


def raw_from_controls(values: list) -> dict:
    """Raw settings from control values (validation happens in settings.validate_settings)."""
    return dict(zip(CONTROL_FIELDS, values, strict=True))


def sync_state(search: str | None, control_vals: list, extra_vals: list, ui: Mapping | None,
               current: Mapping | None, triggered: str | None) -> tuple:
    """The state callback: URL ⇄ controls → clean view, errors and URL.

    Returns ``(controls, extras, view, errors, search, ui)``; ``controls``/``extras`` are
    lists of new control values or ``None`` (leave them), ``view`` is None when unchanged.
    """
    ui = dict(ui or {"preset": None, "present": False})
    from_url = triggered in (None, "url") or current is None
    if from_url:
        raw, extras, url_ui = parse_page_query(search)
        ui = url_ui
        controls = control_values(raw)
        raw = {**raw_from_controls(controls), **raw}
        extra_controls = extra_control_values(extras)
    else:
        raw = raw_from_controls(control_vals)
        controls = None
        extra_controls = None
        extras = extras_from_controls(extra_vals)
    clean, errors = schema.validate_settings(raw)
    view = {**clean, **extras}
    if view["compare"] == view["optimizer"]:
        view["compare"] = None
    query = page_query(view, ui)
    new_search = "?" + query if query else ""
    changed = current is None or dict(current) != view
    return (controls, extra_controls, view if changed else None, errors,
            new_search if (search or "") != new_search else None, ui)


def extra_control_values(extras: Mapping) -> list:
    """Values of the EXTRA_FIELDS controls (compare dropdown, many-starts switch)."""
    return [extras.get("compare") or "none", ["on"] if extras.get("many_starts") else [],
            ["on"] if extras.get("critical") else []]


def extras_from_controls(values: list | None) -> dict:
    """``{"compare", "many_starts", "critical"}`` from the EXTRA_FIELDS controls' values."""
    values = list(values or []) + [None, None, None]
    compare = values[0] if values[0] in _OPTIMISERS else None

    def on(value: object) -> bool:
        return isinstance(value, list) and "on" in value

    return {"compare": compare, "many_starts": on(values[1]), "critical": on(values[2])}


def error_children(errors: Mapping[str, str]) -> list:
    """Messages for each control (in CONTROL_FIELDS order) plus the general one."""
    out = [errors.get(name, "") for name in CONTROL_FIELDS]
    general = [m for k, m in errors.items() if k not in CONTROL_FIELDS]
    out.append(" ".join(general))
    return out


def widths_with_depth(widths_text: str | None, delta: int) -> str:
    """The widths text with one hidden layer added (copying the last width, or 4) or removed."""
    clean, errors = schema.validate_settings({"widths": widths_text or ""})
    widths = list(clean["widths"]) if "widths" not in errors else list(schema.DEFAULTS["widths"])
    if delta > 0 and len(widths) < schema.LIMITS.MAX_DEPTH:
        widths.append(widths[-1] if widths else 4)
    elif delta < 0 and widths:
        widths.pop()
    return _format_text(widths)


def step_from_click(click: Mapping | None, anim: Mapping | None) -> int | None:
    """The path step a click designates: a path point's own step, or the path point nearest
    to a clicked plane point (α, β); None when there is no path."""
    if not click or not click.get("points"):
        return None
    point = click["points"][0]
    custom = point.get("customdata")
    if isinstance(custom, int | float) and not isinstance(custom, bool) \
            and point.get("curveNumber", 0) != 0:
        return int(custom)
    if not anim or not anim.get("step"):
        return None
    x, y = point.get("x"), point.get("y")
    if not isinstance(x, int | float) or not isinstance(y, int | float):
        return None
    xs, ys = np.asarray(anim["x"], dtype=float), np.asarray(anim["y"], dtype=float)
    k = int(np.argmin((xs - x) ** 2 + (ys - y) ** 2))
    return int(anim["step"][k])


def selection_from_click(click: Mapping | None, anim: Mapping | None,
                         view: Mapping | None) -> tuple[str, str, str] | None:
    """Control texts ``(selected_step, selected_alpha, selected_beta)`` for a click on a
    plane view; None when the click designates nothing.

    A click on the path selects that path point (and clears α, β). A click elsewhere selects
    the plane point (α, β): measured from the plane's centre, whose path point goes into
    ``selected_step`` (0 for the start, empty for the end) so that centre "selected" builds
    the same plane; on a plane already centred at a selected point the click is added to
    that point's (α, β).
    """
    if not click or not click.get("points"):
        return None
    point = click["points"][0]
    custom = point.get("customdata")
    if isinstance(custom, int | float) and not isinstance(custom, bool) \
            and point.get("curveNumber", 0) != 0:
        return str(int(custom)), "", ""
    x, y = point.get("x"), point.get("y")
    if not isinstance(x, int | float) or not isinstance(y, int | float) \
            or isinstance(x, bool) or isinstance(y, bool):
        return None
    if not (math.isfinite(x) and math.isfinite(y)):
        return None
    view = view or {}
    step = _path_step_near(x, y, anim, view)
    if step is not None:  # the contour reports its grid node: a click on the drawn path
        return str(step), "", ""
    if view.get("center") == "selected":
        step = view.get("selected_step")
        a0, b0 = view.get("selected_alpha"), view.get("selected_beta")
        if isinstance(a0, int | float) and isinstance(b0, int | float):
            x, y = x + a0, y + b0
        step_text = "" if step is None else str(step)
    else:
        step_text = "0" if view.get("center") == "init" else ""
    return step_text, f"{float(x):.6g}", f"{float(y):.6g}"


def _path_step_near(x: float, y: float, anim: Mapping | None, view: Mapping) -> int | None:
    """The path step drawn within about one grid cell of the plane point (x, y), if any.

    A click on the contour reports the nearest grid node, not the path trace under the
    pointer, so "on the path" means within 1.5 grid cells of a path point (cells sized from
    the path's extent, as the plane's window is)."""
    if not anim or not anim.get("step") or view.get("center") == "selected":
        return None
    try:
        xs, ys = np.asarray(anim["x"], dtype=float), np.asarray(anim["y"], dtype=float)
        steps = list(anim["step"])
    except (KeyError, TypeError, ValueError):
        return None
    if xs.size == 0 or xs.shape != ys.shape or len(steps) != xs.size:
        return None
    cells = max(int(view.get("grid") or 41) - 1, 1) if isinstance(view.get("grid") or 41, int) \
        else 40
    cell = max(np.ptp(xs), np.ptp(ys)) / cells
    d2 = (xs - x) ** 2 + (ys - y) ** 2
    k = int(np.argmin(d2))
    if cell > 0 and d2[k] <= (1.5 * cell) ** 2:
        return int(steps[k])
    return None


# --------------------------------------------------------------------------- payload helpers


def _arr(payload: Mapping, key: str) -> np.ndarray | None:
    value = payload.get(key)
    if value is None:
        return None
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _snapshot_steps_losses(surface: Mapping, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(steps, loss) of the n recorded path points of a surface payload."""
    steps = _arr(surface, "path_steps")
    if steps is None or steps.size != n:
        steps = np.arange(n, dtype=np.float64)
    loss = _arr(surface, "path_loss")
    if loss is None or loss.size != n or not np.isfinite(loss).any():
        loss = None
    return steps, loss


def _project(weights: np.ndarray, center: np.ndarray, d1: np.ndarray,
             d2: np.ndarray) -> np.ndarray:
    """Least-squares plane coordinates (T, 2) of flat weights (T, P)."""
    basis = np.stack([d1, d2], axis=1)
    coords, *_ = np.linalg.lstsq(basis, (weights - center).T, rcond=None)
    return coords.T


def _selected_point(view: Mapping, anim: Mapping | None) -> tuple[float, float] | None:
    """Plane coordinates of the selected point: the clicked plane point (α, β) (the
    origin when the plane is centred there), else the path point of ``selected_step``."""
    a, b = view.get("selected_alpha"), view.get("selected_beta")
    if isinstance(a, int | float) and isinstance(b, int | float) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        return (0.0, 0.0) if view.get("center") == "selected" else (float(a), float(b))
    step = view.get("selected_step")
    if step is None or not anim or not anim.get("step"):
        return None
    k = int(np.argmin(np.abs(np.asarray(anim["step"], dtype=float) - step)))
    return anim["x"][k], anim["y"][k]


def _where(plane_point, step, end: str) -> str:
    """Where a curvature view was evaluated: a plane point (α, β), a step or the end."""
    if isinstance(plane_point, list | tuple) and len(plane_point) == 2:
        return f"plane point α={figures._fmt(plane_point[0])}, β={figures._fmt(plane_point[1])}"
    return f"step {step}" if step is not None else end


def _diverged(payload: Mapping) -> int | None:
    d = payload.get("diverged_at")
    try:
        d = int(d) if d is not None else None
    except (TypeError, ValueError):
        return None
    return d if d is not None and d >= 0 else None


# --------------------------------------------------------------------------- panels


@dataclass
class PlaneView:
    """Outputs of the plane card (surface, contour and the animation's frames)."""

    surface: go.Figure
    contour: go.Figure
    anim: dict | None
    status: list
    key: str | None
    device: object | None
    contour_status: list


def build_plane(view: Mapping, present: bool = False,
                progress: Callable | None = None) -> PlaneView:
    """Fetch the surface (and path) for ``view`` and draw the 3-D and contour figures."""
    key = plane_key(view)
    out = fetch("surface", view, progress)
    if not out.ok:
        fig = figures.placeholder(out.error or "")
        return PlaneView(fig, fig, None, status_line(out), None, None, [])
    p = out.payload or {}
    alpha, beta, loss = _arr(p, "alpha"), _arr(p, "beta"), _arr(p, "loss")
    if alpha is None or beta is None or loss is None:
        fig = figures.placeholder("The surface payload has no grid.")
        return PlaneView(fig, fig, None, status_line(out), None, p.get("device"), [])
    log_scale = bool(view.get("log_scale"))
    coords = _arr(p, "path_coords")
    anim = None
    steps = ploss = None
    others = []
    if coords is not None and coords.size:
        coords = coords.reshape(-1, 2)
        steps, ploss = _snapshot_steps_losses(p, len(coords))
        lift = figures.path_lift(loss, log_scale=log_scale)
        z_source = ploss if ploss is not None else _grid_heights(alpha, beta, loss, coords)
        anim = figures.animation_data(coords, z_source, steps, log_scale=log_scale, lift=lift)
        compare = view.get("compare")
        center, d1, d2 = _arr(p, "center"), _arr(p, "direction1"), _arr(p, "direction2")
        if compare and center is not None and d1 is not None and d2 is not None:
            other = fetch("path", {**view, "optimizer": compare})
            w = _arr(other.payload or {}, "weights") if other.ok else None
            if w is not None and w.ndim == 2 and w.shape[1] == center.size:
                others.append((f"{compare} path", _project(w, center, d1, d2)))
    marks = {k: v for k, v in (p.get("marks") or {}).items() if k != "selected"}
    if view.get("center") in ("init", "final") or view.get("plane") == "points":
        marks.pop("center", None)  # the same point as the start or the end mark
    selected = _selected_point(view, anim)
    contour = figures.contour(alpha, beta, loss, log_scale=log_scale, path=coords,
                              path_steps=steps, marks=marks, selected=selected, others=others)
    surface = figures.surface_3d(alpha, beta, loss, log_scale=log_scale, path=coords,
                                 path_loss=ploss, path_steps=steps, marks=marks,
                                 selected=selected)
    figures.apply_presentation(contour, present)
    figures.apply_presentation(surface, present)
    return PlaneView(surface, contour, anim, status_line(out, f"{loss.shape[1]}×{loss.shape[0]}"),
                     key, p.get("device"), _plane_notes(view, p))


def plane_values(view: Mapping, present: bool = False,
                 progress: Callable | None = None) -> list:
    """The plane card's outputs (all but its key): figures, frames, status, device badge."""
    pv = build_plane(view, present, progress)
    frames = len(pv.anim["step"]) if pv.anim else 1
    badge = device_badge(pv.device) if pv.device else (no_update, no_update)
    return [pv.surface, pv.contour, pv.anim, max(frames - 1, 1), 0, pv.status,
            pv.contour_status, badge[0], badge[1]]


def _grid_heights(alpha: np.ndarray, beta: np.ndarray, loss: np.ndarray,
                  coords: np.ndarray) -> np.ndarray:
    return figures._interp_grid(alpha, beta, np.where(np.isfinite(loss), loss, np.nan), coords)


def _plane_title(view: Mapping, p: Mapping) -> str:
    plane = str(view.get("plane"))
    checkpoints = p.get("checkpoint_steps")
    if plane == "points" and checkpoints:
        a, b, c = (int(x) for x in checkpoints)
        return f"plane through steps {a}, {b} and {c}, centred at step {a}"
    if plane == "points":  # compute.plane_through_points: centred at its first point
        return "plane through the start, the slowest point and the end, centred at the start"
    if plane == "action":  # compute.action_plane: the saddle at (0, 0)
        return "plane of the saddle, the way to the minimum and the escape direction, " \
               "centred at the saddle"
    names = {"pca": "PCA plane of the path", "random": "random plane",
             "filter": "filter-normalised plane", "layer": "layer-normalised plane",
             "hessian": "top Hessian eigenvectors"}
    text = names.get(plane, plane)
    selected = f"step {view.get('selected_step')}"
    if schema.has_plane_point(view):
        selected = "selected plane point"
    centre = {"final": "end", "init": "start", "selected": selected}
    return f"{text}, centred at the {centre.get(str(view.get('center')), '?')}"


def _plane_notes(view: Mapping, p: Mapping) -> list:
    notes = [_plane_title(view, p)]
    ev = _arr(p, "explained_variance")
    if ev is not None and ev.size >= 2:
        notes.append(f"PCA explains {100 * ev[0]:.1f}% + {100 * ev[1]:.1f}% of the path's "
                     "variance")
    dist = _arr(p, "path_distance")
    if dist is not None and dist.size:
        notes.append(f"path leaves the plane by at most {figures._fmt(np.nanmax(dist), 3)}")
    return [" · ".join(notes)]


def plane_key(view: Mapping) -> str:
    """Identity of the plane card's picture (surface key + display + comparison)."""
    try:
        base = schema.canonical_key("surface", task_settings(view))
    except Exception:  # noqa: BLE001
        base = json.dumps(task_settings(view), sort_keys=True, default=str)
    return f"{base}|log={bool(view.get('log_scale'))}|cmp={view.get('compare')}"


def build_path(view: Mapping, present: bool = False,
               progress: Callable | None = None) -> tuple[go.Figure, list]:
    """Loss, gradient norm and λ against step, with plateaus, L*, Saxe and a comparison."""
    out = fetch("path", view, progress)
    if not out.ok:
        return figures.placeholder(out.error or ""), status_line(out)
    p = out.payload or {}
    loss = _arr(p, "loss")
    if loss is None:
        return figures.placeholder("The path payload has no loss."), status_line(out)
    theory = fetch("theory", view)
    t = theory.payload if theory.ok else {}
    global_min = p.get("global_min", t.get("global_min"))
    saxe = None
    if t.get("saxe_steps") is not None and t.get("saxe_loss") is not None:
        saxe = (t["saxe_steps"], t["saxe_loss"])
    others = []
    compare = view.get("compare")
    if compare:
        other = fetch("path", {**view, "optimizer": compare})
        o_loss = _arr(other.payload or {}, "loss") if other.ok else None
        o_steps = _arr(other.payload or {}, "steps") if other.ok else None
        if o_loss is not None:
            if o_steps is None or o_steps.size != o_loss.size:
                o_steps = np.arange(o_loss.size)
            others.append((f"{compare}", o_steps, o_loss))
    plateaus = [q for q in (p.get("plateaus") or []) if isinstance(q, Mapping)
                and "entry" in q and "exit" in q]
    steps = _arr(p, "steps")
    if steps is None or steps.size != loss.size:
        steps = None
    lam_steps = _arr(p, "lambda_steps")
    if lam_steps is not None and lam_steps.size == 0:
        lam_steps = None
    fig = figures.path_metrics(
        loss, _arr(p, "grad_norm"), steps=steps, lambda_steps=lam_steps,
        lambda_min=_arr(p, "lambda_min"), lambda_max=_arr(p, "lambda_max"),
        plateaus=plateaus, global_min=global_min, saxe=saxe, diverged_at=_diverged(p),
        selected_step=view.get("selected_step"), others=others)
    figures.apply_presentation(fig, present)
    final = loss[np.isfinite(loss)][-1] if np.isfinite(loss).any() else None
    label = (f"{view.get('optimizer')}, step size {figures._fmt(view.get('lr'))}: "
             f"final loss {figures._fmt(final)}")
    if global_min is not None and final is not None:
        label += f" (L* {figures._fmt(global_min)})"
    return fig, status_line(out, label)


def build_spectrum(view: Mapping, present: bool = False,
                   progress: Callable | None = None) -> tuple[go.Figure, str, str, list]:
    """(figure, verdict, info line, status) at the selected point (the end if none)."""
    out = fetch("spectrum", view, progress)
    if not out.ok:
        return figures.placeholder(out.error or ""), "—", "", status_line(out)
    p = out.payload or {}
    eig = _arr(p, "eigenvalues")
    density = p.get("density") if isinstance(p.get("density"), Mapping) else None
    if density is not None and (density.get("grid") is None or density.get("values") is None):
        density = None
    tol = p.get("tolerances")
    zero_tol = tol.get("eigenvalue") if isinstance(tol, Mapping) else None
    verdict = str(p.get("verdict") or "—")
    fig = figures.spectrum(eig if eig is not None else [], density=density, verdict=None,
                           zero_tol=zero_tol if isinstance(zero_tol, int | float) else None)
    figures.apply_presentation(fig, present)
    step = p.get("step", view.get("selected_step"))
    where = _where(p.get("plane_point"), step, "the end of the path")
    info = [f"at {where}"]
    for key, label in (("loss", "loss"), ("grad_norm", "‖∇L‖"), ("index", "index"),
                       ("n_params", "parameters")):
        if p.get(key) is not None:
            info.append(f"{label} {figures._fmt(p[key])}")
    if p.get("plane_point") is None:
        path = fetch("path", view)
        diverged = _diverged(path.payload or {}) if path.ok else None
        if diverged is not None and (step is None or step >= diverged):
            info.append(f"the path diverged at step {diverged}: this is its last finite "
                        "recorded point, not where training ended")
    return fig, verdict, " · ".join(info), status_line(out, p.get("method") or "")


def build_cuts(view: Mapping, present: bool = False,
               progress: Callable | None = None) -> tuple[go.Figure, list]:
    """1-D cuts: along direction 1 through the centre, and the straight line start → end."""
    out = fetch("cut", view, progress)
    if not out.ok:
        return figures.placeholder(out.error or ""), status_line(out)
    p = out.payload or {}
    cuts = []
    listed = p.get("cuts")
    if isinstance(listed, list):
        for c in listed:
            if isinstance(c, Mapping) and c.get("t") is not None and c.get("loss") is not None:
                cuts.append(figures.Cut(str(c.get("name", "cut")), c["t"], c["loss"],
                                        str(c.get("xlabel", "t"))))
    else:
        if p.get("t") is not None and p.get("loss") is not None:
            cuts.append(figures.Cut("along direction 1", p["t"],
                                    p["loss"], "α"))
        for tk, lk in (("line_t", "line_loss"), ("t_line", "loss_line")):
            if p.get(tk) is not None and p.get(lk) is not None:
                cuts.append(figures.Cut("start (0) → end (1)", p[tk], p[lk], "t"))
                break
    fig = figures.cuts_1d(cuts, log_scale=bool(view.get("log_scale")),
                          global_min=p.get("global_min"))
    figures.apply_presentation(fig, present)
    return fig, status_line(out)


def build_starts(view: Mapping, present: bool = False,
                 progress: Callable | None = None) -> tuple[go.Figure, list]:
    """Histogram of final losses over ``n_starts`` random inits."""
    out = fetch("many_starts", view, progress)
    if not out.ok:
        return figures.placeholder(out.error or ""), status_line(out)
    p = out.payload or {}
    losses = _arr(p, "final_losses")
    if losses is None:
        return figures.placeholder("The many-starts payload has no losses."), status_line(out)
    frac = p.get("converged_fraction", p.get("converged"))
    fig = figures.many_starts_histogram(
        losses, global_min=p.get("global_min"),
        converged_fraction=frac if isinstance(frac, int | float) else None)
    figures.apply_presentation(fig, present)
    return fig, status_line(out, f"{losses.size} starts, {view.get('optimizer')}")


def build_critical(view: Mapping, present: bool = False,
                   progress: Callable | None = None) -> tuple[list, dict | None, list]:
    """(info, marker data, status): the critical point the saddle finder reaches from the
    selected point, its classification and its place on the current plane."""
    out = fetch("critical_point", view, progress)
    if not out.ok:
        return [], None, status_line(out)
    p = out.payload or {}
    start = p.get("start_step", view.get("selected_step"))
    info = [html.Span("Nearby critical point: "),
            html.B(str(p.get("verdict") or "unclassified"), className="critical-verdict"),
            html.Span(" · loss " + figures._fmt(p.get("loss")) + " · ‖∇L‖ "
                      + figures._fmt(p.get("grad_norm")) + " · found "
                      + figures._fmt(p.get("distance")) + " away from "
                      + _where(p.get("start_plane_point"), start, "the end"),
                      className="muted")]
    marker = None
    point = _arr(p, "point")
    surf = fetch("surface", view)
    if point is not None and surf.ok:
        s = surf.payload or {}
        center, d1, d2 = _arr(s, "center"), _arr(s, "direction1"), _arr(s, "direction2")
        loss = _arr(s, "loss")
        if center is not None and d1 is not None and d2 is not None and \
                center.size == point.size and loss is not None:
            a, b = _project(point[None, :], center, d1, d2)[0]
            log_scale = bool(view.get("log_scale"))
            z, _ = figures.display_values(p.get("loss", np.nan), log_scale=log_scale)
            marker = {"x": float(a), "y": float(b),
                      "z": float(z) + figures.path_lift(loss, log_scale=log_scale)}
    return info, marker, status_line(out)


def build_theory(view: Mapping) -> tuple[list, list]:
    """(table children, status) of the theory panel."""
    out = fetch("theory", view)
    if not out.ok:
        return [html.P(out.error or "", className="muted")], status_line(out)
    rows = figures.theory_rows(out.payload or {})
    if not rows:
        return [html.P("No closed form applies to this model (the theory covers deep linear "
                       "nets and the Świrszcz examples).", className="muted")], status_line(out)
    table = html.Table([
        html.Tbody([html.Tr([html.Th([html.Div(q), html.Div(m, className="meaning")]),
                             html.Td(v, className="num")]) for q, v, m in rows])
    ], className="theory")
    return [table], status_line(out)


# --------------------------------------------------------------------------- exports


_EXPORT_LABELS = {"surface": "surface", "path": "path", "spectrum": "spectrum", "cut": "1-D cuts"}


def _omitted(label: str, why: str | None) -> str:
    why = (why or "no result").strip().rstrip(".")
    return f"{label} omitted: {why}."


def export_arrays(view: Mapping) -> tuple[dict[str, np.ndarray], list[str]]:
    """``(arrays, omitted)``: the current results' arrays, prefixed by task (a cache read
    when already seen), including the Explore view on show; and one note per result that
    could not be included ("spectrum omitted: <why>.")."""
    arrays: dict[str, np.ndarray] = {}
    omitted: list[str] = []
    shown = explore.view_by_key(view.get("explore"))
    tasks = [(t, _EXPORT_LABELS[t]) for t in ("surface", "path", "spectrum", "cut")]
    if shown is not None:
        tasks.append((shown.task, shown.label))
    for task, label in tasks:
        out = fetch(task, view)
        if not out.ok:
            omitted.append(_omitted(label, out.error))
            continue
        _flatten_arrays(task, out.payload or {}, arrays)
    return arrays, omitted


def mesh_text(view: Mapping, kind: str) -> tuple[str | None, str]:
    """The surface as Wavefront OBJ or VTK PolyData text (``kind`` "obj"/"vtp"), with the
    Morse index as a point scalar when the index map is on show; or ``(None, why)``. With a
    text, the second item says what the file leaves out ("" when nothing)."""
    from landscape_app import mesh_export

    surf = fetch("surface", view)
    if not surf.ok:
        return None, f"No surface to export: {surf.error}"
    p = surf.payload or {}
    a, b, z = _arr(p, "alpha"), _arr(p, "beta"), _arr(p, "loss")
    if a is None or b is None or z is None:
        return None, "No surface to export yet."
    try:
        if kind == "obj":
            return mesh_export.surface_obj(a, b, z), ""
        scalars = {}
        note = ""
        if view.get("explore") == "index_map":
            imap = fetch("index_map", {**view, "imap_grid": a.size})
            idx = _arr(imap.payload or {}, "index") if imap.ok else None
            if idx is not None and idx.shape == z.shape:
                scalars["morse_index"] = idx
            elif not imap.ok:
                note = _omitted("index map", imap.error)
            else:
                note = _omitted("index map", "its grid does not match the surface's")
        return mesh_export.surface_vtp(a, b, z, scalars=scalars or None), note
    except ValueError as exc:
        return None, f"Could not export the surface: {exc}"


def _flatten_arrays(prefix: str, value: object, into: dict) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten_arrays(f"{prefix}_{k}", v, into)
    elif isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
        into[prefix] = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        into[prefix] = np.asarray(value)


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def csv_export(view: Mapping) -> tuple[bytes | None, list[str]]:
    """``(zip, omitted)``: a zip of ``surface.csv`` (alpha, beta, loss), ``path.csv`` (step,
    loss, ‖∇L‖), the Explore view's tables and ``settings.json``, with ``omitted.txt``
    listing the results it leaves out (also returned); ``None`` instead of a zip that would
    hold nothing but the settings."""
    files: dict[str, str] = {}
    omitted: list[str] = []
    surf = fetch("surface", view)
    if surf.ok:
        p = surf.payload or {}
        a, b, z = _arr(p, "alpha"), _arr(p, "beta"), _arr(p, "loss")
        if a is not None and b is not None and z is not None \
                and z.shape == (b.size, a.size):
            aa, bb = np.meshgrid(a, b)
            rows = np.stack([aa.ravel(), bb.ravel(), z.ravel()], axis=1)
            files["surface.csv"] = _csv(["alpha", "beta", "loss"], rows)
        else:
            omitted.append(_omitted("surface", "its result has no grid"))
    else:
        omitted.append(_omitted("surface", surf.error))
    path = fetch("path", view)
    if path.ok:
        p = path.payload or {}
        loss = _arr(p, "loss")
        g = _arr(p, "grad_norm")
        if loss is not None:
            loss = loss.ravel()
            cols = [np.arange(loss.size), loss]
            names = ["step", "loss"]
            if g is not None and g.size == loss.size:
                cols.append(g.ravel())
                names.append("grad_norm")
            files["path.csv"] = _csv(names, np.stack(cols, axis=1))
        else:
            omitted.append(_omitted("path", "its result has no loss"))
    else:
        omitted.append(_omitted("path", path.error))
    shown = explore.view_by_key(view.get("explore"))
    if shown is not None and shown.tables is not None:
        out = fetch(shown.task, view)
        if out.ok:
            try:
                tables = shown.tables(out.payload or {})
                for name, (header, rows) in tables.items():
                    files[name] = _csv(header, rows)
            except (KeyError, ValueError, TypeError, IndexError):  # an incomplete payload
                log.exception("the %s tables could not be written", shown.key)
                omitted.append(_omitted(shown.label, "its result is incomplete"))
        else:
            omitted.append(_omitted(shown.label, out.error))
    if not files:
        return None, omitted
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in files.items():
            zf.writestr(name, text)
        if omitted:
            zf.writestr("omitted.txt", "\n".join(omitted) + "\n")
        zf.writestr("settings.json", json.dumps(task_settings(view), indent=2))
    return buffer.getvalue(), omitted


def export_note(omitted: list[str], nothing: bool = False) -> str:
    """The export's message: what the file leaves out, or why there is no file."""
    if nothing:
        return "Nothing to export yet" + (": " + " ".join(omitted) if omitted else ".")
    return "Exported without some results: " + " ".join(omitted) if omitted else ""


def _csv(header: list[str], rows: np.ndarray) -> str:
    out = io.StringIO()
    out.write(",".join(header) + "\n")
    np.savetxt(out, rows[:MAX_DOWNLOAD_POINTS], delimiter=",", fmt="%.10g")
    return out.getvalue()


def html_export(figs: Mapping[str, object]) -> str:
    """A standalone HTML page of the figures currently on the page (plotly.js embedded)."""
    built = {}
    for name, fig in figs.items():
        if isinstance(fig, Mapping) and fig.get("data"):
            try:
                built[name] = go.Figure(fig)
            except (ValueError, TypeError):
                continue
    return figures.standalone_html(built, title="Landscape: exported view")


# --------------------------------------------------------------------------- upload


def handle_upload(contents: str | None, filename: str | None) -> tuple[str | None, str, str]:
    """Validate and store an uploaded .npz/.csv: (dataset value or None, status, error)."""
    if not contents:
        raise PreventUpdate
    name = str(filename or "upload")[:200]
    if not name.lower().endswith((".npz", ".csv")):
        return None, "", f"{name}: upload a .npz (arrays X and Y) or a .csv file."
    try:
        _, encoded = contents.split(",", 1)
        data = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error):
        return None, "", f"{name}: the file could not be read; try again."
    limit = schema.LIMITS.MAX_UPLOAD_BYTES
    if len(data) > limit:
        return None, "", f"{name} is {len(data) / 2**20:.1f} MiB; the limit is " \
                         f"{limit / 2**20:.0f} MiB."
    try:
        from landscape_app.cache import store_upload
    except ImportError:
        return None, "", f"Uploads are {UNAVAILABLE}: the service cannot store files."
    task_error = _task_error_type()
    try:
        dataset, info = store_upload(data, name)
    except task_error as exc:
        return None, "", f"{name}: {getattr(exc, 'message', str(exc))}"
    except (ValueError, OSError) as exc:
        return None, "", f"{name}: {exc}"
    except Exception:  # noqa: BLE001
        log.exception("upload failed")
        return None, "", f"{name}: the file could not be stored (internal error)."
    if not str(dataset).startswith("upload:"):
        dataset = f"upload:{hashlib.sha256(data).hexdigest()}"
    shape = ""
    if isinstance(info, Mapping) and info.get("rows"):
        shape = f" ({info.get('rows')} rows, {info.get('d_x')} → {info.get('d_y')})"
    return dataset, f"Using {name}{shape}.", ""


def dataset_options(base: list[dict], uploads: Mapping[str, str] | None) -> list[dict]:
    """The dataset dropdown's options: the built-ins, then the uploaded files."""
    extra = [{"label": f"upload: {label}", "value": value}
             for value, label in (uploads or {}).items()]
    return [*base, *extra]


# --------------------------------------------------------------------------- rendered views

# The last few rendered cards of this process, as plain figure dicts: a repeated view is a
# result-cache read, and redrawing it with plotly's object model would cost ~100 ms more.
MAX_RENDERED = 24
_rendered: OrderedDict[str, list] = OrderedDict()
_rendered_lock = threading.Lock()


def _has_error(values: list) -> bool:
    def walk(value) -> bool:
        if isinstance(value, list | tuple):
            return any(walk(v) for v in value)
        return getattr(value, "className", None) == "status-error"

    return walk(values)


def rendered(name: str, view: Mapping, present: bool, build: Callable[[], list]) -> list:
    """``build()``'s outputs for card ``name`` of ``view``, from this process's memo when the
    same card was drawn before (errors are never memoised)."""
    memo_key = json.dumps([name, KEY_FNS[name](view), view.get("selected_step"),
                           view.get("selected_alpha"), view.get("selected_beta"), present])
    with _rendered_lock:
        if memo_key in _rendered:
            _rendered.move_to_end(memo_key)
            return list(_rendered[memo_key])
    values = build()
    if not _has_error(values):
        plain = [v.to_plotly_json() if isinstance(v, go.Figure) else v for v in values]
        with _rendered_lock:
            _rendered[memo_key] = plain
            while len(_rendered) > MAX_RENDERED:
                _rendered.popitem(last=False)
        return list(plain)
    return values


# --------------------------------------------------------------------------- explore


def explore_styles(choice: object) -> list[dict]:
    """Styles of the Explore card's intro and view panels: only the chosen one shows."""
    known = explore.view_by_key(choice if isinstance(choice, str) else None)
    hide, show = {"display": "none"}, {"display": "block"}
    return [hide if known else show,
            *(show if known is v else hide for v in explore.VIEWS)]


def _explore_shown(key: str, view: Mapping) -> bool:
    return view.get("explore") == key


def _explore_coarse_on(v: explore.ExploreView, view: Mapping) -> bool:
    return view.get("explore") == v.key and v.coarse(view) is not None


def _explore_idle(v: explore.ExploreView) -> list:
    return [figures.placeholder(f"{v.label}: choose it in the Explore card."), ""]


def build_explore(v: explore.ExploreView, view: Mapping, present: bool = False,
                  progress: Callable | None = None) -> list:
    """(figure, status) of an Explore view: its task's payload through ``v.render``."""
    out = fetch(v.task, view, progress)
    if not out.ok:
        return [figures.placeholder(out.error or ""), status_line(out)]
    try:
        fig, label = v.render(out.payload or {}, view)
    except (KeyError, ValueError, TypeError, IndexError):
        log.exception("rendering %s failed", v.key)
        out = Outcome(error=f"The {v.label} result could not be drawn (internal error; see "
                            "the server log).", kind="internal", wall=out.wall)
        return [figures.placeholder(out.error), status_line(out)]
    figures.apply_presentation(fig, present)
    return [fig, status_line(out, label)]


# --------------------------------------------------------------------------- wiring


def _job_spec(panel: str) -> dict:
    return {
        "progress": [Output(f"{panel}-progress", "value"),
                     Output(f"{panel}-progress-text", "children")],
        "progress_default": ["0", ""],
        "running": [(Output(f"{panel}-progress-wrap", "style"), {"display": "flex"},
                     {"display": "none"})],
        "cancel": [Input(f"{panel}-cancel", "n_clicks")],
        "interval": 250,
    }


def _progress_adapter(set_progress: Callable) -> Callable[[float, str], None]:
    """cached_task's ``progress(fraction, text)`` → the progress bar outputs."""
    last = [0.0]

    def report(fraction: float, text: str = "") -> None:
        now = time.monotonic()
        if now - last[0] < 0.2 and fraction < 1:
            return
        last[0] = now
        try:
            pct = max(0.0, min(100.0, 100.0 * float(fraction)))
        except (TypeError, ValueError):
            pct = 0.0
        set_progress((f"{pct:.0f}", str(text or "")[:120]))

    return report


_DASH_JOB_ERROR = "An error occurred inside a background callback: "


def _job_error(panel: str, status_id: str) -> Callable[[Exception], None]:
    """The background twin's ``on_error``. A job the manager reports lost comes with our own
    sentence and no traceback (``celery_app``'s ``lost_reason``): the card shows it. Any
    other failure goes to the server log under a short reference, which the card quotes."""
    def on_error(exc: Exception) -> None:
        text = str(exc).removeprefix(_DASH_JOB_ERROR).strip()
        if text and "\n" not in text and "Traceback" not in text and len(text) <= 300:
            log.warning("background job for %s stopped: %s", panel, text)
            message = f"{text.rstrip('.')}."
        else:
            ref = uuid.uuid4().hex[:8]
            log.error("background job for %s failed (log reference %s): %s", panel, ref, exc)
            message = (f"The job stopped before finishing (internal error; log reference "
                       f"{ref}); press the control again to retry.")
        set_props(status_id, {"children": [html.Span(message, className="status-error")]})

    return on_error


def busy_message() -> str:
    return (f"The server is busy: {MAX_BACKGROUND_JOBS} computations are running; try again "
            "in a moment.")


@contextlib.contextmanager
def job_slot() -> Iterator[bool]:
    """Hold one of :data:`MAX_BACKGROUND_JOBS` slots while the block runs: yields True, or
    False when every slot is taken. A slot is an exclusive ``flock`` on a file under the
    cache folder, so the count is shared by every process on this machine (each background
    job is a process of its own) and a killed job frees its slot."""
    folder = schema.cache_dir() / "job-slots"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(max(int(MAX_BACKGROUND_JOBS), 0)):
        fd = os.open(folder / f"slot-{i}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        try:
            yield True
        finally:
            os.close(fd)  # releases the lock
        return
    yield False


def background_outputs(build: Callable, outputs: list[tuple[str, str]], job: object,
                       ui: object, set_progress: Callable) -> list:
    """The outputs of a card's background twin for ``job`` (its ``<panel>-job`` data):
    ``build``'s values and the key; one sentence on the status line for a malformed job or
    when :data:`MAX_BACKGROUND_JOBS` computations are already running."""
    view, why = job_view(job)
    status = _status_index(outputs)
    if why is not None:
        return _job_message(len(outputs), status, why)
    if view is None:
        raise PreventUpdate
    present = isinstance(ui, Mapping) and bool(ui.get("present"))
    with job_slot() as held:
        if not held:
            return _job_message(len(outputs), status, busy_message())
        return [*build(view, present, _progress_adapter(set_progress)), job["key"]]


MALFORMED_JOB = ("This background job request is malformed (it needs the page's settings); "
                 "change a control to start the computation again.")


def _job_message(n_outputs: int, status_index: int, message: str) -> list:
    """A background twin's outputs that only show ``message`` on the card's status line
    (the key store is left alone, so the card computes again on the next change)."""
    values: list = [no_update] * n_outputs
    values[status_index] = [html.Span(message, className="status-error")]
    return values


def job_view(job: object) -> tuple[dict | None, str | None]:
    """``(view, None)`` of a ``<panel>-job`` request the background twin should run,
    ``(None, None)`` when there is nothing to run, or ``(None, why)`` for a malformed one.

    The foreground callbacks send ``{"run": True, "key": str, "view": dict}`` with a clean
    view; anything else came from a hostile or stale client and gets one sentence."""
    if job is None or job == {} or job is False:
        return None, None
    if not isinstance(job, Mapping):
        return None, MALFORMED_JOB
    if not job.get("run"):
        return None, None
    view, key = job.get("view"), job.get("key")
    if not isinstance(view, Mapping) or not isinstance(key, str):
        return None, MALFORMED_JOB
    clean, errors = schema.validate_settings(task_settings(view))
    if errors:
        return None, " ".join(str(m) for m in errors.values())
    return {**dict(view), **clean}, None


def _route(task: str, view: Mapping, key: str, done_key: str | None,
           job: Mapping | None) -> tuple[str, object]:
    """Where a card's work goes: ``("same", None)`` (already shown), ``("fast", cancel_job)``
    or ``("job", job_request)``."""
    if key == done_key:
        return "same", None
    if is_fast(task, view):
        running = bool(job and job.get("run"))
        return "fast", ({"run": False, "key": key} if running else no_update)
    return "job", {"run": True, "key": key, "view": dict(view)}


def register_callbacks(app) -> None:  # noqa: C901 - one place that wires the page
    """Wire every callback of the page to ``app`` (a dash.Dash)."""
    control_outputs = [Output(f"ctl-{f}", "value", allow_duplicate=True) for f in CONTROL_FIELDS]
    extra_outputs = [Output(f"ctl-{f}", "value", allow_duplicate=True) for f in EXTRA_FIELDS]

    # ---- state: URL ⇄ controls → settings-store
    n_ctl, n_extra = len(CONTROL_FIELDS), len(EXTRA_FIELDS)

    @app.callback(
        *[Output(f"ctl-{f}", "value") for f in CONTROL_FIELDS],
        *[Output(f"ctl-{f}", "value") for f in EXTRA_FIELDS],
        Output("settings-store", "data"),
        *[Output(f"err-{f}", "children") for f in CONTROL_FIELDS],
        Output("err-settings", "children"),
        Output("url", "search"),
        Output("ui-store", "data"),
        Input("url", "search"),
        *[Input(f"ctl-{f}", "value") for f in CONTROL_FIELDS],
        *[Input(f"ctl-{f}", "value") for f in EXTRA_FIELDS],
        Input("ui-store", "data"),
        State("settings-store", "data"),
    )
    def _sync(search, *rest):
        control_vals = list(rest[:n_ctl])
        extra_vals = list(rest[n_ctl:n_ctl + n_extra])
        ui, current = rest[n_ctl + n_extra], rest[n_ctl + n_extra + 1]
        trig = ctx.triggered_id if ctx.triggered else None
        if trig is None and current is not None:
            trig = "ui-store"
        if isinstance(trig, str) and trig.startswith("ctl-"):
            trig = "controls"
        controls, extras, view, errors, new_search, new_ui = sync_state(
            search, control_vals, extra_vals, ui, current, trig)
        return (*(controls if controls is not None else [no_update] * n_ctl),
                *(extras if extras is not None else [no_update] * n_extra),
                view if view is not None else no_update,
                *error_children(errors),
                new_search if new_search is not None else no_update,
                new_ui if trig in (None, "url") else no_update)

    # ---- presets
    @app.callback(
        *control_outputs, *extra_outputs,
        Output("ui-store", "data", allow_duplicate=True),
        Input({"type": "preset", "key": ALL}, "n_clicks"),
        State("ui-store", "data"),
        prevent_initial_call=True,
    )
    def _preset(clicks, ui):
        trig = ctx.triggered_id
        if not isinstance(trig, Mapping) or not any(clicks or []):
            raise PreventUpdate
        preset = presets.get(str(trig.get("key")))
        if preset is None:
            raise PreventUpdate
        raw = presets.preset_settings(preset.key, schema.DEFAULTS)
        extras = {"compare": preset.compare, "many_starts": preset.many_starts,
                  "critical": preset.critical}
        return (*control_values(raw), *extra_control_values(extras),
                {**(ui or {}), "preset": preset.key})

    @app.callback(
        Output("preset-explanation", "children"),
        Output({"type": "preset", "key": ALL}, "className"),
        Input("ui-store", "data"),
    )
    def _preset_text(ui):
        key = (ui or {}).get("preset")
        preset = presets.get(key or "")
        classes = ["chip chip-active" if p.key == key else "chip" for p in presets.PRESETS]
        if preset is None:
            return ([html.Span("Pick a preset for a guided view, or set any control on the "
                               "left. ", className="muted"),
                     html.Span("Click the path or the contour to select a point.",
                               className="muted")], classes)
        return [html.B(preset.title + ". "), preset.explanation], classes

    # ---- presentation mode
    @app.callback(
        Output("ui-store", "data", allow_duplicate=True),
        Input("present", "n_clicks"),
        State("ui-store", "data"),
        prevent_initial_call=True,
    )
    def _present(_, ui):
        ui = dict(ui or {})
        ui["present"] = not ui.get("present")
        return ui

    app.clientside_callback(
        "function() {"
        " return window.dash_clientside.landscape.present.apply(null, arguments); }",
        Output("app-root", "className"),
        Output("present", "className"),
        *[Output(f"{g}-graph", "figure", allow_duplicate=True) for g in GRAPHS],
        Input("ui-store", "data"),
        *[State(f"{g}-graph", "figure") for g in GRAPHS],
        prevent_initial_call=True,
    )

    # ---- depth buttons
    @app.callback(
        Output("ctl-widths", "value", allow_duplicate=True),
        Input("depth-plus", "n_clicks"),
        Input("depth-minus", "n_clicks"),
        State("ctl-widths", "value"),
        prevent_initial_call=True,
    )
    def _depth(_plus, _minus, widths):
        return widths_with_depth(widths, 1 if ctx.triggered_id == "depth-plus" else -1)

    # ---- selecting a point
    @app.callback(
        Output("ctl-selected_step", "value", allow_duplicate=True),
        Output("ctl-selected_alpha", "value", allow_duplicate=True),
        Output("ctl-selected_beta", "value", allow_duplicate=True),
        Input("contour-graph", "clickData"),
        Input("surface-graph", "clickData"),
        Input("path-graph", "clickData"),
        State("anim-store", "data"),
        State("settings-store", "data"),
        prevent_initial_call=True,
    )
    def _select(contour_click, surface_click, path_click, anim, view):
        trig = ctx.triggered_id
        if trig == "path-graph":
            pts = (path_click or {}).get("points") or []
            x = pts[0].get("x") if pts else None
            if not isinstance(x, int | float):
                raise PreventUpdate
            return str(int(round(x))), "", ""
        chosen = selection_from_click(
            contour_click if trig == "contour-graph" else surface_click, anim, view)
        if chosen is None:
            raise PreventUpdate
        return chosen

    @app.callback(
        Output("ctl-center", "value", allow_duplicate=True),
        Input("recentre", "n_clicks"),
        State("settings-store", "data"),
        prevent_initial_call=True,
    )
    def _recentre(_, view):
        if not view or (view.get("selected_step") is None
                        and not schema.has_plane_point(view)):
            raise PreventUpdate
        return "selected"

    app.clientside_callback(
        "function(view, anim, c, s, p) {"
        " return window.dash_clientside.landscape.select(view, anim, c, s, p); }",
        Output("contour-graph", "figure", allow_duplicate=True),
        Output("surface-graph", "figure", allow_duplicate=True),
        Output("path-graph", "figure", allow_duplicate=True),
        Input("settings-store", "data"),
        State("anim-store", "data"),
        State("contour-graph", "figure"),
        State("surface-graph", "figure"),
        State("path-graph", "figure"),
        prevent_initial_call=True,
    )

    # ---- animation (client side)
    app.clientside_callback(
        "function(n, k, value, max, disabled) {"
        " return window.dash_clientside.landscape.play(n, k, value, max, disabled); }",
        Output("anim-interval", "disabled"),
        Output("anim-play", "children"),
        Output("anim-slider", "value"),
        Input("anim-play", "n_clicks"),
        Input("anim-interval", "n_intervals"),
        State("anim-slider", "value"),
        State("anim-slider", "max"),
        State("anim-interval", "disabled"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        "function(value, anim, c, s, p) {"
        " return window.dash_clientside.landscape.frame(value, anim, c, s, p); }",
        Output("contour-graph", "figure", allow_duplicate=True),
        Output("surface-graph", "figure", allow_duplicate=True),
        Output("path-graph", "figure", allow_duplicate=True),
        Output("anim-label", "children"),
        Input("anim-slider", "value"),
        State("anim-store", "data"),
        State("contour-graph", "figure"),
        State("surface-graph", "figure"),
        State("path-graph", "figure"),
        prevent_initial_call=True,
    )

    # ---- share link
    app.clientside_callback(
        "function(n) { return window.dash_clientside.landscape.copyLink(n); }",
        Output("share-status", "children"),
        Input("share", "n_clicks"),
        prevent_initial_call=True,
    )

    # ---- the cards. Order on a 2-core machine matters: the path trains first, the plane
    # reuses it, and the other cards wait for the plane (see ``after``), so the first
    # surface appears as early as possible and nothing trains the same path twice.
    def card(panel: str, task: str, outputs: list[tuple[str, str]], build: Callable, *,
             after: tuple[str, ...] = (), enabled: Callable[[Mapping], bool] | None = None,
             disabled_values: Callable[[], list] | None = None,
             patch: Callable[[Mapping], list] | None = None, background: bool = True,
             view_fn: Callable[[Mapping], Mapping] | None = None) -> None:
        """Register a card: a request-time callback and (``background``) its job twin.

        ``outputs`` end with the card's key store; ``build(view, present, progress)``
        returns the other outputs' values. The card waits until the cards in ``after`` show
        the current view (or their job was cancelled). ``view_fn`` maps the view to the one
        the card computes (e.g. a coarse first pass); the key stays the page view's.
        """
        key_fn = KEY_FNS[panel]
        app_outputs = [Output(cid, prop, allow_duplicate=True) for cid, prop in outputs]
        n_after = len(after)
        cancels = [p for p in after if p in JOB_PANELS]

        @app.callback(
            *app_outputs, Output(f"{panel}-job", "data"),
            Input("settings-store", "data"),
            *[Input(f"{p}-key", "data") for p in after],
            *[Input(f"{p}-cancel", "n_clicks") for p in cancels],
            State(f"{panel}-key", "data"), State(f"{panel}-job", "data"),
            State("ui-store", "data"),
            prevent_initial_call=True,
        )
        def _fg(view, *rest):
            before, (done_key, job, ui) = rest[:n_after], rest[n_after + len(cancels):]
            if not view:
                raise PreventUpdate
            trig = ctx.triggered_id
            if trig in (None, "settings-store") and any(
                    stored != KEY_FNS[p](view) for p, stored in zip(after, before, strict=True)):
                raise PreventUpdate  # runs when the earlier card is done
            if enabled is not None and not enabled(view):
                if disabled_values is None or done_key is None:
                    raise PreventUpdate
                return [*disabled_values(), None, {"run": False}]
            key = key_fn(view)
            work_view = view_fn(view) if view_fn is not None else view
            route, arg = _route(task, work_view, key, done_key, job)
            if route == "same":
                raise PreventUpdate
            if patch is not None and done_key and done_key.split("|")[0] == key.split("|")[0]:
                return [*patch(view), key, arg]
            if route == "job" and background:
                values = [no_update] * (len(outputs) - 1)
                values[_status_index(outputs)] = _queued(task)
                return [*values, no_update, arg]
            if route == "job":  # no background twin: say so instead of computing here
                values = [no_update] * (len(outputs) - 1)
                values[_status_index(outputs)] = [html.Span(
                    too_large_message(task, work_view, coarse=view_fn is not None),
                    className="status-muted")]
                # a coarse pass is done (the full pass waits for its key); others are not
                return [*values, key if view_fn is not None else no_update, no_update]
            present = bool((ui or {}).get("present"))
            values = rendered(panel, view, present, lambda: build(work_view, present))
            return [*values, key, arg if route == "fast" else no_update]

        if not background:
            return

        @app.callback(
            *app_outputs,
            Input(f"{panel}-job", "data"),
            State("ui-store", "data"),
            background=True, prevent_initial_call=True,
            on_error=_job_error(panel, f"{panel}-status"), **_job_spec(panel),
        )
        def _bg(set_progress, job, ui):
            return background_outputs(build, outputs, job, ui, set_progress)

    card("path", "path", [("path-graph", "figure"), ("path-status", "children"),
                          ("path-key", "data")], build_path)
    card("plane", "surface", [
        ("surface-graph", "figure"), ("contour-graph", "figure"), ("anim-store", "data"),
        ("anim-slider", "max"), ("anim-slider", "value"), ("plane-status", "children"),
        ("contour-status", "children"), ("device-badge", "children"),
        ("device-badge", "className"), ("plane-key", "data")], plane_values, after=("path",))
    card("cuts", "cut", [("cuts-graph", "figure"), ("cuts-status", "children"),
                         ("cuts-key", "data")], build_cuts, after=("plane",),
         patch=patch_cuts_scale)
    card("spectrum", "spectrum", [
        ("spectrum-graph", "figure"), ("verdict", "children"), ("selected-info", "children"),
        ("spectrum-status", "children"), ("spectrum-key", "data")], build_spectrum,
        after=("plane",))
    card("starts", "many_starts", [("starts-graph", "figure"), ("starts-status", "children"),
                                   ("starts-key", "data")], build_starts, after=("plane",),
         enabled=lambda v: bool(v.get("many_starts")),
         disabled_values=lambda: [figures.placeholder(
             "Switch on “run many starts” for a histogram of where training ends."), ""])
    card("critical", "critical_point", [
        ("critical-info", "children"), ("critical-store", "data"),
        ("critical-status", "children"), ("critical-key", "data")], build_critical,
        after=("plane",), enabled=lambda v: bool(v.get("critical")),
        disabled_values=lambda: ["", None, ""])
    card("theory", "theory", [("theory-table", "children"), ("theory-status", "children"),
                              ("theory-key", "data")],
         lambda view, present=False, progress=None: list(build_theory(view)),
         after=("plane",), background=False)

    # ---- the Explore card: one view at a time, each a card of its own (a coarse first
    # pass before the full one where the view has one).
    @app.callback(
        Output("explore-none", "style"),
        *[Output(f"explore-{v.key}", "style") for v in explore.VIEWS],
        Input("ctl-explore", "value"),
    )
    def _explore_visible(choice):
        return explore_styles(choice)

    for v in explore.VIEWS:
        shown = functools.partial(_explore_shown, v.key)
        outputs = [(f"{v.key}-graph", "figure"), (f"{v.key}-status", "children")]
        idle = functools.partial(_explore_idle, v)
        build = functools.partial(build_explore, v)
        after: tuple[str, ...] = ("plane",)
        if v.coarse is not None:
            coarse = f"{v.key}_coarse"
            card(coarse, v.task, [*outputs, (f"{coarse}-key", "data")], build, after=after,
                 enabled=functools.partial(_explore_coarse_on, v), disabled_values=idle,
                 view_fn=v.coarse, background=False)
            after = (coarse,)
        card(v.key, v.task, [*outputs, (f"{v.key}-key", "data")], build, after=after,
             enabled=shown, disabled_values=idle)

    app.clientside_callback(
        "function(store, anim, c, s) {"
        " return window.dash_clientside.landscape.critical(store, anim, c, s); }",
        Output("contour-graph", "figure", allow_duplicate=True),
        Output("surface-graph", "figure", allow_duplicate=True),
        Input("critical-store", "data"),
        Input("anim-store", "data"),
        State("contour-graph", "figure"),
        State("surface-graph", "figure"),
        prevent_initial_call=True,
    )

    # ---- uploads
    @app.callback(
        Output("ctl-dataset", "value", allow_duplicate=True),
        Output("ctl-dataset", "options"),
        Output("uploads-store", "data"),
        Output("upload-status", "children"),
        Output("err-upload", "children"),
        Input("upload", "contents"),
        State("upload", "filename"),
        State("uploads-store", "data"),
        State("ctl-dataset", "options"),
        prevent_initial_call=True,
    )
    def _upload(contents, filename, uploads, options):
        dataset, status, error = handle_upload(contents, filename)
        if dataset is None:
            return no_update, no_update, no_update, "", error
        uploads = dict(uploads or {})
        uploads[dataset] = str(filename or "file")[:60]
        base = [o for o in (options or []) if not str(o.get("value", "")).startswith("upload:")]
        return dataset, dataset_options(base, uploads), uploads, status, ""

    @app.callback(
        Output("ctl-dataset", "options", allow_duplicate=True),
        Input("uploads-store", "modified_timestamp"),
        State("uploads-store", "data"),
        State("ctl-dataset", "options"),
        State("settings-store", "data"),
        prevent_initial_call="initial_duplicate",
    )
    def _known_uploads(_, uploads, options, view):
        uploads = dict(uploads or {})
        current = (view or {}).get("dataset") or ""
        if current.startswith("upload:") and current not in uploads:
            uploads[current] = "file from the link"
        kept = {k: v for k, v in uploads.items() if schema.upload_info(k) is not None}
        base = [o for o in (options or []) if not str(o.get("value", "")).startswith("upload:")]
        return dataset_options(base, kept)

    # ---- exports
    @app.callback(
        Output("download", "data"),
        Output("export-error", "children"),
        Input("export-html", "n_clicks"),
        Input("export-npz", "n_clicks"),
        Input("export-csv", "n_clicks"),
        Input("export-json", "n_clicks"),
        Input("export-obj", "n_clicks"),
        Input("export-vtp", "n_clicks"),
        State("settings-store", "data"),
        State("ui-store", "data"),
        *[State(f"{g}-graph", "figure") for g in GRAPHS],
        prevent_initial_call=True,
    )
    def _export(_h, _n, _c, _j, _o, _v, view, ui, *figs):
        if not view:
            raise PreventUpdate
        trig = ctx.triggered_id
        if trig == "export-json":
            body = {"settings": task_settings(view), "compare": view.get("compare"),
                    "many_starts": view.get("many_starts"), "critical": view.get("critical"),
                    "preset": (ui or {}).get("preset"),
                    "url_query": page_query(view, ui)}
            return dcc.send_string(json.dumps(body, indent=2), "landscape-settings.json"), ""
        if trig == "export-html":
            names = ("loss surface", "contour and path", "along the path", "1-D cuts",
                     "Hessian spectrum", "many starts")
            page = html_export(dict(zip(names, figs, strict=True)))
            return dcc.send_string(page, "landscape-view.html"), ""
        if trig == "export-npz":
            arrays, omitted = export_arrays(view)
            if not arrays:
                return no_update, export_note(omitted, nothing=True)
            return dcc.send_bytes(npz_bytes(arrays), "landscape-data.npz"), \
                export_note(omitted)
        if trig == "export-csv":
            blob, omitted = csv_export(view)
            if blob is None:
                return no_update, export_note(omitted, nothing=True)
            return dcc.send_bytes(blob, "landscape-data-csv.zip"), export_note(omitted)
        if trig in ("export-obj", "export-vtp"):
            kind = trig.split("-")[1]
            text, error = mesh_text(view, kind)
            if text is None:
                return no_update, error
            return dcc.send_string(text, f"landscape-surface.{kind}"), \
                (f"Exported without a part: {error}" if error else "")
        raise PreventUpdate


KEY_FNS: dict[str, Callable[[Mapping], str]] = {
    "path": lambda v: _key("path", v) + f"|cmp={v.get('compare')}",
    "plane": lambda v: plane_key(v),
    "cuts": lambda v: _key("cut", v) + f"|log={bool(v.get('log_scale'))}",
    "spectrum": lambda v: _key("spectrum", v),
    "starts": lambda v: _key("many_starts", v),
    "critical": lambda v: _key("critical_point", v) + "|" + plane_key(v),
    "theory": lambda v: _key("theory", v),
}
for _v in explore.VIEWS:
    KEY_FNS[_v.key] = functools.partial(lambda task, v: _key(task, v), _v.task)
    if _v.coarse is not None:  # None while the coarse pass is off: the full pass need not wait
        KEY_FNS[f"{_v.key}_coarse"] = functools.partial(
            lambda ev, v: _key(ev.task, c) if v.get("explore") == ev.key
            and (c := ev.coarse(v)) is not None else None, _v)


def _key(task: str, view: Mapping) -> str:
    try:
        return schema.canonical_key(task, task_settings(view))
    except Exception:  # noqa: BLE001
        return task + json.dumps(task_settings(view), sort_keys=True, default=str)


def _queued(task: str) -> list:
    return [html.Span(f"Large {task} job: running in the background…", className="status-muted")]


def _status_index(outputs: list) -> int:
    for i, (cid, prop) in enumerate(outputs):
        if cid.endswith("-status") and prop == "children":
            return i
    return 0


def patch_cuts_scale(view: Mapping) -> list:
    """Only the colour/axis scale changed: a ``Patch`` of the cuts' y axes, status kept."""
    patch = Patch()
    kind = "log" if view.get("log_scale") else "linear"
    for axis in ("yaxis", "yaxis2", "yaxis3"):
        patch["layout"][axis]["type"] = kind
    return [patch, no_update]
