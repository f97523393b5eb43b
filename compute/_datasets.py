"""Datasets: the built-in examples and user files (.npz / .csv), as float64 numpy arrays.

Conventions (THEORY.md): ``X`` is m × d_x and ``Y`` is m × d_y, one sample per row.
Everything here is host-side numpy, float64, and deterministic given ``seed``
(``np.random.default_rng(seed)``). Every bad input raises :class:`InputError` with one
sentence the user can act on.

Built-ins (:data:`BUILTIN_DATASETS`): a linear teacher for the deep-linear theory, the
usual 2-D classification toys, the exact datasets of Świrszcz, Czarnecki & Pascanu (2016)
(THEORY.md §3) and the real Iris data.

Iris: ``compute/data/iris.csv`` is Fisher's (1936) Iris data (150 samples, 4 features,
3 classes) as shipped in scikit-learn 1.9.1 (``sklearn/datasets/data/iris.csv``, BSD-3-Clause
package; the data themselves come from the UCI Machine Learning Repository, Fisher 1936,
public domain / CC BY 4.0), rewritten as a plain CSV with the header
``sepal_length,sepal_width,petal_length,petal_width,species``. scikit-learn's copy carries
the two corrections (samples 35 and 38) that make it match Fisher's paper.

User files are parsed from memory and never executed: ``.npz`` goes through
``np.load(..., allow_pickle=False)`` after its array headers have been checked against the
size limits, ``.csv`` through the :mod:`csv` module.
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compute._errors import InputError
from compute._limits import (
    MAX_COLUMN_SQUARES,
    MAX_FEATURES,
    MAX_NOISE,
    MAX_SAMPLES,
    MAX_UPLOAD_BYTES,
    check_int,
)

__all__ = [
    "BUILTIN_DATASETS",
    "PREPROCESSING",
    "Dataset",
    "dataset_from_arrays",
    "load_dataset",
    "load_dataset_bytes",
    "load_npz_file",
]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset ready for the models: float64 arrays, one sample per row.

    ``X`` is (m, d_x), ``Y`` is (m, d_y); ``labels`` is the (m,) int64 class index for
    classification data (else ``None``). Equality is identity (arrays do not compare as
    booleans).
    """

    name: str
    X: np.ndarray
    Y: np.ndarray
    task: str
    labels: np.ndarray | None
    description: str

    @property
    def n_samples(self) -> int:
        """m, the number of rows."""
        return int(self.X.shape[0])

    @property
    def d_x(self) -> int:
        """Number of input columns."""
        return int(self.X.shape[1])

    @property
    def d_y(self) -> int:
        """Number of target columns."""
        return int(self.Y.shape[1])


BUILTIN_DATASETS: dict[str, str] = {
    "linear_teacher": "Regression Y = X Aᵀ + noise from a random linear teacher with "
    "distinct singular values (deep-linear theory; default 200 × 8 → 4).",
    "xor": "The four XOR points (0,0),(1,1) → class 0 and (0,1),(1,0) → class 1; "
    "noisy copies when n_samples is set.",
    "two_moons": "Two interleaving half-circles, 2 classes (default 200 points, noise 0.1).",
    "circles": "A circle inside a circle (radii 1 and 0.5), 2 classes "
    "(default 200 points, noise 0.1).",
    "spirals": "Two interleaved spiral arms, 2 classes (default 200 points, noise 0.1).",
    "blobs": "Three Gaussian blobs around a triangle of radius 2, 3 classes "
    "(default 200 points, blob std 0.5).",
    "swirszcz_d1": "Świrszcz et al. D1: 5 scalar points where a 1-unit ReLU net has a bad "
    "local minimum (loss 18 vs global 14).",
    "swirszcz_d2": "Świrszcz et al. D2: 6 scalar points where a 2-unit ReLU net has a bad "
    "local minimum (loss 8/3 vs global 0).",
    "swirszcz_d3": "Świrszcz et al. D3: 6 scalar points where a 3-unit ReLU net has a worse "
    "local minimum (loss 2/3 vs 1/6).",
    "jellyfish": "Świrszcz et al. 'jellyfish': 4 points in 2-D, 2 classes, that small ReLU "
    "nets often fail to fit.",
    "iris": "Fisher's Iris data: 150 flowers, 4 measurements (cm), 3 species.",
}

