"""``python -m compute spectrum``: the JSON contract, round-tripped through a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import compute
from compute._critical import VERDICTS
from compute._datasets import load_dataset

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compute", "spectrum", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_exact_spectrum_at_the_deep_linear_global_minimum(tmp_path):
    ds = load_dataset("linear_teacher", seed=0)  # what --data linear_teacher loads
    X, Y = ds.X, ds.Y
    m = X.shape[0]
    C = Y.T @ X
    G_inv = np.linalg.inv(X.T @ X)
    lam, U = np.linalg.eigh(C @ G_inv @ C.T)
    W1, W2 = U.T @ C @ G_inv, U  # d_1 = d_y = 4: r = 4, every eigenvector
    np.savez(tmp_path / "w.npz", W1=W1, W2=W2)
    out = tmp_path / "out.json"
    proc = _run("--data", "linear_teacher", "--weights", str(tmp_path / "w.npz"),
                "--model", "linear", "--method", "exact", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    L_star = (np.sum(Y**2) - lam.sum()) / (2 * m)
    assert result["global_min"] == pytest.approx(L_star, rel=1e-10)
    assert result["loss"] == pytest.approx(L_star, rel=1e-10)
    assert result["grad_norm"] < 1e-8
    assert result["n_params"] == 48 and result["method"] == "exact"
    assert result["classification"] == "non-strict local minimum"
    assert result["index"] == 0.0
    eig = np.array(result["eigenvalues"])
    assert eig.shape == (48,) and np.all(np.diff(eig) >= 0)
    spec = compute.make_model("linear", 8, 4, (4,))
    H = jax.jit(jax.hessian(compute.flat_objective(spec)))(np.r_[W1.ravel(), W2.ravel()], X, Y)
    ref = np.linalg.eigvalsh(np.asarray(H))
    np.testing.assert_allclose(eig, ref, atol=1e-9 * np.abs(ref).max())
    assert result["induced_model_loss"] == pytest.approx(L_star, rel=1e-8)
    assert set(result["tolerances"]) == {"grad_tol", "eig_tol"}


@pytest.mark.slow
def test_lanczos_spectrum_with_density(tmp_path):
    rng = np.random.default_rng(0)
    ds = load_dataset("two_moons", seed=0)
    arrays = {"W1": rng.standard_normal((8, 2)), "b1": rng.standard_normal(8),
              "W2": rng.standard_normal((2, 8)) * 0.5, "b2": rng.standard_normal(2)}
    np.savez(tmp_path / "w.npz", **arrays)
    out = tmp_path / "out.json"
    proc = _run("--data", "two_moons", "--weights", str(tmp_path / "w.npz"), "--model", "mlp",
                "--activation", "tanh", "--method", "lanczos", "--k", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["global_min"] is None and result["method"] == "lanczos"
    assert result["classification"] in VERDICTS and result["n_params"] == 42
    assert 0.0 <= result["index"] <= 1.0
    eig = np.array(result["eigenvalues"])
    spec = compute.make_model("mlp", 2, 2, (8,), activation="tanh", bias=True)
    theta = np.r_[arrays["W1"].ravel(), arrays["b1"], arrays["W2"].ravel(), arrays["b2"]]
    ref = np.linalg.eigvalsh(np.asarray(jax.jit(jax.hessian(compute.flat_objective(spec)))(
        theta, ds.X, ds.Y)))
    np.testing.assert_allclose(eig, np.r_[ref[:3], ref[-3:]], atol=1e-8 * np.abs(ref).max())
    grid, values = np.array(result["density"]["grid"]), np.array(result["density"]["values"])
    assert grid.shape == values.shape and np.all(values >= 0)
    assert abs(np.trapezoid(values, grid) - 1.0) < 1e-3


@pytest.mark.parametrize("extra, message", [
    (["--weights", "missing.npz", "--model", "linear"], "not found"),
    (["--model", "mlp", "--widths", "64,64", "--method", "exact"], "lanczos"),
    (["--model", "linear", "--k", "0"], "--k"),
    (["--model", "linear", "--slq-sigma", "-1"], "--slq-sigma"),
    (["--model", "mlp", "--widths", "3", "--loss", "cross_entropy"], "real-valued targets"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, extra, message):
    proc = _run("--data", "linear_teacher", *extra, "--out", str(tmp_path / "o.json"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "o.json").exists()
