"""What is on the page: a declarative layout built from small component factories.

Ids (the callbacks' contract):
  ``ctl-<field>``      the control of settings field ``<field>`` (``.value``)
  ``err-<field>``      its error message (``.children``; empty when fine)
  ``<panel>-graph``    the figures: surface, contour, path, cuts, spectrum, starts
  ``<panel>-status``   "0.42 s · cpu · cached" under each card
  ``<panel>-progress`` / ``-progress-text`` / ``-progress-wrap`` / ``-cancel``: background jobs
  ``settings-store`` (clean settings), ``ui-store`` (preset, presentation, many starts,
  comparison), ``anim-store`` (client-side animation frames), ``url`` (dcc.Location).
"""

from __future__ import annotations

from collections.abc import Sequence

from dash import dcc, html

from landscape_app import figures
from landscape_app.explore import VIEWS as EXPLORE_VIEWS
from landscape_app.presets import PRESETS
from landscape_app.settings import LIMITS as schema_limits

__all__ = ["CONTROL_FIELDS", "EXTRA_FIELDS", "GRAPH_PANELS", "JOB_PANELS", "explore_card",
           "make_layout"]

# Control kinds: "choice" (dropdown), "radio", "text" (free text, validated on the server),
# "bool" (one-option checklist).
_DATASET_LABELS = {
    "linear_teacher": "linear teacher (regression, 8 → 4)",
    "xor": "XOR (4 points)",
    "two_moons": "two moons",
    "circles": "circles",
    "spirals": "spirals",
    "blobs": "blobs (3 classes)",
    "swirszcz_d1": "Świrszcz D1 (bad minimum, 1 unit)",
    "swirszcz_d2": "Świrszcz D2 (bad minimum, 2 units)",
    "swirszcz_d3": "Świrszcz D3 (worse minimum, 3 units)",
    "jellyfish": "jellyfish (4 points)",
    "iris": "Iris (150 flowers)",
}

SECTIONS: tuple[tuple[str, tuple[tuple, ...]], ...] = (
    ("Model", (
        ("model", "Model", "radio", [("linear", "deep linear"), ("mlp", "MLP")], None),
        ("widths", "Hidden widths", "text", None,
         "one number per hidden layer, e.g. 4, 4 (empty: no hidden layer)"),
        ("activation", "Activation", "choice",
         ["relu", "leaky_relu", "tanh", "sigmoid", "identity"], "MLP only"),
        ("bias", "Biases", "bool", None, "MLP only"),
    )),
    ("Data & loss", (
        ("dataset", "Dataset", "choice", list(_DATASET_LABELS.items()), None),
        ("loss", "Loss", "radio", [("squared", "squared"), ("cross_entropy", "cross-entropy")],
         None),
        ("n_samples", "Samples", "text", None, "empty: the dataset's default"),
        ("noise", "Noise", "text", None, "empty: the dataset's default"),
        ("data_seed", "Data seed", "text", None, None),
        ("preprocess", "Preprocess", "choice", ["none", "standardise", "whiten"], None),
        ("signed_targets", "±1 targets (2 classes, one output)", "bool", None, None),
    )),
    ("Initialisation", (
        ("init", "Init", "choice", ["gaussian", "xavier", "he", "orthogonal", "zero"], None),
        ("init_scale", "Scale", "text", None, "1e-3 puts a deep linear net by its origin"),
        ("seed", "Seed", "text", None, None),
    )),
    ("Optimiser", (
        ("optimizer", "Optimiser", "choice",
         [("gd", "gradient descent"), ("momentum", "heavy-ball momentum"),
          ("nesterov", "Nesterov"), ("adam", "Adam"), ("sgd", "minibatch SGD")], None),
        ("lr", "Step size", "text", None, None),
        ("steps", "Steps", "text", None, None),
        ("batch", "Batch", "text", None, "SGD only; empty: full batch"),
        ("momentum", "Momentum", "text", None, None),
        ("lambda_every", "λ every", "text", None, "steps between λ_min/λ_max (0: never)"),
        ("compare", "Compare with", "choice",
         [("none", "—"), ("gd", "gradient descent"), ("momentum", "heavy-ball momentum"),
          ("nesterov", "Nesterov"), ("adam", "Adam"), ("sgd", "minibatch SGD")],
         "a second optimiser's path, drawn in grey"),
    )),
    ("Plane", (
        ("plane", "Plane", "choice",
         [("pca", "PCA of the path"), ("random", "random"),
          ("filter", "filter-normalised"), ("layer", "layer-normalised"),
          ("hessian", "Hessian eigenvectors"), ("points", "three points (init, mid, end)"),
          ("action", "minimum, saddle, escape direction")],
         None),
        ("checkpoints", "Three points", "text", None,
         "steps for the three-point plane, e.g. 0, 300, 2000 (empty: init, slowest, end)"),
        ("center", "Centre", "radio", [("final", "end"), ("init", "start"),
                                       ("selected", "selected")], None),
        ("span", "Span", "text", None, "half-width of each coordinate"),
        ("grid", "Grid", "text", None, "points per side"),
        ("log_scale", "log-scale colours", "bool", None, None),
    )),
    ("Curvature & starts", (
        ("selected_step", "Selected step", "text", None,
         "click the path to choose; empty: the end"),
        ("selected_alpha", "Selected α", "text", None,
         "click the contour off the path to choose a plane point; empty: none"),
        ("selected_beta", "Selected β", "text", None, None),
        ("spectrum_method", "Spectrum", "radio",
         [("auto", "auto"), ("exact", "exact"), ("lanczos", "Lanczos")], None),
        ("k", "Lanczos k", "text", None, None),
        ("n_starts", "Many starts", "text", None, None),
        ("precision", "Precision", "radio", [("float64", "float64"), ("float32", "float32")],
         None),
    )),
)

