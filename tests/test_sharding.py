"""compute.sharded_loss_surface: the grid over 4 (simulated CPU) devices equals one device.

XLA's device count is fixed when JAX initialises, so the sharded runs happen in a child
process started with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``. The child
returns its surfaces in an ``.npz``; this process checks them against ``compute.loss_surface``
on one device (equal, bit for bit) and against a numpy forward pass written here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # one child process that starts JAX with 4 devices (~10 s)

# (name, kind, widths, activation, bias, loss, d_x, d_y, m, dtype, memory budget)
CASES = [
    # 401 samples do not fit the 64 KiB budget at once: masked sample chunks are summed.
    ("tanh_f64_small_budget", "mlp", [5, 4], "tanh", True, "squared", 3, 2, 401, "float64",
     2**16),
    ("tanh_f64", "mlp", [5, 4], "tanh", True, "squared", 3, 2, 50, "float64", 2**29),
    ("relu_ce_f32", "mlp", [6], "relu", True, "cross_entropy", 2, 3, 40, "float32", 2**29),
    ("logistic_f64", "mlp", [4], "relu", False, "cross_entropy", 2, 1, 30, "float64", 2**20),
    ("deep_linear", "linear", [3, 3], "identity", False, "squared", 4, 2, 25, "float64",
     2**29),
]
ALPHAS = np.linspace(-1.0, 1.5, 13)
BETAS = np.linspace(-2.0, 1.0, 11)   # 143 points: not a multiple of 4 (padding is tested)

CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import jax
    import compute
    from compute import _sharding
    from compute._errors import InputError
    from compute._surface import loss_surface, surface_method
    from compute._sharding import grid_mesh, sharded_loss_surface

    inputs = np.load(sys.argv[1], allow_pickle=False)
    cases = json.loads(str(inputs["cases"]))
    out = {"device_count": np.array(len(jax.devices()))}
    seen = []  # how the kernel's outputs were laid out over the devices
    real_to_host = _sharding._to_host
    def recording_to_host(array):
        seen.append((len(array.sharding.device_set), len(array.addressable_shards)))
        return real_to_host(array)
    _sharding._to_host = recording_to_host
    for name, kind, widths, act, bias, loss, d_x, d_y, m, dtype, budget in cases:
        spec = compute.make_model(kind, d_x, d_y, widths, activation=act, bias=bias)
        args = (spec, loss, inputs[name + "/c"], inputs[name + "/d1"], inputs[name + "/d2"],
                inputs["alphas"], inputs["betas"], inputs[name + "/X"].astype(dtype),
                inputs[name + "/Y"].astype(dtype))
        seen.clear()
        out[name + "/sharded"] = sharded_loss_surface(*args, memory_budget=budget)
        out[name + "/layout"] = np.array(seen or [(0, 0)])
        out[name + "/one_device"] = loss_surface(*args, memory_budget=budget)
        out[name + "/first_device_only"] = sharded_loss_surface(
            *args, memory_budget=budget, devices=jax.devices()[:1])
        out[name + "/method"] = np.array(surface_method(spec, loss, memory_budget=budget))
    try:
        grid_mesh([])
        out["empty_devices"] = np.array("accepted")
    except InputError as error:
        out["empty_devices"] = np.array(str(error))
    np.savez(sys.argv[2], **out)
""")


def _act(name: str, z: np.ndarray) -> np.ndarray:
    return {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0), "identity": lambda v: v}[
        name](z)


def numpy_loss(theta, sizes, activation, bias, loss, X, Y) -> float:
    """Loss of THEORY.md's network at flat ``theta`` (W1 row-major, b1, W2, …), in numpy."""
    h, k = X, 0
    for layer, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        W = theta[k:k + d_out * d_in].reshape(d_out, d_in)
        k += d_out * d_in
        h = h @ W.T
        if bias:
            h = h + theta[k:k + d_out]
            k += d_out
        if layer < len(sizes) - 2:
            h = _act(activation, h)
    assert k == theta.size
    m = X.shape[0]
    if loss == "squared":
        return 0.5 * np.sum((h - Y) ** 2) / m
    if Y.shape[1] == 1:  # ±1 targets, logistic loss
        return float(np.mean(np.logaddexp(0.0, -Y[:, 0] * h[:, 0])))
    shifted = h - h.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -np.sum(Y * log_softmax) / m


