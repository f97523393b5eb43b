"""Tests of compute._datasets against independent facts (THEORY.md §3, Fisher's Iris, algebra)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from compute import _datasets as datasets_module
from compute._datasets import (
    BUILTIN_DATASETS,
    Dataset,
    dataset_from_arrays,
    load_dataset,
    load_dataset_bytes,
)
from compute._errors import InputError  # noqa: E402
from compute._limits import MAX_FEATURES, MAX_SAMPLES  # noqa: E402

CLASSIFICATION = {
    "xor": 2,
    "two_moons": 2,
    "circles": 2,
    "spirals": 2,
    "blobs": 3,
    "jellyfish": 2,
    "iris": 3,
}
SYNTHETIC = ["linear_teacher", "two_moons", "circles", "spirals", "blobs"]

# THEORY.md §3, typed in again here (x, y).
SWIRSZCZ = {
    "swirszcz_d1": [(5, 2), (4, 1), (3, 0), (1, -3), (-1, 3)],
    "swirszcz_d2": [(-1, 5), (0, 0), (1, -1), (10, -3), (11, -4), (12, -5)],
    "swirszcz_d3": [(-1, 3), (0, 0), (1, -1), (10, -3), (11, -4), (12, -6)],
}


def relu_net_loss(x, y, w, b, v, c):
    """Paper's plain sum Σ_i (Σ_j v_j relu(w_j x_i + b_j) + c − y_i)², scalar input."""
    x = np.asarray(x, float).reshape(-1, 1)
    h = np.maximum(0.0, x * np.asarray(w, float) + np.asarray(b, float))
    pred = h @ np.asarray(v, float) + c
    return float(np.sum((pred - np.asarray(y, float).ravel()) ** 2))


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# ------------------------------------------------------------------ built-ins


def test_builtin_names_in_display_order():
    assert list(BUILTIN_DATASETS) == [
        "linear_teacher",
        "xor",
        "two_moons",
        "circles",
        "spirals",
        "blobs",
        "swirszcz_d1",
        "swirszcz_d2",
        "swirszcz_d3",
        "jellyfish",
        "iris",
    ]
    assert all(isinstance(d, str) and d for d in BUILTIN_DATASETS.values())


@pytest.mark.parametrize(
    "name, shape_x, shape_y",
    [
        ("linear_teacher", (200, 8), (200, 4)),
        ("xor", (4, 2), (4, 2)),
        ("two_moons", (200, 2), (200, 2)),
        ("circles", (200, 2), (200, 2)),
        ("spirals", (200, 2), (200, 2)),
        ("blobs", (200, 2), (200, 3)),
        ("swirszcz_d1", (5, 1), (5, 1)),
        ("swirszcz_d2", (6, 1), (6, 1)),
        ("swirszcz_d3", (6, 1), (6, 1)),
        ("jellyfish", (4, 2), (4, 2)),
        ("iris", (150, 4), (150, 3)),
    ],
)
def test_builtin_shapes_and_types(name, shape_x, shape_y):
    ds = load_dataset(name)
    assert isinstance(ds, Dataset) and ds.name == name and ds.description
    assert ds.X.shape == shape_x and ds.Y.shape == shape_y
    assert ds.X.dtype == np.float64 and ds.Y.dtype == np.float64
    if name in CLASSIFICATION:
        assert ds.task == "classification"
        assert ds.labels.dtype == np.int64 and ds.labels.shape == (shape_x[0],)
    else:
        assert ds.task == "regression" and ds.labels is None


@pytest.mark.parametrize("name", SWIRSZCZ)
def test_swirszcz_points_are_theory_lists(name):
    ds = load_dataset(name, seed=3, one_hot=False)
    pts = np.array(SWIRSZCZ[name], float)
    np.testing.assert_array_equal(ds.X, pts[:, :1])
    np.testing.assert_array_equal(ds.Y, pts[:, 1:])