# The Explore card's selector and its views' own controls (settings fields too).
EXPLORE_SELECTOR = ("explore", "View", "choice",
                    [("none", "— choose a view —"), *((v.key, v.label) for v in EXPLORE_VIEWS)],
                    None)
EXPLORE_CONTROLS: tuple[tuple, ...] = (
    EXPLORE_SELECTOR, *(c for v in EXPLORE_VIEWS for c in v.controls))
_ALL_CONTROLS = (*(f for _, fields in SECTIONS for f in fields), *EXPLORE_CONTROLS)

# Controls of the view that are not settings fields: the comparison optimiser and the
# many-starts switch (both live in the URL too).
EXTRA_FIELDS: tuple[str, ...] = ("compare", "starts", "critical")
CONTROL_FIELDS: tuple[str, ...] = tuple(
    f[0] for f in _ALL_CONTROLS if f[0] not in EXTRA_FIELDS)
TEXT_FIELDS: frozenset[str] = frozenset(f[0] for f in _ALL_CONTROLS if f[2] == "text")
BOOL_FIELDS: frozenset[str] = frozenset(f[0] for f in _ALL_CONTROLS if f[2] == "bool")

GRAPH_PANELS: tuple[str, ...] = ("surface", "contour", "path", "cuts", "spectrum", "starts")
# Cards whose computations may run as background jobs (progress bar and cancel button).
JOB_PANELS: tuple[str, ...] = ("plane", "path", "cuts", "spectrum", "starts", "critical",
                               *(v.key for v in EXPLORE_VIEWS))

_GRAPH_CONFIG = {"displaylogo": False, "responsive": True,
                 "modeBarButtonsToRemove": ["lasso2d", "select2d", "autoScale2d"]}


# --------------------------------------------------------------------------- factories


def _options(options: Sequence) -> list[dict]:
    return [{"label": o[1], "value": o[0]} if isinstance(o, tuple) else {"label": o, "value": o}
            for o in options]


