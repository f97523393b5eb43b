"""The dashboard's settings: schema, defaults, validation, URL state and cache keys.

One flat dict describes everything a view computes (see the design, "Settings schema").
:func:`validate_settings` turns whatever the browser sent into clean settings plus one
message per bad field and never raises: wrong types, huge numbers, NaN, strings where numbers
go and nested junk all become messages. A field with an error falls back to a value that is
within the limits (its default, or the nearest allowed one for the combination checks), so
the clean settings are always safe to compute, even when the UI shows an error.

This module is imported by the web process, which must never import JAX: the limits are
read from ``compute/_limits.py`` by file (that module has no imports), not through the
``compute`` package, whose ``__init__`` imports JAX.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qs, urlencode

__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULTS",
    "DISPLAY_ONLY",
    "EXPLORE_VIEWS",
    "LIMITS",
    "TASK_NAMES",
    "cache_dir",
    "canonical_key",
    "compute_fields",
    "dataset_shape",
    "format_racers",
    "full_batch_rows",
    "has_plane_point",
    "n_params",
    "parse_checkpoints",
    "parse_racers",
    "path_rows",
    "settings_from_query",
    "settings_to_query",
    "validate_settings",
]

_ROOT = Path(__file__).resolve().parents[1]


def _load_limits() -> ModuleType:
    """``compute/_limits.py`` as a module, without executing ``compute/__init__`` (JAX)."""
    if "compute._limits" in sys.modules:  # the compute process has it already
        return sys.modules["compute._limits"]
    name = "landscape_app._compute_limits"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _ROOT / "compute" / "_limits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


LIMITS = _load_limits()

MAX_SEED = LIMITS.MAX_SEED
MAX_NOISE = LIMITS.MAX_NOISE
MAX_INIT_SCALE = LIMITS.MAX_INIT_SCALE
MAX_LR = LIMITS.MAX_LR
MIN_GRID = LIMITS.MIN_GRID
MAX_PARAMS_EXACT_LAMBDA = LIMITS.MAX_PARAMS_EXACT_LAMBDA
MAX_TEXT = 200                  # characters of any string setting (not a compute limit)
# Racers' text: a canonical racer ("nesterov", two float reprs of ≤ 24 characters, the
# separators) is at most 60 characters, so a canonical list always parses again.
MAX_RACE_TEXT = 64 * LIMITS.MAX_RACERS
# Work budgets (multiply-adds, roughly m × n_params per loss evaluation); a request above one
# would run for minutes on the 2-core reference machine. The offending field gets a message.
# LANDSCAPE_WORK_SCALE multiplies them (e.g. 20 on a GPU host).
_WORK_SCALE = LIMITS.work_scale()
MAX_SURFACE_WORK = LIMITS.MAX_SURFACE_WORK * _WORK_SCALE    # grid² × m × n_params
MAX_PATH_WORK = LIMITS.MAX_PATH_WORK * _WORK_SCALE          # steps × m × n_params
MAX_STARTS_WORK = LIMITS.MAX_STARTS_WORK * _WORK_SCALE      # n_starts × steps × m × n_params

TASK_NAMES = ("surface", "cut", "spectrum", "path", "many_starts", "critical_point", "theory",
              "index_map", "honest_slice", "race", "balancedness", "connect",
              "lanczos_diagnostics")

# Built-in datasets without importing compute/_datasets.py: task, d_x, classes (0 for
# regression), rows (None: n_samples or 200). tests/test_settings.py checks these against
# the real loader.
BUILTIN_DATASETS: dict[str, tuple[str, int, int, int | None]] = {
    "linear_teacher": ("regression", 8, 0, None),
    "xor": ("classification", 2, 2, 4),
    "two_moons": ("classification", 2, 2, None),
    "circles": ("classification", 2, 2, None),
    "spirals": ("classification", 2, 2, None),
    "blobs": ("classification", 2, 3, None),
    "swirszcz_d1": ("regression", 1, 0, 5),
    "swirszcz_d2": ("regression", 1, 0, 6),
    "swirszcz_d3": ("regression", 1, 0, 6),
    "jellyfish": ("classification", 2, 2, 4),
    "iris": ("classification", 4, 3, 150),
}
_LINEAR_TEACHER_DY = 4
_DEFAULT_ROWS = 200
_UPLOAD_RE = re.compile(r"^upload:[0-9a-f]{64}$")

DEFAULTS: dict = {
    "model": "linear",
    "widths": [4, 4],
    "activation": "relu",
    "bias": True,
    "loss": "squared",
    "dataset": "linear_teacher",
    "n_samples": None,
    "noise": None,
    "data_seed": 0,
    "preprocess": "none",
    "signed_targets": False,
    "init": "gaussian",
    "init_scale": 0.1,
    "seed": 0,
    "optimizer": "gd",
    "lr": 0.05,
    "steps": 2000,
    "batch": None,
    "momentum": 0.9,
    "lambda_every": 50,
    "plane": "pca",
    "span": 1.0,
    "grid": 41,
    "center": "final",
    "selected_step": None,
    # A clicked point (α, β) of the current plane, off the path: when both are set, the
    # spectrum and critical-point views start there and centre "selected" recentres there.
    "selected_alpha": None,
    "selected_beta": None,
    "spectrum_method": "auto",
    "k": 10,
    "n_starts": 64,
    "log_scale": False,
    # float64 by default: the models a browser can ask for are small, and the curvature
    # verdicts (eigenvalues near 0 at saddles, plateau levels) need the precision.
    # Arrays sent for display are float32 whatever this says.
    "precision": "float64",
    # The "Explore" card (issue 8): which view it shows ("none": nothing is computed) and
    # the settings of those views.
    "explore": "none",
    "imap_grid": 31,               # Morse-index map: cells per side (streamed from 11)
    "race": "gd 0.05, momentum 0.05, adam 0.01",  # optimiser race: "optimiser step, …"
    "checkpoints": "",             # honest slice plane "points": three steps ("" = default)
    "seed_b": 1,                   # minimum to minimum: the second start's seed
    "connect_method": "neb",       # … nudged elastic band or Bézier curve
    "probes": 8,                   # Lanczos diagnostics: SLQ probes
}
DISPLAY_ONLY = frozenset({"log_scale", "explore"})
EXPLORE_VIEWS = ("none", "index_map", "honest", "race", "balance", "connect", "lanczos")

_CHOICES: dict[str, tuple[str, ...]] = {
    "model": ("linear", "mlp"),
    "activation": ("relu", "leaky_relu", "tanh", "sigmoid", "identity"),
    "loss": ("squared", "cross_entropy"),
    "preprocess": ("none", "standardise", "whiten"),
    "init": ("gaussian", "xavier", "he", "orthogonal", "zero"),
    "optimizer": ("gd", "momentum", "nesterov", "adam", "sgd"),
    "plane": ("random", "filter", "layer", "hessian", "pca", "points", "action"),
    "center": ("init", "final", "selected"),
    "spectrum_method": ("auto", "exact", "lanczos"),
    "precision": ("float32", "float64"),
    "explore": EXPLORE_VIEWS,
    "connect_method": ("neb", "bezier"),
}
# name: (low, high, optional); ints are whole numbers in [low, high].
_INTS: dict[str, tuple[int, int, bool]] = {
    "n_samples": (1, LIMITS.MAX_SAMPLES, True),
    "data_seed": (0, MAX_SEED, False),
    "seed": (0, MAX_SEED, False),
    "steps": (1, LIMITS.MAX_STEPS, False),
    "batch": (1, LIMITS.MAX_SAMPLES, True),
    "lambda_every": (0, LIMITS.MAX_STEPS, False),
    "grid": (MIN_GRID, LIMITS.MAX_GRID, False),
    "selected_step": (0, LIMITS.MAX_STEPS, True),
    "k": (1, LIMITS.MAX_LANCZOS_STEPS // 2, False),  # k smallest + k largest Ritz pairs
    "n_starts": (1, LIMITS.MAX_STARTS, False),
    "imap_grid": (MIN_GRID, LIMITS.MAX_INDEX_MAP_GRID, False),
    "seed_b": (0, MAX_SEED, False),
    "probes": (1, LIMITS.MAX_SLQ_PROBES, False),
}
# name: (low, high, low inclusive, high inclusive, optional)
_FLOATS: dict[str, tuple[float, float, bool, bool, bool]] = {
    "noise": (0.0, MAX_NOISE, True, True, True),
    "init_scale": (0.0, MAX_INIT_SCALE, True, True, False),
    "lr": (0.0, MAX_LR, False, True, False),
    "momentum": (0.0, 1.0, True, False, False),
    "span": (0.0, LIMITS.MAX_SPAN, False, True, False),
    "selected_alpha": (-LIMITS.MAX_SPAN, LIMITS.MAX_SPAN, True, True, True),
    "selected_beta": (-LIMITS.MAX_SPAN, LIMITS.MAX_SPAN, True, True, True),
}
_BOOLS = ("bias", "signed_targets", "log_scale")
_INT_HINT = {"lambda_every": " (0 = never)", "selected_step": " or empty",
             "n_samples": " or empty for the dataset's default",
             "batch": " or empty for full batch"}


# --------------------------------------------------------------------------- field parsers


class _Bad(Exception):
    """A field's value is unusable; the message is shown next to the control."""


