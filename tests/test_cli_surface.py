"""``python -m compute surface``: the .npz contract, checked against numpy, and its errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compute._cli import main
from compute._limits import MAX_GRID

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    """The real command in a fresh process (as a user runs it)."""
    return subprocess.run([sys.executable, "-m", "compute", "surface", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def np_mlp_loss(Ws, bs, X, Y, act):
    h = X
    for k, W in enumerate(Ws):
        h = h @ W.T + (bs[k] if bs else 0.0)
        if k < len(Ws) - 1:
            h = act(h)
    return np.sum((h - Y) ** 2) / (2 * X.shape[0])


def split(flat, sizes, bias):
    """Flat vector → W_k, b_k by THEORY.md's order (W_1 row-major, b_1, W_2, …)."""
    Ws, bs, offset = [], [], 0
    for k in range(1, len(sizes)):
        rows, cols = sizes[k], sizes[k - 1]
        Ws.append(flat[offset:offset + rows * cols].reshape(rows, cols))
        offset += rows * cols
        if bias:
            bs.append(flat[offset:offset + rows])
            offset += rows
    assert offset == flat.size
    return Ws, bs


@pytest.fixture
def files(tmp_path, rng):
    X = rng.standard_normal((30, 3))
    Y = rng.standard_normal((30, 2))
    np.savez(tmp_path / "data.npz", X=X, Y=Y)
    weights = {"W1": rng.standard_normal((4, 3)), "b1": rng.standard_normal(4),
               "W2": rng.standard_normal((2, 4)), "b2": rng.standard_normal(2)}
    np.savez(tmp_path / "w.npz", **weights)
    return tmp_path, X, Y, weights


def test_round_trip_mlp_filter_plane(files, rng):
    tmp, X, Y, w = files
    out = tmp / "out" / "surface.npz"
    result = run_cli("--data", tmp / "data.npz", "--weights", tmp / "w.npz", "--model", "mlp",
                     "--activation", "tanh", "--plane", "filter", "--span", "1.5",
                     "--grid", 7, "--precision", "float64", "--out", out)
    assert result.returncode == 0, result.stderr
    with np.load(out, allow_pickle=False) as f:
        got = {k: f[k] for k in f.files}
    assert {"alpha", "beta", "loss", "direction1", "direction2", "center"} <= set(got)
    assert got["alpha"].shape == got["beta"].shape == (7,)
    assert got["loss"].shape == (7, 7)
    np.testing.assert_allclose(got["alpha"], np.linspace(-1.5, 1.5, 7))
    expected_center = np.concatenate([w["W1"].ravel(), w["b1"], w["W2"].ravel(), w["b2"]])
    np.testing.assert_array_equal(got["center"], expected_center)
    # filter-normalised rows, biases zero by default
    d1_W, d1_b = split(got["direction1"], (3, 4, 2), True)
    for W, ref in zip(d1_W, (w["W1"], w["W2"]), strict=True):
        np.testing.assert_allclose(np.linalg.norm(W, axis=1), np.linalg.norm(ref, axis=1))
    assert not any(np.any(b) for b in d1_b)
    for _ in range(5):
        i, j = rng.integers(7), rng.integers(7)
        point = got["center"] + got["alpha"][j] * got["direction1"] \
            + got["beta"][i] * got["direction2"]
        Ws, bs = split(point, (3, 4, 2), True)
        assert got["loss"][i, j] == pytest.approx(np_mlp_loss(Ws, bs, X, Y, np.tanh), rel=1e-10)


def test_round_trip_deep_linear_through_three_points(tmp_path, rng):
    X, Y = rng.standard_normal((25, 3)), rng.standard_normal((25, 2))
    np.savez(tmp_path / "data.npz", X=X, Y=Y)
    sizes = (3, 3, 2)
    n = 3 * 3 + 3 * 2
    p = [rng.standard_normal(n) * 0.5 for _ in range(3)]
    np.savez(tmp_path / "points.npz", p0=p[0], p1=p[1], p2=p[2])
    out = tmp_path / "s.npz"
    result = run_cli("--data", tmp_path / "data.npz", "--model", "linear", "--widths", "3",
                     "--plane", "points", "--points", tmp_path / "points.npz", "--grid", 9,
                     "--out", out)
    assert result.returncode == 0, result.stderr
    with np.load(out, allow_pickle=False) as f:
        got = {k: f[k] for k in f.files}
    assert str(got["method"]) == "polynomial"
    np.testing.assert_allclose(got["center"], p[0])
    coords = dict(zip(got["mark_names"].tolist(), got["mark_coords"], strict=True))
    for name, q in zip(("p0", "p1", "p2"), p, strict=True):
        a, b = coords[name]
        np.testing.assert_allclose(got["center"] + a * got["direction1"]
                                   + b * got["direction2"], q, atol=1e-12)
    i, j = 4, 6
    point = got["center"] + got["alpha"][j] * got["direction1"] \
        + got["beta"][i] * got["direction2"]
    Ws, _ = split(point, sizes, False)
    assert got["loss"][i, j] == pytest.approx(np_mlp_loss(Ws, None, X, Y, lambda z: z), rel=1e-9)


def test_nan_in_data_file_exits_2_with_one_line(tmp_path):
    X = np.ones((5, 2))
    X[2, 1] = np.nan
    np.savez(tmp_path / "bad.npz", X=X, Y=np.ones((5, 1)))
    result = run_cli("--data", tmp_path / "bad.npz", "--model", "linear", "--grid", 5,
                     "--out", tmp_path / "o.npz")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "o.npz").exists()


def error_case(capsys, argv):
    """Run ``main`` in this process; return (exit code, stderr lines)."""
    try:
        code = main(["surface", *map(str, argv)])
    except SystemExit as exc:        # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize("case", [
    "missing_data", "missing_weights", "wrong_shapes", "grid_0", "grid_huge",
    "unknown_dataset", "points_without_file", "bad_span", "unknown_plane"])
def test_error_cases_exit_2_with_one_line(files, capsys, case):
    tmp, X, Y, w = files
    base = ["--data", tmp / "data.npz", "--model", "mlp", "--activation", "relu",
            "--out", tmp / "e.npz"]
    if case == "wrong_shapes":
        np.savez(tmp / "bad_w.npz", W1=np.ones((4, 5)), b1=np.ones(4), W2=np.ones((2, 4)),
                 b2=np.ones(2))
    argv = {
        "missing_data": ["--data", tmp / "nope.npz", "--model", "mlp", "--out", tmp / "e.npz"],
        "missing_weights": base + ["--weights", tmp / "nope_w.npz"],
        "wrong_shapes": base + ["--weights", tmp / "bad_w.npz"],
        "grid_0": base + ["--grid", 0],
        "grid_huge": base + ["--grid", 10**6],
        "unknown_dataset": ["--data", "no_such_set", "--model", "linear",
                            "--out", tmp / "e.npz"],
        "points_without_file": base + ["--plane", "points"],
        "bad_span": base + ["--span", "nan"],
        "unknown_plane": base + ["--plane", "hessian"],
    }[case]
    code, err = error_case(capsys, argv)
    assert code == 2
    assert len(err) == 1 and "error" in err[0], err
    assert not (tmp / "e.npz").exists()


def test_grid_limit_is_the_shared_limit(files, capsys):
    tmp, *_ = files
    code, err = error_case(capsys, ["--data", tmp / "data.npz", "--model", "linear",
                                    "--grid", MAX_GRID + 1, "--out", tmp / "e.npz"])
    assert code == 2 and str(MAX_GRID) in err[0]