def control(name: str, label: str, kind: str, options: Sequence | None,
            help_text: str | None) -> html.Div:
    """One labelled control with its help line and error message slot."""
    cid = f"ctl-{name}"
    if kind == "choice":
        widget = dcc.Dropdown(id=cid, options=_options(options or []), clearable=False,
                              searchable=False, className="ctl-dropdown")
    elif kind == "radio":
        widget = dcc.RadioItems(id=cid, options=_options(options or []), inline=True,
                                className="ctl-radio")
    elif kind == "bool":
        widget = dcc.Checklist(id=cid, options=[{"label": label, "value": "on"}],
                               className="ctl-check")
    else:
        widget = dcc.Input(id=cid, type="text", debounce=True, className="ctl-input",
                           autoComplete="off", spellCheck=False)
    children = [] if kind == "bool" else [html.Label(label, htmlFor=cid, className="ctl-label")]
    children.append(widget)
    if name == "widths":
        children.append(html.Div([
            html.Button("− layer", id="depth-minus", className="btn btn-small", n_clicks=0),
            html.Button("+ layer", id="depth-plus", className="btn btn-small", n_clicks=0),
        ], className="depth-buttons"))
    if help_text:
        children.append(html.Div(help_text, className="ctl-help"))
    children.append(html.Div(id=f"err-{name}", className="ctl-error", role="alert"))
    return html.Div(children, className=f"ctl ctl-{kind}", id=f"wrap-{name}")


def sidebar() -> html.Aside:
    """Every setting, grouped; the upload box sits with the data."""
    sections = []
    for title, fields in SECTIONS:
        body = [control(*f) for f in fields]
        if title == "Data & loss":
            body.insert(1, html.Div([
                dcc.Upload(id="upload", children=html.Div(
                    ["Drop a ", html.B(".npz"), " or ", html.B(".csv"), " here, or ",
                     html.A("choose a file")]), className="upload-box", multiple=False),
                html.Div(id="upload-status", className="ctl-help"),
                html.Div(id="err-upload", className="ctl-error", role="alert"),
            ], className="ctl", id="upload-wrap",
                **{"data-max-bytes": str(schema_limits.MAX_UPLOAD_BYTES)}))
        sections.append(html.Details([html.Summary(title), *body], open=True,
                                     className="ctl-section"))
    sections.append(html.Div(id="err-settings", className="ctl-error", role="alert"))
    return html.Aside(sections, className="sidebar", id="sidebar")


def _job_bar(panel: str) -> html.Div:
    """Progress bar, its text and a cancel button, shown while a background job runs."""
    return html.Div([
        html.Progress(id=f"{panel}-progress", value="0", max="100", className="progress"),
        html.Span(id=f"{panel}-progress-text", className="progress-text"),
        html.Button("Cancel", id=f"{panel}-cancel", className="btn btn-small btn-cancel",
                    n_clicks=0),
    ], id=f"{panel}-progress-wrap", className="progress-wrap", style={"display": "none"})


def graph(panel: str, *, height: str, message: str = "Computing…") -> dcc.Graph:
    """A graph with a placeholder figure (so patches always have a figure to patch)."""
    config = dict(_GRAPH_CONFIG, toImageButtonOptions={
        "format": "png", "scale": 2, "filename": f"landscape-{panel}"})
    return dcc.Graph(id=f"{panel}-graph", figure=figures.placeholder(message), config=config,
                     style={"height": height}, className=f"graph graph-{panel}")


def card(title: str, body: list, *, status_id: str | None = None, job: str | None = None,
         extra_header: list | None = None, class_name: str = "") -> html.Section:
    """A titled card: header (title, optional tools), body, status line, job bar."""
    header = [html.H2(title, className="card-title")]
    if extra_header:
        header.append(html.Div(extra_header, className="card-tools"))
    children = [html.Header(header, className="card-header"), *body]
    if job:
        children.append(_job_bar(job))
    if status_id:
        children.append(html.Div(id=status_id, className="card-status"))
    return html.Section(children, className=f"card {class_name}".strip())