def _short(value: object) -> str:
    """A bounded ``repr`` for messages (hostile values can be huge)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not escape
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 40 else text[:37] + "..."


def _as_number(value: object) -> float | int:
    """int or float from a number or a numeric string; _Bad otherwise (bools too)."""
    if isinstance(value, bool) or value is None:
        raise _Bad
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, str) and len(value) <= 64:
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            raise _Bad from None
    try:  # numpy scalars and the like
        import numbers

        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real):
            return float(value)
    except Exception:  # noqa: BLE001
        pass
    raise _Bad


def _parse_int(name: str, value: object) -> int | None:
    low, high, optional = _INTS[name]
    hint = _INT_HINT.get(name, "") if optional or name in _INT_HINT else ""
    message = f"{name} must be a whole number from {low} to {high}{hint}, got {_short(value)}."
    if optional and (value is None or (isinstance(value, str) and not value.strip())):
        return None
    return _whole_number(value, low, high, message)


def _parse_float(name: str, value: object) -> float | None:
    low, high, low_in, high_in, optional = _FLOATS[name]
    if low_in and high_in:
        between = f"from {low:g} to {high:g}"
    else:
        between = (f"{'at least' if low_in else 'greater than'} {low:g} and "
                   f"{'at most' if high_in else 'below'} {high:g}")
    message = (f"{name} must be a number {between}{' or empty' if optional else ''}, "
               f"got {_short(value)}.")
    if optional and (value is None or (isinstance(value, str) and not value.strip())):
        return None
    try:
        number = float(_as_number(value))
    except (_Bad, OverflowError):
        raise _Bad(message) from None
    if not math.isfinite(number):
        raise _Bad(message)
    if not ((low <= number) if low_in else (low < number)):
        raise _Bad(message)
    if not ((number <= high) if high_in else (number < high)):
        raise _Bad(message)
    return number


def _parse_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", ""):
        return False
    if isinstance(value, list) and len(value) <= 1 and all(isinstance(v, str) for v in value):
        return bool(value)  # a one-option dcc.Checklist: [] or ["on"]
    raise _Bad(f"{name} must be true or false, got {_short(value)}.")


def _parse_choice(name: str, value: object) -> str:
    choices = _CHOICES[name]
    if isinstance(value, str) and value in choices:
        return value
    if name == "preprocess" and value == "standardize":
        return "standardise"
    raise _Bad(f"{name} must be one of {', '.join(choices)}, got {_short(value)}.")


def _parse_widths(value: object) -> list[int]:
    message = (f"widths must be a list of at most {LIMITS.MAX_DEPTH} hidden-layer widths, "
               f"each a whole number from 1 to {LIMITS.MAX_WIDTH} (e.g. 16, 16), "
               f"got {_short(value)}.")
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise _Bad(message)
        text = value.strip().strip("[]()")
        items: list = [t for t in re.split(r"[,\s;x×]+", text) if t] if text else []
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise _Bad(message)
    if len(items) > LIMITS.MAX_DEPTH:
        raise _Bad(f"at most {LIMITS.MAX_DEPTH} hidden layers are allowed, got {len(items)}.")
    return [_whole_number(item, 1, LIMITS.MAX_WIDTH, message) for item in items]


def _whole_number(item: object, low: int, high: int, message: str) -> int:
    """``item`` (a number or numeric text) as an int in [low, high]; ``_Bad(message)``."""
    try:
        number = _as_number(item)
    except _Bad:
        raise _Bad(message) from None
    if isinstance(number, float):
        if not math.isfinite(number) or number != math.floor(number) or abs(number) > 1e18:
            raise _Bad(message)
        number = int(number)
    if not low <= number <= high:
        raise _Bad(message)
    return number


def _parse_dataset(value: object) -> str:
    if isinstance(value, str) and (value in BUILTIN_DATASETS or _UPLOAD_RE.match(value)):
        if value.startswith("upload:") and upload_info(value) is None:
            raise _Bad("the uploaded dataset is no longer on the server; upload the file again.")
        return value
    raise _Bad(f"dataset must be one of {', '.join(BUILTIN_DATASETS)} or an uploaded file, "
               f"got {_short(value)}.")


def _parse_field(name: str, value: object):
    if name in _CHOICES:
        return _parse_choice(name, value)
    if name in _INTS:
        return _parse_int(name, value)
    if name in _FLOATS:
        return _parse_float(name, value)
    if name in _BOOLS:
        return _parse_bool(name, value)
    if name == "widths":
        return _parse_widths(value)
    if name == "dataset":
        return _parse_dataset(value)
    if name == "race":
        return format_racers(parse_racers(value))
    if name == "checkpoints":
        steps = parse_checkpoints(value)
        return ", ".join(map(str, steps)) if steps else ""
    raise AssertionError(name)  # pragma: no cover - DEFAULTS and the parsers disagree


def parse_racers(value: object) -> list[tuple[str, float, float | None]]:
    """``[(optimiser, step size, momentum or None), …]`` from text like
    ``"gd 0.05, momentum 0.02 0.99, adam 0.01"``.

    Entries are separated by commas or semicolons; each is an optimiser name, a step size
    and, for ``momentum`` / ``nesterov`` only, an optional momentum β in [0, 1) (None: the
    settings' momentum), separated by spaces, ``:`` or ``=``. 1 to ``MAX_RACERS`` entries.
    """
    names = _CHOICES["optimizer"]
    message = (f"race must list 1 to {LIMITS.MAX_RACERS} racers as 'optimiser step size', "
               f"comma-separated, with a momentum after a momentum or nesterov racer's step "
               f"size if it differs from the setting (optimisers: {', '.join(names)}; e.g. "
               f"gd 0.05, momentum 0.02 0.99, adam 0.01), got {_short(value)}.")
    if not isinstance(value, str) or len(value) > MAX_RACE_TEXT:
        raise _Bad(message)
    entries = [e.strip() for e in re.split(r"[,;]", value) if e.strip()]
    if not 1 <= len(entries) <= LIMITS.MAX_RACERS:
        raise _Bad(message)
    racers = []
    for entry in entries:
        parts = [t for t in re.split(r"[\s:=]+", entry) if t]
        name = parts[0].lower() if parts else ""
        heavy = name in ("momentum", "nesterov")
        if name not in names or not 2 <= len(parts) <= (3 if heavy else 2):
            raise _Bad(message)
        try:
            lr, *beta = (float(_as_number(p)) for p in parts[1:])
        except (_Bad, OverflowError):
            raise _Bad(message) from None
        if not (math.isfinite(lr) and 0 < lr <= MAX_LR):
            raise _Bad(f"each racer's step size must be greater than 0 and at most {MAX_LR:g}, "
                       f"got {parts[1][:20]!r}.")
        if beta and not (math.isfinite(beta[0]) and 0 <= beta[0] < 1):
            raise _Bad(f"a racer's momentum must be at least 0 and below 1, "
                       f"got {parts[2][:20]!r}.")
        racers.append((name, lr, beta[0] + 0.0 if beta else None))  # + 0.0: no −0
    return racers


def format_racers(racers: list[tuple[str, float, float | None]]) -> str:
    """The canonical text of :func:`parse_racers`' result (what the URL and keys hold)."""
    return ", ".join(f"{name} {lr!r}" + ("" if beta is None else f" {beta!r}")
                     for name, lr, beta in racers)


def parse_checkpoints(value: object) -> list[int]:
    """Three distinct path steps ``[s0, s1, s2]`` from text like ``"0, 400, 2000"``; ``[]``
    for empty text (the default plane: init, slowest point, end)."""
    message = ("checkpoints must be three different path steps, e.g. 0, 400, 2000 (or empty "
               f"for init, slowest point, end), got {_short(value)}.")
    if value is None:
        return []
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise _Bad(message)
    items = [t for t in re.split(r"[,;\s]+", value.strip()) if t]
    if not items:
        return []
    if len(items) != 3:
        raise _Bad(message)
    steps = [_whole_number(item, 0, LIMITS.MAX_STEPS, message) for item in items]
    if len(set(steps)) != 3:
        raise _Bad(message)
    return steps


# --------------------------------------------------------------------------- datasets


def cache_dir() -> Path:
    """Landscape's cache folder, as :func:`compute._backend.cache_dir` (created on demand).

    ``$LANDSCAPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/landscape`` or ``~/.cache/landscape``.
    """
    root = os.environ.get("LANDSCAPE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "landscape")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def upload_dir() -> Path:
    """Where uploaded datasets live: ``<cache>/uploads/<sha256>.{npz,csv,json}``."""
    path = cache_dir() / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def upload_info(dataset: str) -> dict | None:
    """The stored description ``{rows, d_x, d_y, targets, filename}`` of an upload, or None."""
    if not isinstance(dataset, str) or not _UPLOAD_RE.match(dataset):
        return None
    path = upload_dir() / f"{dataset.split(':', 1)[1]}.json"
    try:
        info = json.loads(path.read_text())
        rows, d_x, d_y = int(info["rows"]), int(info["d_x"]), int(info["d_y"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    targets = info.get("targets") if info.get("targets") in ("one_hot", "signed") else "real"
    return {"rows": rows, "d_x": d_x, "d_y": d_y, "targets": targets,
            "filename": str(info.get("filename", ""))[:MAX_TEXT]}


def full_batch_rows(settings: Mapping, rows: int, d_x: int, d_y: int) -> int:
    """Rows full-batch work (Hessians, full-batch paths) touches: a deep linear net with the
    squared loss runs on its d_x + d_y sufficient rows (``compute.sufficient_data``)."""
    return LIMITS.full_batch_rows(settings.get("model"), settings.get("loss"), rows, d_x, d_y)


def path_rows(settings: Mapping, rows: int, d_x: int, d_y: int) -> int:
    """Rows one step of a path touches: :func:`full_batch_rows` for a full-batch path;
    minibatch paths record the loss on all m samples every step."""
    return LIMITS.path_rows(settings.get("model"), settings.get("loss"),
                            settings.get("optimizer"), settings.get("batch"), rows, d_x, d_y)


def dataset_shape(settings: Mapping) -> tuple[int, int, int, str]:
    """``(rows m, d_x, d_y, task)`` of the dataset that clean ``settings`` describe.

    ``task`` is "regression" or "classification" (for an upload: classification when its
    targets are one-hot rows or one ±1 column). Raises ``_Bad`` for impossible combinations.
    """
    name = settings["dataset"]
    if name.startswith("upload:"):
        info = upload_info(name)
        if info is None:
            raise _Bad("the uploaded dataset is no longer on the server; upload it again.")
        task = "classification" if info["targets"] in ("one_hot", "signed") else "regression"
        return info["rows"], info["d_x"], info["d_y"], task
    task, d_x, classes, rows = BUILTIN_DATASETS[name]
    n = settings.get("n_samples")
    if name == "xor":
        rows = 4 if n is None else n
    elif rows is None:
        rows = _DEFAULT_ROWS if n is None else n
    if task == "regression":
        d_y = _LINEAR_TEACHER_DY if name == "linear_teacher" else 1
    else:
        d_y = 1 if (settings.get("signed_targets") and classes == 2) else classes
    return rows, d_x, d_y, task


def n_params(layer_sizes: list[int], bias: bool) -> int:
    """Parameter count of a net with ``layer_sizes = [d_x, d_1, …, d_y]``."""
    pairs = zip(layer_sizes[:-1], layer_sizes[1:], strict=True)
    return sum(a * b + (b if bias else 0) for a, b in pairs)


# --------------------------------------------------------------------------- validation


def validate_settings(raw: object) -> tuple[dict, dict[str, str]]:
    """Clean settings (defaults filled) and ``{field: message}`` for what was wrong.

    Never raises. Unknown keys are ignored; a field whose value is unusable gets its default
    (or the nearest value that fits the combination checks) and a message. The returned
    settings are always within the limits of :mod:`compute._limits` and the work budgets.
    """
    errors: dict[str, str] = {}
    clean = _copy_defaults()
    if not isinstance(raw, Mapping):
        errors["settings"] = "the settings must be an object of named fields."
        return clean, errors
    try:
        items = list(itertools.islice(raw.items(), 10_000))
    except Exception:  # noqa: BLE001 - a hostile Mapping
        errors["settings"] = "the settings could not be read."
        return clean, errors
    given = {}
    for key, value in items:
        if isinstance(key, str) and key in DEFAULTS:
            given[key] = value
    for name, value in given.items():
        try:
            clean[name] = _parse_field(name, value)
        except _Bad as exc:
            errors[name] = str(exc) or f"{name} has an unusable value."
        except Exception:  # noqa: BLE001 - never let hostile input escape as a 500
            errors[name] = f"{name} has an unusable value {_short(value)}."
    try:
        _check_combinations(clean, errors)
    except Exception:  # noqa: BLE001 - last resort: the defaults are a valid combination
        errors.setdefault("settings", "these settings could not be combined; "
                                      "the defaults are shown.")
        clean = _copy_defaults()
    return clean, errors


def _copy_defaults() -> dict:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in DEFAULTS.items()}


def _check_combinations(s: dict, errors: dict[str, str]) -> None:
    """Cross-field checks; each failure fixes the named field to a safe value."""

    def fail(field: str, message: str, safe) -> None:
        errors.setdefault(field, message)
        s[field] = safe

    if s["dataset"] == "linear_teacher" and s["n_samples"] is not None \
            and s["n_samples"] < BUILTIN_DATASETS["linear_teacher"][1]:
        fail("n_samples", "linear_teacher needs n_samples of at least 8 (its input dimension) "
                          "so that XᵀX is full rank.", None)
    if s["signed_targets"] and s["dataset"] in BUILTIN_DATASETS \
            and BUILTIN_DATASETS[s["dataset"]][2] not in (0, 2):
        fail("signed_targets", f"{s['dataset']} has {BUILTIN_DATASETS[s['dataset']][2]} "
                               "classes; ±1 targets need exactly 2, so use one-hot targets.",
             False)
    try:
        rows, d_x, d_y, task = dataset_shape(s)
    except _Bad as exc:
        fail("dataset", str(exc), DEFAULTS["dataset"])
        rows, d_x, d_y, task = dataset_shape(s)
    if s["loss"] == "cross_entropy" and task != "classification":
        fail("loss", f"cross-entropy needs class labels, but {_dataset_label(s)} is a regression "
                     "dataset; use the squared loss or a classification dataset.", "squared")

    bias = s["bias"] and s["model"] == "mlp"
    if max(d_x, d_y) > LIMITS.MAX_WIDTH:
        fail("dataset", f"the data have {max(d_x, d_y)} columns; the limit is "
                        f"{LIMITS.MAX_WIDTH}.", DEFAULTS["dataset"])
        rows, d_x, d_y, task = dataset_shape(s)
    P = n_params([d_x, *s["widths"], d_y], bias)
    if P > LIMITS.MAX_PARAMS:
        fail("widths", f"these widths give {P:,} parameters; the limit is "
                       f"{LIMITS.MAX_PARAMS:,}: use fewer or narrower layers.", [4, 4])
        P = n_params([d_x, *s["widths"], d_y], bias)

    if s["batch"] is not None and s["batch"] > rows:
        fail("batch", f"batch must be at most the number of samples ({rows}), "
                      f"got {s['batch']}.", None)
    if s["spectrum_method"] == "exact" and P > LIMITS.MAX_PARAMS_EXACT_HESSIAN:
        fail("spectrum_method", f"the exact Hessian is limited to "
                                f"{LIMITS.MAX_PARAMS_EXACT_HESSIAN:,} parameters (this model has "
                                f"{P:,}); use lanczos or auto.", "auto")

    work = max(rows, 1) * max(P, 1)
    step_work = max(path_rows(s, rows, d_x, d_y), 1) * max(P, 1)
    # λ tracking costs gradient evaluations too (landscape_app.tasks.lambda_method's choice)
    steps = max(1, int(MAX_PATH_WORK // LIMITS.path_step_work(
        path_rows(s, rows, d_x, d_y), P, s["lambda_every"], LIMITS.lambda_evaluations(P))))
    if s["steps"] > steps:
        fail("steps", f"{s['steps']:,} steps of this model on {rows:,} samples is too much work "
                      f"for one request; use at most {steps:,} steps (or a smaller model or "
                      "dataset).", steps)
    # After the steps budget, which may lower steps: a selected step beyond the new steps
    # (and a 'selected' centre that loses its point) is reported, not silently dropped.
    if s["selected_step"] is not None and s["selected_step"] > s["steps"]:
        fail("selected_step", f"the selected step must be between 0 and steps ({s['steps']}), "
                              f"got {s['selected_step']}.", None)
    if (s["selected_alpha"] is None) != (s["selected_beta"] is None):
        missing = "selected_beta" if s["selected_beta"] is None else "selected_alpha"
        other = "selected_alpha" if missing == "selected_beta" else "selected_beta"
        fail(missing, f"{missing} is needed with {other}: a point of the plane has both "
                      "coordinates (or leave both empty).", None)
        fail(other, f"{other} needs {missing} too: a point of the plane has both "
                    "coordinates (or leave both empty).", None)
    if s["center"] == "selected" and s["selected_step"] is None \
            and s["selected_alpha"] is None:
        fail("center", "centre 'selected' needs a selected point: click a point of the path "
                       "or of the contour first.", "final")
    grid = max(MIN_GRID, int(math.isqrt(int(MAX_SURFACE_WORK // work))))
    if s["grid"] > grid:
        fail("grid", f"a {s['grid']}×{s['grid']} grid of this model on {rows:,} samples is too "
                     f"much work for one request; use a grid of at most {grid}.", grid)
    n = max(1, int(MAX_STARTS_WORK // (s["steps"] * step_work)))
    if s["n_starts"] > n:
        fail("n_starts", f"{s['n_starts']} starts × {s['steps']:,} steps is too much work for "
                         f"one request; use at most {n} starts or fewer steps.", n)
    racers = parse_racers(s["race"])
    race_work = max(path_rows({**s, "optimizer": name}, rows, d_x, d_y) for name, *_ in racers)
    if len(racers) * s["steps"] * race_work * max(P, 1) > MAX_STARTS_WORK:
        fail("race", f"{len(racers)} racers × {s['steps']:,} steps is too much work for one "
                     "request; use fewer racers or fewer steps.", DEFAULTS["race"])
    if any(c > s["steps"] for c in parse_checkpoints(s["checkpoints"])):
        fail("checkpoints", f"checkpoints must be steps between 0 and steps ({s['steps']}), "
                            f"got {s['checkpoints']}.", "")


def _dataset_label(s: Mapping) -> str:
    return "the uploaded file" if s["dataset"].startswith("upload:") else s["dataset"]


# --------------------------------------------------------------------------- URL state


def settings_to_query(settings: Mapping) -> str:
    """The URL query string (no leading ``?``) of the fields that differ from DEFAULTS.

    Lists are comma-separated, None is empty, booleans are ``true``/``false``, floats use
    Python's shortest round-trip repr; :func:`settings_from_query` inverts it.
    """
    pairs = []
    for name, default in DEFAULTS.items():
        if name not in settings or settings[name] == default:
            continue
        pairs.append((name, _encode(settings[name])))
    return urlencode(pairs)


def _encode(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_encode(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def settings_from_query(query: str) -> dict:
    """Raw settings from a URL query (``?a=1&b=…`` or without ``?``): only the keys present.

    Values are typed where the schema says how (ints, floats, booleans, lists, None) and left
    as strings otherwise, so :func:`validate_settings` can report them. Never raises.
    """
    if not isinstance(query, str):
        return {}
    try:
        parsed = parse_qs(query[:8192].lstrip("?"), keep_blank_values=True,
                          max_num_fields=len(DEFAULTS) * 4)
    except ValueError:
        return {}
    raw: dict = {}
    for name, values in parsed.items():
        if name not in DEFAULTS or not values:
            continue
        text = values[-1]
        if name == "widths":
            raw[name] = [_try_number(t) for t in text.split(",") if t.strip()]
        elif name in _BOOLS:
            raw[name] = text
        elif text == "" and (name in _INTS and _INTS[name][2] or name in _FLOATS
                             and _FLOATS[name][4]):
            raw[name] = None
        elif name in _INTS or name in _FLOATS:
            raw[name] = _try_number(text)
        else:
            raw[name] = text
    return raw


def _try_number(text: str):
    try:
        return _as_number(text)
    except _Bad:
        return text


# --------------------------------------------------------------------------- cache keys

KEY_VERSION = 1  # bump when a task's payload changes meaning

_PROBLEM_FIELDS = ("model", "widths", "activation", "bias", "loss", "dataset", "n_samples",
                   "noise", "data_seed", "preprocess", "signed_targets", "init", "init_scale",
                   "seed", "precision")
_PATH_FIELDS = ("optimizer", "lr", "steps", "batch", "momentum")
_PLANE_FIELDS = ("plane", "span", "center", "selected_step", "checkpoints")
_PLANE_POINT_FIELDS = ("selected_alpha", "selected_beta")


def compute_fields(task: str, settings: Mapping) -> dict:
    """The settings that change the result of ``task`` (what :func:`canonical_key` hashes).

    Display-only fields (log_scale) never count; for a deep linear model the activation and
    bias (which it ignores) do not count.
    """
    names = list(_PROBLEM_FIELDS)
    plane_needs_path = settings.get("plane") in ("pca", "points", "action")
    center_needs_path = settings.get("center") in ("final", "selected")
    if task == "path":
        names += [*_PATH_FIELDS, "lambda_every"]
    elif task in ("surface", "cut", "index_map", "honest_slice"):
        names += [*_PLANE_FIELDS, *_PATH_FIELDS]
        names += {"index_map": ["imap_grid"], "honest_slice": []}.get(task, ["grid"])
        if settings.get("plane") in ("hessian", "action"):
            names += ["spectrum_method"]
        if not (plane_needs_path or center_needs_path or task in ("cut", "honest_slice")):
            names = [n for n in names if n not in _PATH_FIELDS]
        if settings.get("center") == "selected":
            names += _PLANE_POINT_FIELDS
        else:
            names.remove("selected_step")
        if settings.get("plane") != "points":
            names.remove("checkpoints")
    elif task in ("spectrum", "critical_point"):
        names += [*_PATH_FIELDS, "selected_step", "spectrum_method", "k", *_PLANE_POINT_FIELDS]
        if has_plane_point(settings):  # the point lies on the plane: its fields count
            names += ["plane", "span", "center"]
    elif task == "many_starts":
        names += [*_PATH_FIELDS, "n_starts"]
    elif task == "theory":  # L*, and the gap of the path's final point to it
        names += _PATH_FIELDS
    elif task == "race":  # every racer starts at the settings' initial point
        names += ["race", "steps", "momentum", "batch"]
    elif task == "balancedness":
        names += _PATH_FIELDS
    elif task == "connect":  # minima from two starts: the settings' seed and seed_b
        names += [*_PATH_FIELDS, "seed_b", "connect_method"]
    elif task == "lanczos_diagnostics":
        names += [*_PATH_FIELDS, "selected_step", "k", "probes", *_PLANE_POINT_FIELDS]
        if has_plane_point(settings):
            names += ["plane", "span", "center"]
    if settings.get("model") == "linear":
        names = [n for n in names if n not in ("activation", "bias")]
    return {n: settings.get(n) for n in names}


def has_plane_point(settings: Mapping) -> bool:
    """Whether the settings select a point (α, β) of the plane (both coordinates set)."""
    return settings.get("selected_alpha") is not None \
        and settings.get("selected_beta") is not None


def _canonical(value: object):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return repr(value)
        rounded = float(f"{value:.12g}")
        return int(rounded) if rounded.is_integer() and abs(rounded) < 2**53 else rounded
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    return repr(value)


def canonical_key(task: str, settings: Mapping) -> str:
    """``landscape:<task>:<sha256>`` of the sorted JSON of the task's compute fields.

    Floats are rounded to 12 significant digits (0.1 and 0.1000000000001 share a key) and
    integral floats hash as ints (2.0 as 2); never built from ``str()`` of arrays.
    """
    body = {"v": KEY_VERSION, "task": task,
            "settings": _canonical(compute_fields(task, settings))}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"landscape:{task}:{hashlib.sha256(text.encode()).hexdigest()}"