PREPROCESSING: tuple[str, ...] = ("none", "standardise", "whiten")

_DEFAULT_SAMPLES = 200
_DEFAULT_NOISE = {
    "linear_teacher": 0.1,
    "xor": 0.1,
    "two_moons": 0.1,
    "circles": 0.1,
    "spirals": 0.1,
    "blobs": 0.5,
}
_IRIS_PATH = Path(__file__).resolve().parent / "data" / "iris.csv"
_IRIS_SPECIES = ("setosa", "versicolor", "virginica")

# THEORY.md §3, exactly: (x, y) pairs, scalar input and target.
_SWIRSZCZ = {
    "swirszcz_d1": [(5, 2), (4, 1), (3, 0), (1, -3), (-1, 3)],
    "swirszcz_d2": [(-1, 5), (0, 0), (1, -1), (10, -3), (11, -4), (12, -5)],
    "swirszcz_d3": [(-1, 3), (0, 0), (1, -1), (10, -3), (11, -4), (12, -6)],
}
_JELLYFISH_POS = [(1.0, 0.0), (0.2, 0.6)]
_JELLYFISH_NEG = [(0.0, 1.0), (0.6, 0.2)]


# --------------------------------------------------------------------------- public API


def load_dataset(
    source: str,
    *,
    seed: int = 0,
    n_samples: int | None = None,
    noise: float | None = None,
    d_x: int | None = None,
    d_y: int | None = None,
    one_hot: bool = True,
    preprocess: str = "none",
    target_columns: Sequence[str] | None = None,
) -> Dataset:
    """Load a built-in dataset by name, or a user ``.npz`` / ``.csv`` file by path.

    Returns X (m, d_x) and Y (m, d_y), float64. ``n_samples`` and ``noise`` apply to the
    synthetic built-ins (fixed ones ignore them); ``d_x``/``d_y`` only to
    ``linear_teacher``; ``one_hot`` only to classification built-ins (one-hot m × k, or
    m × 1 of ±1 when k == 2); ``target_columns`` only to ``.csv`` files (default: the last
    column). ``preprocess`` ("none", "standardise", "whiten") transforms X only.
    """
    if not isinstance(source, str) or not source.strip():
        raise InputError("The dataset must be a built-in name or a path to a .npz or .csv file.")
    preprocess = _check_preprocess(preprocess)
    rng = _rng(seed)
    if n_samples is not None:
        n_samples = check_int("n_samples", n_samples, 1, MAX_SAMPLES)
    if noise is not None:
        noise = _check_noise(noise)

    if source in BUILTIN_DATASETS:
        ds = _builtin(source, rng, n_samples, noise, d_x, d_y, one_hot)
    else:
        path = Path(source).expanduser()
        suffix = path.suffix.lower()
        looks_like_path = bool(suffix) or "/" in source or "\\" in source or path.exists()
        if not looks_like_path:
            names = ", ".join(BUILTIN_DATASETS)
            raise InputError(f"Unknown built-in dataset {source!r}; choose one of: {names}.")
        if suffix not in (".npz", ".csv"):
            raise InputError(
                f"Unsupported file type {suffix or '(no extension)'!r} for {path.name!r}; "
                "upload a .npz or .csv file."
            )
        if not path.is_file():
            raise InputError(f"File not found: {str(path)!r}; check the path.")
        size = path.stat().st_size
        _check_upload_size(size, path.name)
        ds = _parse_file(path.read_bytes(), path.name, suffix, target_columns)
    return _apply_preprocess(ds, preprocess)


def load_dataset_bytes(
    data: bytes,
    filename: str,
    *,
    target_columns: Sequence[str] | None = None,
    preprocess: str = "none",
) -> Dataset:
    """Parse an uploaded ``.npz`` / ``.csv`` file held in memory (nothing is executed).

    ``filename`` decides the format by its extension. Returns X (m, d_x), Y (m, d_y),
    float64, task "regression"; the same checks as :func:`load_dataset`.
    """
    preprocess = _check_preprocess(preprocess)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError("The uploaded file content must be bytes.")
    data = bytes(data)
    name = Path(str(filename or "")).name
    suffix = Path(name).suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise InputError(
            f"Unsupported file type {suffix or '(no extension)'!r} for {name!r}; "
            "upload a .npz or .csv file."
        )
    _check_upload_size(len(data), name)
    ds = _parse_file(data, name, suffix, target_columns)
    return _apply_preprocess(ds, preprocess)