def header() -> html.Header:
    """Title, presentation toggle, share, exports and the device badge."""
    return html.Header([
        html.Div([
            html.Span("Landscape", className="brand"),
            html.Span("loss surfaces of neural networks", className="brand-sub"),
        ], className="brand-wrap"),
        html.Div([
            html.Button("Copy link", id="share", className="btn", n_clicks=0,
                        title="Copy this view's address (the whole state is in the URL)"),
            html.Span(id="share-status", className="share-status"),
            html.Div([
                html.Span("Export", className="export-label"),
                html.Button("HTML", id="export-html", className="btn btn-small", n_clicks=0,
                            title="All figures as one standalone HTML page (works offline)"),
                html.Button("NPZ", id="export-npz", className="btn btn-small", n_clicks=0,
                            title="The current results' arrays as .npz"),
                html.Button("CSV", id="export-csv", className="btn btn-small", n_clicks=0,
                            title="The surface grid, the path and the Explore view as .csv "
                                  "(zipped)"),
                html.Button("JSON", id="export-json", className="btn btn-small", n_clicks=0,
                            title="The settings as JSON"),
                html.Button("OBJ", id="export-obj", className="btn btn-small", n_clicks=0,
                            title="The loss surface as a Wavefront mesh (Blender)"),
                html.Button("VTP", id="export-vtp", className="btn btn-small", n_clicks=0,
                            title="The loss surface as VTK PolyData (ParaView), with the "
                                  "Morse index when the index map is shown"),
            ], className="export-group"),
            html.Div(id="export-error", className="ctl-error"),
            html.Button("Presentation", id="present", className="btn btn-toggle", n_clicks=0,
                        title="Large type, fewer controls"),
            html.Span("device: …", id="device-badge", className="badge badge-device",
                      title="Where the numerics run"),
        ], className="header-tools"),
    ], className="topbar")


def preset_strip() -> html.Div:
    """One button per teaching preset and the active preset's explanation."""
    buttons = [html.Button(p.title, id={"type": "preset", "key": p.key}, n_clicks=0,
                           className="chip", title=p.explanation) for p in PRESETS]
    return html.Div([
        html.Div([html.Span("Presets", className="strip-label"), *buttons],
                 className="preset-buttons"),
        html.Div(id="preset-explanation", className="preset-explanation"),
    ], className="preset-strip")


def animation_controls() -> html.Div:
    """Play/pause, the frame slider and the current step (all client side)."""
    return html.Div([
        html.Button("▶ Play", id="anim-play", className="btn btn-play", n_clicks=0),
        html.Div(dcc.Slider(id="anim-slider", min=0, max=1, step=1, value=0, marks=None,
                            updatemode="drag", tooltip=None), className="anim-slider"),
        html.Span("step 0", id="anim-label", className="anim-label"),
        dcc.Interval(id="anim-interval", interval=100, disabled=True),
    ], className="anim-controls")


