"""Every size limit of the product, in one place.

The CLI, the dashboard's validation layer and the deployment docs all read these numbers;
change them here and nowhere else. Each limit exists to keep one request's memory and time
bounded on a 2-core, 24 GiB machine (see README, "Limits").
"""

MAX_DEPTH = 8                  # hidden layers H
MAX_WIDTH = 512                # units in any layer (inputs and outputs included)
MAX_PARAMS = 200_000           # parameters of a model
MAX_PARAMS_EXACT_HESSIAN = 4_000   # above this, spectra use Lanczos
MAX_SAMPLES = 100_000          # rows of a dataset
MAX_FEATURES = 512             # columns of X or Y
MAX_COLUMN_SQUARES = 3.4e38    # Σ x² of one data column (XᵀX, the squared loss): float32's max
MAX_GRID = 201                 # points per side of a surface grid
MAX_CUT_POINTS = 2_001         # points of a 1-D cut
MAX_STEPS = 100_000            # optimiser steps of a path
MAX_STARTS = 1_024             # inits of a many-starts run
MAX_LANCZOS_STEPS = 500        # Krylov dimension
MAX_SLQ_PROBES = 64            # random probes of stochastic Lanczos quadrature
MAX_UPLOAD_BYTES = 20 * 2**20  # uploaded .npz / .csv
MAX_SPAN = 1e3                 # half-width of a plane's coordinate range
MEMORY_BUDGET_BYTES = 512 * 2**20  # working memory one surface/grid call may use
MAX_SEED = 2**31 - 1           # seeds of data, inits and paths
MAX_INIT_SCALE = 1e3           # multiplier of an initialiser
MAX_NOISE = 1e3                # noise of a synthetic dataset
MAX_LR = 1e3                   # step size in the dashboard (the CLI allows up to 1e6)
MIN_GRID = 3                   # points per side of a dashboard surface
MAX_PARAMS_EXACT_LAMBDA = 256  # λ_min/λ_max along a path: exact eigh up to here, Lanczos above
PATH_LANCZOS_STEPS = 40        # default Krylov dimension of λ tracking along a path
MAX_PATH_WEIGHT_BYTES = 128 * 2**20  # recorded weights of one path
MAX_CURVE_POINTS = 5_001       # loss / gradient-norm points the dashboard receives per path
MAX_WEIGHT_ROWS = 1_001        # recorded path points the dashboard receives
MAX_WEIGHT_FLOATS = 4_000_000  # ... and at most this many numbers in all (16 MB)
MAX_BALDI_HORNIK_POINTS = 1_024  # enumerated Baldi-Hornik critical points
MAX_CONDITION = 1e12           # condition number of XᵀX accepted by the closed forms
MAX_PARAMS_INDEX_MAP = MAX_PARAMS_EXACT_HESSIAN // 8  # exact Hessian at every grid cell
MAX_INDEX_MAP_WORK = 2e12      # cells × n² × (n + m): Hessians (∝ m n²) + eigensolves (∝ n³)
MAX_INDEX_MAP_GRID = 101       # cells per side of a dashboard Morse-index map
# cells × probes × steps × n × (m + steps) of a Lanczos-estimated index map (models above
# MAX_PARAMS_INDEX_MAP): like MAX_INDEX_MAP_WORK, about 15–20 minutes on the 2-core CPU
MAX_INDEX_MAP_LANCZOS_WORK = 7e11
MAX_RACERS = 6                 # optimisers of one race
MIN_PATH_IMAGES = 3            # images of a minimum-to-minimum band (ends included) …
MAX_PATH_IMAGES = 129          # … and at most this many
MAX_PATH_POINTS = 1_025        # points at which a trained Bézier curve is evaluated
MAX_SPRING = 1e3               # dimensionless NEB spring constant
MAX_PEAK_SADDLE_STEPS = 200    # saddle-finder steps from a path's peak
MAX_DENSITY_GRID = 4_096       # points of a spectral-density grid (Lanczos diagnostics)
MAX_EXPORT_POINTS = 250_000    # grid nodes of one exported surface mesh (~25 MB of text)


# Work budgets of one dashboard request or CLI run (products of sizes: grid² × m × n_params,
# …), scaled by the LANDSCAPE_WORK_SCALE environment variable on bigger hosts.
MAX_SURFACE_WORK = 4e10
MAX_PATH_WORK = 4e10
MAX_STARTS_WORK = 2e11


# How the work budgets count, shared by the dashboard's validation (landscape_app/settings.py)
# and the CLI so that both refuse the same requests.


def work_scale() -> float:
    """``LANDSCAPE_WORK_SCALE`` (default 1, at least 1e-3): multiplies the work budgets."""
    import math
    import os

    try:
        scale = float(os.environ.get("LANDSCAPE_WORK_SCALE", "1"))
    except ValueError:
        return 1.0
    return max(scale, 1e-3) if not math.isnan(scale) else 1.0


def full_batch_rows(model: str, loss: str, rows: int, d_x: int, d_y: int) -> int:
    """Rows full-batch work (Hessians, full-batch paths) touches: a deep linear net with the
    squared loss runs on its d_x + d_y sufficient rows (``compute.sufficient_data``)."""
    if model == "linear" and loss == "squared":
        return min(rows, d_x + d_y)
    return rows


def path_rows(model: str, loss: str, optimizer: str, batch, rows: int, d_x: int,
              d_y: int) -> int:
    """Rows one step of a path touches: :func:`full_batch_rows` for a full-batch path;
    minibatch paths record the loss on all m samples every step."""
    if batch is None and optimizer != "sgd":
        return full_batch_rows(model, loss, rows, d_x, d_y)
    return rows


def lambda_evaluations(n_params: int, method: str = "auto", krylov: int | None = None) -> int:
    """Gradient evaluations one tracked λ_min/λ_max point costs: 2n for the exact Hessian
    (auto: up to MAX_PARAMS_EXACT_LAMBDA parameters), 2 × the Krylov dimension for Lanczos."""
    if method == "auto":
        method = "exact" if n_params <= MAX_PARAMS_EXACT_LAMBDA else "lanczos"
    if method == "exact":
        return 2 * n_params
    return 2 * (min(n_params, PATH_LANCZOS_STEPS) if krylov is None else krylov)


def path_step_work(step_rows: int, n_params: int, lambda_every: int = 0,
                   lambda_evals: int = 0) -> float:
    """Work of one path step (counted against MAX_PATH_WORK): rows × parameters, plus the
    share of λ tracking every ``lambda_every`` steps."""
    per_step = 1.0 + (lambda_evals / lambda_every if lambda_every else 0.0)
    return max(step_rows, 1) * max(n_params, 1) * per_step


def check_int(name: str, value, low: int, high: int, why: str = "") -> int:
    """``int(value)``; InputError unless it is a whole number (int or numpy integer, not a
    bool) with ``low <= value <= high``. ``why`` is appended to the message."""
    import numpy as np

    from compute._errors import InputError

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not low <= value <= high:
        raise InputError(f"{name} must be a whole number between {low} and {high}"
                         f"{' ' + why if why else ''}, got {value!r}.")
    return int(value)


def check_range(name: str, value, low, high) -> None:
    """Raise InputError unless ``low <= value <= high`` (and value is a finite number)."""
    from compute._errors import InputError

    try:
        ok = low <= value <= high
    except TypeError:
        ok = False
    if not ok or value != value:  # NaN compares false everywhere
        raise InputError(f"{name} must be between {low} and {high}, got {value!r}.")