def dataset_from_arrays(X: object, Y: object, name: str = "arrays") -> Dataset:
    """Validate in-memory arrays into a regression :class:`Dataset`.

    X must be 2-D (m, d_x); Y is (m, d_y) or a length-m vector (made m × 1). Numbers only,
    finite, 1 ≤ m ≤ MAX_SAMPLES, at most MAX_FEATURES columns each. Returns float64 copies.
    """
    Xa = _as_numeric_array(X, "X", name)
    Ya = _as_numeric_array(Y, "Y", name)
    _check_shapes(Xa.shape, Ya.shape, name)
    if Ya.ndim == 1:
        Ya = Ya.reshape(-1, 1)
    Xf = np.ascontiguousarray(Xa, dtype=np.float64)
    Yf = np.ascontiguousarray(Ya, dtype=np.float64)
    _check_finite(Xf, Yf, name)
    _check_magnitude(Xf, Yf, name)
    m, dx = Xf.shape
    dy = Yf.shape[1]
    return Dataset(
        name=name,
        X=Xf,
        Y=Yf,
        task="regression",
        labels=None,
        description=f"{name}: {m} samples, {dx} input column(s), {dy} target column(s).",
    )


# --------------------------------------------------------------------------- validation


def _check_preprocess(preprocess: object) -> str:
    key = preprocess.lower() if isinstance(preprocess, str) else preprocess
    if key == "standardize":
        key = "standardise"
    if key not in PREPROCESSING:
        raise InputError(
            f"Unknown preprocessing {preprocess!r}; choose one of: {', '.join(PREPROCESSING)}."
        )
    return key


def _check_noise(noise: object) -> float:
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)):
        raise InputError(f"noise must be a number between 0 and {MAX_NOISE:g}, got {noise!r}.")
    value = float(noise)
    if math.isnan(value) or value < 0 or value > MAX_NOISE:
        raise InputError(f"noise must be between 0 and {MAX_NOISE:g} (not negative), got {value}.")
    return value


def _rng(seed: object) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise InputError(f"seed must be a non-negative whole number, got {seed!r}.")
    return np.random.default_rng(int(seed))


def _check_upload_size(size: int, name: str) -> None:
    if size > MAX_UPLOAD_BYTES:
        raise InputError(
            f"{name!r} is too large ({size / 2**20:.1f} MiB); the limit is "
            f"{MAX_UPLOAD_BYTES / 2**20:.0f} MiB."
        )


def _check_dtype(dtype: np.dtype, key: str, name: str) -> None:
    if dtype.hasobject:
        raise InputError(
            f"{key} in {name!r} is an object (pickled) array, which is not accepted; "
            "save plain numeric arrays."
        )
    if dtype.kind not in "biuf":
        raise InputError(
            f"{key} in {name!r} is not numeric (dtype {dtype}); it must hold real numbers."
        )