def main_panels() -> html.Main:
    """The linked views."""
    recentre = html.Button("Centre the plane here", id="recentre", className="btn btn-small",
                           n_clicks=0, title="Re-centre the slice at the selected point")
    critical = dcc.Checklist(id="ctl-critical", options=[
        {"label": "find critical point", "value": "on"}], value=[],
        className="toggle")
    many = [dcc.Checklist(id="ctl-starts", options=[{"label": "run many starts",
                                                      "value": "on"}],
                          value=[], className="toggle")]
    return html.Main([
        html.Div([
            card("Loss surface", [graph("surface", height="430px")], job="plane",
                 class_name="card-surface", status_id="plane-status"),
            card("Contour and path", [graph("contour", height="380px"),
                                      animation_controls()],
                 class_name="card-contour", status_id="contour-status"),
        ], className="row row-2"),
        html.Div([
            card("Along the path", [graph("path", height="430px")], job="path",
                 status_id="path-status", class_name="card-path"),
            card("Spectrum at the selected point", [
                html.Div([html.Span("—", id="verdict", className="verdict"),
                          html.Span(id="selected-info", className="selected-info")],
                         className="verdict-row"),
                graph("spectrum", height="360px"),
                html.Div([html.Div(id="critical-info", className="critical-info"),
                          _job_bar("critical"),
                          html.Div(id="critical-status", className="card-status")],
                         className="critical-box"),
            ], job="spectrum", status_id="spectrum-status", extra_header=[critical, recentre],
                class_name="card-spectrum"),
        ], className="row row-2"),
        html.Div([
            card("1-D cuts", [graph("cuts", height="300px")], job="cuts",
                 status_id="cuts-status", class_name="card-cuts"),
            card("Many starts", [graph("starts", height="300px",
                                       message="Switch on “run many starts”.")],
                 job="starts", status_id="starts-status", extra_header=many,
                 class_name="card-starts"),
            card("Theory", [html.Div(id="theory-table", className="theory-table")],
                 status_id="theory-status", class_name="card-theory"),
        ], className="row row-3"),
        explore_card(),
    ], className="main")


def explore_panel(view) -> html.Div:
    """One Explore view: its controls, graph, job bar and status (hidden until chosen)."""
    return html.Div([
        html.P(view.intro, className="explore-intro"),
        html.Div([control(*c) for c in view.controls], className="explore-controls"),
        graph(view.key, height=view.height, message=f"{view.label}: computing…"),
        _job_bar(view.key),
        html.Div(id=f"{view.key}-status", className="card-status"),
    ], id=f"explore-{view.key}", className="explore-panel", style={"display": "none"})


def explore_card() -> html.Section:
    """Views beyond the slice, one at a time; nothing is computed until one is chosen."""
    chooser = html.P("Pick a view: Morse-index maps, conserved quantities, … of the model "
                     "and plane above. Each is computed only while it is shown.",
                     id="explore-none", className="explore-intro")
    return card("Explore", [chooser, *(explore_panel(v) for v in EXPLORE_VIEWS)],
                extra_header=[control(*EXPLORE_SELECTOR)], class_name="card-explore")


def footer() -> html.Footer:
    """The conventions of THEORY.md, stated once."""
    return html.Footer([
        html.Span("Conventions: X is m × d_x, one sample per row; squared loss "
                  "L = (1/2m) Σ‖f(x) − y‖²; flat parameters W₁ (row-major), b₁, W₂, b₂, …; "
                  "relu′(0) = 0. "),
        html.A("healthz", href="/healthz", className="muted-link"),
    ], className="footer")


def make_layout() -> html.Div:
    """The whole page."""
    return html.Div([
        dcc.Location(id="url", refresh=False),
        dcc.Store(id="settings-store"),
        dcc.Store(id="ui-store", data={"preset": None, "present": False,
                                       "many_starts": False, "compare": None}),
        dcc.Store(id="anim-store"),
        dcc.Store(id="plane-key"),
        dcc.Store(id="path-key"),
        dcc.Store(id="cuts-key"),
        dcc.Store(id="spectrum-key"),
        dcc.Store(id="starts-key"),
        dcc.Store(id="critical-key"),
        dcc.Store(id="theory-key"),
        dcc.Store(id="theory-job"),
        dcc.Store(id="critical-job"),
        dcc.Store(id="critical-store"),
        dcc.Store(id="plane-job"),
        dcc.Store(id="path-job"),
        dcc.Store(id="cuts-job"),
        dcc.Store(id="spectrum-job"),
        dcc.Store(id="starts-job"),
        *(dcc.Store(id=f"{v.key}{suffix}-{kind}") for v in EXPLORE_VIEWS
          for suffix in ("", "_coarse") for kind in ("key", "job")),
        dcc.Store(id="uploads-store", storage_type="local"),
        dcc.Download(id="download"),
        header(),
        preset_strip(),
        html.Div([sidebar(), main_panels()], className="body"),
        footer(),
    ], id="app-root", className="app")
