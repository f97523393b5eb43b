"""``python -m compute path`` (a contract): round trips through the real command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compute._cli import main
from compute._datasets import load_dataset
from compute._limits import MAX_STEPS

ROOT = Path(__file__).resolve().parents[1]
DATA = ["--data", "linear_teacher", "--n-samples", "50", "--seed", "0"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "compute", "path", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def numpy_loss(Ws, X, Y):
    out = X
    for W in Ws:
        out = out @ W.T
    return 0.5 * np.sum((out - Y) ** 2) / X.shape[0]


@pytest.fixture(scope="module")
def teacher():
    data = load_dataset("linear_teacher", seed=0, n_samples=50)
    return data.X, data.Y


@pytest.mark.slow  # a fresh process: imports and compiles (≈ 3–8 s)
def test_round_trip_from_a_weights_file(tmp_path, teacher):
    X, Y = teacher
    rng = np.random.default_rng(0)
    W1, W2 = 0.3 * rng.standard_normal((3, 8)), 0.3 * rng.standard_normal((4, 3))
    np.savez(tmp_path / "w.npz", W1=W1, W2=W2)
    out = tmp_path / "path.out"  # any name: written exactly there
    proc = run_cli(*DATA, "--model", "linear", "--weights", str(tmp_path / "w.npz"),
                   "--optimizer", "momentum", "--lr", "0.01", "--steps", "200",
                   "--weight-stride", "20", "--lambda-every", "50", "--precision", "float64",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with np.load(out, allow_pickle=False) as f:
        r = {k: f[k] for k in f.files}
    contract = {"loss", "grad_norm", "weights", "weight_steps", "lambda_min", "lambda_max",
                "lambda_steps", "final", "diverged_at"}
    assert contract <= set(r)
    assert r["loss"].shape == r["grad_norm"].shape == (201,)
    assert int(r["diverged_at"]) == -1
    np.testing.assert_allclose(r["loss"][0], numpy_loss([W1, W2], X, Y), rtol=1e-12)
    np.testing.assert_array_equal(r["weight_steps"], np.arange(0, 201, 20))
    np.testing.assert_array_equal(r["weights"][0], np.concatenate([W1.ravel(), W2.ravel()]))
    np.testing.assert_array_equal(r["weights"][-1], r["final"])
    final = [r["final"][:24].reshape(3, 8), r["final"][24:].reshape(4, 3)]
    np.testing.assert_allclose(r["loss"][-1], numpy_loss(final, X, Y), rtol=1e-12)
    np.testing.assert_array_equal(r["lambda_steps"], [0, 50, 100, 150, 200])
    assert r["lambda_min"].shape == r["lambda_max"].shape == (5,)
    assert np.all(r["lambda_min"] <= r["lambda_max"])
    assert np.all(np.diff(r["loss"][::20]) < 0)


@pytest.mark.slow  # a fresh process: imports and compiles (≈ 3–8 s)
def test_a_small_init_starts_at_the_origin_plateau(tmp_path, teacher):
    X, Y = teacher
    out = tmp_path / "p.npz"
    proc = run_cli(*DATA, "--model", "linear", "--widths", "2", "--init", "gaussian",
                   "--init-scale", "1e-3", "--lr", "0.05", "--steps", "1000",
                   "--precision", "float64", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as r:
        m = X.shape[0]
        np.testing.assert_allclose(r["loss"][0], np.sum(Y ** 2) / (2 * m), rtol=1e-4)
        C = Y.T @ X
        lam = np.sort(np.linalg.eigvalsh(C @ np.linalg.solve(X.T @ X, C.T)))[::-1]
        L_star = (np.sum(Y ** 2) - lam[:2].sum()) / (2 * m)
        np.testing.assert_allclose(r["global_minimum"], L_star, rtol=1e-10)
        np.testing.assert_allclose(r["loss"][-1], L_star, rtol=1e-6)
        assert r["plateau_entry"][0] == 0 and r["plateau_exit"][0] > 10
        np.testing.assert_allclose(r["plateau_loss"][0], np.sum(Y ** 2) / (2 * m), rtol=1e-3)
        assert r["lambda_steps"].size == 0


@pytest.mark.slow  # a fresh process: imports and compiles (≈ 3–8 s)
def test_divergence_is_a_result_with_a_note(tmp_path):
    out = tmp_path / "d.npz"
    proc = run_cli(*DATA, "--model", "linear", "--widths", "3", "--lr", "50", "--steps", "100",
                   "--out", str(out))
    assert proc.returncode == 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "diverged at step" in lines[0]
    with np.load(out) as r:
        d = int(r["diverged_at"])
        assert 0 <= d < 100 and np.all(np.isfinite(r["loss"][:d]))
        assert r["loss"].shape == (101,) and np.all(np.isfinite(r["weights"]))


@pytest.mark.parametrize("args, words", [
    (["--lr", "0", "--steps", "10"], "learning rate"),
    (["--lr", "0.1", "--steps", "10", "--batch", "51"], "batch size"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, words):
    proc = run_cli(*DATA, "--model", "linear", *args, "--out", str(tmp_path / "x.npz"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("args, words", [
    (["--lr", "nan", "--steps", "10"], "learning rate"),
    (["--lr", "0.1", "--steps", str(MAX_STEPS + 1)], "steps"),
    (["--lr", "0.1", "--steps", "10", "--weights", "missing.npz"], "not found"),
    (["--lr", "0.1", "--steps", "10", "--momentum", "1.5", "--optimizer", "nesterov"],
     "momentum"),
    (["--lr", "0.1", "--steps", "10", "--grad-noise", "-1"], "noise"),
    (["--lr", "0.1", "--steps", "10", "--lambda-every", "-1"], "lambda_every"),
])
def test_more_bad_input_in_process(tmp_path, capsys, args, words):
    code = main(["path", *DATA, "--model", "linear", *args, "--out", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0]


@pytest.mark.parametrize("args, cause", [
    (["--lr", "50"], "lower --lr"),
    (["--lr", "0.1", "--grad-noise", "1e30"], "--grad-noise"),
    (["--lr", "0.1", "--widths", "4,4", "--saddle-eps", "1e3"], "--saddle-eps"),
    (["--lr", "0.1", "--widths", "4,4", "--saddle-eps", "1e12"], "--saddle-eps"),
    (["--lr", "0.1", "--model", "mlp", "--widths", "8,8,8,8,8,8", "--init-scale", "1000"],
     "--init-scale"),
], ids=["step size", "gradient noise", "saddle offset", "saddle offset at the start",
        "non-finite start"])
def test_the_divergence_note_names_the_likely_cause(tmp_path, capsys, args, cause):
    code = main(["path", "--data", "xor", "--model", "linear", "--steps", "100", *args,
                 "--out", str(tmp_path / "d.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 0 and len(err) == 1 and "diverged at step" in err[0], err
    assert cause in err[0], err
    if cause != "lower --lr":
        assert "; lower --lr." not in err[0], err  # not the step size's default advice
    with np.load(tmp_path / "d.npz") as r:
        assert int(r["diverged_at"]) >= 0