@pytest.mark.parametrize(
    "name, w, b, v, c, loss",
    [
        ("swirszcz_d1", [1], [-3], [1], 0, 18.0),
        ("swirszcz_d1", [3], [-9], [1 / 3], 0, 18.0),  # the curve: w, b × k, v / k
        ("swirszcz_d1", [-1], [0], [3], 0, 14.0),
        ("swirszcz_d2", [-5, 1], [1, -8], [1, -1], -1, 0.0),
        ("swirszcz_d2", [-3, 1], [13 / 3, -10], [1, -1], -3, 8 / 3),
        ("swirszcz_d3", [-1.5, -1.5, 1.5], [1, 0, -79 / 6], [1, 1, -1], -1, 1 / 6),
        ("swirszcz_d3", [-2, 1, 1], [11 / 3, -10, -11], [1, -1, -1], -3, 2 / 3),
    ],
)
def test_swirszcz_losses_at_stated_minima(name, w, b, v, c, loss):
    ds = load_dataset(name)
    assert relu_net_loss(ds.X, ds.Y, w, b, v, c) == pytest.approx(loss, abs=1e-12)


def test_jellyfish_points_and_pm1_targets():
    ds = load_dataset("jellyfish", one_hot=False)
    pos = {tuple(p) for p in ds.X[ds.labels == 1]}
    neg = {tuple(p) for p in ds.X[ds.labels == 0]}
    assert pos == {(1.0, 0.0), (0.2, 0.6)} and neg == {(0.0, 1.0), (0.6, 0.2)}
    np.testing.assert_array_equal(ds.Y[:, 0], np.where(ds.labels == 1, 1.0, -1.0))


def test_xor_exact_and_noisy():
    ds = load_dataset("xor")
    expected = np.logical_xor(ds.X[:, 0] > 0.5, ds.X[:, 1] > 0.5).astype(int)
    assert sorted(map(tuple, ds.X)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    np.testing.assert_array_equal(ds.labels, expected)
    noisy = load_dataset("xor", n_samples=40, noise=0.05, seed=1)
    assert noisy.X.shape == (40, 2) and np.bincount(noisy.labels).tolist() == [20, 20]
    corner = np.round(noisy.X)
    np.testing.assert_array_equal(noisy.labels, np.logical_xor(corner[:, 0], corner[:, 1]))
    assert not np.array_equal(noisy.X, corner)


@pytest.mark.parametrize("name", SYNTHETIC + ["xor"])
def test_deterministic_by_seed_and_different_across_seeds(name):
    kw = {"n_samples": 24} if name == "xor" else {}
    a, b, c = (load_dataset(name, seed=s, **kw) for s in (7, 7, 8))
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.Y, b.Y)
    assert not np.array_equal(a.X, c.X)


@pytest.mark.parametrize("name", ["two_moons", "circles", "spirals", "blobs", "xor"])
@pytest.mark.parametrize("m", [1, 7, 50])
def test_n_samples_is_respected(name, m):
    ds = load_dataset(name, n_samples=m)
    assert ds.X.shape[0] == ds.Y.shape[0] == ds.labels.shape[0] == m
    assert ds.Y.shape[1] == CLASSIFICATION[name]  # k fixed, even if a class is absent


def test_noise_free_geometry():
    circ = load_dataset("circles", noise=0.0, n_samples=60)
    radius = np.linalg.norm(circ.X, axis=1)
    np.testing.assert_allclose(radius[circ.labels == 0], 1.0)
    np.testing.assert_allclose(radius[circ.labels == 1], 0.5)
    moons = load_dataset("two_moons", noise=0.0, n_samples=60)
    np.testing.assert_allclose(np.linalg.norm(moons.X[moons.labels == 0], axis=1), 1.0)
    inner = moons.X[moons.labels == 1] - [1.0, 0.5]
    np.testing.assert_allclose(np.linalg.norm(inner, axis=1), 1.0)
    spir = load_dataset("spirals", noise=0.0, n_samples=60)
    a, b = spir.X[spir.labels == 0], spir.X[spir.labels == 1]
    assert sorted(map(tuple, np.round(-a, 12))) == sorted(map(tuple, np.round(b, 12)))
    noisy = load_dataset("circles", noise=0.2, n_samples=60)
    assert np.std(np.linalg.norm(noisy.X[noisy.labels == 0], axis=1)) > 0.05