def case_data(rng, kind, widths, bias, loss, d_x, d_y, m):
    sizes = [d_x, *widths, d_y]
    n = sum(a * b + (b if bias else 0) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    c, d1, d2 = 0.5 * rng.normal(size=(3, n))
    X = rng.normal(size=(m, d_x))
    if loss == "squared":
        Y = rng.normal(size=(m, d_y))
    elif d_y == 1:
        Y = rng.choice([-1.0, 1.0], size=(m, 1))
    else:
        Y = np.eye(d_y)[rng.integers(0, d_y, size=m)]
    return sizes, c, d1, d2, X, Y


@pytest.fixture(scope="module")
def child_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sharding")
    rng = np.random.default_rng(7)
    arrays, data = {"alphas": ALPHAS, "betas": BETAS}, {}
    for name, kind, widths, _, bias, loss, d_x, d_y, m, _, _ in CASES:
        sizes, c, d1, d2, X, Y = case_data(rng, kind, widths, bias, loss, d_x, d_y, m)
        data[name] = (sizes, c, d1, d2, X, Y)
        arrays.update({f"{name}/c": c, f"{name}/d1": d1, f"{name}/d2": d2, f"{name}/X": X,
                       f"{name}/Y": Y})
    import json

    arrays["cases"] = np.array(json.dumps(CASES))
    np.savez(folder / "in.npz", **arrays)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", CHILD, str(folder / "in.npz"),
                          str(folder / "out.npz")], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    with np.load(folder / "out.npz", allow_pickle=False) as out:
        return {k: out[k] for k in out.files}, data


def test_the_child_sees_four_devices(child_results):
    out, _ = child_results
    assert int(out["device_count"]) == 4


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_sharded_surface_equals_the_one_device_surface(child_results, case):
    out, data = child_results
    name, _, _, activation, bias, loss, _, _, _, dtype, _ = case
    sharded = out[name + "/sharded"]
    assert sharded.shape == (BETAS.size, ALPHAS.size) and sharded.dtype == np.float64
    np.testing.assert_array_equal(sharded, out[name + "/one_device"])
    np.testing.assert_array_equal(out[name + "/first_device_only"], sharded)
    # Independent reference: the numpy network at every grid point.
    sizes, c, d1, d2, X, Y = data[name]
    reference = np.array([[numpy_loss(c + a * d1 + b * d2, sizes, activation, bias, loss, X, Y)
                           for a in ALPHAS] for b in BETAS])
    rtol = 1e-10 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(sharded, reference, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("case", [c for c in CASES if c[1] == "mlp"], ids=lambda c: c[0])
def test_direct_method_runs_on_every_device(child_results, case):
    out, _ = child_results
    name = case[0]
    assert str(out[name + "/method"]) == "direct"
    # Every kernel output was laid out over the 4 devices, one shard each.
    assert {tuple(row) for row in out[name + "/layout"]} == {(4, 4)}


def test_polynomial_method_is_not_sharded_but_equal(child_results):
    out, _ = child_results
    assert str(out["deep_linear/method"]) == "polynomial"
    assert {tuple(row) for row in out["deep_linear/layout"]} == {(0, 0)}  # no kernel ran


def test_no_devices_is_an_input_error(child_results):
    out, _ = child_results
    assert str(out["empty_devices"]) == "sharded_loss_surface needs at least one device."


MULTIHOST_CHILD = textwrap.dedent("""
    import sys
    import jax
    process_id, port = int(sys.argv[1]), sys.argv[2]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=process_id)
    import numpy as np
    import compute
    from compute._sharding import sharded_loss_surface
    from compute._surface import loss_surface

    inputs = np.load(sys.argv[3], allow_pickle=False)
    spec = compute.make_model("mlp", 3, 2, [5, 4], activation="tanh", bias=True)
    args = (spec, "squared", inputs["c"], inputs["d1"], inputs["d2"], inputs["alphas"],
            inputs["betas"], inputs["X"], inputs["Y"])
    np.savez(sys.argv[4], sharded=sharded_loss_surface(*args),
             one_device=loss_surface(*args), devices=len(jax.devices()),
             local_devices=len(jax.local_devices()))
    jax.distributed.shutdown()
""")


def test_two_processes_with_jax_distributed_share_one_grid(tmp_path):
    """Two hosts, simulated: two processes of 2 CPU devices each, one 4-device mesh."""
    import socket

    rng = np.random.default_rng(11)
    sizes, c, d1, d2, X, Y = case_data(rng, "mlp", [5, 4], True, "squared", 3, 2, 60)
    np.savez(tmp_path / "in.npz", c=c, d1=d1, d2=d2, X=X, Y=Y, alphas=ALPHAS, betas=BETAS)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", MULTIHOST_CHILD, str(i), port,
                               str(tmp_path / "in.npz"), str(tmp_path / f"out{i}.npz")],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        logs = [proc.communicate(timeout=180)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(logs)[-4000:]
    reference = np.array([[numpy_loss(c + a * d1 + b * d2, sizes, "tanh", True, "squared", X, Y)
                           for a in ALPHAS] for b in BETAS])
    for i in range(2):
        with np.load(tmp_path / f"out{i}.npz") as out:
            assert (int(out["devices"]), int(out["local_devices"])) == (4, 2)
            np.testing.assert_array_equal(out["sharded"], out["one_device"])
            np.testing.assert_allclose(out["sharded"], reference, rtol=1e-10)