def _as_numeric_array(value: object, key: str, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise InputError(f"{key} in {name!r} is not a rectangular array of numbers.") from exc
    _check_dtype(arr.dtype, key, name)
    return arr


def _check_shapes(x_shape: tuple[int, ...], y_shape: tuple[int, ...], name: str) -> None:
    """Check shapes (before any data are read); Y may be 1-D."""
    if len(x_shape) != 2:
        raise InputError(
            f"X in {name!r} must be a 2-D array (m samples × d_x features), "
            f"got {len(x_shape)}-D shape {tuple(x_shape)}."
        )
    if len(y_shape) not in (1, 2):
        raise InputError(
            f"Y in {name!r} must be a 2-D array (m × d_y) or a length-m vector, "
            f"got {len(y_shape)}-D shape {tuple(y_shape)}."
        )
    m = x_shape[0]
    if y_shape[0] != m:
        raise InputError(
            f"X and Y in {name!r} have different row counts ({m} and {y_shape[0]}); "
            "they need one row per sample."
        )
    if m == 0:
        raise InputError(f"{name!r} has zero rows; it needs at least one sample.")
    if m > MAX_SAMPLES:
        raise InputError(f"{name!r} has {m} rows; the limit is {MAX_SAMPLES} samples.")
    dy = y_shape[1] if len(y_shape) == 2 else 1
    for key, d in (("X", x_shape[1]), ("Y", dy)):
        if d == 0:
            raise InputError(f"{key} in {name!r} has zero columns; it needs at least one.")
        if d > MAX_FEATURES:
            raise InputError(
                f"{key} in {name!r} has {d} columns; the limit is {MAX_FEATURES} features."
            )


def _check_finite(
    X: np.ndarray, Y: np.ndarray, name: str, columns: Sequence[str] | None = None
) -> None:
    """InputError naming the first row (1-based) holding a NaN or inf, in X or Y."""
    bad_x = ~np.isfinite(X)
    bad_y = ~np.isfinite(Y)
    bad_rows = bad_x.any(axis=1) | bad_y.any(axis=1)
    if not bad_rows.any():
        return
    i = int(np.argmax(bad_rows))
    if bad_x[i].any():
        key, j, offset = "X", int(np.argmax(bad_x[i])), 0
    else:
        key, j, offset = "Y", int(np.argmax(bad_y[i])), X.shape[1]
    label = repr(columns[offset + j]) if columns is not None else f"{key}[:, {j}]"
    raise InputError(
        f"{name!r} has a NaN or infinite value in row {i + 1}, column {label}; remove or fill it."
    )


def _check_magnitude(
    X: np.ndarray, Y: np.ndarray, name: str, columns: Sequence[str] | None = None
) -> None:
    """InputError naming the first column whose values are so large that its sum of squares
    (a diagonal entry of XᵀX, a term of the squared loss) overflows float32 arithmetic."""
    for key, A, offset in (("X", X, 0), ("Y", Y, X.shape[1])):
        with np.errstate(over="ignore", invalid="ignore"):
            squares = np.einsum("ij,ij->j", A, A)
        bad = ~(squares < MAX_COLUMN_SQUARES)
        if bad.any():
            j = int(np.argmax(bad))
            label = repr(columns[offset + j]) if columns is not None else f"{key}[:, {j}]"
            biggest = float(np.max(np.abs(A[:, j])))
            raise InputError(
                f"Column {label} of {name!r} has values up to {biggest:.3g}, too large to "
                "compute with (their squares overflow float32 and XᵀX); rescale it to "
                "smaller units."
            )


# --------------------------------------------------------------------------- file parsing


def _parse_file(
    data: bytes, name: str, suffix: str, target_columns: Sequence[str] | None
) -> Dataset:
    if suffix == ".npz":
        X, Y = _read_npz(data, name)
        return dataset_from_arrays(X, Y, name=name)
    return _read_csv(data, name, target_columns)


def _read_npz(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = _npz_arrays(data, name, "X=..., Y=...", ("X", "Y"), _check_xy_headers)
    return arrays["X"], arrays["Y"]


def _check_xy_headers(shapes: dict[str, tuple[int, ...]], name: str) -> None:
    _check_shapes(shapes["X"], shapes["Y"], name)


def load_npz_file(
    path: str,
    *,
    what: str,
    example: str,
    keys: Sequence[str] | None = None,
    max_elements: int,
    max_total: int,
    max_arrays: int,
    why: str,
) -> dict[str, np.ndarray]:
    """Numeric arrays of a user ``.npz`` file other than a dataset (weights, plane points).

    The same reading as a dataset's: size cap, a real zip archive, every array's header
    checked before its data are read, never unpickled. ``keys``: the arrays to read (all
    must be there; default: every array in the file). ``what`` names the file in "not found"
    and ``example`` shows the ``numpy.savez`` call that writes a good one. Caps, from the
    headers (a small zero-filled archive can declare gigabytes): at most ``max_arrays``
    arrays, ``max_elements`` numbers in any one and ``max_total`` in all; ``why`` says
    which limit they follow from.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"{what} not found: {path}")
    _check_upload_size(file.stat().st_size, str(path))

    def check(shapes: dict[str, tuple[int, ...]], name: str) -> None:
        if len(shapes) > max_arrays:
            raise InputError(f"{name!r} holds {len(shapes)} arrays; a {what} holds at most "
                             f"{max_arrays} ({why}).")
        sizes = {key: math.prod(shape) for key, shape in shapes.items()}
        for key, size in sizes.items():
            if size > max_elements:
                raise InputError(f"{key} in {name!r} has {size:,} numbers (shape "
                                 f"{shapes[key]}); the limit is {max_elements:,} ({why}).")
        if sum(sizes.values()) > max_total:
            raise InputError(f"{name!r} holds {sum(sizes.values()):,} numbers; the limit is "
                             f"{max_total:,} ({why}).")

    return _npz_arrays(file.read_bytes(), str(path), example, keys, check)


def _npz_arrays(data: bytes, name: str, example: str, keys: Sequence[str] | None,
                check_headers) -> dict[str, np.ndarray]:
    """``{key: array}`` of an .npz held in memory. ``check_headers(shapes, name)`` sees every
    shape (from the headers) before any data are decompressed."""
    hint = f"save it with numpy.savez(path, {example})."
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(f"{name!r} is not a valid .npz archive; {hint}") from exc
    with zf:
        members = {}
        for member in zf.namelist():
            members[member[:-4] if member.endswith(".npy") else member] = member
        if keys is None:
            keys = list(members)
        missing = [k for k in keys if k not in members]
        if missing or not keys:
            held = ", ".join(sorted(members)) or "nothing"
            raise InputError(
                f"{name!r} has no array named {' or '.join(missing) or 'at all'} "
                f"(it holds: {held}); {hint}"
            )
        shapes = {key: _npy_header(zf, members[key], key, name) for key in keys}
        if check_headers is not None:
            check_headers(shapes, name)
        arrays = {}
        for key in keys:
            try:
                with zf.open(members[key]) as fp:
                    arrays[key] = np.lib.format.read_array(fp, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise InputError(
                    f"{name!r} is a damaged .npz archive; save it again with numpy.savez."
                ) from exc
    return arrays


def _npy_header(zf: zipfile.ZipFile, member: str, key: str, name: str) -> tuple[int, ...]:
    """Read one .npy header inside the archive: check dtype, return the shape."""
    fmt = np.lib.format
    try:
        with zf.open(member) as fp:
            version = fmt.read_magic(fp)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(fp)
            else:
                raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError) as exc:
        raise InputError(
            f"{key} in {name!r} is not a readable numpy array; save it with numpy.savez."
        ) from exc
    _check_dtype(np.dtype(dtype), key, name)
    return tuple(int(s) for s in shape)


def _looks_numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_csv(data: bytes, name: str, target_columns: Sequence[str] | None) -> Dataset:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{name!r} is not UTF-8 text; save it as a plain UTF-8 .csv file."
        ) from exc
    if "\x00" in text:
        raise InputError(f"{name!r} is not a text file; save it as a plain .csv file.")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        while header is not None and not any(c.strip() for c in header):
            header = next(reader, None)
        if header is None:
            raise InputError(f"{name!r} is empty; it needs a header row and at least one data row.")
        header = [c.strip() for c in header]
        if all(_looks_numeric(c) for c in header):
            raise InputError(
                f"The first row of {name!r} holds numbers; add a header row with column names."
            )
        for j, col in enumerate(header):
            if not col:
                raise InputError(f"Column {j + 1} of {name!r} has an empty name in the header row.")
        dup = sorted({c for c in header if header.count(c) > 1})
        if dup:
            raise InputError(f"{name!r} has duplicate column names: {', '.join(dup)}.")
        if len(header) < 2:
            raise InputError(
                f"{name!r} has only one column; it needs input columns and a target column."
            )

        # Targets.
        if target_columns is None:
            targets = [header[-1]]
        else:
            targets = [target_columns] if isinstance(target_columns, str) else list(target_columns)
            if not targets:
                raise InputError("target_columns must name at least one column.")
            for t in targets:
                if t not in header:
                    raise InputError(
                        f"Unknown target column {t!r} in {name!r}; its columns are: "
                        f"{', '.join(header)}."
                    )
            if len(set(targets)) != len(targets):
                raise InputError("target_columns names the same column twice.")
        x_cols = [c for c in header if c not in targets]
        if not x_cols:
            raise InputError(
                f"Every column of {name!r} is a target; leave at least one input column."
            )
        for key, n in (("X", len(x_cols)), ("Y", len(targets))):
            if n > MAX_FEATURES:
                raise InputError(
                    f"{key} in {name!r} would have {n} columns; "
                    f"the limit is {MAX_FEATURES} features."
                )

        rows: list[list[str]] = []
        ncol = len(header)
        for row in reader:
            if not any(c.strip() for c in row):
                continue
            if len(row) != ncol:
                raise InputError(
                    f"Data row {len(rows) + 1} of {name!r} has {len(row)} cells but the header "
                    f"has {ncol} columns."
                )
            rows.append([c.strip() for c in row])
            if len(rows) > MAX_SAMPLES:
                raise InputError(
                    f"{name!r} has more than {MAX_SAMPLES} rows; "
                    f"the limit is {MAX_SAMPLES} samples."
                )
    except csv.Error as exc:
        raise InputError(f"{name!r} is not a valid CSV file ({exc}).") from exc
    if not rows:
        raise InputError(f"{name!r} has zero data rows; it needs at least one sample.")

    values = _cells_to_float(rows, header, name)
    x_idx = [header.index(c) for c in x_cols]
    y_idx = [header.index(c) for c in targets]
    X = np.ascontiguousarray(values[:, x_idx])
    Y = np.ascontiguousarray(values[:, y_idx])
    _check_finite(X, Y, name, columns=x_cols + targets)
    _check_magnitude(X, Y, name, columns=x_cols + targets)
    m = X.shape[0]
    return Dataset(
        name=name,
        X=X,
        Y=Y,
        task="regression",
        labels=None,
        description=(
            f"{name}: {m} samples; inputs {', '.join(x_cols)}; targets {', '.join(targets)}."
        ),
    )


def _cells_to_float(rows: list[list[str]], header: list[str], name: str) -> np.ndarray:
    """Cells → (m, n) float64; names the first non-numeric cell (1-based data row)."""
    try:
        return np.array(rows, dtype=str).astype(np.float64)
    except ValueError:
        pass
    out = np.empty((len(rows), len(header)), dtype=np.float64)
    for i, row in enumerate(rows):  # slow path, only to find the culprit
        for j, cell in enumerate(row):
            try:
                out[i, j] = float(cell)
            except ValueError:
                shown = repr(cell) if cell else "an empty cell"
                raise InputError(
                    f"Data row {i + 1}, column {header[j]!r} of {name!r} holds {shown}, "
                    "which is not a number; CSV files must contain numbers only."
                ) from None
    return out


# --------------------------------------------------------------------------- preprocessing


def _apply_preprocess(ds: Dataset, preprocess: str) -> Dataset:
    if preprocess == "none":
        return ds
    X = ds.X
    if preprocess == "standardise":
        Xn = _standardise(X)
        note = " Inputs standardised (zero mean, unit variance per column)."
    else:
        Xn = _whiten(X, ds.name)
        note = " Inputs whitened (zero mean, XᵀX/m = I)."
    return Dataset(
        name=ds.name,
        X=Xn,
        Y=ds.Y,
        task=ds.task,
        labels=ds.labels,
        description=ds.description + note,
    )


def _standardise(X: np.ndarray) -> np.ndarray:
    """Zero mean, unit (population) variance per column; constant columns only centred."""
    mean = X.mean(axis=0)
    out = X - mean
    constant = np.ptp(X, axis=0) == 0
    std = out.std(axis=0)
    out[:, constant] = 0.0
    scale = np.where(constant | (std == 0), 1.0, std)
    return out / scale


def _whiten(X: np.ndarray, name: str) -> np.ndarray:
    """Zero mean and XᵀX/m = I via the eigendecomposition of the covariance (ZCA)."""
    m, d = X.shape
    Xc = X - X.mean(axis=0)
    cov = Xc.T @ Xc / m
    w, V = np.linalg.eigh(cov)
    if m <= d or w[-1] <= 0 or w[0] <= 1e-10 * w[-1]:
        raise InputError(
            f"Cannot whiten {name!r}: its centred inputs are rank-deficient "
            "(constant or linearly dependent columns, or fewer samples than columns); "
            "use 'standardise' instead."
        )
    Xw = Xc @ (V / np.sqrt(w)) @ V.T
    # One refinement pass: removes the rounding left by ill-conditioning.
    w2, V2 = np.linalg.eigh(Xw.T @ Xw / m)
    return np.ascontiguousarray(Xw @ (V2 / np.sqrt(w2)) @ V2.T)


# --------------------------------------------------------------------------- built-ins


def _encode(labels: np.ndarray, k: int, one_hot: bool, name: str) -> np.ndarray:
    """Targets from class labels: one-hot (m, k), or (m, 1) of ±1 when k == 2."""
    if one_hot:
        Y = np.zeros((labels.shape[0], k), dtype=np.float64)
        Y[np.arange(labels.shape[0]), labels] = 1.0
        return Y
    if k != 2:
        raise InputError(
            f"{name!r} has {k} classes; ±1 targets (one_hot=False) need exactly 2, "
            "so use one-hot targets."
        )
    return np.where(labels == 1, 1.0, -1.0).reshape(-1, 1)


def _classification(
    name: str, X: np.ndarray, labels: np.ndarray, k: int, one_hot: bool, description: str
) -> Dataset:
    labels = np.asarray(labels, dtype=np.int64)
    return Dataset(
        name=name,
        X=np.ascontiguousarray(X, dtype=np.float64),
        Y=_encode(labels, k, one_hot, name),
        task="classification",
        labels=labels,
        description=description,
    )


def _shuffle(
    rng: np.random.Generator, X: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(X.shape[0])
    return X[perm], labels[perm]


def _builtin(
    name: str,
    rng: np.random.Generator,
    n_samples: int | None,
    noise: float | None,
    d_x: int | None,
    d_y: int | None,
    one_hot: bool,
) -> Dataset:
    desc = BUILTIN_DATASETS[name]
    m = _DEFAULT_SAMPLES if n_samples is None else n_samples
    sd = _DEFAULT_NOISE.get(name, 0.0) if noise is None else noise

    if name == "linear_teacher":
        return _linear_teacher(rng, n_samples, sd, d_x, d_y)

    if name in _SWIRSZCZ:
        pts = np.array(_SWIRSZCZ[name], dtype=np.float64)
        return Dataset(
            name=name,
            X=np.ascontiguousarray(pts[:, :1]),
            Y=np.ascontiguousarray(pts[:, 1:]),
            task="regression",
            labels=None,
            description=desc + " Exact points from Świrszcz, Czarnecki & Pascanu (2016).",
        )

    if name == "jellyfish":
        X = np.array(_JELLYFISH_POS + _JELLYFISH_NEG, dtype=np.float64)
        labels = np.array([1, 1, 0, 0])
        return _classification(name, X, labels, 2, one_hot, desc + " Positive class = label 1.")

    if name == "iris":
        X, labels = _iris()
        return _classification(
            name,
            X,
            labels,
            3,
            one_hot,
            desc + " Labels 0, 1, 2 = setosa, versicolor, virginica "
            "(Fisher 1936, via scikit-learn).",
        )

    if name == "xor":
        corners = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
        corner_labels = np.array([0, 0, 1, 1])
        if n_samples is None and noise is None:
            return _classification(name, corners, corner_labels, 2, one_hot, desc)
        n = 4 if n_samples is None else n_samples
        idx = np.arange(n) % 4
        X = corners[idx] + sd * rng.standard_normal((n, 2))
        X, labels = _shuffle(rng, X, corner_labels[idx])
        note = f" {n} noisy points, noise {sd:g}."
        return _classification(name, X, labels, 2, one_hot, desc + note)

    n1 = m - m // 2  # class 0
    n0 = m // 2  # class 1
    if name == "two_moons":
        t0 = np.linspace(0.0, np.pi, n1)
        t1 = np.linspace(0.0, np.pi, n0)
        A = np.column_stack([np.cos(t0), np.sin(t0)])
        B = np.column_stack([1.0 - np.cos(t1), 0.5 - np.sin(t1)])
        X = np.vstack([A, B])
        labels = np.r_[np.zeros(n1, int), np.ones(n0, int)]
        k = 2
    elif name == "circles":
        t0 = np.linspace(0.0, 2 * np.pi, n1, endpoint=False)
        t1 = np.linspace(0.0, 2 * np.pi, n0, endpoint=False)
        A = np.column_stack([np.cos(t0), np.sin(t0)])
        B = 0.5 * np.column_stack([np.cos(t1), np.sin(t1)])
        X = np.vstack([A, B])
        labels = np.r_[np.zeros(n1, int), np.ones(n0, int)]
        k = 2
    elif name == "spirals":
        t0 = np.linspace(0.05, 1.0, n1)
        t1 = np.linspace(0.05, 1.0, n0)
        turn = 3 * np.pi  # one and a half turns per arm
        A = t0[:, None] * np.column_stack([np.cos(turn * t0), np.sin(turn * t0)])
        B = -t1[:, None] * np.column_stack([np.cos(turn * t1), np.sin(turn * t1)])
        X = np.vstack([A, B])
        labels = np.r_[np.zeros(n1, int), np.ones(n0, int)]
        k = 2
    elif name == "blobs":
        angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
        centres = 2.0 * np.column_stack([np.cos(angles), np.sin(angles)])
        labels = np.arange(m) % 3
        X = centres[labels]
        k = 3
    else:  # pragma: no cover  (BUILTIN_DATASETS and this function disagree)
        raise AssertionError(name)
    X = X + sd * rng.standard_normal(X.shape)
    X, labels = _shuffle(rng, X, labels)
    return _classification(name, X, labels, k, one_hot, desc + f" {m} points, noise {sd:g}.")


def _linear_teacher(
    rng: np.random.Generator, n_samples: int | None, noise: float, d_x: int | None, d_y: int | None
) -> Dataset:
    dx = 8 if d_x is None else check_int("d_x", d_x, 1, MAX_FEATURES)
    dy = 4 if d_y is None else check_int("d_y", d_y, 1, MAX_FEATURES)
    if dy > dx:
        raise InputError(
            f"linear_teacher needs d_y ≤ d_x (got d_y={dy}, d_x={dx}) so that Σ has distinct "
            "eigenvalues; lower d_y or raise d_x."
        )
    m = max(_DEFAULT_SAMPLES, 2 * dx) if n_samples is None else n_samples
    if m < dx:
        raise InputError(
            f"linear_teacher needs n_samples ≥ d_x (got {m} < {dx}) so that XᵀX is full rank."
        )
    # Teacher A = U diag(s) Vᵀ (d_y × d_x) with distinct singular values 3 … 1.
    s = np.linspace(3.0, 1.0, dy) if dy > 1 else np.array([2.0])
    U, _ = np.linalg.qr(rng.standard_normal((dy, dy)))
    V, _ = np.linalg.qr(rng.standard_normal((dx, dy)))
    A = (U * s) @ V.T
    X = rng.standard_normal((m, dx))
    Y = X @ A.T + noise * rng.standard_normal((m, dy))
    return Dataset(
        name="linear_teacher",
        X=X,
        Y=Y,
        task="regression",
        labels=None,
        description=(
            f"Linear teacher: Y = X Aᵀ + noise, {m} samples, d_x={dx}, d_y={dy}, "
            f"noise {noise:g}; A has distinct singular values from 3 to 1, so "
            "Σ = C(XᵀX)⁻¹Cᵀ has distinct eigenvalues."
        ),
    )


def _iris() -> tuple[np.ndarray, np.ndarray]:
    with _IRIS_PATH.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        rows = [r for r in reader if r]
    X = np.array([[float(v) for v in r[:4]] for r in rows], dtype=np.float64)
    labels = np.array([_IRIS_SPECIES.index(r[4]) for r in rows], dtype=np.int64)
    return X, labels