@pytest.mark.parametrize("name", list(CLASSIFICATION))
def test_one_hot_rows_sum_to_one(name):
    ds = load_dataset(name, n_samples=30 if name != "iris" else None)
    assert set(np.unique(ds.Y)) <= {0.0, 1.0}
    np.testing.assert_array_equal(ds.Y.sum(axis=1), 1.0)
    np.testing.assert_array_equal(ds.Y.argmax(axis=1), ds.labels)


@pytest.mark.parametrize("name", [n for n, k in CLASSIFICATION.items() if k == 2])
def test_pm1_targets_for_two_classes(name):
    ds = load_dataset(name, one_hot=False)
    assert ds.Y.shape == (ds.X.shape[0], 1)
    np.testing.assert_array_equal(ds.Y[:, 0], 2.0 * ds.labels - 1.0)


@pytest.mark.parametrize("name", ["blobs", "iris"])
def test_pm1_targets_refused_for_more_classes(name):
    with pytest.raises(InputError, match="classes"):
        load_dataset(name, one_hot=False)


def test_regression_ignores_one_hot():
    a = load_dataset("linear_teacher", one_hot=False)
    b = load_dataset("linear_teacher", one_hot=True)
    np.testing.assert_array_equal(a.Y, b.Y)


def test_iris_is_fishers_data():
    ds = load_dataset("iris")
    assert ds.X.shape == (150, 4)
    assert np.bincount(ds.labels).tolist() == [50, 50, 50]
    np.testing.assert_allclose(ds.X.mean(axis=0), [5.843, 3.057, 3.758, 1.199], atol=5e-4)
    np.testing.assert_array_equal(ds.X[0], [5.1, 3.5, 1.4, 0.2])
    # Petal length separates setosa from the rest (a textbook fact).
    assert ds.X[ds.labels == 0, 2].max() < ds.X[ds.labels != 0, 2].min()
    iris_csv = Path(datasets_module.__file__).parent / "data" / "iris.csv"
    header = iris_csv.read_text().split("\n")[0]
    assert header == "sepal_length,sepal_width,petal_length,petal_width,species"


def test_linear_teacher_theory_assumptions():
    ds = load_dataset("linear_teacher", seed=5)
    X, Y = ds.X, ds.Y
    assert np.linalg.matrix_rank(X.T @ X) == 8
    C = Y.T @ X
    assert np.linalg.matrix_rank(C) == 4
    lam = np.linalg.eigvalsh(C @ np.linalg.solve(X.T @ X, C.T))
    assert lam.min() > 0 and np.min(np.diff(lam)) > 1e-2 * lam.max()


def test_linear_teacher_noise_free_recovers_spectrum():
    ds = load_dataset("linear_teacher", noise=0.0, n_samples=40, d_x=6, d_y=3, seed=2)
    assert ds.X.shape == (40, 6) and ds.Y.shape == (40, 3)
    A_t, residual, *_ = np.linalg.lstsq(ds.X, ds.Y, rcond=None)
    np.testing.assert_allclose(residual, 0.0, atol=1e-20)
    np.testing.assert_allclose(np.linalg.svd(A_t, compute_uv=False), [3.0, 2.0, 1.0])


# ------------------------------------------------------------------ preprocessing


@pytest.mark.parametrize("name", ["iris", "linear_teacher", "two_moons"])
def test_standardise(name):
    ds = load_dataset(name, preprocess="standardise")
    raw = load_dataset(name)
    np.testing.assert_allclose(ds.X.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(ds.X.var(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(ds.Y, raw.Y)


def test_standardise_centres_constant_column():
    X = np.column_stack([np.full(5, 0.1), np.arange(5.0)])
    ds = load_dataset_bytes(npz_bytes(X=X, Y=np.ones(5)), "c.npz", preprocess="standardise")
    np.testing.assert_array_equal(ds.X[:, 0], 0.0)
    assert np.isfinite(ds.X).all() and ds.X[:, 1].var() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["iris", "linear_teacher", "blobs"])
def test_whiten(name):
    ds = load_dataset(name, preprocess="whiten")
    m, d = ds.X.shape
    np.testing.assert_allclose(ds.X.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(ds.X.T @ ds.X / m, np.eye(d), atol=1e-10)
    np.testing.assert_array_equal(ds.Y, load_dataset(name).Y)


def test_whiten_rank_deficient_is_input_error():
    X = np.random.default_rng(0).standard_normal((20, 2))
    X = np.column_stack([X, X[:, 0] + X[:, 1]])
    with pytest.raises(InputError, match="rank"):
        load_dataset_bytes(npz_bytes(X=X, Y=np.ones(20)), "r.npz", preprocess="whiten")


# ------------------------------------------------------------------ user files


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((12, 3)), rng.standard_normal((12, 2))
    path = tmp_path / "data.npz"
    np.savez(path, X=X, Y=Y)
    ds = load_dataset(str(path))
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.Y, Y)
    assert ds.task == "regression" and ds.labels is None and ds.name == "data.npz"
    again = load_dataset_bytes(path.read_bytes(), "data.npz")
    np.testing.assert_array_equal(again.X, X)


def test_npz_vector_target_and_int_inputs(tmp_path):
    path = tmp_path / "v.npz"
    np.savez_compressed(path, X=np.arange(8).reshape(4, 2), Y=np.arange(4))
    ds = load_dataset(str(path))
    assert ds.X.dtype == np.float64 and ds.Y.shape == (4, 1)
    np.testing.assert_array_equal(ds.Y[:, 0], [0, 1, 2, 3])


def test_csv_round_trip(tmp_path):
    text = "a,b,c,target\n1,2,3,4\n5,6,7,8.5\n\n-1,0,1e-3,2\n"
    path = tmp_path / "t.csv"
    path.write_text(text)
    ds = load_dataset(str(path))
    np.testing.assert_array_equal(ds.X, [[1, 2, 3], [5, 6, 7], [-1, 0, 1e-3]])
    np.testing.assert_array_equal(ds.Y, [[4], [8.5], [2]])
    two = load_dataset(str(path), target_columns=["a", "target"])
    np.testing.assert_array_equal(two.X, [[2, 3], [6, 7], [0, 1e-3]])
    np.testing.assert_array_equal(two.Y, [[1, 4], [5, 8.5], [-1, 2]])
    mem = load_dataset_bytes(text.encode(), "t.csv", target_columns="b")
    np.testing.assert_array_equal(mem.Y[:, 0], [2, 6, 0])


def test_iris_csv_file_loads_as_user_csv(tmp_path):
    csv_path = Path(datasets_module.__file__).parent / "data" / "iris.csv"
    numeric = "\n".join(
        ",".join(line.split(",")[:4]) for line in csv_path.read_text().strip().split("\n")
    )
    ds = load_dataset_bytes(numeric.encode(), "iris4.csv")
    np.testing.assert_array_equal(ds.X, load_dataset("iris").X[:, :3])


def test_dataset_from_arrays():
    ds = dataset_from_arrays([[1, 2], [3, 4]], [5, 6], name="mem")
    assert ds.name == "mem" and ds.Y.shape == (2, 1) and ds.X.dtype == np.float64


def test_pickled_object_array_rejected_without_running_it(tmp_path):
    marker = tmp_path / "was_unpickled"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    obj = np.empty(2, dtype=object)
    obj[:] = [Evil(), Evil()]
    path = tmp_path / "evil.npz"
    np.savez(path, X=np.ones((2, 1)), Y=obj)
    with pytest.raises(InputError, match="pickled"):
        load_dataset(str(path))
    with pytest.raises(InputError, match="pickled"):
        load_dataset_bytes(path.read_bytes(), "evil.npz")
    assert not marker.exists()


# ------------------------------------------------------------------ errors


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


ERROR_CASES = {
    "missing file": (lambda p: load_dataset(str(p / "nope.csv")), "not found"),
    "unknown extension": (lambda p: load_dataset(_write(p, "d.txt", "a,b\n1,2\n")), ".txt"),
    "unknown extension bytes": (lambda p: load_dataset_bytes(b"a,b\n1,2\n", "d.xlsx"), ".xlsx"),
    "unknown builtin": (lambda p: load_dataset("mnist"), "two_moons"),
    "not a zip": (lambda p: load_dataset_bytes(b"hello", "d.npz"), "not a valid .npz"),
    "npz missing Y": (lambda p: load_dataset_bytes(npz_bytes(X=np.ones((2, 2))), "d.npz"), "Y"),
    "npz missing X": (lambda p: load_dataset_bytes(npz_bytes(Y=np.ones(2)), "d.npz"), "no array"),
    "X 1-D": (lambda p: load_dataset_bytes(npz_bytes(X=np.ones(3), Y=np.ones(3)), "d.npz"), "2-D"),
    "X 3-D": (
        lambda p: load_dataset_bytes(npz_bytes(X=np.ones((3, 1, 1)), Y=np.ones(3)), "d.npz"),
        "2-D",
    ),
    "Y 3-D": (lambda p: dataset_from_arrays(np.ones((3, 1)), np.ones((3, 1, 1))), "2-D"),
    "row counts": (
        lambda p: load_dataset_bytes(npz_bytes(X=np.ones((3, 2)), Y=np.ones(4)), "d.npz"),
        "row counts",
    ),
    "zero rows npz": (
        lambda p: load_dataset_bytes(npz_bytes(X=np.ones((0, 2)), Y=np.ones(0)), "d.npz"),
        "zero rows",
    ),
    "zero rows csv": (lambda p: load_dataset_bytes(b"a,b\n", "d.csv"), "zero data rows"),
    "empty csv": (lambda p: load_dataset_bytes(b"", "d.csv"), "empty"),
    "no header": (lambda p: load_dataset_bytes(b"1,2\n3,4\n", "d.csv"), "header"),
    "ragged csv": (lambda p: load_dataset_bytes(b"a,b\n1,2\n3\n", "d.csv"), "cells"),
    "non-numeric cell": (
        lambda p: load_dataset_bytes(b"a,b\n1,2\n3,x7\n", "d.csv"),
        r"row 2, column 'b'.*'x7'",
    ),
    "empty cell": (lambda p: load_dataset_bytes(b"a,b\n1,\n", "d.csv"), "empty cell"),
    "nan csv": (lambda p: load_dataset_bytes(b"a,b\n1,2\n3,4\nnan,5\n", "d.csv"), "row 3"),
    "inf npz": (
        lambda p: load_dataset_bytes(
            npz_bytes(X=np.ones((6, 1)), Y=np.r_[0, 0, 0, 0, np.inf, 0.0]), "d.npz"
        ),
        "row 5",
    ),
    "nan arrays": (lambda p: dataset_from_arrays([[1.0], [np.nan]], [1, 2]), "row 2"),
    "strings in arrays": (lambda p: dataset_from_arrays([["a"]], [1]), "numeric"),
    "object arrays": (lambda p: dataset_from_arrays(np.array([[None]]), [1]), "object"),
    "too many rows": (
        lambda p: load_dataset_bytes(
            npz_bytes(X=np.zeros((MAX_SAMPLES + 1, 1)), Y=np.zeros(MAX_SAMPLES + 1)), "d.npz"
        ),
        "limit",
    ),
    "too many columns npz": (
        lambda p: load_dataset_bytes(
            npz_bytes(X=np.zeros((2, MAX_FEATURES + 1)), Y=np.zeros(2)), "d.npz"
        ),
        "columns",
    ),
    "too many columns csv": (
        lambda p: load_dataset_bytes(
            (",".join(f"c{i}" for i in range(MAX_FEATURES + 2)) + "\n").encode(), "d.csv"
        ),
        "columns",
    ),
    "unknown target column": (
        lambda p: load_dataset_bytes(b"a,b\n1,2\n", "d.csv", target_columns=["zz"]),
        "'zz'",
    ),
    "all columns targets": (
        lambda p: load_dataset_bytes(b"a,b\n1,2\n", "d.csv", target_columns=["a", "b"]),
        "input column",
    ),
    "not utf-8": (lambda p: load_dataset_bytes(b"a,b\n\xff\xfe,1\n", "d.csv"), "UTF-8"),
    "n_samples zero": (lambda p: load_dataset("two_moons", n_samples=0), "n_samples"),
    "n_samples too big": (
        lambda p: load_dataset("two_moons", n_samples=MAX_SAMPLES + 1),
        "n_samples",
    ),
    "n_samples float": (lambda p: load_dataset("two_moons", n_samples=2.5), "n_samples"),
    "negative noise": (lambda p: load_dataset("circles", noise=-0.1), "noise"),
    "nan noise": (lambda p: load_dataset("circles", noise=float("nan")), "noise"),
    "negative seed": (lambda p: load_dataset("circles", seed=-1), "seed"),
    "unknown preprocess": (lambda p: load_dataset("iris", preprocess="pca"), "preprocessing"),
    "d_y > d_x": (lambda p: load_dataset("linear_teacher", d_x=2, d_y=3), "d_y"),
    "m < d_x": (lambda p: load_dataset("linear_teacher", n_samples=5, d_x=8), "full rank"),
    "empty source": (lambda p: load_dataset(""), "built-in"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_raises_input_error(case, tmp_path):
    call, pattern = ERROR_CASES[case]
    with pytest.raises(InputError, match=pattern):
        call(tmp_path)


def test_file_too_large(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_module, "MAX_UPLOAD_BYTES", 16)
    path = _write(tmp_path, "big.csv", "a,b\n" + "1,2\n" * 10)
    with pytest.raises(InputError, match="too large"):
        load_dataset(path)
    with pytest.raises(InputError, match="too large"):
        load_dataset_bytes(b"a,b\n" + b"1,2\n" * 10, "big.csv")


def test_csv_row_limit(monkeypatch):
    monkeypatch.setattr(datasets_module, "MAX_SAMPLES", 3)
    assert load_dataset_bytes(b"a,b\n1,2\n1,2\n1,2\n", "ok.csv").X.shape == (3, 1)
    with pytest.raises(InputError, match="rows"):
        load_dataset_bytes(b"a,b\n1,2\n1,2\n1,2\n1,2\n", "big.csv")


def test_input_error_is_value_error():
    with pytest.raises(ValueError):
        load_dataset("no_such_dataset")


# --------------------------------------------------------------------------- overflowing values


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_upload_whose_squares_overflow_is_refused_naming_the_column():
    X = np.ones((50, 3))
    X[:, 1] = 1e308
    with pytest.raises(InputError, match=r"Column X\[:, 1\] of 'big.npz' has values up to 1e\+308"):
        load_dataset_bytes(_npz(X=X, Y=np.ones((50, 1))), "big.npz")
    Y = np.full((50, 1), 3e19)  # finite in float32 too, but its square overflows float32
    with pytest.raises(InputError, match=r"Y\[:, 0\]"):
        load_dataset_bytes(_npz(X=np.ones((50, 2)), Y=Y), "big.npz")


def test_csv_column_too_large_is_named_by_its_header():
    data = b"size,weight,price\n1,2e25,3\n4,5,6\n"
    with pytest.raises(InputError, match="Column 'weight' of 'houses.csv'") as info:
        load_dataset_bytes(data, "houses.csv")
    assert "rescale" in str(info.value)


def test_large_but_computable_values_are_accepted():
    ds = load_dataset_bytes(_npz(X=np.full((100, 2), 1e15), Y=np.ones((100, 1))), "ok.npz")
    assert ds.X.shape == (100, 2) and ds.X[0, 0] == 1e15
